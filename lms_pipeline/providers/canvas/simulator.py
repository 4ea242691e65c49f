"""The simulated Canvas LMS REST API (docs/providers.md §4, §9.3) as a WSGI app, over the same worlds as the Unified.to
app.

One app serves several connections: ``/canvas/{connection_id}/api/v1/...`` selects the world, and each connection
has its own bearer token. Endpoints: ``GET /accounts/:account_id/courses`` (the institution's courses, endpoint
``courses``: numbered pages without ``rel="last"``, the account endpoint's own ``state[]`` values),
``GET /accounts/:account_id`` (``account``), ``:account_id`` being ``self`` or the root account's id 1, and
``GET /accounts`` (``accounts``: the accounts the token's user administers, none for a teacher);
``GET /courses`` (endpoint ``user_courses``: only the token user's own courses, as on real Canvas);
``GET /courses/:id/enrollments`` (bookmark pages, ``type[]``, ``state[]``) and ``GET /courses/:id/sections``; for
grades (§4.5, §4.7, §4.8) ``GET /courses/:id/assignments`` and ``GET /courses/:id/grading_standards`` (numbered
pages) and ``GET /courses/:id/students/submissions`` (flat, bookmark pages by submission id).

Whose token (§9.3, accounts_controller.rb ``courses_api``): by default the connection's token is an account
admin's, holding ``read_course_list`` on the root account; its user also teaches a handful of courses
(``OWN_COURSES``, the first ones created), and ``GET /courses`` lists only those, whatever the institution's size.
With ``account_admin=False`` it is a plain teacher's token: the account endpoints answer Canvas's 401
``{"status": "unauthorized", ...}`` (no ``WWW-Authenticate``: the user is known, ``render_json_unauthorized``), and
every course but its own answers the roster permission refusal below.

Query strings are parsed as Rack does (lib/rack/query_parser.rb, §9.3): ``k=a&k=b`` reads ``"b"``,
``k[]=a&k[]=b`` reads ``["a", "b"]``, and ``k[]`` after a plain ``k`` is a 400. Each parameter is then read the way
its controller reads it: ``state``, ``type`` and ``include`` as ``Array(...)`` (a plain value works too), but the
account listing's ``enrollment_type``, ``by_teachers`` and ``by_subaccounts`` only as arrays, so
``enrollment_type=student`` is silently ignored. An unknown ``state`` on the account listing or the enrollments
matches nothing (a SQL ``IN``), as on Canvas. Link URLs carry the request's other parameters re-encoded the Rails
way (``to_query``: sorted, arrays as ``k[]=``), then ``page`` and ``per_page``.

Canvas behaviours simulated (the checklist at the end of docs/providers.md): ``per_page`` defaults to 10 and is
clamped to 100 (a non-positive or non-numeric value means the default, as in lib/api.rb); ``Link`` URLs are
absolute and opaque, enrollments page by ``page=bookmark:<base64 of the last key>`` and never offer ``rel="last"``;
a leaky bucket per token with ``X-Request-Cost`` on every response and ``X-Rate-Limit-Remaining`` while throttling
is on, throttled answers being 403 + ``403 Forbidden (Rate Limit Exceeded)`` (legacy) or 429; 401 +
``WWW-Authenticate`` for a bad token; every ``sis_*`` field dropped when the token lacks SIS permission; the
enrollment state filter defaults to active + invited. A course whose roster the world does not expose answers its
enrollments and submissions with Canvas's permission refusal: 401 ``{"status": "unauthorized", ...}`` as canvas-lms
sends it (or 403 with ``roster_denial_status=403``), which a client must tell apart from a bad token's 401 and from
the throttle 403 by its body.

Requests are checked in this order: path (404), connection (404), rate limit (403/429), method (405), token (401),
as-of date, query string and filters (400), injected fault, account (404) and its permission (401), course (404),
roster permission (``roster_denial_status``, enrollments and submissions; every listing of a course not the token
user's own when the token is not an admin's), page parameter (400).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.providers.canvas.simulator_http import (
    COURSE_ENDPOINTS,
    JSON_TYPE,
    NOT_FOUND,
    TEXT_TYPE,
    HttpError,
    Params,
    as_array,
    as_of_day,
    bookmarked,
    choices,
    numbered,
    only_array,
    parse_route,
    per_page_of,
    rack_params,
    select_submissions,
    submission_query,
)
from lms_pipeline.providers.canvas.simulator_world import (
    ROOT_ACCOUNT_ID,
    TEACHER_USER_BASE,
    CanvasRecords,
    account,
    own_courses,
    teacher_ids,
    workflow_state,
)
from lms_pipeline.simulator.common import (
    DATE_HEADER,
    SimulatedApp,
    logged_params,
    query_params,
    reason,
    request_url,
    respond,
)
from lms_pipeline.simulator.world import CourseView, DateOutOfRangeError, World

ENDPOINTS = ("courses", "user_courses", "accounts", "account", *COURSE_ENDPOINTS)
ENROLLMENT_STATES = ("active", "invited", "creation_pending", "deleted", "rejected", "completed", "inactive")
DEFAULT_ENROLLMENT_STATES = frozenset({"active", "invited"})  # enrollments_api_controller.rb, without state[]
COURSE_STATES = ("unpublished", "available", "completed", "deleted")  # "List your courses" (courses_controller.rb)
# The account listing filters the courses' own workflow_state (accounts_controller.rb courses_api, §9.3); without
# state[] it lists all but deleted, and "all" means every one.
ACCOUNT_COURSE_STATES = ("created", "claimed", "available", "completed", "deleted")
DEFAULT_ACCOUNT_COURSE_STATES = ACCOUNT_COURSE_STATES[:4]
# courses_api's enrollment_type[] values, as the enrollment types they stand for (Course.with_enrollment_types)
ENROLLMENT_TYPE_NAMES = {"teacher": "TeacherEnrollment", "student": "StudentEnrollment", "ta": "TaEnrollment",
                         "observer": "ObserverEnrollment", "designer": "DesignerEnrollment"}  # fmt: skip
NOT_AUTHORIZED = {"status": "unauthorized", "errors": [{"message": "user not authorized to perform that action"}]}


@dataclass(frozen=True)
class CanvasOptions:
    """How the simulated instance behaves. Defaults are Canvas-like: a 700-unit bucket draining 10 units a second,
    a 50-unit pre-flight penalty refunded when the request completes (doc/api/throttling.md)."""

    sis_permission: bool = True  # False: the token may not read SIS data, so every sis_* field is left out
    throttle_status: int = 403  # 403 with the legacy text body, or 429 (Canvas since the Oct-2025 change)
    bucket_capacity: float | None = 700.0  # None: no throttling and no X-Rate-Limit-Remaining header
    leak_rate: float = 10.0  # units drained per second of ``timer``
    preflight_penalty: float = 50.0
    request_cost: float = 1.0  # X-Request-Cost of an admitted request
    # Server time of an admitted request, holding its pre-flight penalty: what makes parallel requests overlap in
    # the bucket (added latency is spent before a request reaches the app, so it does not).
    request_seconds: float = 0.0
    timer: Callable[[], float] = time.monotonic  # inject a fake clock to make the bucket deterministic
    second_section_share: float = 0.0  # share of students with a second active enrollment in another section
    letter_grade_share: float = 0.25  # share of assignments graded as letters (by crc32 of the content id)
    # True: the token is an account admin's (read_course_list on the root account, every roster); False: a
    # teacher's, who may list neither the account's courses nor any course but their own (§9.3).
    account_admin: bool = True
    # How a course listing the token may not read is refused, always with Canvas's permission body: 401, as
    # canvas-lms answers (render_unauthorized_action -> render_json_unauthorized, application_controller.rb), or
    # 403, the other status docs/providers.md §4.1 allows for a permission denial.
    roster_denial_status: int = 401

    def __post_init__(self) -> None:
        if self.throttle_status not in (403, 429):
            raise ValueError(f"throttle_status must be 403 or 429, got {self.throttle_status}")
        if self.roster_denial_status not in (401, 403):
            raise ValueError(f"roster_denial_status must be 401 or 403, got {self.roster_denial_status}")
        rates = (self.leak_rate, self.preflight_penalty, self.request_cost, self.second_section_share,
                 self.letter_grade_share, self.request_seconds)  # fmt: skip
        if min(rates) < 0:
            raise ValueError(f"rates, costs and shares must be >= 0: {self}")


@dataclass
class _Bucket:
    """One token's leaky bucket: requests pour in, the level drains at ``leak_rate`` per second."""

    level: float
    at: float

    def drain(self, now: float, leak_rate: float) -> None:
        self.level, self.at = max(0.0, self.level - (now - self.at) * leak_rate), now


@dataclass
class _Request:
    """One request's context: the log entry it fills and the bucket it was admitted to (None: not admitted)."""

    environ: WSGIEnvironment
    entry: dict
    bucket: tuple[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


class CanvasSimulatorApp(SimulatedApp):
    """Serves each world as Canvas REST at ``/canvas/{connection_id}/api/v1/...`` as of a simulated date.

    ``options`` are CanvasOptions fields (sis_permission, throttle_status, bucket_capacity, ...).
    """

    FAULT_FIELDS = ("endpoint", "course_id")

    def __init__(
        self,
        worlds: Iterable[World],
        tokens: Mapping[str, str],
        clock: Callable[[], date] | None = None,
        **options: object,
    ) -> None:
        super().__init__(worlds, clock)
        if any(w.spec.n_students >= TEACHER_USER_BASE for w in self.worlds.values()):
            raise ValueError(f"worlds must have fewer than {TEACHER_USER_BASE} students (teacher ids start there)")
        self.options = CanvasOptions(**options)  # type: ignore[arg-type]
        self._tokens = dict(tokens)
        self.records = CanvasRecords(self.options.sis_permission, self.options.second_section_share,
                                     self.options.letter_grade_share)  # fmt: skip
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    # ---- WSGI ------------------------------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        entry: dict = {"connection_id": None, "endpoint": None, "course_id": None, "account_id": None,
                       "as_of": None, "status": None, "params": logged_params(query_params(environ)),
                       "url": request_url(environ), "next": None, "throttled": False}  # fmt: skip
        request = _Request(environ, entry)
        content_type = JSON_TYPE
        try:
            status, body = self._handle(request)
        except HttpError as err:
            status, body, content_type = err.status, err.body, err.content_type
            request.headers.update(err.headers)
        if request.bucket is not None and self.options.request_seconds:
            time.sleep(self.options.request_seconds)
        request.headers.update(self._settle(request))
        entry["status"] = status
        self.request_log.append(entry)
        return respond(start_response, status, body, content_type, request.headers)

    def _handle(self, request: _Request) -> tuple[int, bytes]:
        environ, entry = request.environ, request.entry
        route = parse_route(environ.get("PATH_INFO", ""))
        connection_id, endpoint, course_id = route.connection_id, route.endpoint, route.course_id
        entry.update(connection_id=connection_id, endpoint=endpoint, course_id=course_id, account_id=route.account)
        world = self.worlds.get(connection_id)
        if world is None:
            raise HttpError(404, NOT_FOUND)
        self._admit(request, connection_id)
        if environ.get("REQUEST_METHOD") != "GET":
            raise HttpError(405, "Method not allowed", {"Allow": "GET"})
        self._authenticate(environ.get("HTTP_AUTHORIZATION"), connection_id)
        entry["as_of"] = as_of = as_of_day(environ.get(DATE_HEADER)) or self.clock()
        params = rack_params(environ.get("QUERY_STRING", ""))
        base_url = entry["url"].partition("?")[0]
        per_page = per_page_of(params)
        states = choices(params, "state", COURSE_STATES) if endpoint == "user_courses" else None
        query = submission_query(params) if endpoint == "submissions" else None
        fault = self._faults.take(connection_id, endpoint=endpoint, course_id=course_id)
        if fault is not None:
            if fault.body is None:
                raise HttpError(fault.status, "Simulated upstream error")
            return fault.status, fault.payload
        if endpoint in ("account", "courses"):
            self._authorize_account(route.account)
        try:
            views = self.records.course_views(world, as_of)
        except DateOutOfRangeError as err:
            raise HttpError(400, str(err)) from None
        own = own_courses(views)
        if endpoint == "account":
            return 200, json.dumps(account(world)).encode()
        if endpoint == "accounts":  # accounts_controller.rb index: "teachers will get an empty list"
            admin = [account(world)] if self.options.account_admin else []
            items, links = numbered(admin, params, per_page, base_url)
        elif endpoint == "courses":
            listed = self._account_courses(world, views, own, params)
            items, links = numbered([self.records.course(v) for v in listed], params, per_page, base_url, last=False)
        elif endpoint == "user_courses":
            listed = [v for v in own.values() if states is None or workflow_state(v) in states]
            items, links = numbered([self.records.course(v, own=True) for v in listed], params, per_page, base_url)
        else:
            view = views.get(course_id)  # type: ignore[arg-type]
            if view is None:
                raise HttpError(404, NOT_FOUND)
            if not self.options.account_admin and view.number not in own:
                raise self._roster_denied()
            if endpoint == "sections":
                items, links = numbered(self.records.sections(view), params, per_page, base_url)
            elif endpoint in ("assignments", "grading_standards"):
                book = self.records.gradebook(world, view, as_of)
                listed = book.assignments if endpoint == "assignments" else book.standards
                items, links = numbered(listed, params, per_page, base_url)
            elif not view.exposed:
                raise self._roster_denied()
            elif endpoint == "submissions":
                assert query is not None
                keyed = select_submissions(self.records.gradebook(world, view, as_of).submissions, query)
                items, links = bookmarked(keyed, params, per_page, base_url, (int,))
                if not query.include_user:
                    items = [{k: v for k, v in item.items() if k != "user"} for item in items]
            else:
                # enrollments_api_controller.rb reads state and type as Array(...), and filters with SQL IN: an
                # unknown value matches nothing. Without state, only active and invited enrollments are listed.
                wanted = as_array(params, "state") or DEFAULT_ENROLLMENT_STATES
                types = as_array(params, "type")
                keyed = [(key, e) for key, e in self.records.enrollments(world, view, view.number in own)
                         if e["enrollment_state"] in wanted and (not types or e["type"] in types)]  # fmt: skip
                items, links = bookmarked(keyed, params, per_page, base_url)
        entry["next"] = links.get("next")
        request.headers["Link"] = ",".join(f'<{url}>; rel="{rel}"' for rel, url in links.items())
        return 200, json.dumps(items).encode()

    def _roster_denied(self) -> HttpError:
        """A course listing the token may not read: the permission body, no ``WWW-Authenticate`` (the token is
        good), with ``roster_denial_status``."""
        return HttpError(self.options.roster_denial_status, "not authorized", body=json.dumps(NOT_AUTHORIZED).encode())

    def _authorize_account(self, account: str | None) -> None:
        """The account must exist (404), then the token's user must hold ``read_course_list`` on it: Canvas's
        ``authorized_action`` refuses with 401 and the permission body, without ``WWW-Authenticate`` since the
        token itself is good (lib/authentication_system.rb ``render_json_unauthorized``)."""
        if account not in ("self", str(ROOT_ACCOUNT_ID)):
            raise HttpError(404, NOT_FOUND)
        if not self.options.account_admin:
            raise HttpError(401, "not authorized", body=json.dumps(NOT_AUTHORIZED).encode())

    def _account_courses(
        self, world: World, views: Mapping[int, CourseView], own: Mapping[int, CourseView], params: Params
    ) -> list[CourseView]:
        """The account's courses as ``courses_api`` selects them, ordered by id: ``state`` (array or plain value,
        unknown values match nothing), and ``enrollment_type``, ``by_teachers``, ``by_subaccounts`` only when sent
        as arrays (``params[:x].is_a?(Array)``), so ``enrollment_type=student`` filters nothing."""
        states = as_array(params, "state") or list(DEFAULT_ACCOUNT_COURSE_STATES)
        if "all" in states:
            states = list(ACCOUNT_COURSE_STATES)
        listed = [v for v in views.values() if workflow_state(v) in states]
        kinds = only_array(params, "enrollment_type")
        if kinds is not None:
            wanted = {ENROLLMENT_TYPE_NAMES.get(kind, "") for kind in kinds}
            listed = [v for v in listed if wanted & self._enrollment_types(world, v, v.number in own)]
        teachers = only_array(params, "by_teachers")
        if teachers is not None:
            listed = [v for v in listed if teacher_ids(v, v.number in own) & set(teachers)]
        accounts = only_array(params, "by_subaccounts")
        if accounts is not None and str(ROOT_ACCOUNT_ID) not in accounts:
            listed = []  # every course sits in the root account: no sub-account holds any
        return sorted(listed, key=lambda v: v.number)

    def _enrollment_types(self, world: World, view: CourseView, own: bool) -> set[str]:
        """The types of the course's enrollments that count for ``with_enrollment_types`` (not deleted or
        rejected)."""
        return {e["type"] for _, e in self.records.enrollments(world, view, own)
                if e["enrollment_state"] not in ("deleted", "rejected")}  # fmt: skip

    # ---- throttling and auth ---------------------------------------------------------------------------------
    def _admit(self, request: _Request, connection_id: str) -> None:
        """Charge the pre-flight penalty to the caller's bucket, or throttle when it would overflow. The bucket is
        keyed by a hash of the Authorization header: Canvas throttles per access token."""
        opts = self.options
        if opts.bucket_capacity is None:
            return
        credential = request.environ.get("HTTP_AUTHORIZATION", "")
        key = (connection_id, hashlib.sha256(credential.encode()).hexdigest())
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(0.0, opts.timer()))
            bucket.drain(opts.timer(), opts.leak_rate)
            if bucket.level + opts.preflight_penalty > opts.bucket_capacity:
                remaining = opts.bucket_capacity - bucket.level
                headers = {"X-Request-Cost": "0.0", "X-Rate-Limit-Remaining": f"{remaining:.1f}"}
                status = opts.throttle_status
                text = f"{status} {reason(status)} (Rate Limit Exceeded)"
                request.entry["throttled"] = True
                raise HttpError(status, text, headers, body=text.encode(), content_type=TEXT_TYPE)
            bucket.level += opts.preflight_penalty
        request.bucket = key

    def _settle(self, request: _Request) -> dict[str, str]:
        """Refund the pre-flight penalty, charge the request's cost, and say both in the response headers."""
        opts = self.options
        if request.bucket is None:
            return {} if "X-Request-Cost" in request.headers else {"X-Request-Cost": "0.0"}
        with self._lock:
            bucket = self._buckets[request.bucket]
            bucket.drain(opts.timer(), opts.leak_rate)
            bucket.level = max(0.0, bucket.level - opts.preflight_penalty + opts.request_cost)
            remaining = opts.bucket_capacity - bucket.level  # type: ignore[operator]
        return {"X-Request-Cost": f"{opts.request_cost:.1f}", "X-Rate-Limit-Remaining": f"{remaining:.1f}"}

    def _authenticate(self, header: str | None, connection_id: str) -> None:
        if header is None:
            raise HttpError(401, "user authorization required", {"WWW-Authenticate": 'Bearer realm="canvas-lms"'})
        if header != f"Bearer {self._tokens.get(connection_id)}":
            raise HttpError(401, "Invalid access token.", {"WWW-Authenticate": 'Bearer realm="canvas-lms"'})
