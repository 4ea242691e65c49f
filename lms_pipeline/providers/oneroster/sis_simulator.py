"""The simulated SIS: OneRoster 1.2 rostering and gradebook over HTTP, as a WSGI app (docs/providers.md §2, §9.1).

Paths under ``/sis/{sis_id}``:
* ``POST /oauth/token`` -- OAuth2 client credentials (Basic auth, form ``grant_type`` and ``scope``); tokens expire
  after ``token_ttl_seconds`` and are then answered 401.
* ``GET /ims/oneroster/rostering/v1p2/{users|classes|courses|academicSessions|enrollments}`` (the roster of record:
  ``sis_rosters.py``) and ``GET /ims/oneroster/gradebook/v1p2/{lineItems|results}``
  -- ``limit`` (default and cap 100) / ``offset`` paging with ``X-Total-Count`` and ``Link`` (next, prev, first,
  last); envelopes keyed by the plural; ``filter`` with up to two ``=`` predicates joined by `` AND ``. Every
  GUIDRef is served whole, ``{href, sourcedId, type}``, its href on this server.
* ``GET /ims/oneroster/gradebook/v1p2/{results|lineItems}/{sourcedId}`` -- one record, ``{"result": {...}}``.
* ``PUT /ims/oneroster/gradebook/v1p2/results/{sourcedId}`` -- create or replace with a caller-chosen id; 201 with
  no body, on create and on update alike (§9.1). The body must be a valid Result (every required field, no other,
  GUIDRefs whole, ``scoreDate`` YYYY-MM-DD) or the answer is 422 ``invaliddata``. There is no ``POST /results`` in
  OneRoster 1.2: a POST anywhere is answered 405, as a conforming SIS would.

Vendor deviations, each a switch of ``SisSpec`` and off by default: listings that ignore ``filter``; PUT answered
200 with the result or 204; 409 on a PUT creating a second result for a (line item, student) pair; the connection
dropped after N writes. Errors carry imsx_StatusInfo bodies; every Nth request answers 429 ``server_busy``; writes
need the ``gradebook.createput`` scope (403 ``forbidden`` otherwise); an unknown line item or student answers 404
``unknownobject``; a score outside the line item's range 422.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from urllib.parse import urlencode
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.providers.oneroster.simulator_oauth import (
    SCOPE_ROOT,
    ImsxError,
    TokenIssuer,
    as_of_day,
    int_param,
    read_body,
    request_base_url,
)
from lms_pipeline.providers.oneroster.sis_world import SCORE_STATUSES, SisWorld
from lms_pipeline.simulator.common import DATE_HEADER, RequestLog, origin, query_params, respond

READ_SCOPES = {"users": "roster-core.readonly", "classes": "roster-core.readonly",
               "lineItems": "gradebook.readonly", "results": "gradebook.readonly"}  # fmt: skip
SINGULAR = {"users": "user", "classes": "class", "lineItems": "lineItem", "results": "result"}
# The roster of record (roster reconciliation, sis_rosters.py): the rostering collections beyond users and classes.
READ_SCOPES |= {"courses": "roster-core.readonly", "academicSessions": "roster-core.readonly",
                "enrollments": "roster-core.readonly"}  # fmt: skip
SINGULAR |= {"courses": "course", "academicSessions": "academicSession", "enrollments": "enrollment"}
ROSTERING = frozenset({"users", "classes", "courses", "academicSessions", "enrollments"})
WRITE_SCOPE = "gradebook.createput"
_FILTER = re.compile(r"^\s*([A-Za-z.]+)\s*=\s*'([^']*)'\s*$")
# GUIDRef field -> (its fixed type, the service and collection its href points into) (§9.1).
REFS = {"lineItem": ("lineItem", "gradebook", "lineItems"), "student": ("user", "rostering", "users"),
        "class": ("class", "rostering", "classes"), "scoreScale": ("scoreScale", "gradebook", "scoreScales"),
        "category": ("category", "gradebook", "categories"), "school": ("org", "rostering", "orgs"),
        "course": ("course", "rostering", "courses"), "user": ("user", "rostering", "users"),
        "schoolYear": ("academicSession", "rostering", "academicSessions"),
        "org": ("org", "rostering", "orgs")}  # fmt: skip
RESULT_FIELDS = {"sourcedId", "status", "dateLastModified", "metadata", "lineItem", "student", "class", "scoreScale",
                 "scoreStatus", "score", "textScore", "scoreDate", "comment", "learningObjectiveSet", "inProgress",
                 "incomplete", "late", "missing"}  # fmt: skip
RESULT_REQUIRED = ("sourcedId", "status", "dateLastModified", "lineItem", "student", "scoreStatus", "scoreDate")
STRING_FLAGS = ("inProgress", "incomplete", "late", "missing")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_EXT = re.compile(r"^ext:[a-zA-Z0-9.\-_]+$")
DROPPED_BODY_LENGTH = 64  # a dropped answer promises this many bytes and sends none

# Called with (world, the path's sourcedId or None, the JSON body or None) when a gradebook write request (PUT, POST)
# arrives, before anything is checked or applied: tests use it to act at a chosen write (a registrar editing the same
# result, a SIGKILL of the writing process).
WriteHook = Callable[[SisWorld, str, dict], None]


class _Dropped(Exception):
    """The SIS drops the connection mid-answer (vendor mode ``drop_after_writes``)."""


class SisSimulatorApp:
    """Serves each SIS world at ``/sis/{sis_id}/...`` as of the ``X-Simulated-Date`` day (default: ``clock``).

    ``record_bodies`` keeps each write's request body and each answer's body in the request log (contract tests
    validate them against the spec's schemas); off by default, since listings are large.
    """

    def __init__(
        self,
        worlds: Iterable[SisWorld],
        credentials: Mapping[str, tuple[str, str]],
        clock: Callable[[], date] | None = None,
        before_write: WriteHook | None = None,
    ) -> None:
        self.worlds = {w.spec.sis_id: w for w in worlds}
        self._tokens = TokenIssuer(credentials)  # sis_id -> (client_id, client_secret)
        self.clock = clock or (lambda: datetime.now(UTC).date())
        self.before_write = before_write
        self.record_bodies = False
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.request_log = RequestLog()

    def expire_tokens(self) -> None:
        """Make every issued token expire now (tests of the client's refresh)."""
        self._tokens.expire_all()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        entry = {"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO", ""), "status": None}
        try:
            status, payload, headers = self._handle(environ, entry)
            body = json.dumps(payload).encode() if payload is not None else b""
        except ImsxError as err:
            status, payload, body, headers = err.status, err.payload(), err.body(), err.headers
        except _Dropped:
            # Headers that promise a body, then the connection closes: the client sees the peer hang up mid-answer.
            entry["status"] = "dropped"
            self.request_log.append(entry)
            start_response("201 Created", [("Content-Type", "application/json"),
                                           ("Content-Length", str(DROPPED_BODY_LENGTH))])  # fmt: skip
            return []
        entry["status"] = status
        if self.record_bodies:
            entry["response_body"] = payload
        self.request_log.append(entry)
        return respond(start_response, status, body, "application/json", headers)

    # ---- routing ---------------------------------------------------------------------------------------------
    def _handle(self, environ: WSGIEnvironment, entry: dict) -> tuple[int, object, dict[str, str]]:
        parts = environ.get("PATH_INFO", "").strip("/").split("/")
        if len(parts) < 3 or parts[0] != "sis" or parts[1] not in self.worlds:
            raise ImsxError(404, "unknownobject", "Not found: expected /sis/{sis_id}/...")
        world, rest, method = self.worlds[parts[1]], parts[2:], environ.get("REQUEST_METHOD")
        self._throttle(world)
        if rest == ["oauth", "token"]:
            if method != "POST":
                raise ImsxError(405, "invaliddata", "use POST", {"Allow": "POST"})
            return (
                200,
                self._tokens.issue(world.spec.sis_id, environ, world.spec.token_ttl_seconds),
                {"Cache-Control": "no-store"},
            )
        if rest[:3] == ["ims", "oneroster", "rostering"] and len(rest) == 5 and rest[3] == "v1p2":
            service, collection, sourced_id = "rostering", rest[4], None
        elif rest[:3] == ["ims", "oneroster", "gradebook"] and len(rest) in (5, 6) and rest[3] == "v1p2":
            service, collection, sourced_id = "gradebook", rest[4], rest[5] if len(rest) == 6 else None
        else:
            raise ImsxError(404, "unknownobject", f"Not found: {environ.get('PATH_INFO')}")
        if collection not in READ_SCOPES or (service == "rostering") != (collection in ROSTERING):
            raise ImsxError(404, "unknownobject", f"Unknown collection {collection}")
        body = _json_or_none(read_body(environ)) if method not in ("GET", "HEAD") else None
        if self.before_write is not None and method in ("PUT", "POST") and service == "gradebook":
            self.before_write(world, sourced_id, body)
        allowed = "GET, PUT" if collection == "results" and sourced_id is not None else "GET"
        if method not in allowed.split(", "):
            # No POST /results in OneRoster 1.2 (§9.1): a result is created with PUT /results/{sourcedId}.
            raise ImsxError(405, "invaliddata", f"{method} not allowed on {collection}", {"Allow": allowed})
        scopes = self._tokens.authorize(world.spec.sis_id, environ)
        day = as_of_day(environ.get(DATE_HEADER)) or self.clock()
        entry.update(collection=collection, as_of=day.isoformat())
        base = f"{origin(environ)}/sis/{world.spec.sis_id}/ims/oneroster"
        if method == "GET":
            if READ_SCOPES[collection] not in scopes and WRITE_SCOPE not in scopes:
                raise ImsxError(403, "forbidden", f"scope {SCOPE_ROOT}{READ_SCOPES[collection]} required")
            if sourced_id is not None:
                return 200, {SINGULAR[collection]: _served(self._one(world, day, collection, sourced_id), base)}, {}
            return self._list(world, day, collection, environ, base)
        if WRITE_SCOPE not in scopes:
            raise ImsxError(403, "forbidden", f"scope {SCOPE_ROOT}{WRITE_SCOPE} required for writes")
        if body is None:
            raise ImsxError(422, "invaliddata", "body is not JSON")
        if self.record_bodies:
            entry["request_body"] = body
        return self._write(world, day, sourced_id, body, base)

    def _throttle(self, world: SisWorld) -> None:
        every = world.spec.rate_limit_every
        with self._lock:
            self._counts[world.spec.sis_id] = count = self._counts.get(world.spec.sis_id, 0) + 1
        if every and count % every == 0:
            raise ImsxError(429, "server_busy", "Too many requests", {"Retry-After": "0"})

    # ---- reads -----------------------------------------------------------------------------------------------
    @staticmethod
    def _records(world: SisWorld, day: date, collection: str) -> list[dict]:
        return {"users": world.users, "classes": world.classes, "lineItems": world.line_items,
                "results": world.results, "courses": world.courses, "academicSessions": world.academic_sessions,
                "enrollments": world.enrollments}[collection](day)  # fmt: skip

    def _one(self, world: SisWorld, day: date, collection: str, sourced_id: str) -> dict:
        found = next((r for r in self._records(world, day, collection) if r["sourcedId"] == sourced_id), None)
        if found is None:
            raise ImsxError(404, "unknownobject", f"{SINGULAR[collection]} {sourced_id} not found")
        return found

    def _list(
        self, world: SisWorld, day: date, collection: str, environ: WSGIEnvironment, base: str
    ) -> tuple[int, dict, dict[str, str]]:
        params = query_params(environ)
        limit, offset = int_param(params, "limit", 100), int_param(params, "offset", 0)
        if limit < 1 or offset < 0:
            raise ImsxError(400, "invaliddata", "limit must be >= 1 and offset >= 0")
        limit = min(limit, world.spec.max_limit)
        records = self._records(world, day, collection)
        if not world.spec.ignores_filter:  # vendor mode: the filter is not applied, every record comes back
            records = _filtered(records, params.get("filter", [None])[0])
        page = [_served(r, base) for r in records[offset : offset + limit]]
        url = request_base_url(environ)
        keep = {k: v[0] for k, v in params.items() if k not in ("limit", "offset")}

        def link(at: int, rel: str) -> str:
            return f'<{url}?{urlencode({**keep, "limit": limit, "offset": at})}>; rel="{rel}"'

        last = max(0, (len(records) - 1) // limit * limit)
        links = [link(0, "first"), link(last, "last")]
        if offset + limit < len(records):
            links.append(link(offset + limit, "next"))
        if offset > 0:
            links.append(link(max(0, offset - limit), "prev"))
        return 200, {collection: page}, {"X-Total-Count": str(len(records)), "Link": ", ".join(links)}

    # ---- writes ----------------------------------------------------------------------------------------------
    def _validated(self, world: SisWorld, day: date, body: object, sourced_id: str) -> dict:
        """The Result of a PUT body, checked as the spec's schema says (422) and against the gradebook (404)."""
        result = body.get("result") if isinstance(body, dict) and set(body) == {"result"} else None
        if not isinstance(result, dict):
            raise ImsxError(422, "invaliddata", 'body must be {"result": {...}}, nothing else')
        problems = result_problems(result)
        if problems:
            raise ImsxError(422, "invaliddata", "not a valid Result: " + "; ".join(problems))
        if result["sourcedId"] != sourced_id:
            raise ImsxError(422, "invaliddata", f"result.sourcedId {result['sourcedId']!r} is not the path's "
                             f"{sourced_id!r}")  # fmt: skip
        item = world.line_item(day, result["lineItem"]["sourcedId"])
        if item is None:
            raise ImsxError(404, "unknownobject", f"Line item {result['lineItem']['sourcedId']} not found")
        student = result["student"]["sourcedId"]
        if not any(u["sourcedId"] == student for u in world.users(day)):
            raise ImsxError(404, "unknownobject", f"User {student} not found")
        score = result.get("score")
        if score is not None:
            low, top = item["resultValueMin"], item.get("resultValueMax")
            if top is None or not low <= score <= top:
                raise ImsxError(422, "invaliddata", f"score {score!r} outside [{low}, {top}]")
        # The SIS keeps its own modification time, whatever the body said.
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {**result, "dateLastModified": stamp, "class": {k: item["class"][k] for k in ("sourcedId", "type")}}

    def _write(self, world: SisWorld, day: date, sourced_id: str, body: object, base: str) -> tuple[int, object, dict]:
        """One write request. In the vendor mode ``drop_after_writes`` the connection of some writes drops whatever
        the answer would have been, after the write landed (or before, with ``drop_applies_write`` off)."""
        spec, number = world.spec, world.next_write()
        dropped = spec.drop_after_writes and spec.drop_after_writes < number <= spec.drop_after_writes + spec.drops
        if dropped and not spec.drop_applies_write:
            raise _Dropped
        try:
            answer = self._put(world, day, sourced_id, body, base)
        except ImsxError:
            if dropped:
                raise _Dropped from None
            raise
        if dropped:
            raise _Dropped
        return answer

    def _put(self, world: SisWorld, day: date, sourced_id: str, body: object, base: str) -> tuple[int, object, dict]:
        result = self._validated(world, day, body, sourced_id)
        current = world.results(day)
        exists = any(r["sourcedId"] == sourced_id for r in current)
        pair = (result["lineItem"]["sourcedId"], result["student"]["sourcedId"])
        others = [r["sourcedId"] for r in current if r["sourcedId"] != sourced_id
                  and (r["lineItem"]["sourcedId"], r["student"]["sourcedId"]) == pair]  # fmt: skip
        if not exists and others and world.spec.conflict_on_duplicate:
            # Vendor behaviour, not in the spec (§2.8): a second result for the pair is refused.
            raise ImsxError(409, "invaliddata", f"a result for line item {pair[0]} and student {pair[1]} exists: "
                             f"{others[0]}")  # fmt: skip
        world.write(result)
        if world.spec.put_status == 200:  # vendor variant: 200 and the stored result
            return 200, {"result": _served(result, base)}, {}
        return world.spec.put_status, None, {}  # 201 (spec) or 204: no body


def result_problems(result: dict) -> list[str]:
    """Why ``result`` is not a OneRoster 1.2 Result (§9.1), field by field; empty when it is one."""
    problems = [f"{key} is required" for key in RESULT_REQUIRED if key not in result]
    problems += [f"{key} is not a Result field" for key in sorted(set(result) - RESULT_FIELDS)]
    for key in ("lineItem", "student", "class", "scoreScale"):
        if key in result:
            problems += _ref_problems(key, result[key])
    if "status" in result and result["status"] not in ("active", "tobedeleted"):
        problems.append("status must be active or tobedeleted")
    status = result.get("scoreStatus")
    if "scoreStatus" in result and not (status in SCORE_STATUSES or (isinstance(status, str) and _EXT.match(status))):
        problems.append(f"scoreStatus must be one of {', '.join(SCORE_STATUSES)} or ext:<token>")
    if "scoreDate" in result and not (isinstance(result["scoreDate"], str) and _DATE.match(result["scoreDate"])):
        problems.append("scoreDate must be YYYY-MM-DD")
    stamp = result.get("dateLastModified")
    if "dateLastModified" in result and not (isinstance(stamp, str) and _DATE_TIME.match(stamp)):
        problems.append("dateLastModified must be an ISO 8601 date-time with its zone")
    if "score" in result and (isinstance(result["score"], bool) or not isinstance(result["score"], int | float)):
        problems.append("score must be a number")
    for key in ("sourcedId", "textScore", "comment"):
        if key in result and not isinstance(result[key], str):
            problems.append(f"{key} must be a string")
    problems += [f'{key} must be the string "true" or "false"' for key in STRING_FLAGS
                 if key in result and result[key] not in ("true", "false")]  # fmt: skip
    return problems


def _ref_problems(key: str, ref: object) -> list[str]:
    kind = REFS[key][0]
    if not isinstance(ref, dict) or set(ref) != {"href", "sourcedId", "type"}:
        return [f"{key} must be a GUIDRef {{href, sourcedId, type}}"]
    problems = [] if ref["type"] == kind else [f"{key}.type must be {kind!r}"]
    if not isinstance(ref["sourcedId"], str) or not ref["sourcedId"]:
        problems.append(f"{key}.sourcedId must be a non-empty string")
    if not isinstance(ref["href"], str) or not ref["href"].startswith(("http://", "https://")):
        problems.append(f"{key}.href must be an absolute URI")
    return problems


def _served(record: dict, base: str) -> dict:
    """A record as served: every GUIDRef whole, with an href to the referenced object on this server."""
    out = dict(record)
    for key, (kind, service, collection) in REFS.items():
        ref = out.get(key)
        if isinstance(ref, dict) and ref.get("sourcedId"):
            out[key] = {"href": f"{base}/{service}/v1p2/{collection}/{ref['sourcedId']}",
                        "sourcedId": ref["sourcedId"], "type": kind}  # fmt: skip
    if isinstance(out.get("terms"), list):  # a class's terms: GUIDRefs to academicSessions
        out["terms"] = [{"href": f"{base}/rostering/v1p2/academicSessions/{t['sourcedId']}",
                         "sourcedId": t["sourcedId"], "type": "academicSession"} for t in out["terms"]]  # fmt: skip
    return out


def _filtered(records: list[dict], expression: str | None) -> list[dict]:
    """OneRoster ``filter``: at most two ``field='value'`` predicates joined by AND (dotted fields traverse refs)."""
    if not expression:
        return records
    predicates = expression.split(" AND ")
    if len(predicates) > 2:
        raise ImsxError(400, "invalid_filter_field", "at most two predicates")
    tests = []
    for predicate in predicates:
        match = _FILTER.match(predicate)
        if match is None:
            raise ImsxError(400, "invalid_filter_field", f"cannot read filter {predicate!r}")
        tests.append((match.group(1).split("."), match.group(2)))

    def value(record: dict, path: list[str]) -> object:
        for key in path:
            record = record.get(key) if isinstance(record, dict) else None
        return record

    return [r for r in records if all(str(value(r, path)) == wanted for path, wanted in tests)]


def _json_or_none(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
