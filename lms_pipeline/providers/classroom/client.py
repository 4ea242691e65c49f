"""Client for the Google Classroom API v1: courses, their aliases, students, courseWork and student submissions,
token paging to the end.

Facts from docs/providers.md §5 and peers-and-user-pains.md item 2: only a missing or empty ``nextPageToken`` ends
a listing (pages may be short, even empty, while a token is still given); ``pageSize`` above 30 is truncated
silently, which is harmless here since a short page proves nothing; a token must be replayed with otherwise
identical parameters, so every page of a listing is asked with the same ones; an empty-string ``pageToken`` is an
error, so none is ever sent. 429 RESOURCE_EXHAUSTED and 5xx are retried (``get_with_retries``); a 403
PERMISSION_DENIED on students.list, courseWork.list or studentSubmissions.list means this course is not ours to see:
it is kept as a 403 page (the normalizers read it as ``not_exposed`` / no grades), not retried and not an error.
Submissions are listed once per course with courseWorkId ``-`` (every courseWork), not once per courseWork. Each
course's listings are read side by side up to the connection's budget; a 429 pauses them all (``clients.budget``).

The token travels only in the Authorization header and is scrubbed from every stored payload and error message.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Literal
from urllib.parse import quote

import httpx

from lms_pipeline.providers.base import RawPage
from lms_pipeline.providers.http import (
    FetchStats,
    LmsAuthError,
    LmsClientError,
    LmsPayloadError,
    ProviderHttpClient,
    RepeatedPages,
    RequestTarget,
    RetrySettings,
    bearer_headers,
    get_with_retries,
    run_bounded,
    server_text,
)

logger = logging.getLogger(__name__)

Endpoint = Literal["courses", "aliases", "students", "courseWork", "studentSubmissions"]

# A course's listings a grade scan reads, in order: the alias names the course in the SIS, students.list gives the
# profile emails the email identity needs (a submission names its user by id only), then the grades.
GRADE_ENDPOINTS: tuple[Endpoint, ...] = ("aliases", "students", "courseWork", "studentSubmissions")
# Listings whose 403 PERMISSION_DENIED is an answer about the course (kept as a page), not a failure.
DENIABLE: frozenset[str] = frozenset({"students", "courseWork", "studentSubmissions"})

# Asked for explicitly: a provider's default set of listed states can change under a pipeline (peers item 5).
COURSE_STATES = ("ACTIVE", "ARCHIVED")
DATE_HEADER = "X-Simulated-Date"


class ClassroomClient(ProviderHttpClient):
    """Reads one Classroom connection. ``base_url`` is the API root: ``https://classroom.googleapis.com`` or, for
    the simulator, ``{server}/classroom/{connection_id}``. One httpx.Client per instance: close it, or use ``with``.
    ``max_concurrent_requests`` courses' listings are read at once (``budget``)."""

    def __init__(
        self,
        connection_id: str,
        base_url: str,
        token: str,
        *,
        as_of: date | None = None,
        transport: httpx.BaseTransport | None = None,
        retry: RetrySettings = RetrySettings(),  # noqa: B008 (frozen, so sharing the default is safe)
        page_size: int = 30,
        max_pages: int = 10_000,
        sleep: Callable[[float], None] = time.sleep,
        max_concurrent_requests: int = 1,
    ) -> None:
        if page_size < 1 or max_pages < 1:
            raise ValueError(f"page_size and max_pages must be at least 1, got {page_size} and {max_pages}")
        self.connection_id = connection_id
        self.page_size = page_size
        self.retry = retry
        self.max_pages = max_pages
        self.stats = FetchStats()
        self._sleep = sleep
        self._token = token
        self._last = threading.local()  # each thread's last answer: it reads one listing at a time
        extra = {} if as_of is None else {DATE_HEADER: as_of.isoformat()}
        # get_with_retries raises on a 403 without the body; the hook keeps the last answer so a students.list
        # PERMISSION_DENIED can be told apart and stored as a page.
        budgeted = self._budgeted(base_url, token, retry, transport, max_concurrent_requests=max_concurrent_requests,
                                  sleep=sleep)  # fmt: skip
        self._http = httpx.Client(base_url=base_url, transport=budgeted, headers=bearer_headers(token, extra),
                                  timeout=httpx.Timeout(retry.timeout),
                                  event_hooks={"response": [self._remember]})  # fmt: skip


    def scan_rosters(self) -> list[RawPage]:
        """Every courses page, then each listed course's aliases and students pages: the raw material of one
        roster snapshot. Any failure raises, so a caller stores all or nothing."""
        pages, course_ids = self._courses()
        return pages + self._per_course(course_ids, ("aliases", "students"))

    def grade_pages(self, course_ids: list[str] | None = None) -> list[RawPage]:
        """The raw material of one grade snapshot: the courses listing (unless ``course_ids``, Classroom ids or
        aliases, are given), then each course's aliases, students, courseWork and studentSubmissions (courseWorkId
        ``-``), every listing to its end. A course we may not see gives 403 pages, not an error; any failure raises,
        so a caller stores all or nothing."""
        pages: list[RawPage] = []
        if course_ids is None:
            pages, course_ids = self._courses()
        return pages + self._per_course(list(dict.fromkeys(course_ids)), GRADE_ENDPOINTS)

    def iter_pages(self, endpoint: Endpoint, course_id: str | None = None) -> Iterator[RawPage]:
        """Yield every page of one listing: ``courses``, or a course's ``aliases``, ``students``, ``courseWork`` or
        ``studentSubmissions`` (of every courseWork)."""
        for page, _ in self._listing(endpoint, course_id):
            yield page

    def _per_course(self, course_ids: list[str], endpoints: tuple[Endpoint, ...]) -> list[RawPage]:
        """Each listing of each course, up to the budget at once; pages in course order, then ``endpoints`` order."""
        tasks = [(lambda c=course_id, e=endpoint: list(self.iter_pages(e, c))) for course_id in course_ids
                 for endpoint in endpoints]  # fmt: skip
        return [page for pages in run_bounded(tasks, self.budget) for page in pages]

    def _courses(self) -> tuple[list[RawPage], list[str]]:
        """Every courses page and the listed course ids, each once (a course repeated across pages is read once)."""
        pages: list[RawPage] = []
        course_ids: list[str] = []
        for page, body in self._listing("courses", None):
            pages.append(page)
            course_ids += self._course_ids(body, page)
        return pages, list(dict.fromkeys(course_ids))

    # ---- paging ----------------------------------------------------------------------------------------------
    def _listing(self, endpoint: Endpoint, course_id: str | None) -> Iterator[tuple[RawPage, dict]]:
        """(raw page, parsed body) until a page without a token; bounded by ``max_pages``."""
        if (course_id is None) != (endpoint == "courses"):
            raise ValueError(f"{endpoint}: course_id is required for every listing but courses, and only for them")
        listing = "courseWork/-/studentSubmissions" if endpoint == "studentSubmissions" else endpoint
        path = "/v1/courses" if course_id is None else f"/v1/courses/{quote(course_id, safe='')}/{listing}"
        target = RequestTarget(self.connection_id, endpoint, path)
        base: dict[str, object] = {"pageSize": self.page_size}
        if endpoint == "courses":
            base["courseStates"] = COURSE_STATES  # sent repeated: courseStates=ACTIVE&courseStates=ARCHIVED
        token: str | None = None
        repeated = RepeatedPages()
        for index in range(self.max_pages):
            params = dict(base) if token is None else {**base, "pageToken": token}
            page, body = self._get(target, course_id, index, params)
            yield page, body
            token = body.get("nextPageToken")
            if not token:  # absent or empty: the end (an empty token is never sent back)
                return
            items = json.dumps(body.get(endpoint) or [], sort_keys=True)
            if (earlier := repeated.repeats(items, index)) is not None:
                raise _at_page(target.error(LmsPayloadError, f"page {index} repeats page {earlier} with a "
                                            "nextPageToken: the server ignores the token, so paging would never "
                                            "end"), index)  # fmt: skip
        raise _at_page(target.error(LmsClientError, f"not sent: {self.max_pages} pages read (max_pages) and the "
                                    "listing still gave a nextPageToken"), self.max_pages)  # fmt: skip

    def _get(self, target: RequestTarget, course_id: str | None, index: int, params: dict) -> tuple[RawPage, dict]:
        try:
            response, attempts = get_with_retries(self._http, target, params, self.retry, self.stats,
                                                  sleep=self._sleep, secret=self._token)  # fmt: skip
        except LmsClientError as err:
            denied = self._not_exposed(err, target)
            if denied is None:
                raise _at_page(err, index) from err
            response, attempts = denied, 1
        body = self._body(response, target, index) if response.status_code == 200 else {}
        items = body.get(target.endpoint, [])
        items = items if isinstance(items, list) else []  # the normalizer says what is wrong with a page
        self.stats.add(pages=1, items=len(items))
        logger.debug("%s page %d: HTTP %d in %d attempt(s)", target.describe(), index, response.status_code, attempts)
        sent = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
        page = RawPage(target.endpoint, sent, response.status_code, self._scrub(response.text), items,
                       datetime.now(UTC), page_index=index, attempts=attempts, course_id=course_id,
                       url=str(response.url))  # fmt: skip
        return page, body

    def _not_exposed(self, err: LmsClientError, target: RequestTarget) -> httpx.Response | None:
        """The 403 PERMISSION_DENIED of a course listing (``DENIABLE``) the course hides; None for any other
        failure (a 403 on courses.list is a token problem and raises)."""
        response = getattr(self._last, "response", None)
        if not (isinstance(err, LmsAuthError) and err.status == 403 and target.endpoint in DENIABLE):
            return None
        if response is None or not _permission_denied(response):
            return None
        logger.info("%s: course not exposed (403 PERMISSION_DENIED)", target.describe())
        return response

    def _body(self, response: httpx.Response, target: RequestTarget, index: int) -> dict:
        """The page as a JSON object with a string token, if any: what paging needs. Items are the normalizer's."""
        try:
            body = response.json()
        except ValueError:
            snippet = server_text(response.text, self._token) if response.content else ""
            raise self._payload_error(target, index, f"a body that is not JSON: {snippet!r}") from None
        if not isinstance(body, dict):
            raise self._payload_error(target, index, f"a JSON {type(body).__name__}, not an object")
        if not isinstance(body.get("nextPageToken", ""), str):
            raise self._payload_error(target, index, "a nextPageToken that is not a string")
        return body

    def _course_ids(self, body: dict, page: RawPage) -> list[str]:
        courses = body.get("courses", [])  # Google omits an empty list entirely
        if not isinstance(courses, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str)
                                                    for c in courses):  # fmt: skip
            target = RequestTarget(self.connection_id, "courses", "/v1/courses")
            raise self._payload_error(target, page.page_index, "courses that are not a list of objects with ids")
        return [c["id"] for c in courses]

    def _payload_error(self, target: RequestTarget, index: int, detail: str) -> LmsClientError:
        return _at_page(target.error(LmsPayloadError, f"answered HTTP 200 with {detail}", status=200), index)

    def _remember(self, response: httpx.Response) -> None:
        self._last.response = response

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "[token]") if self._token else text


def _permission_denied(response: httpx.Response) -> bool:
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("status") == "PERMISSION_DENIED"


def _at_page(err: LmsClientError, index: int) -> LmsClientError:
    """The error with its page named: a token listing has no offset, so the page index says where it stopped."""
    return type(err)(f"{err} (page {index})", connection_id=err.connection_id, endpoint=err.endpoint,
                     offset=err.offset, status=err.status)  # fmt: skip
