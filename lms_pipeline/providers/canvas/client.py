"""Client for the Canvas LMS REST API (docs/providers.md §4, §9.3): an account's courses, each course's student
enrollments and sections, and for grades each course's assignments, grading standards and submissions, paged by
following ``Link: rel="next"`` and nothing else.

Canvas facts this client is built around:

- The institution's courses are ``GET /api/v1/accounts/:account_id/courses`` (§9.3): ``GET /api/v1/courses`` lists
  only the token user's own courses, a handful even for an admin. ``:account_id`` is ``self`` (the domain's root
  account) unless configured, and the token's user needs the account permission ``read_course_list`` there; without
  it Canvas answers 401 ``{"status": "unauthorized"}``, raised as an LmsAuthError naming the account and the
  permission. The account listing has its own ``state[]`` values (created|claimed|available|completed|deleted).
- Canvas parses query strings with Rack (§9.3): a repeated plain ``k`` reads as its last value and only ``k[]``
  makes an array, so every multi-valued parameter is sent as ``k[]`` (the account listing even ignores
  ``enrollment_type`` unless it is an array).
- ``per_page`` defaults to 10 and larger values are clamped to 100 silently, so the client always sends it.
- Link URLs are opaque (numbered pages or ``page=bookmark:...``) and ``rel="last"`` may be missing: the end of a
  listing is a response without ``rel="next"``. Only the first URL of a listing is built here; every later one is
  a next link used verbatim, and only if it points at the base URL's origin (the bearer token goes with it).
- Which enrollments Canvas lists by default changed under its users (peers-and-user-pains.md item 5), so every
  enrollments request names its ``type[]`` and every ``state[]`` it wants; each raw page records the parameters
  it was fetched with.
- Submissions are read with ``student_ids[]=all``: without it Canvas lists only the caller's own submissions (none
  for a teacher's token), and more than 100 explicit ids is a 400. ``include[]=user`` brings each student's login.
- Throttling is 429, or on older instances 403 with the body ``403 Forbidden (Rate Limit Exceeded)``; both are
  retried with backoff, and pause every request of the connection (``clients.budget``). Before it comes to that,
  ``X-Rate-Limit-Remaining`` bounds the requests in flight: canvas-lms charges each one an up-front cost while it
  runs (``app/middleware/request_throttle.rb``: 50 by default, refunded when it ends) and refuses any once the
  bucket reaches its high-water mark, and the header is the room left under that mark (§9.3).
- Canvas's permission refusal, ``{"status": "unauthorized", ...}``, on any course listing (enrollments, sections,
  assignments, grading standards, submissions) means the token may not read that part of the course: canvas-lms
  sends it as a 401 (``render_unauthorized_action``), some deployments as a 403. It is returned as a page with
  that status, for the normalizer to treat as unknown (a roster ``not_exposed``, no grades), not raised. Any other
  401 (a bad token: no such body) raises LmsAuthError, and so does the refusal on the account's course listing (no
  ``read_course_list``).

The token travels only in the Authorization header and is scrubbed from any server text quoted in an error; no
raw page, URL or log line holds it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import cast
from urllib.parse import quote

import httpx

from lms_pipeline.providers.base import RawPage, sent_params
from lms_pipeline.providers.http import (
    FetchStats,
    LmsAuthError,
    LmsClientError,
    LmsFetchError,
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

# Every state an enrollment can be listed in, so nothing depends on Canvas's default filter.
ENROLLMENT_STATES = ("active", "invited", "inactive", "completed", "deleted")
# The account listing's workflow states of running and concluded courses. Unpublished ones (created, claimed) are
# left out, as before the listing moved to the account: their students cannot see them yet and are not active
# enrollments; deleted ones are gone. Asked explicitly, since the listing's default (all but deleted) could change.
COURSE_STATES = ("available", "completed")
DEFAULT_ACCOUNT_ID = "self"  # the domain's root account (§9.3)
COURSE_LIST_PERMISSION = "read_course_list"  # the account right GET /accounts/:id/courses needs
THROTTLE_MARK = b"Rate Limit Exceeded"  # Canvas's legacy throttle body: "403 Forbidden (Rate Limit Exceeded)"
# What a request in flight holds in Canvas's bucket until it ends: request_throttle.rb's default up_front_cost.
UP_FRONT_COST = 50.0


class _CanvasTransport(httpx.BaseTransport):
    """Adapts Canvas's two kinds of 403 to what ``get_with_retries`` understands, without changing it.

    A legacy throttle 403 becomes the 429 it means, so it is retried, backed off and counted like any 429. A
    permission refusal (``{"status": "unauthorized"}``: 403, or 401 as ``authorized_action`` sends it) is passed on
    unchanged and kept, so the client can record or explain its body once ``get_with_retries`` has refused it. Each
    thread reads one listing at a time, so its last one is enough.
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner
        self.legacy_throttles = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def denied(self) -> httpx.Response | None:
        """This thread's last permission refusal."""
        return getattr(self._local, "denied", None)

    @denied.setter
    def denied(self, response: httpx.Response | None) -> None:
        self._local.denied = response

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if response.status_code not in (401, 403):
            return response
        body = response.read()  # decoded; a refusal's body is small
        if response.status_code == 403 and THROTTLE_MARK in body:
            with self._lock:
                self.legacy_throttles += 1
            skipped = ("content-encoding", "content-length")
            headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in skipped]
            response.close()
            return httpx.Response(429, headers=headers, content=body, request=request)
        if _is_permission_denial(body):
            self.denied = response
        return response

    def close(self) -> None:
        self._inner.close()


class CanvasClient(ProviderHttpClient):
    """Reads one Canvas connection's courses and rosters. One httpx.Client per instance: close it, or use ``with``.

    ``base_url`` is where ``/api/v1`` lives (``https://school.instructure.com``, or the simulator's
    ``http://127.0.0.1:port/canvas/{connection_id}``). ``account_id`` is the account whose courses are listed
    (``options.account_id``). ``simulated_date`` sends ``X-Simulated-Date`` (simulator). ``max_concurrent_requests``
    courses' listings are read at once (``budget``).
    """

    MAX_PER_PAGE = 100  # Canvas clamps larger values; asking for more only hides the real page size

    def __init__(
        self,
        connection_id: str,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetrySettings = RetrySettings(),  # noqa: B008 (frozen, so sharing the default is safe)
        per_page: int = 100,
        simulated_date: date | None = None,
        max_pages: int = 10_000,
        sleep: Callable[[float], None] = time.sleep,
        course_states: Sequence[str] = COURSE_STATES,
        enrollment_states: Sequence[str] = ENROLLMENT_STATES,
        account_id: str = DEFAULT_ACCOUNT_ID,
        max_concurrent_requests: int = 1,
    ) -> None:
        if not 1 <= per_page <= self.MAX_PER_PAGE or max_pages < 1:
            raise ValueError(f"per_page must be 1..{self.MAX_PER_PAGE} and max_pages >= 1, got {per_page}, {max_pages}")
        self.connection_id = connection_id
        self.account_id = account_id
        self.per_page = per_page
        self.retry = retry
        self.max_pages = max_pages
        self.course_states = tuple(course_states)
        self.enrollment_states = tuple(enrollment_states)
        self.stats = FetchStats()
        self._sleep = sleep
        self._token = token
        extra = {} if simulated_date is None else {"X-Simulated-Date": simulated_date.isoformat()}
        budgeted = self._budgeted(base_url, token, retry, transport, max_concurrent_requests=max_concurrent_requests,
                                  sleep=sleep, headroom=rate_limit_headroom, wrap=_CanvasTransport)  # fmt: skip
        self._transport = cast(_CanvasTransport, budgeted.inner)  # its throttle counters are read back
        self._http = httpx.Client(base_url=base_url, transport=budgeted, headers=bearer_headers(token, extra),
                                  timeout=httpx.Timeout(retry.timeout))  # fmt: skip


    @property
    def legacy_throttles(self) -> int:
        """How many of the throttled answers (``stats.throttled``) were Canvas's legacy 403."""
        return self._transport.legacy_throttles

    # ---- listings ---------------------------------------------------------------------------------------------
    def roster_pages(self) -> list[RawPage]:
        """The course listing, then every listed course's enrollments and sections: all or nothing (any failure
        raises), except a course whose roster the token may not read (a refused enrollments page, 401 or 403)."""
        pages = self.course_pages()
        listings = (self.enrollment_pages, self.section_pages)
        return pages + self._per_course(listed_course_ids(pages, self.connection_id), listings)

    def course_pages(self) -> list[RawPage]:
        """The account's courses (``GET /accounts/:account_id/courses``), in the states asked for."""
        params = [*(("state[]", s) for s in self.course_states), ("per_page", self.per_page)]
        path = f"api/v1/accounts/{quote(self.account_id, safe=':')}/courses"
        return self._listing("courses", path, params, None)

    def enrollment_pages(self, course_id: int) -> list[RawPage]:
        params = [("type[]", "StudentEnrollment"), *(("state[]", s) for s in self.enrollment_states),
                  ("per_page", self.per_page)]  # fmt: skip
        return self._listing("enrollments", f"api/v1/courses/{course_id}/enrollments", params, course_id)

    def section_pages(self, course_id: int) -> list[RawPage]:
        return self._listing("sections", f"api/v1/courses/{course_id}/sections", [("per_page", self.per_page)],
                             course_id)  # fmt: skip

    def grade_pages(self, course_ids: Sequence[int] | None = None) -> list[RawPage]:
        """The course listing (it holds the courses' SIS ids), then for each course (default: every listed one) its
        assignments, grading standards and submissions. All or nothing like ``roster_pages``, except a listing the
        token may not read (a refused page, 401 or 403: no grades for that course, not an error)."""
        pages = self.course_pages()
        wanted = listed_course_ids(pages, self.connection_id) if course_ids is None else list(dict.fromkeys(course_ids))
        return pages + self._per_course(wanted, (self.assignment_pages, self.grading_standard_pages,
                                                 self.submission_pages))  # fmt: skip

    def assignment_pages(self, course_id: int) -> list[RawPage]:
        return self._listing("assignments", f"api/v1/courses/{course_id}/assignments", [("per_page", self.per_page)],
                             course_id)  # fmt: skip

    def grading_standard_pages(self, course_id: int) -> list[RawPage]:
        """The standards the course owns (account-level ones are not listed here, docs/providers.md §4.7)."""
        return self._listing("grading_standards", f"api/v1/courses/{course_id}/grading_standards",
                             [("per_page", self.per_page)], course_id)  # fmt: skip

    def submission_pages(self, course_id: int) -> list[RawPage]:
        """Every student's submissions, flat (one item per submission): ``student_ids[]=all`` and the user object."""
        params = [("student_ids[]", "all"), ("include[]", "user"), ("per_page", self.per_page)]
        return self._listing("submissions", f"api/v1/courses/{course_id}/students/submissions", params, course_id)

    def _per_course(
        self, course_ids: Sequence[int], listings: Sequence[Callable[[int], list[RawPage]]]
    ) -> list[RawPage]:
        """Each listing of each course, up to the budget at once; pages in course order, then ``listings`` order."""
        tasks = [(lambda c=course_id, read=read: read(c)) for course_id in course_ids for read in listings]
        return [page for pages in run_bounded(tasks, self.budget) for page in pages]

    # ---- paging -----------------------------------------------------------------------------------------------
    def _listing(
        self, endpoint: str, path: str, params: list[tuple[str, object]], course_id: int | None
    ) -> list[RawPage]:
        """Every page of one listing, from the first URL along rel="next" links; bounded by max_pages, and a link
        back to a page already read is refused rather than followed forever."""
        url = str(self._http.base_url.join(path).copy_merge_params(params))
        pages: list[RawPage] = []
        seen: set[str] = set()
        repeated = RepeatedPages()
        for index in range(self.max_pages):
            seen.add(url)
            page, next_url = self._page(endpoint, course_id, index, url)
            pages.append(page)
            if next_url is None:
                return pages
            if next_url in seen:
                raise self._payload_error(endpoint, url, index, f"links rel=next back to {next_url}, read before")
            if (earlier := repeated.repeats(page.payload, index)) is not None:
                raise self._payload_error(endpoint, url, index, f"repeats page {earlier} with a next link: the "
                                          "server ignores the cursor, so paging would never end")  # fmt: skip
            url = next_url
        raise RequestTarget(self.connection_id, endpoint, url).error(
            LmsClientError, f"not sent: {self.max_pages} pages read (max_pages) and the listing still had a next link"
        )

    def _page(self, endpoint: str, course_id: int | None, index: int, url: str) -> tuple[RawPage, str | None]:
        target = RequestTarget(self.connection_id, endpoint, url)
        self._transport.denied = None
        try:
            # params=None: the URL already holds its query, and httpx would replace it with an empty mapping's.
            response, attempts = get_with_retries(self._http, target, None, self.retry, self.stats,  # type: ignore[arg-type]
                                                  sleep=self._sleep, secret=self._token)  # fmt: skip
        except LmsAuthError as err:
            denied = self._transport.denied
            if denied is None or str(denied.request.url) != url:
                raise
            if endpoint == "courses":
                raise self._account_error(LmsAuthError, url, index, denied) from None
            if course_id is None or err.status not in (401, 403):
                raise
            logger.info("%s: not readable with this token (HTTP %s unauthorized)", target.describe(), err.status)
            return self._raw(endpoint, course_id, index, denied, [], 1), None
        except LmsFetchError as err:
            if endpoint == "courses" and err.status == 404:
                raise self._account_error(LmsFetchError, url, index, None) from None
            raise
        items = self._items(endpoint, response, index)
        self.stats.add(pages=1, items=len(items))
        logger.debug("%s: %d items in %d attempt(s)", target.describe(), len(items), attempts)
        page = self._raw(endpoint, course_id, index, response, items, attempts)
        return page, self._next_url(endpoint, response, index)

    def _items(self, endpoint: str, response: httpx.Response, index: int) -> list[dict]:
        """The page's items, refusing anything but a JSON array of objects."""
        url = str(response.request.url)
        try:
            body = response.json()
        except ValueError:
            snippet = server_text(response.text, self._token)
            raise self._payload_error(endpoint, url, index, f"answered HTTP {response.status_code} with a body "
                                      f"that is not JSON: {snippet!r}") from None  # fmt: skip
        if not isinstance(body, list):
            raise self._payload_error(endpoint, url, index, f"answered a JSON {type(body).__name__}, not a list")
        if not all(isinstance(item, dict) for item in body):
            raise self._payload_error(endpoint, url, index, "answered a list holding items that are not objects")
        return body

    def _next_url(self, endpoint: str, response: httpx.Response, index: int) -> str | None:
        """The rel="next" URL, absolute. One to another origin is refused by the guard (``clients.guard``) before
        the token is sent there."""
        link = response.links.get("next")
        return None if link is None else str(response.request.url.join(link["url"]))

    def _raw(self, endpoint: str, course_id: int | None, index: int, response: httpx.Response, items: list[dict],
             attempts: int) -> RawPage:  # fmt: skip
        """A page as fetched: what was asked (URL and the parameters in it), what came back, and when."""
        params = sent_params(response.request.url, always_list=lambda name: name.endswith("[]"))
        return RawPage(endpoint, params, response.status_code, response.text, items, datetime.now(UTC),
                       page_index=index, attempts=attempts, course_id=course_id, url=str(response.request.url))

    def _account_error(
        self, cls: type[LmsFetchError], url: str, index: int, denied: httpx.Response | None
    ) -> LmsFetchError:
        """The course listing refused: the token lacks ``read_course_list`` on the account (401 with Canvas's
        permission body), or the account does not exist (404). Both name ``options.account_id``."""
        account = f"options.account_id {self.account_id!r}"
        if denied is None:
            status, detail = 404, (f"answered HTTP 404: no such account on this Canvas ({account}); use self (the "
                                   "root account), an account id or sis_account_id:<id>")  # fmt: skip
        else:
            status = denied.status_code
            detail = (f"refused with HTTP {status} ({_denial_message(denied.content, self._token)!r}): the token "
                      f"may not list the courses of account {self.account_id!r} ({account}); its user needs the "
                      f"account permission {COURSE_LIST_PERMISSION} ('Courses - view list', an account admin's) "
                      "on that account")  # fmt: skip
        return cls(f"connection {self.connection_id!r}: GET {url} (courses page {index}) {detail}",
                   connection_id=self.connection_id, endpoint="courses", status=status)  # fmt: skip

    def _payload_error(self, endpoint: str, url: str, index: int, detail: str) -> LmsPayloadError:
        return LmsPayloadError(f"connection {self.connection_id!r}: GET {url} ({endpoint} page {index}) {detail}",
                               connection_id=self.connection_id, endpoint=endpoint)  # fmt: skip


def listed_course_ids(pages: Sequence[RawPage], connection_id: str) -> list[int]:
    """Canvas ids of the courses on the course pages, in listing order, each once (a course can come twice when
    the listing shifts while it is paged)."""
    ids: dict[int, None] = {}
    for page in pages:
        if page.endpoint != "courses":
            continue
        for position, item in enumerate(page.items):
            course_id = item.get("id")
            if not isinstance(course_id, int) or isinstance(course_id, bool):
                raise LmsPayloadError(
                    f"connection {connection_id!r}: GET {page.url} (courses page {page.page_index}) item "
                    f"{position} has no integer id: {course_id!r}", connection_id=connection_id, endpoint="courses",
                )  # fmt: skip
            ids[course_id] = None
    return list(ids)


def rate_limit_headroom(response: httpx.Response) -> int | None:
    """How many requests may be in flight, from ``X-Rate-Limit-Remaining`` (None without one: no throttling here).

    The header is the room left under the high-water mark with the requests now in flight already charged; each
    new one takes ``UP_FRONT_COST`` of it while it runs. Using half the room keeps every request admitted while the
    room lasts; with less than two requests' worth left, one at a time, which Canvas's throttling doc says is
    unlikely ever to be throttled.
    """
    try:
        remaining = float(response.headers["X-Rate-Limit-Remaining"])
    except (KeyError, ValueError):
        return None
    return max(1, int(remaining // (2 * UP_FRONT_COST)))


def _denial_message(body: bytes, secret: str) -> str:
    """The first error message of Canvas's permission body, fit for an error message."""
    errors = json.loads(body).get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    return server_text(str(first.get("message", "unauthorized")), secret)


def _is_permission_denial(body: bytes) -> bool:
    """Canvas's permission error: ``{"status": "unauthorized", "errors": [...]}``."""
    try:
        payload = json.loads(body)
    except ValueError:
        return False
    return isinstance(payload, dict) and payload.get("status") == "unauthorized"
