"""Reading a listing that changes while it is paged, so the result is the listing as of the scan's last request.

Plain offset paging over a list ordered by ``updated_at`` (Unified.to's default order) skips a record at a page
boundary whenever an earlier record is updated mid-scan, and a record updated after it was read stays stale. A
catch-up pass with ``updated_gte = scan start`` repairs only the stale ones, never the skipped ones
(provider-apis.md §1.9). Two techniques that do work, chosen per provider capability:

* ``keyset_scan`` (the provider honours ``updated_gte``): every request asks for records updated at or after the
  newest ``updated_at`` seen so far, from offset 0 (the few records already read at exactly that time come again);
  only a page that is all one timestamp pages on by offset within that run.
  A record updated mid-scan gets a newer ``updated_at`` and is read again at the end; the scan ends at a short
  page, so every change before the last request is in it. Duplicates are resolved downstream by id, keeping the
  newest ``updated_at`` (then the later page). Also used for incremental polls: they start at a watermark.
* ``stable_scan`` (no ``updated_gte``, or records without ``updated_at``): full offset passes repeated until two
  consecutive passes return identical records with no duplicate id, bounded in passes.

A sync reads several endpoints one after another, so the course listing is as of the course scan's end while the
class scan runs later. ``catch_up`` closes that gap for keyset-read endpoints: it polls each again from its own
high-water mark until a round finds nothing newer anywhere (a few requests), so every endpoint is as of the sync's
last request. This is not the "catch-up pass" that fails above: it runs over keyset scans that skipped nothing.

No library pages this way, hence the hand-written loops; each is bounded by ``max_pages`` / ``max_passes`` /
``max_rounds``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from lms_pipeline.clients.errors import LmsClientError
from lms_pipeline.clients.unified import Page, UnifiedLmsClient

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
    pages: list[Page] = field(default_factory=list)
    passes: int = 1
    high_water: datetime | None = None  # newest updated_at seen (the provider's clock, not ours)
    since: datetime | None = None  # updated_gte the scan started from (an incremental poll)
    fell_back: str | None = None  # why a keyset scan became a stable scan


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
) -> Scan:
    """Keyset-page ``endpoint`` on ``updated_at`` from ``since`` (None: the whole listing).

    Raises ``NeedsStableScan`` on a record without a usable ``updated_at`` (it could never be found again by
    ``updated_gte``), and ``ScanError`` when the provider ignores ``updated_gte`` or the order.
    """
    scan = Scan(endpoint, KEYSET, since=since)
    watermark, offset = since, 0
    sent = {**params, "sort": "updated_at", "order": "asc"}
    for _ in range(max_pages):
        page = client.get_page(endpoint, {**sent, "updated_gte": watermark}, offset)
        scan.pages.append(page)
        stamps = [parse_stamp(item.get("updated_at")) for item in page.items]
        if any(s is None for s in stamps):
            missing = next(i.get("id") for i, s in zip(page.items, stamps, strict=True) if s is None)
            raise NeedsStableScan(f"{endpoint} {missing!r} has no usable updated_at")
        if stamps:
            _check_keyset_page(client, endpoint, watermark, offset, stamps)
            scan.high_water = max(scan.high_water or stamps[-1], stamps[-1])
        if len(page.items) < client.page_size:
            return scan
        last = stamps[-1]
        if stamps[0] == last:
            # The whole page shares one timestamp (a bulk update): page on by offset within that run, the one place
            # where a record leaving the run mid-scan could still shift the rest.
            offset = offset + len(stamps) if last == watermark else len(stamps)
            watermark = last
        else:
            # Start the next page at the last timestamp seen, re-reading the few records already read at it rather
            # than skipping them by offset: one of them may be updated meanwhile, and an offset would then skip a
            # record nobody touched. The duplicates are resolved by id downstream.
            watermark, offset = last, 0
    raise _error(client, endpoint, f"keyset scan read {max_pages} full pages (max_pages) and the listing still had "
                 "data")  # fmt: skip


def _check_keyset_page(
    client: UnifiedLmsClient, endpoint: str, watermark: datetime | None, offset: int, stamps: list[datetime]
) -> None:
    where = f"GET {endpoint} (updated_gte={_iso(watermark)}, offset {offset})"
    if watermark is not None and stamps[0] < watermark:
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


def stable_scan(client: UnifiedLmsClient, endpoint: str, params: Mapping[str, object], *, max_passes: int = 4) -> Scan:
    """Full offset passes until two consecutive ones agree record for record with no duplicate id."""
    previous: list[tuple[str, str]] | None = None
    for number in range(1, max_passes + 1):
        pages = list(client.iter_pages(endpoint, params))
        records = sorted(
            (str(item.get("id")), json.dumps(item, sort_keys=True)) for page in pages for item in page.items
        )
        unique = len({record_id for record_id, _ in records}) == len(records)
        if unique and records == previous:
            return Scan(endpoint, STABLE, pages, passes=number, high_water=_high_water(pages))
        previous = records
    raise _error(
        client,
        endpoint,
        f"listing still changed between passes after {max_passes} full passes; no consistent snapshot could be "
        "read (raise options.max_scan_passes or retry later)",
    )


def single_pass(client: UnifiedLmsClient, endpoint: str, params: Mapping[str, object]) -> Scan:
    """One plain offset pass: exact only when nothing changes while it pages (``options.scan: single_pass``)."""
    pages = list(client.iter_pages(endpoint, params))
    return Scan(endpoint, SINGLE, pages, high_water=_high_water(pages))


def _high_water(pages: list[Page]) -> datetime | None:
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
) -> Scan:
    """Keyset when the provider supports it, else (or on records without updated_at) repeated passes.

    An incremental poll (``since`` set) needs keyset: a stable scan cannot be narrowed to changed records.
    """
    if keyset:
        try:
            return keyset_scan(client, endpoint, params, since)
        except NeedsStableScan as exc:
            if since is not None:
                raise _error(client, endpoint, f"incremental poll impossible: {exc}") from None
            scan = stable_scan(client, endpoint, {**params, "sort": "created_at", "order": "asc"},
                               max_passes=max_passes)  # fmt: skip
            scan.fell_back = str(exc)
            return scan
    if since is not None:
        raise ValueError("an incremental poll needs a provider that supports updated_gte")
    return stable_scan(client, endpoint, {**params, "sort": "created_at", "order": "asc"}, max_passes=max_passes)


def catch_up(
    client: UnifiedLmsClient, scans: list[Scan], params: Mapping[str, Mapping[str, object]], *, max_rounds: int = 3
) -> tuple[int, bool]:
    """Re-poll every keyset scan from its high-water mark until no endpoint has anything newer.

    The pages are appended to their scans. Returns (rounds run, converged); a listing still changing after
    ``max_rounds`` is left as of each endpoint's last read, and the caller reports it.
    """
    keyset = [s for s in scans if s.technique == KEYSET and (s.high_water or s.since) is not None]
    if not keyset:
        return 0, True
    for round_number in range(1, max_rounds + 1):
        newer = False
        for scan in keyset:
            mark = scan.high_water or scan.since
            extra = keyset_scan(client, scan.endpoint, params[scan.endpoint], mark)
            scan.pages.extend(extra.pages)
            if extra.high_water is not None and extra.high_water > mark:
                scan.high_water, newer = extra.high_water, True
        if not newer:
            return round_number, True
    return max_rounds, False


def _error(client: UnifiedLmsClient, endpoint: str, detail: str) -> ScanError:
    return ScanError(f"connection {client.connection_id!r}: {endpoint}: {detail}", connection_id=client.connection_id,
                     endpoint=endpoint)  # fmt: skip


def _iso(moment: datetime | None) -> str:
    return "none" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")
