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

How the world becomes enrollments (deterministic, from zlib.crc32 of course and student): every enrolled student has
an active StudentEnrollment in their section; every student who left has one enrollment that is deleted, inactive
or completed; some courses have invited students who are not on the roster; every course has one TeacherEnrollment,
and the token user's own courses a second one (the token user's).

How the world becomes grades: each content of a course is an assignment (id = the integer of the content id's
digits, "cnt-00007-02" -> 702; the world's content id in ``integration_id``, as Canvas has no SIS id to put it in;
100 points possible). A share of them (``letter_grade_share``, a quarter by default, by crc32) are ``letter_grade``
assignments graded with the course's grading standard: Canvas's default scheme, or in a third of the courses a
scheme whose cutoffs (.545, .55, .555, .56) are fractions that binary floats push above their exact value, so only
an exact (Decimal) comparison gives the right letter at those boundaries. Every world activity with an
``assigned_grade`` is one submission, whatever the learner's enrollment state: "87", "84.5%" and "17/20" are graded
scores out of 100 (87.0, 84.5, 85.0), "EX" is excused (no score), "" is submitted and not graded yet, and "pass" is
a graded complete/incomplete-style grade without a score. Students' user ids are their numbers; guests (never on a
roster, no SIS id and no email) are 9,000,000 + their number.

Requests are checked in this order: path (404), connection (404), rate limit (403/429), method (405), token (401),
as-of date, query string and filters (400), injected fault, account (404) and its permission (401), course (404),
roster permission (``roster_denial_status``, enrollments and submissions; every listing of a course not the token
user's own when the token is not an admin's), page parameter (400).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import threading
import time
import zlib
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import NamedTuple
from urllib.parse import parse_qsl, quote_plus, urlencode
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.simulator.common import (
    DATE_HEADER,
    FaultBook,
    RequestLog,
    logged_params,
    parse_as_of,
    query_params,
    reason,
    request_url,
    respond,
)
from lms_pipeline.simulator.world import (
    CourseView,
    DateOutOfRangeError,
    World,
    instructor_name,
    student_id,
    student_name,
)

DEFAULT_PER_PAGE, MAX_PER_PAGE = 10, 100  # Api::PER_PAGE and MAX_PER_PAGE in canvas-lms lib/api.rb
COURSE_ENDPOINTS = ("enrollments", "sections", "assignments", "grading_standards", "submissions")  # /courses/:id/...
ENDPOINTS = ("courses", "user_courses", "accounts", "account", *COURSE_ENDPOINTS)
ENROLLMENT_TYPES = ("StudentEnrollment", "TeacherEnrollment", "TaEnrollment", "DesignerEnrollment",
                    "ObserverEnrollment")  # fmt: skip
ENROLLMENT_STATES = ("active", "invited", "creation_pending", "deleted", "rejected", "completed", "inactive")
DEFAULT_ENROLLMENT_STATES = frozenset({"active", "invited"})  # enrollments_api_controller.rb, without state[]
LEFT_STATES = ("deleted", "inactive", "completed")  # how a student who left the roster shows up
COURSE_STATES = ("unpublished", "available", "completed", "deleted")  # "List your courses" (courses_controller.rb)
# The account listing filters the courses' own workflow_state (accounts_controller.rb courses_api, §9.3); without
# state[] it lists all but deleted, and "all" means every one.
ACCOUNT_COURSE_STATES = ("created", "claimed", "available", "completed", "deleted")
DEFAULT_ACCOUNT_COURSE_STATES = ACCOUNT_COURSE_STATES[:4]
ROOT_ACCOUNT_ID = 1  # every simulated course belongs to the root account; ``self`` names it too
TOKEN_USER_ID = 8_000_000  # the token's own user: above the teachers' ids, below the guests'
OWN_COURSES = 5  # the token user teaches the first five courses created: all that GET /courses lists
# courses_api's enrollment_type[] values, as the enrollment types they stand for (Course.with_enrollment_types)
ENROLLMENT_TYPE_NAMES = {"teacher": "TeacherEnrollment", "student": "StudentEnrollment", "ta": "TaEnrollment",
                         "observer": "ObserverEnrollment", "designer": "DesignerEnrollment"}  # fmt: skip
PAGINATION_EXCLUDED = ("page", "per_page", "access_token", "api_key")  # lib/api.rb EXCLUDE_IN_PAGINATION_LINKS
JSON_TYPE, TEXT_TYPE = "application/json; charset=utf-8", "text/plain; charset=utf-8"
TEACHER_USER_BASE = 1_000_000  # teacher user ids: disjoint from the students' 1..n_students
GUEST_USER_BASE = 9_000_000  # guests' user ids ("gst-00007" -> 9000007): disjoint from students and teachers
POINTS_POSSIBLE = Decimal(100)  # every simulated assignment is out of 100 points
MAX_STUDENT_IDS = 100  # submissions_api_controller.rb: more explicit student_ids[] than this is a 400
# Canvas's default grading scheme (GradingStandard.default_grading_standard), lower bounds as fractions 0-1.
DEFAULT_SCHEME = (("A", 0.94), ("A-", 0.90), ("B+", 0.87), ("B", 0.84), ("B-", 0.80), ("C+", 0.77), ("C", 0.74),
                  ("C-", 0.70), ("D+", 0.67), ("D", 0.64), ("D-", 0.61), ("F", 0.0))  # fmt: skip
# Cutoffs whose float * 100 lands above the exact value (0.545 * 100 == 54.50000000000001): a float comparison gives
# 54.5% the letter below "D-", Canvas's BigDecimal comparison gives "D-".
BOUNDARY_SCHEME = (("A", 0.9), ("B", 0.8), ("C", 0.7), ("C-", 0.56), ("D+", 0.555), ("D", 0.55), ("D-", 0.545),
                   ("F", 0.0))  # fmt: skip
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
NOT_FOUND = "The specified resource does not exist."
NOT_AUTHORIZED = {"status": "unauthorized", "errors": [{"message": "user not authorized to perform that action"}]}

Params = dict[str, str | list[str]]  # a query string as Rack parses it: a plain value or an array
EnrollmentKey = tuple[str, str, int]  # Canvas lists enrollments by type, sortable name, id: the bookmark
SubmissionKey = tuple[int]  # the flat submissions listing is ordered by submission id


class _HttpError(Exception):
    """Ends a request; the body is Canvas's ``{"errors": [{"message": ...}]}`` unless given verbatim."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *,
                 body: bytes | None = None, content_type: str = JSON_TYPE) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.headers, self.content_type = status, headers or {}, content_type
        self.body = body if body is not None else json.dumps({"errors": [{"message": message}]}).encode()


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


@dataclass(frozen=True)
class _SubmissionQuery:
    """The parameters of ``GET /courses/:id/students/submissions`` this app honours."""

    student_ids: frozenset[int] | None  # None: student_ids[]=all; empty: omitted (the caller's own submissions)
    graded_since: datetime | None
    include_user: bool


@dataclass(frozen=True)
class _Gradebook:
    """One course's grade listings on one day, built once: paging asks for the same course many times."""

    assignments: list[dict]
    standards: list[dict]
    submissions: list[tuple[SubmissionKey, dict]]  # sorted by id; each with its ``user``, dropped unless asked


class CanvasSimulatorApp:
    """Serves each world as Canvas REST at ``/canvas/{connection_id}/api/v1/...`` as of a simulated date.

    ``options`` are CanvasOptions fields (sis_permission, throttle_status, bucket_capacity, ...).
    """

    def __init__(
        self,
        worlds: Iterable[World],
        tokens: Mapping[str, str],
        clock: Callable[[], date] | None = None,
        **options: object,
    ) -> None:
        self.worlds = {w.spec.connection_id: w for w in worlds}
        if any(w.spec.n_students >= TEACHER_USER_BASE for w in self.worlds.values()):
            raise ValueError(f"worlds must have fewer than {TEACHER_USER_BASE} students (teacher ids start there)")
        self.options = CanvasOptions(**options)  # type: ignore[arg-type]
        self._tokens = dict(tokens)
        self.clock = clock or (lambda: datetime.now(UTC).date())
        self.request_log = RequestLog()
        self._faults = FaultBook()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._views: OrderedDict[tuple, dict[int, CourseView]] = OrderedDict()
        self._gradebooks: OrderedDict[tuple, _Gradebook] = OrderedDict()
        self._emails: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    # ---- test controls ---------------------------------------------------------------------------------------
    def inject_fault(
        self,
        connection_id: str,
        *,
        status: int = 500,
        body: bytes | str | None = None,
        endpoint: str | None = None,
        course_id: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests (None matches any endpoint or course) with ``status`` and
        ``body`` verbatim, or a Canvas JSON error when ``body`` is None; with status 200 a body makes a malformed
        page. A fault answer carries no Link header, so it ends the listing it lands in."""
        self._faults.add(connection_id, status, body, times, endpoint=endpoint, course_id=course_id)

    def clear_faults(self) -> None:
        self._faults.clear()

    def reset_log(self) -> None:
        self.request_log.reset()

    # ---- WSGI ------------------------------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        entry: dict = {"connection_id": None, "endpoint": None, "course_id": None, "account_id": None,
                       "as_of": None, "status": None, "params": logged_params(query_params(environ)),
                       "url": request_url(environ), "next": None, "throttled": False}  # fmt: skip
        request = _Request(environ, entry)
        content_type = JSON_TYPE
        try:
            status, body = self._handle(request)
        except _HttpError as err:
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
        route = _route(environ.get("PATH_INFO", ""))
        connection_id, endpoint, course_id = route.connection_id, route.endpoint, route.course_id
        entry.update(connection_id=connection_id, endpoint=endpoint, course_id=course_id, account_id=route.account)
        world = self.worlds.get(connection_id)
        if world is None:
            raise _HttpError(404, NOT_FOUND)
        self._admit(request, connection_id)
        if environ.get("REQUEST_METHOD") != "GET":
            raise _HttpError(405, "Method not allowed", {"Allow": "GET"})
        self._authenticate(environ.get("HTTP_AUTHORIZATION"), connection_id)
        entry["as_of"] = as_of = _as_of(environ.get(DATE_HEADER)) or self.clock()
        params = rack_params(environ.get("QUERY_STRING", ""))
        base_url = entry["url"].partition("?")[0]
        per_page = _per_page(params)
        states = _choices(params, "state", COURSE_STATES) if endpoint == "user_courses" else None
        query = _submission_query(params) if endpoint == "submissions" else None
        fault = self._faults.take(connection_id, endpoint=endpoint, course_id=course_id)
        if fault is not None:
            if fault.body is None:
                raise _HttpError(fault.status, "Simulated upstream error")
            return fault.status, fault.payload
        if endpoint in ("account", "courses"):
            self._authorize_account(route.account)
        try:
            views = self._course_views(world, as_of)
        except DateOutOfRangeError as err:
            raise _HttpError(400, str(err)) from None
        own = _own_courses(views)
        if endpoint == "account":
            return 200, json.dumps(_account(world)).encode()
        if endpoint == "accounts":  # accounts_controller.rb index: "teachers will get an empty list"
            admin = [_account(world)] if self.options.account_admin else []
            items, links = _numbered(admin, params, per_page, base_url)
        elif endpoint == "courses":
            listed = self._account_courses(world, views, own, params)
            items, links = _numbered([self._course(v) for v in listed], params, per_page, base_url, last=False)
        elif endpoint == "user_courses":
            listed = [v for v in own.values() if states is None or _workflow_state(v) in states]
            items, links = _numbered([self._course(v, own=True) for v in listed], params, per_page, base_url)
        else:
            view = views.get(course_id)  # type: ignore[arg-type]
            if view is None:
                raise _HttpError(404, NOT_FOUND)
            if not self.options.account_admin and view.number not in own:
                raise self._roster_denied()
            if endpoint == "sections":
                items, links = _numbered(self._sections(view), params, per_page, base_url)
            elif endpoint in ("assignments", "grading_standards"):
                book = self._gradebook(world, view, as_of)
                listed = book.assignments if endpoint == "assignments" else book.standards
                items, links = _numbered(listed, params, per_page, base_url)
            elif not view.exposed:
                raise self._roster_denied()
            elif endpoint == "submissions":
                assert query is not None
                keyed = _select_submissions(self._gradebook(world, view, as_of).submissions, query)
                items, links = _bookmarked(keyed, params, per_page, base_url, (int,))
                if not query.include_user:
                    items = [{k: v for k, v in item.items() if k != "user"} for item in items]
            else:
                # enrollments_api_controller.rb reads state and type as Array(...), and filters with SQL IN: an
                # unknown value matches nothing. Without state, only active and invited enrollments are listed.
                wanted = _as_array(params, "state") or DEFAULT_ENROLLMENT_STATES
                types = _as_array(params, "type")
                keyed = [(key, e) for key, e in self._enrollments(world, view, view.number in own)
                         if e["enrollment_state"] in wanted and (not types or e["type"] in types)]  # fmt: skip
                items, links = _bookmarked(keyed, params, per_page, base_url)
        entry["next"] = links.get("next")
        request.headers["Link"] = ",".join(f'<{url}>; rel="{rel}"' for rel, url in links.items())
        return 200, json.dumps(items).encode()

    def _roster_denied(self) -> _HttpError:
        """A course listing the token may not read: the permission body, no ``WWW-Authenticate`` (the token is
        good), with ``roster_denial_status``."""
        return _HttpError(self.options.roster_denial_status, "not authorized", body=json.dumps(NOT_AUTHORIZED).encode())

    def _authorize_account(self, account: str | None) -> None:
        """The account must exist (404), then the token's user must hold ``read_course_list`` on it: Canvas's
        ``authorized_action`` refuses with 401 and the permission body, without ``WWW-Authenticate`` since the
        token itself is good (lib/authentication_system.rb ``render_json_unauthorized``)."""
        if account not in ("self", str(ROOT_ACCOUNT_ID)):
            raise _HttpError(404, NOT_FOUND)
        if not self.options.account_admin:
            raise _HttpError(401, "not authorized", body=json.dumps(NOT_AUTHORIZED).encode())

    def _account_courses(
        self, world: World, views: Mapping[int, CourseView], own: Mapping[int, CourseView], params: Params
    ) -> list[CourseView]:
        """The account's courses as ``courses_api`` selects them, ordered by id: ``state`` (array or plain value,
        unknown values match nothing), and ``enrollment_type``, ``by_teachers``, ``by_subaccounts`` only when sent
        as arrays (``params[:x].is_a?(Array)``), so ``enrollment_type=student`` filters nothing."""
        states = _as_array(params, "state") or list(DEFAULT_ACCOUNT_COURSE_STATES)
        if "all" in states:
            states = list(ACCOUNT_COURSE_STATES)
        listed = [v for v in views.values() if _workflow_state(v) in states]
        kinds = _only_array(params, "enrollment_type")
        if kinds is not None:
            wanted = {ENROLLMENT_TYPE_NAMES.get(kind, "") for kind in kinds}
            listed = [v for v in listed if wanted & self._enrollment_types(world, v, v.number in own)]
        teachers = _only_array(params, "by_teachers")
        if teachers is not None:
            listed = [v for v in listed if _teacher_ids(v, v.number in own) & set(teachers)]
        accounts = _only_array(params, "by_subaccounts")
        if accounts is not None and str(ROOT_ACCOUNT_ID) not in accounts:
            listed = []  # every course sits in the root account: no sub-account holds any
        return sorted(listed, key=lambda v: v.number)

    def _enrollment_types(self, world: World, view: CourseView, own: bool) -> set[str]:
        """The types of the course's enrollments that count for ``with_enrollment_types`` (not deleted or
        rejected)."""
        return {e["type"] for _, e in self._enrollments(world, view, own)
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
                raise _HttpError(status, text, headers, body=text.encode(), content_type=TEXT_TYPE)
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
            raise _HttpError(401, "user authorization required", {"WWW-Authenticate": 'Bearer realm="canvas-lms"'})
        if header != f"Bearer {self._tokens.get(connection_id)}":
            raise _HttpError(401, "Invalid access token.", {"WWW-Authenticate": 'Bearer realm="canvas-lms"'})

    # ---- the world in Canvas's shapes ------------------------------------------------------------------------
    def _course_views(self, world: World, as_of: date) -> dict[int, CourseView]:
        """The day's courses by Canvas id; cached, as a scan asks for the same day hundreds of times."""
        key = (world.spec.connection_id, as_of, world.churn_fired(as_of)[0])
        with self._lock:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
        views = {v.number: v for v in world.roster_view(as_of)}
        with self._lock:
            self._views[key] = views
            while len(self._views) > 8:
                self._views.popitem(last=False)
        return views

    def _course(self, view: CourseView, own: bool = False) -> dict:
        """Canvas's Course object (it has created_at but no updated_at); in the user's own listing with the
        user's enrollments in it, as ``GET /courses`` gives them."""
        mine = {"enrollments": [{"type": "teacher", "role": "TeacherEnrollment", "role_id": 4,
                                 "user_id": TOKEN_USER_ID, "enrollment_state": "active",
                                 "limit_privileges_to_course_section": False}]} if own else {}  # fmt: skip
        return self._sis({
            "id": view.number, "sis_course_id": view.id, "name": view.name, "course_code": f"C{view.number:05d}",
            "workflow_state": _workflow_state(view), "account_id": ROOT_ACCOUNT_ID,
            "root_account_id": ROOT_ACCOUNT_ID, "enrollment_term_id": 1, "created_at": view.created_at,
            "start_at": None, "end_at": None, **mine,
        })  # fmt: skip

    def _sections(self, view: CourseView) -> list[dict]:
        return [
            self._sis({"id": _number(cls), "name": f"{view.name} - Section {chr(ord('A') + k)}",
                       "course_id": view.number, "sis_section_id": cls, "sis_course_id": view.id,
                       "nonxlist_course_id": None, "start_at": None, "end_at": None})
            for k, (cls, _) in enumerate(view.sections)
        ]  # fmt: skip

    def _enrollments(self, world: World, view: CourseView, own: bool) -> list[tuple[EnrollmentKey, dict]]:
        """Every enrollment of the course, sorted in Canvas's listing order (type, sortable name, id); ``own``: the
        token user teaches it too."""
        sections = [cls for cls, _ in view.sections]
        placed = [(sid, k, "active") for k, (_, members) in enumerate(view.sections) for sid in members]
        share = self.options.second_section_share
        if share and len(sections) > 1:
            placed += [(sid, (k + 1) % len(sections), "active") for sid, k, _ in list(placed)
                       if _hash(view.id, sid, "second") % 1000 < share * 1000]  # fmt: skip
        placed += [(sid, _hash(view.id, sid) % len(sections), LEFT_STATES[_hash(view.id, sid, "left") % 3])
                   for sid in view.dropped]  # fmt: skip
        placed += [(sid, 0, "invited") for sid in _invited(view, world.spec.n_students)]
        rows = [self._student_enrollment(view, sections, sid, k, state) for sid, k, state in placed]
        rows.append(self._teacher_enrollment(view, sections))
        if own:
            user = {"id": TOKEN_USER_ID, "name": "Token User", "sortable_name": "User, Token", "short_name": "Token",
                    "sis_user_id": "tch-token"}  # fmt: skip
            rows.append(self._enrollment(view, sections, 0, user, "TeacherEnrollment", "active"))
        return sorted(rows, key=lambda row: row[0])

    def _student_enrollment(self, view: CourseView, sections: Sequence[str], sid: str, k: int,
                            state: str) -> tuple[EnrollmentKey, dict]:  # fmt: skip
        number = _number(sid)
        first, last = student_name(number)
        user = {"id": number, "name": f"{first} {last}", "sortable_name": f"{last}, {first}", "short_name": first,
                "sis_user_id": sid}  # fmt: skip
        return self._enrollment(view, sections, k, user, "StudentEnrollment", state)

    def _teacher_enrollment(self, view: CourseView, sections: Sequence[str]) -> tuple[EnrollmentKey, dict]:
        name = instructor_name(view.number)
        user = {"id": TEACHER_USER_BASE + view.number, "name": name, "sortable_name": name, "short_name": name,
                "sis_user_id": f"tch-{view.number:05d}"}  # fmt: skip
        return self._enrollment(view, sections, 0, user, "TeacherEnrollment", "active")

    def _enrollment(self, view: CourseView, sections: Sequence[str], k: int, user: dict, kind: str,
                    state: str) -> tuple[EnrollmentKey, dict]:  # fmt: skip
        # Stable ids: one enrollment per (course, section, user); users are below TEACHER_USER_BASE * 2.
        enrollment_id = (view.number * len(ENROLLMENT_TYPES) + ENROLLMENT_TYPES.index(kind)) * 10**8 + k * 10**7
        enrollment_id += user["id"]
        stamp = view.updated_at or view.created_at
        record = self._sis({
            "id": enrollment_id, "user_id": user["id"], "course_id": view.number,
            "course_section_id": _number(sections[k]), "type": kind, "role": kind, "enrollment_state": state,
            "created_at": view.created_at, "updated_at": stamp, "sis_course_id": view.id,
            "sis_section_id": sections[k], "sis_user_id": user["sis_user_id"], "user": self._sis(user),
        })  # fmt: skip
        return (kind, user["sortable_name"], enrollment_id), record

    # ---- grades ----------------------------------------------------------------------------------------------
    def _gradebook(self, world: World, view: CourseView, as_of: date) -> _Gradebook:
        """The course's assignments, grading standard and submissions on ``as_of``; cached per course and day."""
        key = (world.spec.connection_id, as_of, world.churn_fired(as_of)[0], view.number)
        with self._lock:
            if key in self._gradebooks:
                self._gradebooks.move_to_end(key)
                return self._gradebooks[key]
        standard = self._grading_standard(view)
        scheme = [(entry["name"], entry["value"]) for entry in standard["grading_scheme"]]
        contents = [k for k in world.contents(as_of) if view.id in k["course_ids"]]
        assignments = {k["id"]: self._assignment(view, k, standard["id"]) for k in contents}
        emails = self._email_book(world, as_of)
        submissions = sorted(
            (
                self._submission(assignments[a["content_id"]], a, scheme, emails)
                for a in world.activities_of(as_of, view.id)
                if "assigned_grade" in a and a["content_id"] in assignments
            ),
            key=lambda keyed: keyed[0],
        )
        book = _Gradebook(list(assignments.values()), [standard], submissions)
        with self._lock:
            self._gradebooks[key] = book
            while len(self._gradebooks) > 256:
                self._gradebooks.popitem(last=False)
        return book

    @staticmethod
    def _grading_standard(view: CourseView) -> dict:
        """The course's own standard (grading_standards_api_controller.rb), values as fractions 0-1."""
        boundary = _hash(view.id, "scheme") % 3 == 0
        return {
            "id": view.number, "title": "Boundary scheme" if boundary else "Default Grading Scheme",
            "context_type": "Course", "context_id": view.number,
            "grading_scheme": [{"name": name, "value": value}
                               for name, value in (BOUNDARY_SCHEME if boundary else DEFAULT_SCHEME)],
        }  # fmt: skip

    def _assignment(self, view: CourseView, content: dict, standard_id: int) -> dict:
        letter = _hash(content["id"], "letter") % 1000 < self.options.letter_grade_share * 1000
        return {
            "id": _digits(content["id"]), "name": content["name"], "course_id": view.number,
            "points_possible": float(POINTS_POSSIBLE), "grading_type": "letter_grade" if letter else "points",
            "grading_standard_id": standard_id if letter else None, "integration_id": content["id"],
            "published": content["is_active"], "created_at": content["created_at"],
            "updated_at": content["updated_at"], "due_at": None, "assignment_group_id": 1,
            "omit_from_final_grade": False, "post_to_sis": True,
        }  # fmt: skip

    def _submission(self, assignment: dict, activity: dict, scheme: Sequence[tuple[str, float]],
                    emails: Mapping[str, str]) -> tuple[SubmissionKey, dict]:  # fmt: skip
        """One activity's grade as Canvas's Submission object: score out of points_possible, grade as text."""
        learner, given = activity["student_id"], activity["assigned_grade"]
        guest = learner.startswith("gst-")
        user_id = (GUEST_USER_BASE if guest else 0) + _number(learner)
        percent = _percent(given)
        excused = given.strip().upper() == "EX"
        if excused or given.strip() == "":
            score, grade = None, None
        elif percent is None:  # a complete/incomplete-style grade: text without a score
            score, grade = None, given
        else:
            score = percent * POINTS_POSSIBLE / 100
            grade = score_to_grade(percent, scheme) if assignment["grading_type"] == "letter_grade" else _text(score)
        graded = excused or grade is not None
        stamp = activity["updated_at"]
        user = {"id": user_id, "name": f"Guest {_number(learner)}" if guest else " ".join(student_name(user_id)),
                "login_id": emails.get(learner), **({} if guest else {"sis_user_id": learner})}  # fmt: skip
        submission_id = assignment["id"] * 10**7 + user_id
        record = {
            "id": submission_id, "assignment_id": assignment["id"], "user_id": user_id,
            **({} if guest else {"sis_user_id": learner}),
            "score": None if score is None else float(score), "grade": grade,
            "entered_score": None if score is None else float(score), "entered_grade": grade, "excused": excused,
            "late": False, "missing": False, "workflow_state": "graded" if graded else "submitted",
            "submitted_at": activity.get("completed_at", stamp), "graded_at": stamp if graded else None,
            "posted_at": stamp if graded else None, "attempt": 1,
            "grader_id": TEACHER_USER_BASE + assignment["course_id"] if graded else None,
            "user": self._sis(user),
        }  # fmt: skip
        return (submission_id,), self._sis(record)

    def _email_book(self, world: World, as_of: date) -> dict[str, str]:
        """Student id -> login email; the pool is the same every day, so it is read once per connection."""
        connection_id = world.spec.connection_id
        with self._lock:
            book = self._emails.get(connection_id)
        if book is None:
            book = {s["id"]: s["emails"][0]["email"] for s in world.students(as_of) if s.get("emails")}
            with self._lock:
                self._emails[connection_id] = book
        return book

    def _sis(self, record: dict) -> dict:
        """Without SIS permission Canvas leaves every sis_* field out (enrollments_api_controller.rb)."""
        if self.options.sis_permission:
            return record
        return {k: v for k, v in record.items() if not k.startswith("sis_")}


# ---- paging ---------------------------------------------------------------------------------------------------
def _numbered(
    items: list[dict], params: Params, per_page: int, url: str, *, last: bool = True
) -> tuple[list[dict], dict[str, str]]:
    """``page=N`` pages with current/next/prev/first links, and ``last`` where Canvas counts the total (the account
    listing pages with ``total_entries: nil``, so it gives none)."""
    raw = _scalar(params, "page") or "1"
    try:
        page = int(raw)
    except ValueError:
        raise _HttpError(400, f"page must be a number, got {raw!r}") from None
    if page < 1:
        raise _HttpError(400, f"page must be >= 1, got {page}")
    pages = max(1, -(-len(items) // per_page))
    links = {"current": _link(url, params, str(page), per_page)}
    if page < pages:
        links["next"] = _link(url, params, str(page + 1), per_page)
    if page > 1:
        links["prev"] = _link(url, params, str(page - 1), per_page)
    links["first"] = _link(url, params, "1", per_page)
    if last:
        links["last"] = _link(url, params, str(pages), per_page)
    return items[(page - 1) * per_page : page * per_page], links


def _bookmarked(
    keyed: Sequence[tuple[tuple, dict]],
    params: Params,
    per_page: int,
    url: str,
    shape: tuple[type, ...] = (str, str, int),
) -> tuple[list[dict], dict[str, str]]:
    """``page=bookmark:<b64 of the last key read>`` pages: no page numbers, so no ``rel="last"``. ``shape`` is the
    types of the listing's sort key (enrollments: type, sortable name, id)."""
    raw = _scalar(params, "page") or "first"
    start = 0 if raw == "first" else bisect_right([key for key, _ in keyed], _bookmark_key(raw, shape))
    chunk = keyed[start : start + per_page]
    links = {"current": _link(url, params, raw, per_page)}
    if start + per_page < len(keyed):
        links["next"] = _link(url, params, _bookmark(chunk[-1][0]), per_page)
    links["first"] = _link(url, params, "first", per_page)
    return [record for _, record in chunk], links


def _bookmark(key: tuple) -> str:
    return "bookmark:" + base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode().rstrip("=")


def _bookmark_key(raw: str, shape: tuple[type, ...]) -> tuple:
    if not raw.startswith("bookmark:"):
        raise _HttpError(400, f"page must be 'first' or a bookmark, got {raw!r}")
    token = raw.removeprefix("bookmark:")
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, TypeError):
        raise _HttpError(400, "invalid bookmark") from None
    if not isinstance(key, list) or len(key) != len(shape):
        raise _HttpError(400, "invalid bookmark")
    if not all(isinstance(part, kind) and not isinstance(part, bool) for part, kind in zip(key, shape, strict=True)):
        raise _HttpError(400, "invalid bookmark")
    return tuple(key)


def _link(url: str, params: Params, page: str, per_page: int) -> str:
    """A page's URL as lib/api.rb builds it: the request's parameters as Canvas read them (``to_query``: sorted,
    arrays as ``k[]=v``; a repeated plain ``k`` survives only as its last value), then ``page`` and ``per_page``."""
    kept = {k: v for k, v in params.items() if k not in PAGINATION_EXCLUDED}
    return f"{url}?{to_query(kept)}{'&' if kept else ''}{urlencode([('page', page), ('per_page', str(per_page))])}"


def to_query(params: Params) -> str:
    """Rails' ``Hash#to_query`` of Rack-parsed parameters: each key's part escaped, arrays as ``k[]=v`` in order, the
    parts sorted."""
    parts = [
        "&".join(f"{quote_plus(k + '[]')}={quote_plus(v)}" for v in value) if isinstance(value, list)
        else f"{quote_plus(k)}={quote_plus(value)}"
        for k, value in params.items()
        if value != []
    ]  # fmt: skip
    return "&".join(sorted(parts))


# ---- request parsing ------------------------------------------------------------------------------------------
class _Route(NamedTuple):
    connection_id: str
    endpoint: str
    course_id: int | None = None
    account: str | None = None  # the path's :account_id, as given ("self", "1", ...)


def _route(path: str) -> _Route:
    """The route of ``/canvas/{connection}/api/v1/<path>``: ``accounts`` (accounts), ``accounts/:id`` (account),
    ``accounts/:id/courses`` (courses: the account's), ``courses`` (user_courses: the token user's own),
    ``courses/:id/{enrollments,sections,assignments,grading_standards}`` and ``courses/:id/students/submissions``
    (submissions)."""
    parts = path.strip("/").split("/")
    if len(parts) < 5 or parts[0] != "canvas" or parts[2:4] != ["api", "v1"]:
        raise _HttpError(404, NOT_FOUND)
    connection, rest = parts[1], parts[4:]
    if rest == ["accounts"]:
        return _Route(connection, "accounts")
    if rest[0] == "accounts" and len(rest) in (2, 3) and rest[1] and rest[2:] in ([], ["courses"]):
        return _Route(connection, "courses" if len(rest) == 3 else "account", account=rest[1])
    if rest == ["courses"]:
        return _Route(connection, "user_courses")
    if rest[0] != "courses" or len(rest) < 3 or not rest[1].isdigit():
        raise _HttpError(404, NOT_FOUND)
    if len(rest) == 3 and rest[2] in COURSE_ENDPOINTS and rest[2] != "submissions":
        return _Route(connection, rest[2], int(rest[1]))
    if rest[2:] == ["students", "submissions"]:
        return _Route(connection, "submissions", int(rest[1]))
    raise _HttpError(404, NOT_FOUND)


def rack_params(query: str) -> Params:
    """A query string as Rack parses it (lib/rack/query_parser.rb, docs/providers.md §9.3): ``k=v`` sets a string,
    so a repeated ``k`` keeps only its last value; ``k[]=v`` appends to an array; ``k[]`` after a plain ``k`` is
    Rack's ParameterTypeError, a 400 in Rails. Other bracketed names are kept as they are (Canvas's list endpoints
    read none)."""
    params: Params = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.endswith("[]") and len(name) > 2:
            current = params.setdefault(name[:-2], [])
            if not isinstance(current, list):
                raise _HttpError(400, f"Invalid query parameters: expected Array (got String) for param `{name[:-2]}'")
            current.append(value)
        else:
            params[name] = value
    return params


def _scalar(params: Params, name: str) -> str | None:
    """A parameter read as a plain value (``params[:x].to_i`` and the like): an array reads as absent."""
    value = params.get(name)
    return value if isinstance(value, str) else None


def _as_array(params: Params, name: str) -> list[str] | None:
    """A parameter read as Ruby's ``Array(params[:x])``: a plain value or an array; None when absent."""
    value = params.get(name)
    return None if value is None else [value] if isinstance(value, str) else value


def _only_array(params: Params, name: str) -> list[str] | None:
    """A parameter Canvas reads only ``if params[:x].is_a?(Array)``: sent plain (``x=v``), it is ignored."""
    value = params.get(name)
    return value if isinstance(value, list) else None


def _per_page(params: Params) -> int:
    """lib/api.rb: a missing, non-numeric or non-positive per_page means the default; above the max, the max."""
    try:
        per_page = int(_scalar(params, "per_page") or 0)
    except ValueError:
        per_page = 0
    return DEFAULT_PER_PAGE if per_page <= 0 else min(per_page, MAX_PER_PAGE)


def _choices(params: Params, name: str, allowed: Sequence[str]) -> frozenset[str] | None:
    """The values of a filter (``name[]`` or plain ``name``); None when absent (the endpoint's default applies)."""
    values = _as_array(params, name)
    if values is None:
        return None
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise _HttpError(400, f"{name}[] must be among {', '.join(allowed)}; got {', '.join(unknown)}")
    return frozenset(values)


def _submission_query(params: Params) -> _SubmissionQuery:
    """student_ids[] (``all``, or at most 100 integer ids; omitted: the caller's own, none for a teacher token),
    graded_since (ISO 8601 with a time and zone, else 400) and include[] (unknown values ignored, as Canvas does)."""
    raw_ids = _as_array(params, "student_ids") or []
    student_ids: frozenset[int] | None
    if "all" in raw_ids:
        student_ids = None
    elif len(raw_ids) > MAX_STUDENT_IDS:
        raise _HttpError(400, "too many students", body=json.dumps({"error": "too many students"}).encode())
    elif not all(value.isdigit() for value in raw_ids):
        raise _HttpError(400, f"student_ids[] must be 'all' or user ids, got {sorted(set(raw_ids))[:3]}")
    else:
        student_ids = frozenset(int(value) for value in raw_ids)
    since = _scalar(params, "graded_since")
    graded_since = None
    if since is not None:
        try:
            graded_since = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            graded_since = None
        if graded_since is None or "T" not in since or graded_since.tzinfo is None:
            raise _HttpError(400, f"graded_since must be an ISO 8601 time (YYYY-MM-DDTHH:MM:SSZ), got {since!r}")
    return _SubmissionQuery(student_ids, graded_since, "user" in (_as_array(params, "include") or []))


def _select_submissions(
    keyed: list[tuple[SubmissionKey, dict]], query: _SubmissionQuery
) -> list[tuple[SubmissionKey, dict]]:
    """The submissions the query asks for: its students, graded at or after graded_since."""
    ids, since = query.student_ids, query.graded_since
    if ids is None and since is None:
        return keyed
    return [
        (key, s) for key, s in keyed
        if (ids is None or s["user_id"] in ids)
        and (since is None or (s["graded_at"] is not None and _utc(s["graded_at"]) >= since))
    ]  # fmt: skip


def _as_of(value: str | None) -> date | None:
    try:
        return parse_as_of(value)
    except ValueError as err:
        raise _HttpError(400, str(err)) from None


# ---- small helpers --------------------------------------------------------------------------------------------
def _workflow_state(view: CourseView) -> str:
    return "available" if view.is_active else "completed"


def _own_courses(views: Mapping[int, CourseView]) -> dict[int, CourseView]:
    """The courses the token's user teaches: the first ``OWN_COURSES`` created (``views`` is in creation order)."""
    return dict(list(views.items())[:OWN_COURSES])


def _teacher_ids(view: CourseView, own: bool) -> set[str]:
    """User ids (as text, as ``by_teachers[]`` sends them) of the course's teachers."""
    return {str(TEACHER_USER_BASE + view.number), *([str(TOKEN_USER_ID)] if own else [])}


def _account(world: World) -> dict:
    """The root account, as ``GET /accounts/:id`` shows it (accounts_controller.rb ``show``)."""
    return {"id": ROOT_ACCOUNT_ID, "name": f"{world.spec.connection_id} (simulated root account)",
            "uuid": f"sim{zlib.crc32(world.spec.connection_id.encode()):08x}", "parent_account_id": None,
            "root_account_id": None, "workflow_state": "active", "default_time_zone": "Etc/UTC"}  # fmt: skip


def _number(world_id: str) -> int:
    """Canvas's integer id from a world id: "stu-00042" -> 42, "cls-00007" -> 7."""
    return int(world_id.rsplit("-", 1)[1])


def _digits(world_id: str) -> int:
    """Canvas's integer id of a content: the digits of its world id, "cnt-00007-02" -> 702 (course, index)."""
    return int("".join(ch for ch in world_id if ch.isdigit()))


def _percent(grade: str) -> Decimal | None:
    """The percent a world grade string means ("87", "84.5%", "17/20" -> 85), exactly; None when it has none."""
    text = grade.strip()
    if text.endswith("%") and _NUMBER.fullmatch(text[:-1].strip()):
        return Decimal(text[:-1].strip())
    top, slash, bottom = text.partition("/")
    if slash and _NUMBER.fullmatch(top.strip()) and _NUMBER.fullmatch(bottom.strip()) and Decimal(bottom) > 0:
        return Decimal(top) * 100 / Decimal(bottom)
    return Decimal(text) if _NUMBER.fullmatch(text) else None


def score_to_grade(percent: Decimal, scheme: Sequence[tuple[str, float]]) -> str:
    """Canvas's GradingStandard#score_to_grade: a negative percent counts as 0; the letter is the entry with the
    highest lower bound <= percent, else the lowest entry. Bounds are fractions 0-1 compared exactly (BigDecimal in
    Canvas, Decimal of their shortest text here): 0.545 means 54.5, not 54.50000000000001."""
    percent = max(percent, Decimal(0))
    bounds = sorted(((Decimal(str(value)) * 100, name) for name, value in scheme), reverse=True)
    return next((name for bound, name in bounds if percent >= bound), bounds[-1][1])


def _text(number: Decimal) -> str:
    """A score as Canvas writes it in ``grade``: 87 -> "87", 84.5 -> "84.5"."""
    return format(number.normalize(), "f")


def _utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _hash(*parts: str) -> int:
    return zlib.crc32("|".join(parts).encode())


def _invited(view: CourseView, n_students: int) -> list[str]:
    """0-2 students invited to the course who are not (and never were) on its roster: pending, not enrolled."""
    on_roster = set(view.enrolled) | set(view.dropped)
    count, invited = _hash(view.id, "invited") % 3, []
    for k in range(32):  # bounded: a crowded pool may leave fewer than ``count``
        if len(invited) == count:
            break
        sid = student_id(1 + _hash(view.id, "invited", str(k)) % n_students)
        if sid not in on_roster and sid not in invited:
            invited.append(sid)
    return invited
