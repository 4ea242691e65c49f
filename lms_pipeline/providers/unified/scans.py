"""Reading a listing that changes while it is paged, so the result is the listing as of the scan's last request.

Plain offset paging over a list ordered by ``updated_at`` (Unified.to's default order) skips a record at a page
boundary whenever an earlier record is updated mid-scan, and a record updated after it was read stays stale. A
catch-up pass with ``updated_gte = scan start`` repairs only the stale ones, never the skipped ones
(docs/providers.md §1.9). Two techniques that do work, chosen per provider capability:

* ``keyset_scan`` (the provider honours ``updated_gte``): every request asks for records updated at or after the
  newest ``updated_at`` second seen so far, from offset 0 (the few records already read in that second come again).
  A record updated mid-scan gets a newer ``updated_at`` and is read again at the end; the scan ends at a short
  page, so every change before the last request is in it. Duplicates are resolved downstream by id, keeping the
  newest ``updated_at`` (then the later page). Also used for incremental polls: they start at a watermark.
  A bulk update (a term rollover stamps thousands of records in one second) fills more than a page with one second,
  the precision ``updated_gte`` is sent with, whatever microseconds the records carry: that run can only be paged by
  offset, and a record of it updated meanwhile leaves it and shifts the rest down. So pages within a run overlap by
  one record and each must find a record of the run already read, which proves nothing before it was skipped;
  a page that finds none steps back until one does (``_Cursor``).
* ``stable_scan`` (no ``updated_gte``, or records without ``updated_at``): full offset passes repeated until two
  consecutive passes return identical records with no duplicate id, bounded in passes.

Whatever the technique, a full page bringing no record not already read means the integration ignores offset
(Unified list options ``-none-``, docs/providers.md §9.4): the scan stops at once, naming the option to set. A list
the integration answers whole (``options.unpaged_endpoints``) is read in one request per pass.

No library pages this way, hence the hand-written loops; each is bounded by ``max_pages`` / ``max_passes`` /
``max_rounds`` in ``sync.catch_up`` (``options.max_pages_per_scan``, ``max_scan_passes``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lms_pipeline.providers.base import RawPage
from lms_pipeline.providers.http import LmsClientError
from lms_pipeline.providers.unified.client import PageLimitError, RepeatedPageError, UnifiedLmsClient, versions

MAX_RUN_RESTARTS = 3  # re-reads of a one-second run whose order changed between requests, before giving up
KEYSET = "keyset_updated_at"
STABLE = "repeat_until_stable"
SINGLE = "single_pass"


class ScanError(LmsClientError):
    """A scan could not produce a consistent listing; nothing from it may be published."""


class NeedsStableScan(Exception):
    """Keyset paging is impossible for this listing (a record without ``updated_at``)."""


@dataclass
class Scan:
    """The pages of one endpoint's scan and how they were read."""

    endpoint: str
    technique: str
    pages: list[RawPage] = field(default_factory=list)
    passes: int = 1
    high_water: datetime | None = None  # newest updated_at seen (the provider's clock, not ours)
    since: datetime | None = None  # updated_gte the scan started from (an incremental poll)
    fell_back: str | None = None  # why a keyset scan became a stable scan
    unpaged: bool = False  # the integration answers with its whole list: each read is one request


def parse_stamp(value: object) -> datetime | None:
    """An API timestamp as aware UTC, truncated to the second (the resolution ``updated_gte`` accepts)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def keyset_scan(
    client: UnifiedLmsClient,
    endpoint: str,
    params: Mapping[str, object],
    since: datetime | None = None,
    *,
    max_pages: int = 10_000,
    unpaged: bool = False,
) -> Scan:
    """Keyset-page ``endpoint`` on ``updated_at`` from ``since`` (None: the whole listing).

    Raises ``NeedsStableScan`` on a record without a usable ``updated_at`` (it could never be found again by
    ``updated_gte``), and ``ScanError`` when the provider ignores ``updated_gte``, the order or offset.
    ``unpaged``: the integration answers with its whole (filtered) list, read in one request.
    """
    scan = Scan(endpoint, KEYSET, since=since, unpaged=unpaged)
    sent = {**params, "sort": "updated_at", "order": "asc"}
    if unpaged:
        scan.pages = list(client.iter_pages(endpoint, {**sent, "updated_gte": since}, unpaged=True))
        stamps = _stamps(endpoint, scan.pages[0].items)
        if stamps:  # a whole list is as long as it is: no limit to exceed
            _check_keyset_page(client, endpoint, since, 0, stamps, limit=len(stamps))
            scan.high_water = stamps[-1]
        return scan
    cursor = _Cursor(client, endpoint, since)
    for _ in range(max_pages):
        page = client.get_page(endpoint, {**sent, "updated_gte": cursor.watermark}, cursor.offset)
        scan.pages.append(page)
        done = cursor.take(page)
        scan.high_water = cursor.high_water
        if done:
            return scan
    raise _error(client, endpoint, f"keyset scan sent {max_pages} requests (options.max_pages_per_scan) and the "
                 "listing still had data")  # fmt: skip


@dataclass
class _Run:
    """Records sharing one updated_at second, more than a page of them: paged by offset, the one place where a record
    leaving mid-scan shifts the others."""

    second: datetime
    read: set[str]  # ids read in this run at this second
    stepping_back: bool = False
    restarts: int = 0  # re-reads from the run's start after its order changed between requests


class _Cursor:
    """Where the next keyset request starts (``watermark``, ``offset``), from the pages read so far.

    Outside a run each request starts at the newest second read, from offset 0: the few records already read at
    that second come again, rather than being skipped by an offset that a record updated meanwhile would shift.

    A run (a bulk update: a full page within one second, the precision ``updated_gte`` is sent with, while records
    carry microseconds) can only be paged by offset. A record of the run updated mid-scan gets a newer ``updated_at``
    and moves to the end, so every record after it shifts one place down: paging on by whole pages would skip the
    record at the next page boundary. So each page of a run starts at the last record of the page before (one
    record of overlap) and must find a record already read: then everything before it was read too (records only
    leave a past second, and the order of the rest holds). When none is found, something before shifted: the cursor
    steps back a page, as often as needed, until it does (offset 0 needs none).

    That proof needs the run's order to hold between requests: true for records microseconds apart, up to the
    provider for records stamped alike (an ORDER BY without a unique tiebreaker may serve ties in any order), and
    untrue while the bulk update is still being written in the current second. So the records already read must come
    first on every page of the run; when one not read comes before one read, the run is read again from its start,
    and after ``MAX_RUN_RESTARTS`` the scan fails saying why rather than publish a listing that may miss records.
    """

    def __init__(self, client: UnifiedLmsClient, endpoint: str, since: datetime | None) -> None:
        self.client, self.endpoint = client, endpoint
        self.watermark, self.offset = since, 0
        self.run: _Run | None = None
        self.high_water: datetime | None = None
        self._seen: set[object] = set()  # (id, updated_at) of every record read: what a repeated page repeats

    def take(self, page: RawPage) -> bool:
        """Account for the page requested at (watermark, offset) and move on; True when the listing has ended."""
        items, size = page.items, self.client.page_size
        stamps = _stamps(self.endpoint, items)
        if stamps:
            _check_keyset_page(self.client, self.endpoint, self.watermark, self.offset, stamps, size)
            self.high_water = max(self.high_water or stamps[-1], stamps[-1])
        fresh = versions(items) - self._seen
        if not fresh and len(items) >= size and not (self.run is not None and self.run.stepping_back):
            raise _repeated_page(self.client, self.endpoint, self.watermark, self.offset, len(items))
        if self.run is not None:
            if self._reread(stamps, items):
                return False  # its records count as read only once a page proves nothing before them was skipped
            self._seen |= fresh
            return self._take_run_page(items, stamps)
        self._seen |= fresh
        if len(items) < size:
            return True
        if stamps[0] == stamps[-1]:  # a whole page in one second: the start of a run, at position 0 of it
            if size < 2:
                raise _error(self.client, self.endpoint, f"more than one record was updated at {_iso(stamps[0])}: "
                             "paging through records sharing one second needs pages of at least 2 (one record of "
                             "overlap). Set options.page_size to at least 2.")  # fmt: skip
            self.run = _Run(stamps[0], {str(item.get("id")) for item in items})
            self.offset = len(items) - 1
        else:
            self.offset = 0
        self.watermark = stamps[-1]
        return False

    def _in_run(self, stamps: list[datetime], items: list[dict]) -> list[str]:
        second = self.run.second  # type: ignore[union-attr]  # only called in a run
        return [str(item.get("id")) for item, stamp in zip(items, stamps, strict=True) if stamp == second]

    def _reread(self, stamps: list[datetime], items: list[dict]) -> bool:
        """Whether this run page (past offset 0) cannot prove that nothing before it was skipped, and where to read
        instead: a page back when it holds no record already read (records before it left the run, updated
        meanwhile, and the rest shifted down), the run's start when a record not read comes before one read."""
        run = self.run
        assert run is not None
        if self.offset == 0:
            return False
        known = [i for i, record in enumerate(self._in_run(stamps, items)) if record in run.read]
        if known == list(range(len(known))) and known:
            return False
        run.stepping_back = True
        if not known:
            self.offset = max(0, self.offset - (self.client.page_size - 1))
            return True
        run.restarts += 1
        if run.restarts > MAX_RUN_RESTARTS:
            raise _error(self.client, self.endpoint, f"the records updated at {_iso(run.second)} (more than a page "
                         "of them) come in a different order from one request to the next, or are still being "
                         f"written: {MAX_RUN_RESTARTS} re-reads from their first could not page through them without "
                         "risking a skipped record. Retry later; if it persists the integration orders records with "
                         "equal updated_at differently per request, so set options.supports_updated_gte: false to "
                         "read it in repeated full passes.")  # fmt: skip
        self.offset = 0
        return True

    def _take_run_page(self, items: list[dict], stamps: list[datetime]) -> bool:
        run = self.run
        assert run is not None
        in_run = self._in_run(stamps, items)
        known = [i for i, record in enumerate(in_run) if record in run.read]
        run.read.update(in_run[known[-1] + 1 if known else 0 :])
        run.stepping_back = False
        if len(items) < self.client.page_size:
            return True
        if stamps[-1] != run.second:  # the run ends on this page: on by updated_gte from the newest second
            self.run, self.watermark, self.offset = None, stamps[-1], 0
        else:
            self.offset += len(items) - 1
        return False


def _stamps(endpoint: str, items: list[dict]) -> list[datetime]:
    """Each record's updated_at second; a record without one can never be found again by updated_gte."""
    stamps = []
    for item in items:
        stamp = parse_stamp(item.get("updated_at"))
        if stamp is None:
            raise NeedsStableScan(f"{endpoint} {item.get('id')!r} has no usable updated_at")
        stamps.append(stamp)
    return stamps


def _check_keyset_page(
    client: UnifiedLmsClient,
    endpoint: str,
    watermark: datetime | None,
    offset: int,
    stamps: list[datetime],
    limit: int,
) -> None:
    where = f"GET {endpoint} (updated_gte={_iso(watermark)}, offset {offset})"
    if watermark is not None and stamps[0] < watermark:
        if len(stamps) > limit:  # the whole list in one answer: Unified list options `-none-` (§9.4)
            raise _error(client, endpoint, f"{where} returned {len(stamps)} records for limit={limit}, one updated "
                         f"at {_iso(stamps[0])}, before updated_gte: the integration ignores updated_gte and limit "
                         "(Unified list options `-none-`, docs/providers.md §9.4). Set options.supports_updated_gte: "
                         f"false and options.unpaged_endpoints: [{endpoint}] for this connection.")  # fmt: skip
        raise _error(
            client,
            endpoint,
            f"{where} returned a record updated at {_iso(stamps[0])}, before updated_gte: the integration ignores "
            "updated_gte. Set options.supports_updated_gte: false for this connection.",
        )
    if any(b < a for a, b in zip(stamps, stamps[1:], strict=False)):
        raise _error(client, endpoint, f"{where} is not in updated_at order although sort=updated_at was asked; "
                     "keyset paging cannot be trusted. Set options.supports_updated_gte: false for this "
                     "connection.")  # fmt: skip


def stable_scan(
    client: UnifiedLmsClient,
    endpoint: str,
    params: Mapping[str, object],
    *,
    max_passes: int = 4,
    unpaged: bool = False,
    max_pages: int | None = None,
) -> Scan:
    """Full offset passes (one request each when ``unpaged``) until two consecutive ones agree record for record
    with no duplicate id."""
    previous: list[tuple[str, str]] | None = None
    twice: dict[str, list[int]] = {}
    for number in range(1, max_passes + 1):
        pages = _offset_pass(client, endpoint, params, unpaged, max_pages)
        records = sorted(
            (str(item.get("id")), json.dumps(item, sort_keys=True)) for page in pages for item in page.items
        )
        twice = _listed_twice(pages)
        if records == previous:
            if not twice:
                return Scan(endpoint, STABLE, pages, passes=number, high_water=_high_water(pages), unpaged=unpaged)
            # Not churn: the same duplicates in two agreeing passes. The order is not stable from page to page
            # (e.g. ties in the sort key served in another order per request) or offset is partly ignored.
            record, offsets = next(iter(twice.items()))
            others = f" (and {len(twice) - 1} other id(s) more than once)" if len(twice) > 1 else ""
            raise _error(client, endpoint, f"two consecutive passes agree, but both list {record!r} at offsets "
                         f"{' and '.join(map(str, offsets))}{others}: the integration's paging repeats records, so "
                         "others are skipped. More passes cannot help; check the integration's list options "
                         "(docs/providers.md §1.6, §9.4): if it answers every request with its whole list, set "
                         f"options.unpaged_endpoints: [{endpoint}].")  # fmt: skip
        previous = records
    moving = f" (the last listed {len(twice)} id(s) twice: records moving while paged)" if twice else ""
    raise _error(
        client,
        endpoint,
        f"listing still changed between passes after {max_passes} full passes{moving}; no consistent snapshot "
        "could be read (raise options.max_scan_passes or retry later)",
    )


def _offset_pass(
    client: UnifiedLmsClient, endpoint: str, params: Mapping[str, object], unpaged: bool, max_pages: int | None
) -> list[RawPage]:
    """One pass, with the option to set named where the integration's paging is at fault."""
    try:
        return list(client.iter_pages(endpoint, params, unpaged=unpaged, max_pages=max_pages))
    except RepeatedPageError as exc:
        hint = f". If it answers every request with its whole list, set options.unpaged_endpoints: [{endpoint}]."
        raise ScanError(f"{exc}{hint}", connection_id=exc.connection_id, endpoint=endpoint, offset=exc.offset) from None
    except PageLimitError as exc:
        hint = "; raise options.max_pages_per_scan for a listing this long"
        raise ScanError(f"{exc}{hint}", connection_id=exc.connection_id, endpoint=endpoint, offset=exc.offset) from None


def _listed_twice(pages: list[RawPage]) -> dict[str, list[int]]:
    """id -> offsets of the records listed more than once in one pass."""
    where: dict[str, list[int]] = {}
    for page in pages:
        for position, item in enumerate(page.items):
            where.setdefault(str(item.get("id")), []).append(page.offset + position)
    return {record: offsets for record, offsets in where.items() if len(offsets) > 1}


def single_pass(
    client: UnifiedLmsClient, endpoint: str, params: Mapping[str, object], *, unpaged: bool = False
) -> Scan:
    """One plain offset pass: exact only when nothing changes while it pages (``options.scan: single_pass``)."""
    pages = _offset_pass(client, endpoint, params, unpaged, None)
    return Scan(endpoint, SINGLE, pages, high_water=_high_water(pages), unpaged=unpaged)


def _high_water(pages: list[RawPage]) -> datetime | None:
    """Newest usable updated_at on the pages (None when no record has one)."""
    stamps = (parse_stamp(item.get("updated_at")) for page in pages for item in page.items)
    return max((s for s in stamps if s is not None), default=None)


def consistent_scan(
    client: UnifiedLmsClient,
    endpoint: str,
    params: Mapping[str, object],
    *,
    since: datetime | None,
    keyset: bool,
    max_passes: int,
    unpaged: bool = False,
    max_pages: int = 10_000,
) -> Scan:
    """Keyset when the provider supports it, else (or on records without updated_at) repeated passes.

    An incremental poll (``since`` set) needs keyset: a stable scan cannot be narrowed to changed records. A list
    the integration answers whole (``unpaged``) is polled in one request, and fully scanned in one-request passes
    compared pass against pass, as for integrations without ``updated_gte``.
    """
    stable_params = {**params, "sort": "created_at", "order": "asc"}
    if keyset and not (unpaged and since is None):
        try:
            return keyset_scan(client, endpoint, params, since, max_pages=max_pages, unpaged=unpaged)
        except NeedsStableScan as exc:
            if since is not None:
                raise _error(client, endpoint, f"incremental poll impossible: {exc}") from None
            scan = stable_scan(client, endpoint, stable_params, max_passes=max_passes, unpaged=unpaged,
                               max_pages=max_pages)  # fmt: skip
            scan.fell_back = str(exc)
            return scan
    if since is not None:
        raise ValueError("an incremental poll needs a provider that supports updated_gte")
    return stable_scan(client, endpoint, stable_params, max_passes=max_passes, unpaged=unpaged, max_pages=max_pages)


def _repeated_page(
    client: UnifiedLmsClient, endpoint: str, watermark: datetime | None, offset: int, count: int
) -> ScanError:
    return _error(client, endpoint, f"GET {endpoint} (updated_gte={_iso(watermark)}, offset {offset}) answered a full "
                  f"page of {count} records all already read in this scan: the integration ignores offset, so the "
                  "listing cannot be paged past its first page (docs/providers.md §9.4). If the records sharing one "
                  "updated_at fit in one page, raise options.page_size (up to 100); if the integration answers every "
                  f"request with its whole list, set options.unpaged_endpoints: [{endpoint}].")  # fmt: skip


def _error(client: UnifiedLmsClient, endpoint: str, detail: str) -> ScanError:
    return ScanError(f"connection {client.connection_id!r}: {endpoint}: {detail}", connection_id=client.connection_id,
                     endpoint=endpoint)  # fmt: skip


def _iso(moment: datetime | None) -> str:
    return "none" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")
