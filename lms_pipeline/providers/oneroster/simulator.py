"""The simulated OneRoster 1.2 rostering service (docs/providers.md §2) as a WSGI app, over the same worlds as the
Unified.to, Canvas and Classroom apps: an LMS/SIS that exposes its rosters through OneRoster.

Paths under ``/oneroster/{connection_id}``:
* ``POST /oauth/token`` -- OAuth2 client credentials exactly as ``sis_app``: Basic auth, form ``grant_type`` and
  ``scope``, ``expires_in``; an expired token is answered 401, a token without ``roster-core.readonly`` (or
  ``roster.readonly``) 403 ``forbidden``.
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

import base64
import json
import operator
import re
import secrets
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import product
from typing import Literal
from urllib.parse import parse_qs, urlencode
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.providers.oneroster.sis_simulator import SCOPE_ROOT, _as_of, _base_url, _ImsxError, _int, _read
from lms_pipeline.simulator.common import DATE_HEADER, FaultBook, RequestLog, origin, query_params, respond
from lms_pipeline.simulator.world import DAY_SECONDS, CourseView, DateOutOfRangeError, World, student_name

SERVICE_PATH = ("ims", "oneroster", "rostering", "v1p2")
COLLECTIONS = ("courses", "classes", "enrollments", "academicSessions", "terms")
ENVELOPES = {"students": "users", "terms": "academicSessions"}  # the list key where it is not the path's last part
ROSTER_SCOPES = frozenset({"roster-core.readonly", "roster.readonly"})  # roster.readonly is the wider scope
DEFAULT_LIMIT = 100
# Fields a filter may name, per listed collection (what is not listed answers 400 invalid_filter_field).
FILTER_FIELDS = {
    "courses": {"sourcedId", "status", "dateLastModified", "title", "courseCode", "org.sourcedId"},
    "classes": {"sourcedId", "status", "dateLastModified", "title", "classCode", "classType", "course.sourcedId",
                "school.sourcedId"},
    "enrollments": {"sourcedId", "status", "dateLastModified", "role", "primary", "beginDate", "endDate",
                    "user.sourcedId", "class.sourcedId", "school.sourcedId"},
    "users": {"sourcedId", "status", "dateLastModified", "username", "givenName", "familyName", "email",
              "enabledUser"},
    "academicSessions": {"sourcedId", "status", "dateLastModified", "title", "startDate", "endDate", "type",
                         "schoolYear"},
}  # fmt: skip
# The properties of each entity (the 1.2 OpenAPI's): what ``fields`` may select.
SELECTABLE = {
    "courses": {"sourcedId", "status", "dateLastModified", "metadata", "title", "schoolYear", "courseCode", "grades",
                "subjects", "org", "subjectCodes", "resources"},
    "classes": {"sourcedId", "status", "dateLastModified", "metadata", "title", "classCode", "classType", "location",
                "grades", "subjects", "course", "school", "terms", "subjectCodes", "periods", "resources"},
    "enrollments": {"sourcedId", "status", "dateLastModified", "metadata", "user", "class", "school", "role",
                    "primary", "beginDate", "endDate"},
    "users": {"sourcedId", "status", "dateLastModified", "metadata", "userMasterIdentifier", "username", "userIds",
              "enabledUser", "givenName", "familyName", "middleName", "preferredFirstName", "preferredMiddleName",
              "preferredLastName", "pronouns", "roles", "userProfiles", "primaryOrg", "identifier", "email", "sms",
              "phone", "agents", "grades", "password", "resources"},
    "academicSessions": {"sourcedId", "status", "dateLastModified", "metadata", "title", "startDate", "endDate",
                         "type", "parent", "children", "schoolYear"},
}  # fmt: skip
COMPARISONS = {"=": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt,
               "<=": operator.le}  # fmt: skip
DATE_FIELDS = frozenset({"dateLastModified", "beginDate", "endDate", "startDate"})
_CONJUNCTION = re.compile(r"\s+(AND|OR)\s+(?=(?:[^']*'[^']*')*[^']*$)")  # AND/OR outside quoted values
_PREDICATE = re.compile(r"^\s*([A-Za-z][A-Za-z.]*)\s*(!=|>=|<=|=|>|<|~)\s*'([^']*)'\s*$")

Params = dict[str, list[str]]


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


class _Filter:
    """A parsed ``filter``: at most two predicates, all joined by AND or all by OR."""

    def __init__(self, expression: str | None, collection: str) -> None:
        parts = _CONJUNCTION.split(expression.strip()) if expression and expression.strip() else []
        self.any = "OR" in parts[1::2]
        predicates = parts[0::2]
        if len(predicates) > 2:
            raise _ImsxError(400, "invalid_filter_field", f"at most two predicates, got {len(predicates)}")
        self.tests: list[tuple[list[str], str, object]] = []
        for predicate in predicates:
            match = _PREDICATE.match(predicate)
            if match is None:
                raise _ImsxError(400, "invalid_filter_field", f"cannot read filter predicate {predicate!r}")
            field, op, value = match.groups()
            if field not in FILTER_FIELDS[collection]:
                raise _ImsxError(400, "invalid_filter_field", f"{collection} cannot be filtered by {field}")
            wanted: object = _moment(value) if field in DATE_FIELDS and op != "~" else value
            if wanted is None:
                raise _ImsxError(400, "invalid_filter_field", f"{field}: {value!r} is not a date or datetime")
            self.tests.append((field.split("."), op, wanted))

    def equals(self, field: str) -> set[str]:
        """The values an ``=`` predicate on ``field`` names (how a request targets one class)."""
        return {str(wanted) for path, op, wanted in self.tests if ".".join(path) == field and op == "="}

    def keep(self, records: list[dict]) -> list[dict]:
        if not self.tests:
            return records
        combine = any if self.any else all
        return [r for r in records if combine(_holds(r, path, op, wanted) for path, op, wanted in self.tests)]


class OneRosterRosteringApp:
    """Serves each world as OneRoster 1.2 rostering at ``/oneroster/{connection_id}/...`` as of the
    ``X-Simulated-Date`` day (default: ``clock``). ``credentials``: connection id -> (client_id, client_secret);
    ``options``: OneRosterOptions fields."""

    def __init__(
        self,
        worlds: Iterable[World],
        credentials: Mapping[str, tuple[str, str]],
        clock: Callable[[], date] | None = None,
        **options: object,
    ) -> None:
        self.worlds = {w.spec.connection_id: w for w in worlds}
        self.options = OneRosterOptions(**options)  # type: ignore[arg-type]
        self._credentials = dict(credentials)
        self.clock = clock or (lambda: datetime.now(UTC).date())
        self.request_log = RequestLog()
        self._tokens: dict[str, tuple[str, float, frozenset[str]]] = {}  # token -> (connection, expires, scopes)
        self._counts: dict[str, int] = {}
        self._faults = FaultBook()
        self._days: OrderedDict[tuple, _Listings] = OrderedDict()
        self._course_days = {cid: _CourseDays(w) for cid, w in self.worlds.items()}
        self._lock = threading.Lock()

    # ---- test controls ---------------------------------------------------------------------------------------
    def expire_tokens(self) -> None:
        """Make every issued token expire now (tests of the client's refresh)."""
        with self._lock:
            self._tokens = {t: (cid, 0.0, scopes) for t, (cid, _, scopes) in self._tokens.items()}

    def issued_tokens(self) -> list[str]:
        """Every token handed out so far (tests check that none leaks into pages or errors)."""
        with self._lock:
            return list(self._tokens)

    def inject_fault(
        self,
        connection_id: str,
        *,
        status: int = 500,
        body: str | None = None,
        endpoint: str | None = None,
        class_id: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` matching list requests (None matches any endpoint or class; a request's class
        is the path's, or the filter's ``class.sourcedId``) with ``status`` and ``body`` verbatim, or an imsx body
        when ``body`` is None. With status 200 a body makes a malformed page."""
        self._faults.add(connection_id, status, body, times, endpoint=endpoint, class_id=class_id)

    def clear_faults(self) -> None:
        self._faults.clear()

    def reset_log(self) -> None:
        self.request_log.reset()

    # ---- WSGI ------------------------------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        params = query_params(environ)
        entry: dict = {"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO", ""),
                       "connection_id": None, "endpoint": None, "class_id": None, "as_of": None,
                       "params": {k: v[0] for k, v in params.items()}, "status": None}  # fmt: skip
        headers: dict[str, str] = {}
        try:
            status, body, headers = self._handle(environ, params, entry)
        except _ImsxError as err:
            status, body, headers = err.status, err.body(), err.headers
        entry["status"] = status
        self.request_log.append(entry)
        return respond(start_response, status, body, "application/json", headers)

    def _handle(self, environ: WSGIEnvironment, params: Params, entry: dict) -> tuple[int, bytes, dict[str, str]]:
        parts = environ.get("PATH_INFO", "").strip("/").split("/")
        if len(parts) < 3 or parts[0] != "oneroster" or parts[1] not in self.worlds:
            raise _ImsxError(404, "unknownobject", "Not found: expected /oneroster/{connection_id}/...")
        world, rest, method = self.worlds[parts[1]], parts[2:], environ.get("REQUEST_METHOD")
        entry["connection_id"] = parts[1]
        self._throttle(parts[1])
        if rest == ["oauth", "token"]:
            if method != "POST":
                raise _ImsxError(405, "invaliddata", "use POST", {"Allow": "POST"})
            return 200, json.dumps(self._token(parts[1], environ)).encode(), {"Cache-Control": "no-store"}
        if method != "GET":
            raise _ImsxError(405, "invaliddata", "the rostering service is read-only", {"Allow": "GET"})
        scopes = self._authorize(parts[1], environ)
        if not scopes & ROSTER_SCOPES:
            raise _ImsxError(403, "forbidden", f"scope {SCOPE_ROOT}roster-core.readonly required")
        entry["as_of"] = day = _as_of(environ.get(DATE_HEADER)) or self.clock()
        endpoint, class_id = _route(rest)
        entry.update(endpoint=endpoint)
        try:
            listings = self._listings(world, day, origin(environ))
        except DateOutOfRangeError as err:
            raise _ImsxError(400, "invaliddata", str(err)) from None
        collection = ENVELOPES.get(endpoint, endpoint)
        where = _Filter(params.get("filter", [None])[0], collection)
        targets = {class_id} if class_id is not None else where.equals("class.sourcedId")
        entry["class_id"] = class_id or (min(targets) if targets else None)
        fault = self._faults.take(parts[1], endpoint=endpoint, class_id=entry["class_id"])
        if fault is not None:
            body = fault.payload if fault.body is not None else _ImsxError(fault.status, "internal_server_error",
                                                                                 "Simulated fault").body()  # fmt: skip
            return fault.status, body, {}
        if endpoint == "students" and class_id not in listings.students:
            raise _ImsxError(404, "unknownobject", f"class {class_id} not found")
        if endpoint in ("students", "enrollments") and targets & listings.hidden:
            raise _ImsxError(403, "forbidden", f"the roster of class {sorted(targets & listings.hidden)[0]} is not "
                             "shared with this client")  # fmt: skip
        if class_id is not None:
            records = listings.students[class_id]
        elif endpoint == "enrollments" and targets and not where.any:  # the filter still applies to these
            records = [row for target in sorted(targets) for row in listings.by_class.get(target, [])]
        else:
            records = getattr(listings, endpoint)
        selected = _selection(params, collection)
        return self._page(_ordered(where.keep(records), params, collection), collection, params, environ, selected)

    def _throttle(self, connection_id: str) -> None:
        every = self.options.throttle_every
        with self._lock:
            self._counts[connection_id] = count = self._counts.get(connection_id, 0) + 1
        if every and count % every == 0:
            raise _ImsxError(429, "server_busy", "Too many requests")

    # ---- auth (as sis_app) -----------------------------------------------------------------------------------
    def _token(self, connection_id: str, environ: WSGIEnvironment) -> dict:
        client_id, secret = self._credentials.get(connection_id, ("", ""))
        expected = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        if not client_id or environ.get("HTTP_AUTHORIZATION") != expected:
            raise _ImsxError(401, "unauthorisedrequest", "invalid client credentials")
        form = parse_qs(_read(environ).decode(), keep_blank_values=True)
        if form.get("grant_type") != ["client_credentials"]:
            raise _ImsxError(400, "invaliddata", "grant_type must be client_credentials")
        scopes = frozenset(s.removeprefix(SCOPE_ROOT) for value in form.get("scope", []) for s in value.split() if s)
        token, ttl = secrets.token_urlsafe(24), self.options.token_ttl_seconds
        with self._lock:
            self._tokens[token] = (connection_id, time.monotonic() + ttl, scopes)
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(ttl),
                "scope": " ".join(SCOPE_ROOT + s for s in sorted(scopes))}  # fmt: skip

    def _authorize(self, connection_id: str, environ: WSGIEnvironment) -> frozenset[str]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        with self._lock:
            grant = self._tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if grant is None or grant[0] != connection_id:
            raise _ImsxError(401, "unauthorisedrequest", "missing or invalid access token")
        if grant[1] <= time.monotonic():
            raise _ImsxError(401, "unauthorisedrequest", "access token expired")
        return grant[2]

    # ---- paging ----------------------------------------------------------------------------------------------
    def _page(
        self, records: list[dict], collection: str, params: Params, environ: WSGIEnvironment,
        selected: list[str] | None = None,
    ) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
        limit, offset = _int(params, "limit", DEFAULT_LIMIT), _int(params, "offset", 0)
        if limit < 1 or offset < 0:
            raise _ImsxError(400, "invaliddata", "limit must be >= 1 and offset >= 0")
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
        base = _base_url(environ)
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
        school = _ref(root, "orgs", f"org-{spec.connection_id}", "org")
        year = _school_year(day)
        school_year = _ref(root, "academicSessions", f"sy-{year}", "academicSession")
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
                terms.append(_course_term(view, started, ended.get(view.id), day, fallback))
                class_status = "active"
                class_terms = [_ref(root, "academicSessions", terms[-1]["sourcedId"], "academicSession")]
            else:  # the vendor marks the classes of an ended course for deletion instead
                class_terms, class_status = [school_year], "active" if view.is_active else "tobedeleted"
            for k, (class_id, members) in enumerate(view.sections):
                letter = chr(ord("A") + k)
                classes.append({
                    "sourcedId": class_id, "status": class_status, "dateLastModified": modified,
                    "title": f"{view.name} - Section {letter}", "classCode": f"C{view.number:05d}-{letter}",
                    "classType": "scheduled", "course": _ref(root, "courses", view.id, "course"), "school": school,
                    "terms": class_terms,
                })  # fmt: skip
                students[class_id] = [_user(sid, school, fallback) for sid in members]
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
                "user": _ref(root, "users", user, "user"), "class": _ref(root, "classes", class_id, "class"),
                "school": school, "role": role, "primary": "true" if role == "teacher" else "false", **dates,
            }  # fmt: skip

        def stamp(sid: str, is_new: bool) -> str:
            return (changed or _moment_of(day, class_id, sid)) if is_new else earlier

        def in_this_class(sid: str) -> bool:
            # The section a student is in: the world keeps them in section (number + course number) % n.
            return (_number(sid) + view.number) % len(view.sections) == k

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
            rows += [row(sid, "student", "active", _moment_of(day, class_id, sid, "early"), tomorrow)
                     for sid in after.enrolled if sid not in known and in_this_class(sid)]  # fmt: skip
        return rows

    def _left_status(self, course_id: str, sid: str) -> str:
        """tobedeleted, or for a fixed share of (course, student) pairs the legacy ``inactive``."""
        legacy = zlib.crc32(f"{course_id}|{sid}|inactive".encode()) % 1000 < self.options.legacy_inactive_share * 1000
        return "inactive" if legacy else "tobedeleted"


# ---- helpers --------------------------------------------------------------------------------------------------
class _CourseDays:
    """The day each course of one world was first listed and the day it was first inactive, found once by walking
    the world's days forward.

    The world knows only each day's flag (and may omit a course's timestamps); a term's dates must name the days a
    course started and stopped, and stay the same on every later day. Courses never come back once inactive, and
    the world replays days deterministically (its checkpoints make the walk cost what computing the days costs)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.walked: date | None = None
        self.listed: dict[str, date] = {}
        self.stopped: dict[str, date] = {}
        self._lock = threading.Lock()

    def until(self, day: date) -> tuple[dict[str, date], dict[str, date]]:
        """(course id -> first listed day, course id -> first inactive day), for the days up to ``day``."""
        with self._lock:
            walked = self.walked or self.world.spec.start_date - timedelta(days=1)
            while walked < day:
                walked += timedelta(days=1)
                for course_id, active in self.world.is_active(walked).items():
                    self.listed.setdefault(course_id, walked)
                    if not active:
                        self.stopped.setdefault(course_id, walked)
            self.walked = max(walked, self.walked or walked)
            return ({c: d for c, d in self.listed.items() if d <= day},
                    {c: d for c, d in self.stopped.items() if d <= day})  # fmt: skip


def _school_year(day: date) -> int:
    """The year the school year holding ``day`` ends in (OneRoster's ``schoolYear``; years run 1 July-30 June)."""
    return day.year + 1 if day.month >= 7 else day.year


def _course_term(view: CourseView, started: date, ended: date | None, day: date, fallback: str) -> dict:
    """The term a course's classes run in: from the day it was first listed to the day it went inactive (excluded),
    or while it runs to the end of the current school year (1 July, excluded)."""
    if ended is not None:
        end, modified = ended, view.updated_at or f"{ended}T00:00:00Z"  # the course last changed when it stopped
    else:
        end = date(_school_year(day), 7, 1)
        modified = max(view.created_at or fallback, f"{end.year - 1}-07-01T00:00:00Z")  # extended each 1 July
    return {
        "sourcedId": f"term-{view.id}", "status": "active", "dateLastModified": modified,
        "title": f"{view.name} teaching period", "startDate": started.isoformat(), "endDate": end.isoformat(),
        "type": "term", "schoolYear": str(_school_year(end - timedelta(days=1))),
    }  # fmt: skip


def _route(rest: list[str]) -> tuple[str, str | None]:
    """(endpoint, class id) from the path after the connection: a collection, or ``classes/{id}/students``."""
    if tuple(rest[:4]) == SERVICE_PATH:
        tail = rest[4:]
        if len(tail) == 1 and tail[0] in COLLECTIONS:
            return tail[0], None
        if len(tail) == 3 and tail[0] == "classes" and tail[2] == "students" and tail[1]:
            return "students", tail[1]
    raise _ImsxError(404, "unknownobject", f"Not found: /{'/'.join(rest)}")


def _ref(root: str, collection: str, sourced_id: str, kind: str) -> dict:
    return {"href": f"{root}/{collection}/{sourced_id}", "sourcedId": sourced_id, "type": kind}


def _user(sid: str, school: dict, modified: str) -> dict:
    first, last = student_name(_number(sid))
    email = f"{first}.{last}.{_number(sid)}@school.example".lower()
    return {
        "sourcedId": sid, "status": "active", "dateLastModified": modified, "enabledUser": "true",
        "username": sid, "givenName": first, "familyName": last, "email": email,
        "roles": [{"roleType": "primary", "role": "student", "org": school}],
    }  # fmt: skip


def _number(world_id: str) -> int:
    return int(world_id.rsplit("-", 1)[1])


def _moment_of(day: date, *parts: str) -> str:
    """A fixed second of ``day`` before 23:00 (when the world's changes happen), derived from ``parts``."""
    hour, rest = divmod(zlib.crc32("|".join(parts).encode()) % DAY_SECONDS, 3600)
    return f"{day}T{hour:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


def _moment(value: str) -> datetime | None:
    """A filter or record date: ``YYYY-MM-DD`` (midnight UTC) or an ISO datetime (UTC when naive)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _value(record: dict, path: list[str]) -> object:
    """A record's value at a dotted field (``class.sourcedId``); None when absent."""
    value: object = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _ordered(records: list[dict], params: Params, collection: str) -> list[dict]:
    """The records in ``sort`` order (``orderBy`` asc, the default, or desc; records without the field last when
    ascending), or as they are when no sort is asked."""
    field, order = params.get("sort", [None])[0], params.get("orderBy", ["asc"])[0]
    if order not in ("asc", "desc"):
        raise _ImsxError(400, "invaliddata", f"orderBy must be asc or desc, got {order!r}")
    if field is None:
        return records
    if field not in FILTER_FIELDS[collection]:
        raise _ImsxError(400, "invaliddata", f"{collection} cannot be sorted by {field}")
    path = field.split(".")

    def key(record: dict) -> tuple[bool, str]:
        value = _value(record, path)
        return value is None, "" if value is None else str(value)

    return sorted(records, key=key, reverse=order == "desc")


def _selection(params: Params, collection: str) -> list[str] | None:
    """The properties ``fields`` selects (None: all), each checked against the entity's."""
    names = [name.strip() for value in params.get("fields", []) for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SELECTABLE[collection]]
    if unknown:
        raise _ImsxError(400, "invalid_selection_field", f"{collection} have no field {', '.join(unknown)}")
    return names or None


def _holds(record: dict, path: list[str], op: str, wanted: object) -> bool:
    value = _value(record, path)
    if value is None:
        return False
    if isinstance(wanted, datetime):
        have: object = _moment(str(value))
        if have is None:
            return False
    else:
        have = str(value)
    if op == "~":
        return str(wanted).lower() in str(have).lower()
    return COMPARISONS[op](have, wanted)
