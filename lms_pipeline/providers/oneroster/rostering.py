"""Reads one OneRoster 1.2 connection's rosters (docs/providers.md §2, §9.2) with the project's ``OneRosterClient``:
courses, classes, academic sessions (the terms that say when a class runs: OneRoster has no "course is active"
flag), then each class's enrollments (``filter=class.sourcedId='X'``; the standard has no
``/classes/{id}/enrollments``), every listing to its end, as raw pages for ``transforms.oneroster_rosters``.

Paging: ``OneRosterClient.iter_pages`` follows ``Link rel="next"`` and checks ``X-Total-Count``; this module refuses
a next link to another origin before it is followed (the bearer token goes with every request). Some vendors send
neither (totals in the body, as Timeback does, or nothing at all), so when a listing ends without both a next link
and a header total, this module goes on by ``offset`` = items read so far -- never the asked ``limit``, which a
server may cap silently -- until the body's ``totalCount`` is reached, or, without any total, until an empty page
(one request more: a short page proves nothing when the limit may be capped). Every listing is bounded by
``max_pages``, every request by the client's retry budget. The classes' enrollment listings are read side by side
up to the connection's request budget, and a 429 ``server_busy`` pauses them all (``clients.budget``).

A 403 on a class's enrollments means this client may not read that roster (the token read courses and classes, so
it has the rostering scope): it becomes a raw page with status 403 and the imsx body, for the normalizer to mark the
course ``not_exposed``; it is not retried and not raised. A 403 anywhere else (no rostering scope) and a 401 that a
fresh token does not cure raise ``LmsAuthError``.

A raw page: ``{endpoint, course_id, page_index, url, params, status, payload, total, fetched_at}`` -- ``payload`` is
the JSON text of the page's items (the imsx body for a 403), ``total`` the header or body total (None when neither
was sent), ``course_id`` the course of the class whose enrollments were asked (None for courses and classes). The
client secret and tokens travel in headers only and are scrubbed from any payload and error this module builds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime

import httpx

from lms_pipeline.providers.base import RawPage
from lms_pipeline.providers.http import (
    BudgetTransport,
    FetchStats,
    LmsAuthError,
    LmsClientError,
    LmsPayloadError,
    RequestBudget,
    RetrySettings,
    guarded_transport,
    run_bounded,
)
from lms_pipeline.providers.oneroster.client import OneRosterClient

logger = logging.getLogger(__name__)

ROSTER_SCOPES = ("roster-core.readonly",)
DATE_HEADER = "X-Simulated-Date"


class _Recorder(httpx.BaseTransport):
    """Keeps each thread's last GET response, and every bearer token sent.

    ``iter_pages`` hands back items only; this module also needs a page's body (totals in the body), a refused
    page's imsx body, and the tokens to scrub from what it stores. Each thread reads one listing at a time, so its
    last answer is enough.
    """

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner
        self._local = threading.local()
        self.tokens: set[str] = set()

    @property
    def last(self) -> httpx.Response | None:
        return getattr(self._local, "last", None)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.method == "GET":
            response.read()  # small JSON pages; the client reads the same, already-read body
            self._local.last = response
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if token:
                self.tokens.add(token)  # set.add is atomic: threads may add at once
        return response

    def close(self) -> None:
        self._inner.close()


class OneRosterRosterReader:
    """Reads one OneRoster connection's rosters. ``base_url`` is the root holding ``/oauth/token`` and ``/ims/...``
    (the simulator's ``http://127.0.0.1:port/oneroster/{connection_id}``); ``simulated_date`` sends
    ``X-Simulated-Date`` (simulator); ``max_concurrent_requests`` classes' enrollments are read at once (``budget``).
    Owns its ``OneRosterClient`` (``client``): close it, or use ``with``."""

    def __init__(
        self,
        connection_id: str,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetrySettings = RetrySettings(),  # noqa: B008 (frozen, so sharing the default is safe)
        page_size: int = 100,
        simulated_date: date | None = None,
        max_pages: int = 10_000,
        sleep: Callable[[float], None] = time.sleep,
        scopes: tuple[str, ...] = ROSTER_SCOPES,
        max_concurrent_requests: int = 1,
    ) -> None:
        if not 1 <= page_size <= 100 or max_pages < 1:
            raise ValueError(f"page_size must be 1..100 and max_pages >= 1, got {page_size}, {max_pages}")
        self.connection_id, self.max_pages = connection_id, max_pages
        self._secret = client_secret
        self._origin = httpx.URL(base_url)
        self._recorder = _Recorder(guarded_transport(connection_id, base_url, retry, client_secret, transport))
        self.budget = RequestBudget(connection_id, max_concurrent_requests, retry, sleep=sleep)
        headers = {DATE_HEADER: simulated_date.isoformat()} if simulated_date is not None else None
        self.client = OneRosterClient(connection_id, base_url, client_id, client_secret, scopes=scopes,
                                      transport=BudgetTransport(self._recorder, self.budget), retry=retry,
                                      page_size=page_size, headers=headers, max_pages=max_pages,
                                      sleep=sleep)  # fmt: skip

    def __repr__(self) -> str:
        return f"OneRosterRosterReader(connection_id={self.connection_id!r})"

    @property
    def stats(self) -> FetchStats:
        return self.client.stats

    @property
    def token_requests(self) -> int:
        return self.client.token_requests

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OneRosterRosterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- listings ---------------------------------------------------------------------------------------------
    def roster_pages(self) -> list[RawPage]:
        """Courses, classes, academic sessions, then every listed class's enrollments: all or nothing (any failure
        raises), except a class whose roster this client may not read (a status-403 page)."""
        pages = self.course_pages()
        classes = self.class_pages()
        pages += classes + self.session_pages()
        tasks = [(lambda c=class_id, k=course_id: self.enrollment_pages(c, k))
                 for class_id, course_id in listed_classes(classes, self.connection_id)]  # fmt: skip
        return pages + [page for listing in run_bounded(tasks, self.budget) for page in listing]

    def course_pages(self) -> list[RawPage]:
        return self._listing("courses", {}, None)

    def class_pages(self) -> list[RawPage]:
        return self._listing("classes", {}, None)

    def session_pages(self) -> list[RawPage]:
        """Every academic session (terms, semesters, school years): a class's ``terms`` and a course's
        ``schoolYear`` may name any type, so ``/terms`` alone is not enough."""
        return self._listing("academicSessions", {}, None)

    def enrollment_pages(self, class_id: str, course_id: str | None = None) -> list[RawPage]:
        """One class's enrollments (every role and status: the normalizer decides who is enrolled)."""
        if "'" in class_id:
            raise ValueError(f"class id {class_id!r} cannot be quoted in a OneRoster filter")
        return self._listing("enrollments", {"filter": f"class.sourcedId='{class_id}'"}, course_id, refusable=True)

    def changed_enrollment_pages(self, since: datetime) -> list[RawPage]:
        """Enrollments modified after ``since`` (``dateLastModified>``), ``tobedeleted`` ones included where the
        provider keeps them; a provider whose deleted rows vanish needs a full read to see drops."""
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._listing("enrollments", {"filter": f"dateLastModified>'{stamp}'"}, None)

    # ---- paging -----------------------------------------------------------------------------------------------
    def _listing(
        self, endpoint: str, params: dict[str, str], course_id: str | None, refusable: bool = False
    ) -> list[RawPage]:
        """Every page of one listing: along Link headers while the server gives them, then on by offset until a
        total is reached or an empty page ends it (module docstring). ``refusable``: a 403 is a page, not an error."""
        pages: list[RawPage] = []
        read = 0
        while len(pages) < self.max_pages:
            asked = params if not pages else {**params, "offset": str(read)}
            last: RawPage | None = None
            body_total: int | None = None
            try:
                for page in self.client.iter_pages("rostering", endpoint, asked):
                    body_total = self._body_total(page) if page.total is None else None
                    pages.append(self._raw(endpoint, course_id, len(pages), page, body_total))
                    read, last = read + len(page.items), page
                    self._check_next(page, endpoint, course_id, len(pages) - 1)  # before iter_pages follows it
            except LmsAuthError as err:
                refused = self._refused(endpoint, course_id, len(pages)) if refusable and err.status == 403 else None
                if refused is None:
                    raise
                logger.info("connection %r: GET %s refused (HTTP 403): roster not exposed", self.connection_id,
                            refused.url)  # fmt: skip
                return [*pages, refused]
            except LmsPayloadError as err:
                raise self._at_page(err, endpoint, course_id, len(pages)) from err
            if last is None or last.total is not None:  # X-Total-Count: iter_pages checked the count
                return pages
            if body_total is not None and read >= body_total:
                return pages
            if not last.items:
                if body_total is None:
                    return pages
                detail = f"is empty after {read} items, but the body's totalCount is {body_total}"
                raise self._error(LmsPayloadError, endpoint, course_id, len(pages) - 1, detail)
        detail = f"not sent: {self.max_pages} pages read (max_pages) and the listing had not ended"
        raise self._error(LmsClientError, endpoint, course_id, len(pages), detail)

    def _check_next(self, page: RawPage, endpoint: str, course_id: str | None, index: int) -> None:
        """Refuse a ``Link rel="next"`` that leaves the configured origin: the client sends the bearer token with
        every request, so following it would hand the token to another host."""
        if page.next_url is None:
            return
        target = httpx.URL(page.url).join(page.next_url)
        if (target.scheme, target.host, target.port) != (self._origin.scheme, self._origin.host, self._origin.port):
            where = f"{target.scheme}://{target.host}" + (f":{target.port}" if target.port else "")  # no userinfo
            detail = f"links rel=next to another origin ({where}); not followed"
            raise self._error(LmsPayloadError, endpoint, course_id, index, self._scrub(detail))

    def _body_total(self, page: RawPage) -> int | None:
        """``totalCount`` from the page's body, where vendors that send no headers put it."""
        response = self._recorder.last
        if response is None or str(response.request.url) != page.url:
            return None
        body = response.json()  # the client parsed this same body already
        total = body.get("totalCount") if isinstance(body, dict) else None
        return total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None

    def _raw(self, endpoint: str, course_id: str | None, index: int, page: RawPage, body_total: int | None) -> RawPage:
        """The client's page, numbered in this listing, with its course, its body total and every token scrubbed."""
        total = page.total if page.total is not None else body_total
        return replace(page, endpoint=endpoint, course_id=course_id, page_index=index, total=total,
                       payload=self._scrub(page.payload))  # fmt: skip

    def _refused(self, endpoint: str, course_id: str | None, index: int) -> RawPage | None:
        """The 403 answer ``get_with_retries`` just refused, as a raw page (None if the last answer is another)."""
        response = self._recorder.last
        if response is None or response.status_code != 403:
            return None
        url = str(response.request.url)
        return RawPage(endpoint, dict(httpx.URL(url).params), 403, self._scrub(response.text), [], datetime.now(UTC),
                       page_index=index, course_id=course_id, url=url)  # fmt: skip

    def _at_page(self, err: LmsPayloadError, endpoint: str, course_id: str | None, index: int) -> LmsPayloadError:
        """The client's error, with the listing, page and full URL it happened on."""
        response = self._recorder.last
        url = str(response.request.url) if response is not None else "?"
        of = f" of course {course_id}" if course_id is not None else ""
        return LmsPayloadError(self._scrub(f"{err} ({endpoint}{of} page {index}: GET {url})"),
                               connection_id=self.connection_id, endpoint=endpoint, offset=err.offset,
                               status=err.status)  # fmt: skip

    def _error(self, cls: type[LmsClientError], endpoint: str, course_id: str | None, index: int,
               detail: str) -> LmsClientError:  # fmt: skip
        response = self._recorder.last
        url = str(response.request.url) if response is not None else "?"
        of = f" of course {course_id}" if course_id is not None else ""
        return cls(f"connection {self.connection_id!r}: GET {url} ({endpoint}{of} page {index}) {detail}",
                   connection_id=self.connection_id, endpoint=endpoint)  # fmt: skip

    def _scrub(self, text: str) -> str:
        for secret in (self._secret, *list(self._recorder.tokens)):
            if secret:
                text = text.replace(secret, "[secret]")
        return text


def listed_classes(pages: Sequence[RawPage], connection_id: str) -> list[tuple[str, str]]:
    """(class sourcedId, course sourcedId) of the classes on the class pages, in listing order, each once."""
    found: dict[str, str] = {}
    for page in pages:
        if page.endpoint != "classes":
            continue
        for position, item in enumerate(page.items):
            class_id, course = item.get("sourcedId"), item.get("course")
            course_id = course.get("sourcedId") if isinstance(course, dict) else None
            if not isinstance(class_id, str) or not class_id or not isinstance(course_id, str) or not course_id:
                raise LmsPayloadError(
                    f"connection {connection_id!r}: GET {page.url} (classes page {page.page_index}) item "
                    f"{position} has no sourcedId or course.sourcedId", connection_id=connection_id,
                    endpoint="classes",
                )  # fmt: skip
            found[class_id] = course_id
    return list(found.items())
