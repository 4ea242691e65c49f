"""The simulated OneRoster 1.2 rostering service (docs/providers.md §2) as a WSGI app, over the same worlds as the
Unified.to, Canvas and Classroom apps: an LMS/SIS that exposes its rosters through OneRoster.

Paths under ``/oneroster/{connection_id}``:
* ``POST /oauth/token`` -- OAuth2 client credentials exactly as the SIS simulator (``sis_simulator``): Basic auth,
  form ``grant_type`` and ``scope``, ``expires_in``; an expired token is answered 401, a token without
  ``roster-core.readonly`` (or ``roster.readonly``) 403 ``forbidden``.
* ``GET /ims/oneroster/rostering/v1p2/{courses|classes|enrollments}`` and ``.../classes/{sourcedId}/students``.
  ``limit`` (default 100) / ``offset`` paging; ``filter`` with at most two predicates (``= != > >= < <= ~``, values
  single-quoted, joined by `` AND `` or `` OR ``); anything else, an unknown field or a bad date answers 400
  ``invalid_filter_field``. ``sort`` (a filterable field) with ``orderBy`` ``asc|desc`` orders the whole listing
  before paging (else 400 ``invaliddata``); ``fields`` (comma-separated or repeated) selects properties of each
  record (an unknown one: 400 ``invalid_selection_field``).

How the world is shown (spec-conformant by default: every answer validates against the OneRoster 1.2 rostering
schemas in ``lms_pipeline_tests/spec_schemas``): a course is a OneRoster course (``sourcedId`` = world course id),
each world section a class. OneRoster has no "course is active" flag (``status`` only says whether a record is being
deleted; docs/providers.md §9.2): a class runs while its ``status`` is ``active`` and the day is inside one of its
``terms`` (academicSessions: ``startDate`` included, ``endDate`` excluded). So each course's classes share one
term, ``term-{course}``, from the day the course was first listed to the end of the current school year (1 July,
excluded) while the world keeps the course active, and to the day it went inactive (excluded) from then on: a
deactivation is a term that ended. ``GET academicSessions`` lists these terms and the current school year
``sy-{year}`` (every course's ``schoolYear``); ``GET terms`` the terms only. Each enrolled student has one ``role:
student`` enrollment in their section (``sourcedId`` ``enr-{class}-{user}``, ``beginDate`` the course's first day,
no ``endDate``), every class one ``role: teacher`` enrollment (``primary: "true"``). A student who left keeps their
enrollment with ``status: tobedeleted`` and ``endDate`` the day they left (excluded), or it vanishes
(``deleted_rows="vanish"``). A course that went inactive keeps its enrollments as the world keeps its students.
GUIDRef ``href``s are absolute URLs on the server's origin.

Stamps (``dateLastModified``): a row that changed on the as-of day (a student who joined or left the section that
day, compared with the day before) carries that day's change time -- the course's ``updated_at`` when the world
gives it, else a fixed hash-derived time. Any other row carries ``{as-of - 1}T23:00:00Z``: an upper bound on when
it last changed (the world does not remember older change days), so a ``dateLastModified>`` window never misses a
change (it may return an old one again). A term carries its course's last change once it ended, else the later of
the course's creation and the current school year's start (when it was last extended).

A course whose roster the world does not expose: its classes are listed, but ``/classes/{id}/students`` and
``/enrollments?filter=class.sourcedId='{id}'`` answer 403 ``forbidden``, and unfiltered enrollment listings leave
its enrollments out.

Provider behaviours (options, see ``OneRosterOptions``): ``paging="headers"`` sends ``X-Total-Count`` and ``Link``
(first, last, next, prev); ``"body"`` puts ``totalCount, pageCount, pageNumber, offset, limit`` in the body instead
(as Timeback does: the envelope is then not the spec's); ``"none"`` sends neither; ``limit_cap`` silently serves
fewer rows than asked; ``ignore_limit`` serves everything from ``offset``; ``throttle_every`` answers every Nth
request of a connection 429 ``server_busy``; ``legacy_inactive_share`` marks a share of left students with 1.0's
``inactive`` (not a 1.2 status); ``deleted_rows="end_dated"`` keeps a left student's enrollment ``status: active``
and says they left only by its ``endDate`` (SISs that end-date rather than delete); ``early_enrollments`` publishes
the next day's new enrollments a day ahead with that ``beginDate``; ``class_deactivation="tobedeleted"`` marks the
classes of an inactive course ``status: tobedeleted`` instead of ending their term (every class then has the
school year as its term).

Requests are checked in this order: connection (404), throttle (429), method (405), token (401), scope (403), as-of
date (400), path (404), filter (400), injected fault, class (404), roster exposure (403), paging parameters (400).
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import product
from typing import Literal
from urllib.parse import urlencode
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.providers.oneroster.simulator_oauth import (
    SCOPE_ROOT,
    ImsxError,
    TokenIssuer,
    as_of_day,
    int_param,
    request_base_url,
)
from lms_pipeline.providers.oneroster.simulator_query import (
    SERVICE_PATH,
    Filter,
    Params,
    ordered_records,
    parse_route,
    selected_fields,
)
from lms_pipeline.providers.oneroster.simulator_world import (
    CourseDays,
    course_term,
    guid_ref,
    moment_of,
    number_of,
    school_year_of,
    user_record,
)
from lms_pipeline.simulator.common import DATE_HEADER, SimulatedApp, origin, query_params, respond
from lms_pipeline.simulator.world import CourseView, DateOutOfRangeError, World

ENVELOPES = {"students": "users", "terms": "academicSessions"}  # the list key where it is not the path's last part
ROSTER_SCOPES = frozenset({"roster-core.readonly", "roster.readonly"})  # roster.readonly is the wider scope
DEFAULT_LIMIT = 100


@dataclass(frozen=True)
class OneRosterOptions:
    """How the simulated service deviates (or not) from the REST binding; see the module docstring."""

    paging: Literal["headers", "body", "none"] = "headers"
    limit_cap: int | None = None  # serve at most this many rows per page, whatever the request asked
    ignore_limit: bool = False  # serve every row from ``offset`` on
    deleted_rows: Literal["tobedeleted", "vanish", "end_dated"] = "tobedeleted"
    legacy_inactive_share: float = 0.0  # share of left students whose enrollment says "inactive"
    early_enrollments: bool = False  # tomorrow's new enrollments are listed today, beginDate tomorrow
    class_deactivation: Literal["term_end", "tobedeleted"] = "term_end"
    throttle_every: int = 0  # every Nth request of a connection answers 429 server_busy (0: never)
    token_ttl_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if (self.paging, self.deleted_rows, self.class_deactivation) not in product(
            ("headers", "body", "none"), ("tobedeleted", "vanish", "end_dated"), ("term_end", "tobedeleted")
        ):
            raise ValueError("paging must be headers|body|none, deleted_rows tobedeleted|vanish|end_dated and "
                             f"class_deactivation term_end|tobedeleted: {self}")  # fmt: skip
        if (self.limit_cap is not None and self.limit_cap < 1) or self.throttle_every < 0:
            raise ValueError(f"limit_cap must be >= 1 and throttle_every >= 0: {self}")
        if not 0.0 <= self.legacy_inactive_share <= 1.0 or self.token_ttl_seconds <= 0:
            raise ValueError(f"legacy_inactive_share must be in [0, 1] and token_ttl_seconds > 0: {self}")


@dataclass(frozen=True)
class _Listings:
    """One connection's day in OneRoster shapes, built once and served to every page request of that day."""

    courses: list[dict]
    classes: list[dict]
    academicSessions: list[dict]  # noqa: N815 (the collection's name: served as getattr(listings, endpoint))
    terms: list[dict]
    enrollments: list[dict]  # of exposed rosters only
    by_class: dict[str, list[dict]]  # the same enrollments by class: a class's listing need not scan them all
    hidden: frozenset[str]  # classes whose roster is not exposed
    students: dict[str, list[dict]]  # class id -> its enrolled students as OneRoster users


class OneRosterRosteringApp(SimulatedApp):
    """Serves each world as OneRoster 1.2 rostering at ``/oneroster/{connection_id}/...`` as of the
    ``X-Simulated-Date`` day (default: ``clock``). ``credentials``: connection id -> (client_id, client_secret);
    ``options``: OneRosterOptions fields."""

    FAULT_FIELDS = ("endpoint", "class_id")

    def __init__(
        self,
        worlds: Iterable[World],
        credentials: Mapping[str, tuple[str, str]],
        clock: Callable[[], date] | None = None,
        **options: object,
    ) -> None:
        super().__init__(worlds, clock)
        self.options = OneRosterOptions(**options)  # type: ignore[arg-type]
        self._tokens = TokenIssuer(credentials)
        self._counts: dict[str, int] = {}
        self._days: OrderedDict[tuple, _Listings] = OrderedDict()
        self._course_days = {cid: CourseDays(w) for cid, w in self.worlds.items()}

    # ---- test controls ---------------------------------------------------------------------------------------
    def expire_tokens(self) -> None:
        """Make every issued token expire now (tests of the client's refresh)."""
        self._tokens.expire_all()

    def issued_tokens(self) -> list[str]:
        """Every token handed out so far (tests check that none leaks into pages or errors)."""
        return self._tokens.issued()

    # ---- WSGI ------------------------------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        params = query_params(environ)
        entry: dict = {"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO", ""),
                       "connection_id": None, "endpoint": None, "class_id": None, "as_of": None,
                       "params": {k: v[0] for k, v in params.items()}, "status": None}  # fmt: skip
        headers: dict[str, str] = {}
        try:
            status, body, headers = self._handle(environ, params, entry)
        except ImsxError as err:
            status, body, headers = err.status, err.body(), err.headers
        entry["status"] = status
        self.request_log.append(entry)
        return respond(start_response, status, body, "application/json", headers)

    def _handle(self, environ: WSGIEnvironment, params: Params, entry: dict) -> tuple[int, bytes, dict[str, str]]:
        parts = environ.get("PATH_INFO", "").strip("/").split("/")
        if len(parts) < 3 or parts[0] != "oneroster" or parts[1] not in self.worlds:
            raise ImsxError(404, "unknownobject", "Not found: expected /oneroster/{connection_id}/...")
        world, rest, method = self.worlds[parts[1]], parts[2:], environ.get("REQUEST_METHOD")
        entry["connection_id"] = parts[1]
        self._throttle(parts[1])
        if rest == ["oauth", "token"]:
            if method != "POST":
                raise ImsxError(405, "invaliddata", "use POST", {"Allow": "POST"})
            token = self._tokens.issue(parts[1], environ, self.options.token_ttl_seconds)
            return 200, json.dumps(token).encode(), {"Cache-Control": "no-store"}
        if method != "GET":
            raise ImsxError(405, "invaliddata", "the rostering service is read-only", {"Allow": "GET"})
        scopes = self._tokens.authorize(parts[1], environ)
        if not scopes & ROSTER_SCOPES:
            raise ImsxError(403, "forbidden", f"scope {SCOPE_ROOT}roster-core.readonly required")
        entry["as_of"] = day = as_of_day(environ.get(DATE_HEADER)) or self.clock()
        endpoint, class_id = parse_route(rest)
        entry.update(endpoint=endpoint)
        try:
            listings = self._listings(world, day, origin(environ))
        except DateOutOfRangeError as err:
            raise ImsxError(400, "invaliddata", str(err)) from None
        collection = ENVELOPES.get(endpoint, endpoint)
        where = Filter(params.get("filter", [None])[0], collection)
        targets = {class_id} if class_id is not None else where.equals("class.sourcedId")
        entry["class_id"] = class_id or (min(targets) if targets else None)
        fault = self._faults.take(parts[1], endpoint=endpoint, class_id=entry["class_id"])
        if fault is not None:
            body = fault.payload if fault.body is not None else ImsxError(fault.status, "internal_server_error",
                                                                                 "Simulated fault").body()  # fmt: skip
            return fault.status, body, {}
        if endpoint == "students" and class_id not in listings.students:
            raise ImsxError(404, "unknownobject", f"class {class_id} not found")
        if endpoint in ("students", "enrollments") and targets & listings.hidden:
            raise ImsxError(403, "forbidden", f"the roster of class {sorted(targets & listings.hidden)[0]} is not "
                             "shared with this client")  # fmt: skip
        if class_id is not None:
            records = listings.students[class_id]
        elif endpoint == "enrollments" and targets and not where.any:  # the filter still applies to these
            records = [row for target in sorted(targets) for row in listings.by_class.get(target, [])]
        else:
            records = getattr(listings, endpoint)
        listed = ordered_records(where.keep(records), params, collection)
        return self._page(listed, collection, params, environ, selected_fields(params, collection))

    def _throttle(self, connection_id: str) -> None:
        every = self.options.throttle_every
        with self._lock:
            self._counts[connection_id] = count = self._counts.get(connection_id, 0) + 1
        if every and count % every == 0:
            raise ImsxError(429, "server_busy", "Too many requests")

    # ---- paging ----------------------------------------------------------------------------------------------
    def _page(
        self, records: list[dict], collection: str, params: Params, environ: WSGIEnvironment,
        selected: list[str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
        limit, offset = int_param(params, "limit", DEFAULT_LIMIT), int_param(params, "offset", 0)
        if limit < 1 or offset < 0:
            raise ImsxError(400, "invaliddata", "limit must be >= 1 and offset >= 0")
        opts = self.options
        if opts.ignore_limit:
            limit = max(1, len(records) - offset)
        elif opts.limit_cap is not None:
            limit = min(limit, opts.limit_cap)
        page, total = records[offset : offset + limit], len(records)
        if selected is not None:
            page = [{name: record[name] for name in selected if name in record} for record in page]
        if opts.paging == "body":
            body = {collection: page, "totalCount": total, "pageCount": max(1, -(-total // limit)),
                    "pageNumber": offset // limit + 1, "offset": offset, "limit": limit}  # fmt: skip
            return 200, json.dumps(body).encode(), {}
        if opts.paging == "none":
            return 200, json.dumps({collection: page}).encode(), {}
        base = request_base_url(environ)
        kept = {k: v[0] for k, v in params.items() if k not in ("limit", "offset")}

        def link(at: int, rel: str) -> str:
            return f'<{base}?{urlencode({**kept, "limit": limit, "offset": at})}>; rel="{rel}"'

        links = [link(0, "first"), link(max(0, (total - 1) // limit * limit), "last")]
        if offset + limit < total:
            links.append(link(offset + limit, "next"))
        if offset > 0:
            links.append(link(max(0, offset - limit), "prev"))
        headers = {"X-Total-Count": str(total), "Link": ", ".join(links)}
        return 200, json.dumps({collection: page}).encode(), headers

    # ---- the world in OneRoster shapes -----------------------------------------------------------------------
    def _listings(self, world: World, day: date, server: str) -> _Listings:
        """The day's listings (GUIDRef hrefs on ``server``, the origin asked); cached, as a scan asks for the same
        day hundreds of times."""
        key = (world.spec.connection_id, day, world.churn_fired(day)[0], server)
        with self._lock:
            if key in self._days:
                self._days.move_to_end(key)
                return self._days[key]
        listings = self._build(world, day, server)
        with self._lock:
            self._days[key] = listings
            while len(self._days) > 8:
                self._days.popitem(last=False)
        return listings

    def _build(self, world: World, day: date, server: str) -> _Listings:
        spec, opts = world.spec, self.options
        views = world.roster_view(day)
        before = {v.id: v for v in world.roster_view(day - timedelta(days=1))} if day > spec.start_date else {}
        after = self._next_day(world, day) if opts.early_enrollments else {}
        listed, ended = self._course_days[spec.connection_id].until(day)
        root = f"{server}/oneroster/{spec.connection_id}/{'/'.join(SERVICE_PATH)}"
        fallback = f"{spec.start_date}T00:00:00Z"
        school = guid_ref(root, "orgs", f"org-{spec.connection_id}", "org")
        year = school_year_of(day)
        school_year = guid_ref(root, "academicSessions", f"sy-{year}", "academicSession")
        sessions = [{
            "sourcedId": f"sy-{year}", "status": "active", "dateLastModified": f"{year - 1}-07-01T00:00:00Z",
            "title": f"School year {year - 1}-{year}", "startDate": f"{year - 1}-07-01", "endDate": f"{year}-07-01",
            "type": "schoolYear", "schoolYear": str(year),
        }]  # fmt: skip
        courses, classes, terms, hidden, students, by_class = [], [], [], set(), {}, {}
        for view in views:
            modified, started = view.updated_at or fallback, listed.get(view.id, spec.start_date)
            if view.is_active == (view.id in ended):
                raise RuntimeError(f"{view.id}: the world's flag and the day it went inactive disagree on {day}")
            courses.append({
                "sourcedId": view.id, "status": "active", "dateLastModified": modified, "title": view.name,
                "schoolYear": school_year, "courseCode": f"C{view.number:05d}", "org": school,
            })  # fmt: skip
            if opts.class_deactivation == "term_end":
                terms.append(course_term(view, started, ended.get(view.id), day, fallback))
                class_status = "active"
                class_terms = [guid_ref(root, "academicSessions", terms[-1]["sourcedId"], "academicSession")]
            else:  # the vendor marks the classes of an ended course for deletion instead
                class_terms, class_status = [school_year], "active" if view.is_active else "tobedeleted"
            for k, (class_id, members) in enumerate(view.sections):
                letter = chr(ord("A") + k)
                classes.append({
                    "sourcedId": class_id, "status": class_status, "dateLastModified": modified,
                    "title": f"{view.name} - Section {letter}", "classCode": f"C{view.number:05d}-{letter}",
                    "classType": "scheduled", "course": guid_ref(root, "courses", view.id, "course"), "school": school,
                    "terms": class_terms,
                })  # fmt: skip
                students[class_id] = [user_record(sid, school, fallback) for sid in members]
                if view.exposed:
                    by_class[class_id] = self._enrollments(root, school, view, before.get(view.id),
                                                           after.get(view.id), k, day, started)  # fmt: skip
                else:
                    hidden.add(class_id)
        enrollments = [row for rows in by_class.values() for row in rows]
        return _Listings(courses, classes, terms + sessions, terms, enrollments, by_class, frozenset(hidden),
                         students)  # fmt: skip

    @staticmethod
    def _next_day(world: World, day: date) -> dict[str, CourseView]:
        """Tomorrow's courses (none past the world's horizon): what an SIS that publishes early already lists."""
        try:
            return {v.id: v for v in world.roster_view(day + timedelta(days=1))}
        except DateOutOfRangeError:
            return {}

    def _enrollments(
        self, root: str, school: dict, view: CourseView, before: CourseView | None, after: CourseView | None, k: int,
        day: date, started: date,
    ) -> list[dict]:  # fmt: skip
        """One class's enrollments: its teacher, its students, the students who left (unless they vanish), and
        with ``early_enrollments`` tomorrow's new students. Enrollments begin when the course was first listed."""
        class_id, members = view.sections[k]
        created = started.isoformat()
        earlier, was_in = f"{day - timedelta(days=1)}T23:00:00Z", set(before.enrolled) if before else set()
        changed = view.updated_at if view.updated_at and view.updated_at.startswith(day.isoformat()) else None

        def row(user: str, role: str, status: str, stamp: str, begin: str, end: str | None = None) -> dict:
            dates = {"beginDate": begin, **({"endDate": end} if end else {})}
            return {
                "sourcedId": f"enr-{class_id}-{user}", "status": status, "dateLastModified": stamp,
                "user": guid_ref(root, "users", user, "user"), "class": guid_ref(root, "classes", class_id, "class"),
                "school": school, "role": role, "primary": "true" if role == "teacher" else "false", **dates,
            }  # fmt: skip

        def stamp(sid: str, is_new: bool) -> str:
            return (changed or moment_of(day, class_id, sid)) if is_new else earlier

        def in_this_class(sid: str) -> bool:
            # The section a student is in: the world keeps them in section (number + course number) % n.
            return (number_of(sid) + view.number) % len(view.sections) == k

        rows = [row(f"tch-{view.number:05d}", "teacher", "active", view.created_at or f"{created}T00:00:00Z", created)]
        rows += [row(sid, "student", "active", stamp(sid, sid not in was_in), created) for sid in members]
        if self.options.deleted_rows != "vanish":
            for sid in filter(in_this_class, view.dropped):
                when = stamp(sid, sid in was_in)
                status = "active" if self.options.deleted_rows == "end_dated" else self._left_status(view.id, sid)
                rows.append(row(sid, "student", status, when, created, when[:10]))  # endDate: excluded
        if after is not None:
            known = set(view.enrolled) | set(view.dropped)
            tomorrow = (day + timedelta(days=1)).isoformat()
            rows += [row(sid, "student", "active", moment_of(day, class_id, sid, "early"), tomorrow)
                     for sid in after.enrolled if sid not in known and in_this_class(sid)]  # fmt: skip
        return rows

    def _left_status(self, course_id: str, sid: str) -> str:
        """tobedeleted, or for a fixed share of (course, student) pairs the legacy ``inactive``."""
        legacy = zlib.crc32(f"{course_id}|{sid}|inactive".encode()) % 1000 < self.options.legacy_inactive_share * 1000
        return "inactive" if legacy else "tobedeleted"
