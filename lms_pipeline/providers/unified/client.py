"""Client for the Unified.to LMS API: offset paging to the end, with retries and strict page checks.

Facts from docs/providers.md §1: list endpoints return a bare JSON array; the end is a page shorter than
``limit``; ``limit`` is capped at 100 and larger values are clamped silently; 429 may come without Retry-After.
Not every integration honours ``limit``/``offset`` (§9.4: Moodle's course list has no list options, ``-none-``,
and answers every call with the same records), so the short-page rule alone may never end: a full page bringing
no record not already read in the pass stops paging at once (``RepeatedPageError``), and a list known to come
whole in one answer is read with one request (``unpaged``).

The token travels only in the Authorization header. httpx logs each request at INFO with its URL (no headers),
and httpcore's DEBUG trace shows requests as ``<Request [b'GET']>``, so neither log shows the token; nor does
anything this module logs, raises or returns.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from lms_pipeline.providers.base import RawPage
from lms_pipeline.providers.http import (
    FetchStats,
    LmsClientError,
    LmsPayloadError,
    ProviderHttpClient,
    RequestTarget,
    RetrySettings,
    bearer_headers,
    get_with_retries,
    server_text,
)

logger = logging.getLogger(__name__)

QueryValue = str | int | float | bool
PAGING_PARAMS = frozenset({"limit", "offset"})


class RepeatedPageError(LmsClientError):
    """A full page brought no record not already read in the pass: the integration ignores offset (and maybe
    limit), so offset paging would never end. Callers that know the connection's options add which one to set."""


class PageLimitError(LmsClientError):
    """``max_pages`` full pages were read and the listing still had data."""


class UnifiedLmsClient(ProviderHttpClient):
    """Reads one Unified.to connection's LMS lists. One httpx.Client per instance: close it, or use ``with``.
    Safe to share between threads; ``max_concurrent_requests`` bounds their requests in flight (``budget``)."""

    # Unified.to caps limit at 100 and clamps larger values silently, so a larger request would make a full page
    # look short and end paging early: never ask for more.
    MAX_PAGE_SIZE = 100

    def __init__(
        self,
        connection_id: str,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetrySettings = RetrySettings(),  # noqa: B008 (frozen, so sharing the default is safe)
        page_size: int = 100,
        headers: Mapping[str, str] | None = None,
        max_pages: int = 10_000,
        sleep: Callable[[float], None] = time.sleep,
        max_concurrent_requests: int = 1,
    ) -> None:
        if page_size < 1 or max_pages < 1:
            raise ValueError(f"page_size and max_pages must be at least 1, got {page_size} and {max_pages}")
        if page_size > self.MAX_PAGE_SIZE:
            logger.warning("connection %r: page_size %d lowered to the API's cap of %d", connection_id, page_size,
                           self.MAX_PAGE_SIZE)  # fmt: skip
        self.connection_id = connection_id
        self.page_size = min(page_size, self.MAX_PAGE_SIZE)
        self.retry = retry
        self.max_pages = max_pages
        self.stats = FetchStats()
        self._sleep = sleep
        self._token = token
        budgeted = self._budgeted(base_url, token, retry, transport, max_concurrent_requests=max_concurrent_requests,
                                  sleep=sleep)  # fmt: skip
        self._http = httpx.Client(base_url=base_url, transport=budgeted, headers=bearer_headers(token, headers),
                                  timeout=httpx.Timeout(retry.timeout))  # fmt: skip


    def iter_pages(
        self,
        endpoint: str,
        params: Mapping[str, object] | None = None,
        *,
        unpaged: bool = False,
        max_pages: int | None = None,
    ) -> Iterator[RawPage]:
        """Yield every page of ``endpoint`` until a short one; an exactly-full last page is followed by the empty
        page that proves the end, which is yielded too.

        ``params`` are extra query parameters: a list or tuple is sent comma-separated (``fields``), a tz-aware
        datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (``updated_gte``), None is left out. Paging is the client's own.
        ``unpaged``: the integration ignores limit/offset and answers with its whole list, so one request is the
        whole listing. ``max_pages`` overrides the client's bound for this listing.
        """
        extra = _query(params or {})
        if unpaged:
            yield self._whole_list(endpoint, extra)
            return
        bound = max_pages or self.max_pages
        seen: set[object] = set()
        offset = 0
        for index in range(bound):
            page = self._get(endpoint, extra, offset, index)
            fresh = versions(page.items) - seen
            if offset and len(page.items) >= self.page_size and not fresh:
                raise self._target(endpoint, offset).error(
                    RepeatedPageError,
                    f"answered a full page of {len(page.items)} records all already read at earlier offsets of this "
                    "pass: the integration ignores offset (and maybe limit; Unified list options `-none-`, "
                    "docs/providers.md §9.4), so paging would never end",
                )
            seen |= fresh
            yield page
            if len(page.items) < self.page_size:
                return
            offset += len(page.items)
        raise self._target(endpoint, offset).error(
            PageLimitError, f"not sent: {bound} full pages read (max_pages) and the listing still had data"
        )

    def _whole_list(self, endpoint: str, extra: dict[str, QueryValue]) -> RawPage:
        """One answer that must be the whole list. Exactly ``limit`` records cannot prove it: the list may have
        exactly that many, or the integration honours limit after all and cut it (a different limit tells)."""
        page = self._get(endpoint, extra, 0)
        if len(page.items) == self.page_size:
            raise self._target(endpoint, 0).error(
                LmsClientError,
                f"answered exactly limit={self.page_size} records although {endpoint} is read as one whole list "
                f"(options.unpaged_endpoints): either the list has exactly {self.page_size} records, or the "
                "integration honours limit after all and the list was cut. Set options.page_size to another value "
                "to tell which; nothing was stored",
            )
        return page

    def get_page(self, endpoint: str, params: Mapping[str, object] | None, offset: int) -> RawPage:
        """One page of ``endpoint`` at ``offset`` (``limit`` is the client's page size); for callers that page
        by other rules than plain offsets (``lms_pipeline.providers.unified.scans``)."""
        return self._get(endpoint, _query(params or {}), offset)

    def _target(self, endpoint: str, offset: int) -> RequestTarget:
        path = f"/lms/{quote(self.connection_id, safe='')}/{quote(endpoint, safe='')}"
        return RequestTarget(self.connection_id, endpoint, path, offset)

    def _get(self, endpoint: str, extra: dict[str, QueryValue], offset: int, index: int = 0) -> RawPage:
        target = self._target(endpoint, offset)
        sent = {"limit": self.page_size, "offset": offset, **extra}
        response, attempts = get_with_retries(self._http, target, sent, self.retry, self.stats,
                                              sleep=self._sleep, secret=self._token)  # fmt: skip
        fetched_at = datetime.now(UTC)
        items = self._items(response, target)
        self.stats.add(pages=1, items=len(items))
        logger.debug("%s: %d items in %d attempt(s)", target.describe(), len(items), attempts)
        return RawPage(endpoint, sent, response.status_code, response.text, items, fetched_at, page_index=index,
                       offset=offset, attempts=attempts, url=str(response.request.url))  # fmt: skip

    def _items(self, response: httpx.Response, target: RequestTarget) -> list[dict]:
        """The page's items, refusing anything but the promised bare JSON array of objects."""
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            snippet = server_text(response.text, self._token) if response.content else ""
            raise target.error(LmsPayloadError, f"answered HTTP {status} with a body that is not JSON: {snippet!r}",
                               status=status) from None  # fmt: skip
        if not isinstance(body, list):
            raise target.error(LmsPayloadError, f"answered HTTP {status} with a JSON {type(body).__name__}, "
                               "not the promised array", status=status)  # fmt: skip
        strays = sorted({type(item).__name__ for item in body if not isinstance(item, dict)})
        if strays:
            raise target.error(LmsPayloadError, f"answered HTTP {status} with an array holding {', '.join(strays)} "
                               "items, not objects", status=status)  # fmt: skip
        return body


def versions(items: list[dict]) -> set[object]:
    """Each record as (id, updated_at): a record read again unchanged is not new, one updated meanwhile is. A record
    without an id is its whole content."""
    return {
        (str(item["id"]), str(item.get("updated_at"))) if item.get("id") is not None
        else json.dumps(item, sort_keys=True, default=str)
        for item in items
    }  # fmt: skip


def _query(params: Mapping[str, object]) -> dict[str, QueryValue]:
    """Extra query parameters as sent, so a stored page shows the request exactly."""
    clash = PAGING_PARAMS & params.keys()
    if clash:
        raise ValueError(f"{sorted(clash)} are set by the client while paging; do not pass them")
    out: dict[str, QueryValue] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out[name] = ",".join(map(str, value))
        elif isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError(f"{name}: a naive datetime is ambiguous; pass a tz-aware one")
            out[name] = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        elif isinstance(value, QueryValue):
            out[name] = value
        else:
            raise TypeError(f"{name}: cannot send a {type(value).__name__} as a query parameter")
    return out
