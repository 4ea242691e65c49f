"""The simulated Google Classroom API v1 as a WSGI app, serving the same worlds as ``SimulatorApp``.

Paths: ``/classroom/{connection_id}/v1/courses``, ``.../courses/{courseId}/students``,
``.../courses/{courseId}/aliases``, ``.../courses/{courseId}/courseWork`` and
``.../courses/{courseId}/courseWork/{courseWorkId}/studentSubmissions`` (``courseWorkId`` ``-``: every courseWork, as
in the real API); the connection prefix lets several worlds share one server, and ``courseId`` may be an alias
(``d:crs-00001``), as in the real API.

Behaviour follows docs/providers.md §5 and its simulator checklist, and peers-and-user-pains.md item 2:
- ids are opaque numeric strings; the SIS course id is a domain alias (``d:<world course id>``) in the aliases
  sub-collection, since the real Course resource has no alias field;
- ``courseState`` ACTIVE or ARCHIVED, filtered by ``courseStates`` (default: every state but SUSPENDED); courses
  newest-created first;
- paging by ``nextPageToken`` only: ``pageSize`` defaults to 30 and is silently capped at 30; some pages are short
  while a token is still given, and some listings serve an EMPTY page with a token; a token replayed with other
  parameters, a garbage token and an empty-string token answer 400 INVALID_ARGUMENT;
- dropped and invited students are simply absent from students.list (no tombstones); a course whose roster is not
  exposed answers students.list, courseWork and studentSubmissions with 403 PERMISSION_DENIED; without the emails
  scope ``profile.emailAddress`` is absent;
- grades (docs/providers.md §5.3): see "CourseWork and submissions" below;
- 429 RESOURCE_EXHAUSTED from a moving-window limiter per token; Google-shaped error bodies
  ``{"error": {"code", "message", "status"}}``.
Requests are checked in app.py's order: path and connection (404), rate limit (429), method (405), token (401),
as-of date and query (400), injected fault, course (404), roster permission (403) and courseWork (404).

Mid-scan churn (``WorldSpec.churn_share``) is not simulated here: a day is served as its scan starts.

CourseWork and submissions, from the world's contents and activities:
- each content of a course is a PUBLISHED ``ASSIGNMENT`` courseWork with ``maxPoints`` 100, ``title`` its name and
  ``creationTime``/``updateTime`` its timestamps; listed most recently updated first (the discovery document's
  default ``orderBy`` is ``updateTime desc``; ``updateTime``/``dueDate`` with ``asc``/``desc`` are honoured, any
  other field is INVALID_ARGUMENT), filtered by ``courseWorkStates`` (default PUBLISHED). Its id is derived
  reversibly from the content id (``classroom_coursework_id``), and since
  the CourseWork resource has no external-id field, the world content id is also written into ``description`` as
  ``lms-content:<id>``: a simulation convenience standing in for whatever link a deployment keeps (a tag the SIS
  sync writes), which the normalizer reads (else it names the content ``classroom-coursework:<id>``);
- a submission per activity that carries an ``assigned_grade`` key, for learners enrolled that day only: Classroom
  has no guests, and a student removed from a class takes their submissions with them (memory, unverified), so
  guests and dropped students have none. Activities without a grade field have no submission (the real API would
  list a NEW/CREATED one). ``userId`` is ``classroom_user_id``, ``updateTime`` the activity's ``updated_at``;
- the grade (``classroom_submission_grade``): Classroom grades are points out of ``maxPoints`` (a double), so a
  numeric world grade becomes ``assignedGrade`` = its percent ("87" -> 87, "84.5%" -> 84.5, "17/20" -> 85) with
  ``draftGrade`` the same and state RETURNED; "" (handed in, not graded) is TURNED_IN without a grade. Classroom has
  no excused state and no text grades, so "EX", "pass" (and any other text) are RETURNED without any grade: not
  representable, and read as ungraded downstream;
- planted, deterministically by a hash of learner and content, one numeric grade in ``PLANT_EVERY`` each: a real 0
  (the world never grades below 40), a ``draftGrade``-only submission (TURNED_IN: the teacher graded but has not
  returned it, so it is NOT a grade of record), and a pending regrade (RETURNED with ``assignedGrade`` kept and a
  different ``draftGrade``); ``late: true`` on some handed-in work (absent otherwise, as proto3 JSON omits false);
- studentSubmissions are filtered by ``states`` (default all), by the ``courseWorkId`` of the path (404 when the
  course has no such courseWork), by ``userId`` (a user id, an email address, or ``me``: the token's user, no
  student) and by ``late`` (LATE_ONLY, NOT_LATE_ONLY), as the discovery document describes them; courses.list by
  ``studentId`` (only over rosters the caller may see). ``teacherId`` is not simulated and answers
  INVALID_ARGUMENT rather than being ignored. A user named in a filter who does not exist is NOT_FOUND.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from urllib.parse import unquote
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.simulator.common import (
    DATE_HEADER,
    FaultBook,
    RequestLog,
    logged_params,
    parse_as_of,
    query_params,
    respond,
)
from lms_pipeline.simulator.world import CourseView, DateOutOfRangeError, World

MAX_PAGE_SIZE = 30  # larger pageSize values are truncated silently (code-dot-org#17113, Empirical-Core#2834)
COURSE_ID_BASE = 700_000_000_000
USER_ID_BASE = 100_000_000_000
COURSEWORK_ID_BASE = 800_000_000_000  # + course number * 1000 + the content's index in its course
COURSE_STATES = ("ACTIVE", "ARCHIVED", "PROVISIONED", "DECLINED", "SUSPENDED")
DEFAULT_COURSE_STATES = frozenset(COURSE_STATES) - {"SUSPENDED"}
COURSEWORK_STATES = ("PUBLISHED", "DRAFT", "DELETED")
SUBMISSION_STATES = ("NEW", "CREATED", "TURNED_IN", "RETURNED", "RECLAIMED_BY_STUDENT")
ENDPOINTS = ("courses", "students", "aliases", "courseWork", "studentSubmissions")
# endpoint -> (its state filter parameter, the states it accepts, the states listed when none is given)
STATE_FILTERS = {
    "courses": ("courseStates", COURSE_STATES, DEFAULT_COURSE_STATES),
    "courseWork": ("courseWorkStates", COURSEWORK_STATES, frozenset({"PUBLISHED"})),
    "studentSubmissions": ("states", SUBMISSION_STATES, frozenset(SUBMISSION_STATES)),
}
MAX_POINTS = 100
CONTENT_MARKER = "lms-content:"  # courseWork.description carries "lms-content:<world content id>"
PLANT_EVERY = 30  # one numeric grade in PLANT_EVERY is a 0, one more draft-only, one more a pending regrade
GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip
INVALID_ARGUMENT = "Request contains an invalid argument."
NOT_FOUND = "Requested entity was not found."

Params = dict[str, list[str]]


def classroom_course_id(number: int) -> str:
    """The opaque numeric Classroom id of the world's course ``number``."""
    return str(COURSE_ID_BASE + number)


def classroom_user_id(student_id: str) -> str:
    """The opaque numeric Classroom user id of the world's student ``stu-NNNNN``."""
    return str(USER_ID_BASE + int(student_id.removeprefix("stu-")))


def classroom_coursework_id(content_id: str) -> str:
    """The numeric courseWork id of the world's content ``cnt-<course>-<index>``; ``content_id_of`` inverts it."""
    _, course, index = content_id.split("-")
    if int(index) >= 1000:
        raise ValueError(f"content index of {content_id!r} does not fit the courseWork id scheme")
    return str(COURSEWORK_ID_BASE + int(course) * 1000 + int(index))


def content_id_of(coursework_id: str) -> str:
    """The world content id of a courseWork id from ``classroom_coursework_id``."""
    course, index = divmod(int(coursework_id) - COURSEWORK_ID_BASE, 1000)
    return f"cnt-{course:05d}-{index:02d}"


def grade_percent(world_grade: str) -> Decimal | None:
    """The percent a gradebook string states ("87", "84.5%", "17/20"), exactly; None for "", "EX", "pass", text."""
    number = r"([+-]?\d+(?:\.\d+)?)"
    text = world_grade.strip()
    if match := re.fullmatch(number + r"\s*%?", text):
        return Decimal(match.group(1))
    if (match := re.fullmatch(number + r"\s*/\s*" + number, text)) and Decimal(match.group(2)) > 0:
        return Decimal(match.group(1)) * 100 / Decimal(match.group(2))
    return None


def planted(learner: str, content: str) -> str | None:
    """Which planted case a numeric grade cell is: ``zero``, ``draft_only``, ``regrade`` or None (as the world)."""
    slot = zlib.crc32(f"{learner}|{content}|classroom".encode()) % PLANT_EVERY
    return {0: "zero", 1: "draft_only", 2: "regrade"}.get(slot)


def classroom_submission_grade(learner: str, content: str, world_grade: str) -> dict:
    """``state`` and the grade fields of the submission for an activity whose gradebook string is ``world_grade``
    (maxPoints 100, so points are the percent); see the module docstring for the mapping and the planted cases."""
    percent = grade_percent(world_grade)
    if percent is None:  # "" is handed in and waiting; "EX", "pass" and text have no Classroom form
        return {"state": "TURNED_IN" if world_grade.strip() == "" else "RETURNED"}
    case = planted(learner, content)
    points = Decimal(0) if case == "zero" else percent * MAX_POINTS / 100
    if case == "draft_only":
        return {"state": "TURNED_IN", "draftGrade": _json_number(points)}
    draft = points - 5 if points >= 5 else points + 5
    return {"state": "RETURNED", "assignedGrade": _json_number(points),
            "draftGrade": _json_number(draft if case == "regrade" else points)}  # fmt: skip


def _json_number(value: Decimal) -> int | float:
    """A whole number as a JSON integer (87, not 87.0), else the nearest double (84.5)."""
    return int(value) if value == value.to_integral_value() else float(value)


class _HttpError(Exception):
    """Ends a request with a Google error body; ``detail`` only goes to the request log (Google's own messages are
    generic, e.g. every bad page token is just "Request contains an invalid argument.")."""

    def __init__(
        self, status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail, headers or {}


@dataclass(frozen=True)
class _Request:
    """A list request's validated paging state."""

    size: int
    offset: int
    index: int  # page index within the listing: 0 without a token
    fingerprint: int  # what a token issued for this request is bound to


@dataclass(frozen=True)
class _Filters:
    """A listing's other filters, as the discovery document describes them: courseWork ``orderBy``,
    studentSubmissions ``userId`` and ``late``, courses ``studentId``."""

    order: tuple[tuple[str, bool], ...] = (("updateTime", True),)  # (field, descending); "updateTime desc" default
    user: str | None = None
    late: str | None = None  # LATE_ONLY or NOT_LATE_ONLY; None: regardless of lateness
    student: str | None = None


@dataclass(frozen=True)
class _DayView:
    courses: tuple[CourseView, ...]  # newest-created first, as courses.list answers
    by_id: Mapping[str, CourseView]  # by Classroom id and by domain alias


@dataclass(frozen=True)
class _GradeView:
    """One day's courseWork and submissions, by world course id."""

    coursework: Mapping[str, list[dict]]
    submissions: Mapping[str, list[dict]]


class ClassroomSimulatorApp:
    """Serves each world's truth in Classroom API v1 shapes as of a simulated date (``X-Simulated-Date``).

    Options: ``emails_scope`` (False: no ``profile.emailAddress``); ``short_page_every`` (every k-th page of a
    listing carries half a page while still giving a token; 0: never); ``empty_page_every`` (listings whose key
    hashes to 0 modulo k serve an empty page with a token as their second page; 1: every multi-page listing; 0:
    never); ``rate_limit`` requests per ``rate_window`` seconds per token (0: no limit; Google's is 1,200 per 60 s
    per user); ``monotonic`` the limiter's clock.
    """

    def __init__(
        self,
        worlds: Iterable[World],
        tokens: Mapping[str, str],
        clock: Callable[[], date] | None = None,
        *,
        emails_scope: bool = True,
        short_page_every: int = 3,
        empty_page_every: int = 4,
        rate_limit: int = 0,
        rate_window: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(short_page_every, empty_page_every, rate_limit) < 0 or rate_window <= 0:
            raise ValueError("page shape options and rate_limit must be >= 0, rate_window > 0")
        self.worlds = {w.spec.connection_id: w for w in worlds}
        self._tokens = dict(tokens)
        self.clock = clock or (lambda: datetime.now(UTC).date())
        self.emails_scope = emails_scope
        self.short_page_every, self.empty_page_every = short_page_every, empty_page_every
        self.rate_limit, self.rate_window, self._monotonic = rate_limit, rate_window, monotonic
        self.request_log = RequestLog()
        self._faults = FaultBook()
        self._windows: dict[str, deque[float]] = {}
        self._views: OrderedDict[tuple[str, date], _DayView] = OrderedDict()
        self._grade_views: OrderedDict[tuple[str, date], _GradeView] = OrderedDict()
        self._people: dict[str, dict[str, tuple[str, str, str]]] = {}
        self._lock = threading.Lock()

    # ---- test controls ---------------------------------------------------------------------------------------
    def inject_fault(
        self,
        connection_id: str,
        *,
        status: int = 500,
        body: bytes | str | None = None,
        endpoint: str | None = None,
        course_id: str | None = None,
        page: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching requests (None matches any; ``course_id`` is the Classroom id,
        ``page`` the page index a token points at) with ``status`` and ``body`` verbatim, or a Google error when
        ``body`` is None; with status 200 a body makes a malformed page."""
        self._faults.add(connection_id, status, body, times, endpoint=endpoint, course_id=course_id, page=page)

    def clear_faults(self) -> None:
        self._faults.clear()

    def reset_log(self) -> None:
        self.request_log.reset()

    # ---- WSGI ------------------------------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        params = query_params(environ)
        entry: dict = {"connection_id": None, "endpoint": None, "course_id": None, "as_of": None, "status": None,
                       "page_index": None, "items": None, "next_page_token": False, "detail": None,
                       "params": logged_params(params)}  # fmt: skip
        try:
            status, body, headers = self._handle(environ, params, entry)
        except _HttpError as err:
            status, headers, entry["detail"] = err.status, err.headers, err.detail
            body = json.dumps({"error": {"code": err.status, "message": err.message,
                                         "status": GOOGLE_STATUS.get(err.status, "UNKNOWN")}}).encode()  # fmt: skip
        entry["status"] = status
        self.request_log.append(entry)
        return respond(start_response, status, body, "application/json; charset=UTF-8", headers)

    def _handle(self, environ: WSGIEnvironment, params: Params, entry: dict) -> tuple[int, bytes, dict[str, str]]:
        path = environ.get("PATH_INFO", "")
        connection_id, endpoint, course_ref, work_ref = _route(path)
        entry.update(connection_id=connection_id, endpoint=endpoint, course_id=course_ref)
        world = self.worlds.get(connection_id)
        if world is None:
            raise _HttpError(404, NOT_FOUND, f"connection {connection_id} not found")
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        self._throttle(authorization)
        if environ.get("REQUEST_METHOD") != "GET":
            raise _HttpError(405, "Method not allowed", headers={"Allow": "GET"})
        if authorization != f"Bearer {self._tokens.get(connection_id)}":
            raise _HttpError(401, "Request had invalid authentication credentials.")
        entry["as_of"] = as_of = _as_of(environ.get(DATE_HEADER)) or self.clock()
        states = _states(endpoint, params)
        filters = _filters(endpoint, params)
        request = _request(params, f"{path}|{as_of}|{sorted(states)}|{filters}")
        entry["page_index"] = request.index
        fault = self._faults.take(connection_id, endpoint=endpoint, course_id=course_ref, page=request.index)
        if fault is not None:
            if fault.body is None:
                raise _HttpError(fault.status, "Simulated upstream error")
            return fault.status, fault.payload, {}
        try:
            view = self._view(world, as_of)
        except DateOutOfRangeError as err:
            raise _HttpError(400, INVALID_ARGUMENT, str(err)) from None
        key, items = self._items(world, view, endpoint, course_ref, states, as_of, work_ref, filters)
        chunk, next_offset = self._page(items, request, key)
        body: dict = {endpoint: chunk} if chunk else {}  # Google omits an empty repeated field
        if next_offset is not None:
            body["nextPageToken"] = _token(next_offset, request.index + 1, request.fingerprint)
        entry.update(items=len(chunk), next_page_token=next_offset is not None)
        return 200, json.dumps(body).encode(), {}

    def _throttle(self, authorization: str) -> None:
        """Google's per-user quota is a moving average over 60 s (docs/providers.md §5.4): a request is refused
        while the token already has ``rate_limit`` admitted requests in the last ``rate_window`` seconds."""
        if not self.rate_limit:
            return
        now = self._monotonic()
        with self._lock:
            window = self._windows.setdefault(authorization, deque())
            while window and window[0] <= now - self.rate_window:
                window.popleft()
            if len(window) >= self.rate_limit:
                raise _HttpError(429, "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute "
                                 "per user' of service 'classroom.googleapis.com'.")  # fmt: skip
            window.append(now)

    # ---- the world in Classroom's shapes ---------------------------------------------------------------------
    def _view(self, world: World, as_of: date) -> _DayView:
        """The day's courses, cached: every students request of a scan reads the same day."""
        key = (world.spec.connection_id, as_of)
        with self._lock:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
        courses = tuple(reversed(world.roster_view(as_of)))
        by_id = {classroom_course_id(c.number): c for c in courses} | {f"d:{c.id}": c for c in courses}
        view = _DayView(courses, by_id)
        with self._lock:
            self._views[key] = view
            while len(self._views) > 16:
                self._views.popitem(last=False)
        return view

    def _items(
        self,
        world: World,
        view: _DayView,
        endpoint: str,
        course_ref: str | None,
        states: frozenset[str],
        as_of: date,
        work_ref: str | None = None,
        filters: _Filters | None = None,
    ) -> tuple[str, Sequence]:
        """(listing key, every item of the listing): the key picks where the listing's empty page goes."""
        cid = world.spec.connection_id
        filters = filters or _Filters()
        if endpoint == "courses":
            courses = [c for c in view.courses if _state(c) in states]
            if filters.student is not None:
                # Only rosters the caller may see tell who is in a course (assumed: a hidden roster stays hidden).
                learner = self._user(world, as_of, filters.student)
                courses = [c for c in courses if c.exposed and learner in c.enrolled]
            return f"{cid}/courses", [_course(c) for c in courses]
        course = view.by_id.get(course_ref or "")
        if course is None:
            raise _HttpError(404, NOT_FOUND, f"course {course_ref} not found")
        key = f"{cid}/{classroom_course_id(course.number)}/{endpoint}"
        if endpoint == "aliases":
            return key, [{"alias": f"d:{course.id}"}]
        if not course.exposed:
            raise _HttpError(403, "The caller does not have permission", "roster not exposed")
        if endpoint == "students":
            people = self._directory(world, as_of)
            return key, [self._student(course, sid, people[sid]) for sid in course.enrolled]
        grades = self._grades(world, view, as_of)
        work = grades.coursework.get(course.id, [])
        if endpoint == "courseWork":
            return key, _ordered([w for w in work if w["state"] in states], filters.order)
        submissions = grades.submissions.get(course.id, [])
        if work_ref != "-":
            if work_ref not in {w["id"] for w in work}:
                raise _HttpError(404, NOT_FOUND, f"courseWork {work_ref} not found in course {course_ref}")
            submissions = [s for s in submissions if s["courseWorkId"] == work_ref]
        key = f"{cid}/{classroom_course_id(course.number)}/courseWork/{work_ref}/studentSubmissions"  # as the path
        if filters.user is not None:
            learner = self._user(world, as_of, filters.user)
            submissions = [s for s in submissions if learner is not None and s["userId"] == classroom_user_id(learner)]
        if filters.late is not None:
            submissions = [s for s in submissions if bool(s.get("late")) == (filters.late == "LATE_ONLY")]
        return key, [s for s in submissions if s["state"] in states]

    def _user(self, world: World, as_of: date, ref: str) -> str | None:
        """The world student a ``userId``/``studentId`` names: a Classroom user id or an email address; None for
        ``me`` (the token's user, who is no student). Anyone else is NOT_FOUND, as the methods document."""
        if ref == "me":
            return None
        people = self._directory(world, as_of)
        if ref.isdigit() and (sid := f"stu-{int(ref) - USER_ID_BASE:05d}") in people:
            return sid
        by_email = {email: sid for sid, (_, _, email) in people.items()}
        if ref in by_email:
            return by_email[ref]
        raise _HttpError(404, NOT_FOUND, f"user {ref!r} not found")

    def _grades(self, world: World, view: _DayView, as_of: date) -> _GradeView:
        """The day's courseWork and submissions, cached like the day view: a grade scan reads one day many times."""
        key = (world.spec.connection_id, as_of)
        with self._lock:
            if key in self._grade_views:
                self._grade_views.move_to_end(key)
                return self._grade_views[key]
        courses = {c.id: c for c in view.courses}
        coursework: dict[str, list[dict]] = {}
        for content in world.contents(as_of):
            for course_id in content["course_ids"]:
                if course_id in courses:
                    coursework.setdefault(course_id, []).append(_coursework(courses[course_id], content))
        enrolled = {c.id: frozenset(c.enrolled) for c in view.courses}
        submissions: dict[str, list[dict]] = {}
        for activity in world.activities(as_of):
            course_id, learner = activity["course_id"], activity["student_id"]
            if "assigned_grade" in activity and learner in enrolled.get(course_id, ()):
                item = _submission(courses[course_id], activity)
                submissions.setdefault(course_id, []).append(item)
        grades = _GradeView(coursework, submissions)
        with self._lock:
            self._grade_views[key] = grades
            while len(self._grade_views) > 8:
                self._grade_views.popitem(last=False)
        return grades

    def _directory(self, world: World, as_of: date) -> dict[str, tuple[str, str, str]]:
        """student id -> (given name, family name, email), from the world's pool (the same every day)."""
        cid = world.spec.connection_id
        with self._lock:
            if cid in self._people:
                return self._people[cid]
        people = {s["id"]: (s["first_name"], s["last_name"], s["emails"][0]["email"]) for s in world.students(as_of)}
        with self._lock:
            return self._people.setdefault(cid, people)

    def _student(self, course: CourseView, student_id: str, person: tuple[str, str, str]) -> dict:
        user_id = classroom_user_id(student_id)
        given, family, email = person
        profile: dict = {"id": user_id, "name": {"givenName": given, "familyName": family,
                                                 "fullName": f"{given} {family}"}}  # fmt: skip
        if self.emails_scope:
            profile["emailAddress"] = email
        return {"courseId": classroom_course_id(course.number), "userId": user_id, "profile": profile}

    def _page(self, items: Sequence, request: _Request, key: str) -> tuple[list, int | None]:
        """The page at the request's offset and the next page's offset (None: the last page).

        Deterministic quirks (peers-and-user-pains.md item 2): the second page of a chosen listing is empty, and
        every ``short_page_every``-th page is half a page; both still give a token while items remain.
        """
        remaining = len(items) - request.offset
        if request.index == 1 and remaining > 0 and self._empty_listing(key):
            return [], request.offset
        size = request.size
        if self.short_page_every and request.index % self.short_page_every == self.short_page_every - 1:
            size = max(1, size // 2)
        chunk = list(items[request.offset : request.offset + size])
        end = request.offset + len(chunk)
        return chunk, end if end < len(items) else None

    def _empty_listing(self, key: str) -> bool:
        return bool(self.empty_page_every) and zlib.crc32(key.encode()) % self.empty_page_every == 0


def _route(path: str) -> tuple[str, str, str | None, str | None]:
    """(connection id, endpoint, course id or alias, courseWork id or '-') of a known path; anything else is 404."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if len(parts) == 4 and parts[0] == "classroom" and parts[2:] == ["v1", "courses"]:
        return parts[1], "courses", None, None
    if len(parts) >= 6 and parts[0] == "classroom" and parts[2:4] == ["v1", "courses"]:
        if len(parts) == 6 and parts[5] in ("students", "aliases", "courseWork"):
            return parts[1], parts[5], parts[4], None
        if len(parts) == 8 and parts[5] == "courseWork" and parts[7] == "studentSubmissions" and parts[6]:
            return parts[1], "studentSubmissions", parts[4], parts[6]
    raise _HttpError(404, NOT_FOUND, "expected /classroom/{connection_id}/v1/courses[/{courseId}/students|aliases|"
                     "courseWork|courseWork/{courseWorkId}/studentSubmissions]")  # fmt: skip


def _state(course: CourseView) -> str:
    return "ACTIVE" if course.is_active else "ARCHIVED"


def _course(course: CourseView) -> dict:
    """A Course resource; the world's missing timestamps stay missing (real courses always have them)."""
    times = {"creationTime": course.created_at, "updateTime": course.updated_at} if course.updated_at else {}
    return {"id": classroom_course_id(course.number), "name": course.name, **times, "courseState": _state(course)}


def _coursework(course: CourseView, content: dict) -> dict:
    """A CourseWork resource for a world content (``CONTENT_MARKER`` in the description: see the module docstring)."""
    return {"courseId": classroom_course_id(course.number), "id": classroom_coursework_id(content["id"]),
            "title": content["name"], "description": f"{CONTENT_MARKER}{content['id']}", "state": "PUBLISHED",
            "creationTime": content["created_at"], "updateTime": content["updated_at"], "maxPoints": MAX_POINTS,
            "workType": "ASSIGNMENT", "submissionModificationMode": "MODIFIABLE_UNTIL_TURNED_IN"}  # fmt: skip


def _submission(course: CourseView, activity: dict) -> dict:
    """A StudentSubmission for a world activity carrying ``assigned_grade``."""
    learner, content = activity["student_id"], activity["content_id"]
    user_id, work_id = classroom_user_id(learner), classroom_coursework_id(content)
    grade = classroom_submission_grade(learner, content, activity["assigned_grade"])
    late = {"late": True} if zlib.crc32(f"{learner}|{content}|late".encode()) % 10 == 0 else {}
    opaque = base64.urlsafe_b64encode(f"{work_id}:{user_id}".encode()).decode().rstrip("=")
    return {"courseId": classroom_course_id(course.number), "courseWorkId": work_id, "id": f"Cg{opaque}",
            "userId": user_id, "creationTime": activity["started_at"], "updateTime": activity["updated_at"],
            **grade, **late, "courseWorkType": "ASSIGNMENT"}  # fmt: skip


def _filters(endpoint: str, params: Params) -> _Filters:
    """The endpoint's filters from the query (400 INVALID_ARGUMENT for a malformed one). ``teacherId`` is not
    simulated (the simulated Classroom has no teachers): it is refused rather than silently ignored."""
    one = {name: values[-1] for name, values in params.items()}
    if endpoint == "courseWork" and "orderBy" in one:
        return _Filters(order=_order_by(one["orderBy"]))
    if endpoint == "studentSubmissions":
        late = one.get("late")
        if late not in (None, "LATE_VALUES_UNSPECIFIED", "LATE_ONLY", "NOT_LATE_ONLY"):
            raise _HttpError(400, INVALID_ARGUMENT, f"late {late!r} is not a lateness value")
        return _Filters(user=one.get("userId") or None, late=None if late == "LATE_VALUES_UNSPECIFIED" else late)
    if endpoint == "courses":
        if one.get("studentId") and one.get("teacherId"):
            raise _HttpError(400, INVALID_ARGUMENT, "studentId and teacherId together (teacherId must be empty)")
        if one.get("teacherId"):
            raise _HttpError(400, INVALID_ARGUMENT, "teacherId is not simulated")
        return _Filters(student=one.get("studentId") or None)
    return _Filters()


def _order_by(text: str) -> tuple[tuple[str, bool], ...]:
    """courseWork ``orderBy``: comma-separated ``updateTime`` or ``dueDate``, each optionally ``asc``/``desc``
    (ascending unless ``desc``); anything else is INVALID_ARGUMENT."""
    order = []
    for part in text.split(","):
        words = part.split()
        known = 1 <= len(words) <= 2 and words[0] in ("updateTime", "dueDate") and words[1:] in ([], ["asc"], ["desc"])
        if not known:
            raise _HttpError(400, INVALID_ARGUMENT, f"orderBy {text!r}: fields are updateTime, dueDate; asc or desc")
        order.append((words[0], words[1:] == ["desc"]))
    return tuple(order)


def _ordered(work: list[dict], order: tuple[tuple[str, bool], ...]) -> list[dict]:
    """courseWork sorted by ``order``, the first key first (stable sorts, last key first). A missing ``dueDate``
    (all simulated courseWork has none) sorts as equal."""
    out = list(work)
    for field, descending in reversed(order):
        key = (lambda w: w["updateTime"]) if field == "updateTime" else (lambda w: json.dumps(w.get("dueDate")))
        out.sort(key=key, reverse=descending)
    return out


def _states(endpoint: str, params: Params) -> frozenset[str]:
    """The listing's state filter (courseStates, courseWorkStates or states); empty for unfiltered endpoints."""
    if endpoint not in STATE_FILTERS:
        return frozenset()
    name, known, default = STATE_FILTERS[endpoint]
    states = frozenset(params.get(name, []))
    unknown = states - set(known)
    if unknown:
        raise _HttpError(400, INVALID_ARGUMENT, f"unknown {name} {sorted(unknown)}")
    return states or default


def _request(params: Params, bound_to: str) -> _Request:
    """Validate pageSize and pageToken. A token is bound to the path, the as-of date, the state and other filters
    and pageSize as sent: replayed with any of them changed it is refused, as Google refuses it (docs/providers.md
    §5.5)."""
    raw_size = params.get("pageSize", [""])[0]
    try:
        requested = int(raw_size) if raw_size else 0
    except ValueError:
        raise _HttpError(400, INVALID_ARGUMENT, f"pageSize must be an integer, got {raw_size!r}") from None
    if requested < 0:
        raise _HttpError(400, INVALID_ARGUMENT, "pageSize must be >= 0")
    fingerprint = zlib.crc32(f"{bound_to}|{requested}".encode())
    size = min(requested or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    if "pageToken" not in params:
        return _Request(size, 0, 0, fingerprint)
    offset, index, bound = _untoken(params["pageToken"][0])
    if bound != fingerprint:
        raise _HttpError(400, INVALID_ARGUMENT, "pageToken was issued for other parameters")
    return _Request(size, offset, index, fingerprint)


def _token(offset: int, index: int, fingerprint: int) -> str:
    raw = json.dumps([offset, index, fingerprint], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _untoken(token: str) -> tuple[int, int, int]:
    """(offset, page index, fingerprint) of a token this app issued; an empty or garbage token is a 400
    (google-api-python-client#117: an empty-string token is an error, not "the first page")."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        decoded = None
    if not (isinstance(decoded, list) and len(decoded) == 3 and all(type(v) is int and v >= 0 for v in decoded)):
        raise _HttpError(400, INVALID_ARGUMENT, f"pageToken {token!r} is not a token this server issued")
    offset, index, fingerprint = decoded
    return offset, index, fingerprint


def _as_of(value: str | None) -> date | None:
    try:
        return parse_as_of(value)
    except ValueError as err:
        raise _HttpError(400, INVALID_ARGUMENT, str(err)) from None
