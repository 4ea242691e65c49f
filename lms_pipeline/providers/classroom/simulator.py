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

import json
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.providers.classroom.simulator_http import (
    GOOGLE_STATUS,
    INVALID_ARGUMENT,
    NOT_FOUND,
    Filters,
    HttpError,
    Params,
    Request,
    as_of_day,
    filters_of,
    ordered_work,
    page_token,
    paging_request,
    parse_route,
    states_of,
)
from lms_pipeline.providers.classroom.simulator_world import (
    USER_ID_BASE,
    classroom_course_id,
    classroom_user_id,
    course_resource,
    course_state,
    coursework_resource,
    submission_resource,
)
from lms_pipeline.simulator.common import (
    DATE_HEADER,
    SimulatedApp,
    logged_params,
    query_params,
    respond,
)
from lms_pipeline.simulator.world import CourseView, DateOutOfRangeError, World

ENDPOINTS = ("courses", "students", "aliases", "courseWork", "studentSubmissions")


@dataclass(frozen=True)
class _DayView:
    courses: tuple[CourseView, ...]  # newest-created first, as courses.list answers
    by_id: Mapping[str, CourseView]  # by Classroom id and by domain alias


@dataclass(frozen=True)
class _GradeView:
    """One day's courseWork and submissions, by world course id."""

    coursework: Mapping[str, list[dict]]
    submissions: Mapping[str, list[dict]]


class ClassroomSimulatorApp(SimulatedApp):
    """Serves each world's truth in Classroom API v1 shapes as of a simulated date (``X-Simulated-Date``).

    Options: ``emails_scope`` (False: no ``profile.emailAddress``); ``short_page_every`` (every k-th page of a
    listing carries half a page while still giving a token; 0: never); ``empty_page_every`` (listings whose key
    hashes to 0 modulo k serve an empty page with a token as their second page; 1: every multi-page listing; 0:
    never); ``rate_limit`` requests per ``rate_window`` seconds per token (0: no limit; Google's is 1,200 per 60 s
    per user); ``monotonic`` the limiter's clock.
    """

    FAULT_FIELDS = ("endpoint", "course_id", "page")

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
        super().__init__(worlds, clock)
        self._tokens = dict(tokens)
        self.emails_scope = emails_scope
        self.short_page_every, self.empty_page_every = short_page_every, empty_page_every
        self.rate_limit, self.rate_window, self._monotonic = rate_limit, rate_window, monotonic
        self._windows: dict[str, deque[float]] = {}
        self._views: OrderedDict[tuple[str, date], _DayView] = OrderedDict()
        self._grade_views: OrderedDict[tuple[str, date], _GradeView] = OrderedDict()
        self._people: dict[str, dict[str, tuple[str, str, str]]] = {}

    # ---- WSGI ------------------------------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        params = query_params(environ)
        entry: dict = {"connection_id": None, "endpoint": None, "course_id": None, "as_of": None, "status": None,
                       "page_index": None, "items": None, "next_page_token": False, "detail": None,
                       "params": logged_params(params)}  # fmt: skip
        try:
            status, body, headers = self._handle(environ, params, entry)
        except HttpError as err:
            status, headers, entry["detail"] = err.status, err.headers, err.detail
            body = json.dumps({"error": {"code": err.status, "message": err.message,
                                         "status": GOOGLE_STATUS.get(err.status, "UNKNOWN")}}).encode()  # fmt: skip
        entry["status"] = status
        self.request_log.append(entry)
        return respond(start_response, status, body, "application/json; charset=UTF-8", headers)

    def _handle(self, environ: WSGIEnvironment, params: Params, entry: dict) -> tuple[int, bytes, dict[str, str]]:
        path = environ.get("PATH_INFO", "")
        connection_id, endpoint, course_ref, work_ref = parse_route(path)
        entry.update(connection_id=connection_id, endpoint=endpoint, course_id=course_ref)
        world = self.worlds.get(connection_id)
        if world is None:
            raise HttpError(404, NOT_FOUND, f"connection {connection_id} not found")
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        self._throttle(authorization)
        if environ.get("REQUEST_METHOD") != "GET":
            raise HttpError(405, "Method not allowed", headers={"Allow": "GET"})
        if authorization != f"Bearer {self._tokens.get(connection_id)}":
            raise HttpError(401, "Request had invalid authentication credentials.")
        entry["as_of"] = as_of = as_of_day(environ.get(DATE_HEADER)) or self.clock()
        states = states_of(endpoint, params)
        filters = filters_of(endpoint, params)
        request = paging_request(params, f"{path}|{as_of}|{sorted(states)}|{filters}")
        entry["page_index"] = request.index
        fault = self._faults.take(connection_id, endpoint=endpoint, course_id=course_ref, page=request.index)
        if fault is not None:
            if fault.body is None:
                raise HttpError(fault.status, "Simulated upstream error")
            return fault.status, fault.payload, {}
        try:
            view = self._view(world, as_of)
        except DateOutOfRangeError as err:
            raise HttpError(400, INVALID_ARGUMENT, str(err)) from None
        key, items = self._items(world, view, endpoint, course_ref, states, as_of, work_ref, filters)
        chunk, next_offset = self._page(items, request, key)
        body: dict = {endpoint: chunk} if chunk else {}  # Google omits an empty repeated field
        if next_offset is not None:
            body["nextPageToken"] = page_token(next_offset, request.index + 1, request.fingerprint)
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
                raise HttpError(429, "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute "
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
        filters: Filters | None = None,
    ) -> tuple[str, Sequence]:
        """(listing key, every item of the listing): the key picks where the listing's empty page goes."""
        cid = world.spec.connection_id
        filters = filters or Filters()
        if endpoint == "courses":
            courses = [c for c in view.courses if course_state(c) in states]
            if filters.student is not None:
                # Only rosters the caller may see tell who is in a course (assumed: a hidden roster stays hidden).
                learner = self._user(world, as_of, filters.student)
                courses = [c for c in courses if c.exposed and learner in c.enrolled]
            return f"{cid}/courses", [course_resource(c) for c in courses]
        course = view.by_id.get(course_ref or "")
        if course is None:
            raise HttpError(404, NOT_FOUND, f"course {course_ref} not found")
        key = f"{cid}/{classroom_course_id(course.number)}/{endpoint}"
        if endpoint == "aliases":
            return key, [{"alias": f"d:{course.id}"}]
        if not course.exposed:
            raise HttpError(403, "The caller does not have permission", "roster not exposed")
        if endpoint == "students":
            people = self._directory(world, as_of)
            return key, [self._student(course, sid, people[sid]) for sid in course.enrolled]
        grades = self._grades(world, view, as_of)
        work = grades.coursework.get(course.id, [])
        if endpoint == "courseWork":
            return key, ordered_work([w for w in work if w["state"] in states], filters.order)
        submissions = grades.submissions.get(course.id, [])
        if work_ref != "-":
            if work_ref not in {w["id"] for w in work}:
                raise HttpError(404, NOT_FOUND, f"courseWork {work_ref} not found in course {course_ref}")
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
        raise HttpError(404, NOT_FOUND, f"user {ref!r} not found")

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
                    coursework.setdefault(course_id, []).append(coursework_resource(courses[course_id], content))
        enrolled = {c.id: frozenset(c.enrolled) for c in view.courses}
        submissions: dict[str, list[dict]] = {}
        for activity in world.activities(as_of):
            course_id, learner = activity["course_id"], activity["student_id"]
            if "assigned_grade" in activity and learner in enrolled.get(course_id, ()):
                item = submission_resource(courses[course_id], activity)
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

    def _page(self, items: Sequence, request: Request, key: str) -> tuple[list, int | None]:
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
