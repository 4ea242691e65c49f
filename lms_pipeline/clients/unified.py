"""Client for the Unified.to-style LMS API: offset paging to the end, with retries and strict page checks.

Facts from provider-apis.md §1: list endpoints return a bare JSON array; the end is a page shorter than
``limit``; ``limit`` is capped at 100 and larger values are clamped silently; 429 may come without Retry-After.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import tenacity

from lms_pipeline.clients.errors import LmsAuthError, LmsClientError, LmsFetchError, LmsPayloadError
from lms_pipeline.clients.http import FetchStats, RetrySettings, _Retryable, get_with_retries


@dataclass(frozen=True)
class Page:
    endpoint: str
    offset: int
    params: dict[str, object]
    fetched_at: datetime
    status_code: int
    items: list[dict]
    attempts: int


class UnifiedLmsClient:
    # Asking for more than the cap would make a clamped, full page look short and end paging early.
    MAX_PAGE_SIZE = 100

    def __init__(
        self,
        connection_id: str,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetrySettings = RetrySettings(),  # noqa: B008 (frozen dataclass)
        page_size: int = 100,
        headers: Mapping[str, str] | None = None,
        max_pages: int = 10_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.connection_id = connection_id
        self.page_size = max(1, min(page_size, self.MAX_PAGE_SIZE))
        self.retry = retry
        self.max_pages = max_pages
        self.stats = FetchStats()
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(retry.timeout),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json", **(headers or {})},
        )

    def __repr__(self) -> str:
        return f"UnifiedLmsClient(connection_id={self.connection_id!r}, base_url={str(self._http.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> UnifiedLmsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def iter_pages(self, endpoint: str, params: Mapping[str, object] | None = None) -> Iterator[Page]:
        """Yield every page of ``endpoint`` until a short page (an exactly-full last page is followed by [])."""
        path = f"/lms/{self.connection_id}/{endpoint}"
        base = {k: (",".join(map(str, v)) if isinstance(v, list | tuple) else v) for k, v in (params or {}).items()}
        offset = 0
        for _ in range(self.max_pages):
            sent = {**base, "limit": self.page_size, "offset": offset}
            response, attempts = self._get(path, endpoint, offset, sent)
            items = self._items(response, endpoint, offset)
            self.stats.pages += 1
            self.stats.items += len(items)
            yield Page(endpoint, offset, sent, datetime.now(UTC), response.status_code, items, attempts)
            if len(items) < self.page_size:
                return
            offset += len(items)
        raise LmsClientError(
            f"connection {self.connection_id!r}: GET {path} still had data after {self.max_pages} pages; stopped",
            connection_id=self.connection_id, endpoint=endpoint, offset=offset,
        )  # fmt: skip

    def _where(self, path: str, offset: int) -> str:
        return f"connection {self.connection_id!r}: GET {path} at offset {offset}"

    def _get(self, path: str, endpoint: str, offset: int, params: dict) -> tuple[httpx.Response, int]:
        ids = {"connection_id": self.connection_id, "endpoint": endpoint, "offset": offset}
        try:
            response, attempts = get_with_retries(self._http, path, params, self.retry, self.stats, self._sleep)
        except tenacity.RetryError as exc:
            last = exc.last_attempt.exception()
            status = last.response.status_code if isinstance(last, _Retryable) and last.response else None
            cause = f"HTTP {status}" if status else type(getattr(last, "error", None)).__name__
            raise LmsFetchError(
                f"{self._where(path, offset)} failed after {exc.last_attempt.attempt_number} attempts "
                f"(last: {cause})",
                status=status, **ids,
            ) from None  # fmt: skip
        if response.status_code in (401, 403):
            raise LmsAuthError(
                f"{self._where(path, offset)} was refused with HTTP {response.status_code}: check the token",
                status=response.status_code, **ids,
            )  # fmt: skip
        if response.status_code >= 400:
            raise LmsFetchError(
                f"{self._where(path, offset)} failed with HTTP {response.status_code}{_message(response)}",
                status=response.status_code, **ids,
            )  # fmt: skip
        return response, attempts

    def _items(self, response: httpx.Response, endpoint: str, offset: int) -> list[dict]:
        where = self._where(f"/lms/{self.connection_id}/{endpoint}", offset)
        ids = {"connection_id": self.connection_id, "endpoint": endpoint, "offset": offset,
               "status": response.status_code}  # fmt: skip
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LmsPayloadError(f"{where}: body is not JSON: {response.text[:80]!r}", **ids) from None
        if not isinstance(body, list):
            raise LmsPayloadError(f"{where}: expected a JSON array, got {type(body).__name__}", **ids)
        if not all(isinstance(item, dict) for item in body):
            raise LmsPayloadError(f"{where}: the array holds something other than objects", **ids)
        return body


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    message = body.get("message") if isinstance(body, dict) else None
    return f": {str(message)[:200]}" if message else ""


def read_roster_ids(course: Mapping) -> list[str] | None:
    """The course's roster: union of ``student_ids`` (deprecated) and ``students[].id``; None = not exposed.

    Documents the rule the SQL normalizer applies (transforms/rosters.py).
    """
    ids, refs = course.get("student_ids"), course.get("students")
    if ids is None and refs is None:
        return None
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(s, str) for s in ids)):
        raise ValueError(f"course {course.get('id')!r}: student_ids is not a list of strings")
    if refs is not None and (
        not isinstance(refs, list) or not all(isinstance(r, dict) and isinstance(r.get("id"), str) for r in refs)
    ):
        raise ValueError(f"course {course.get('id')!r}: students is not a list of objects with string ids")
    return sorted(set(ids or []) | {r["id"] for r in refs or []})
