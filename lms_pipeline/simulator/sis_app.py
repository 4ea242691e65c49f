"""The simulated SIS: OneRoster 1.2 rostering and gradebook over HTTP, as a WSGI app (provider-apis.md §2).

Paths under ``/sis/{sis_id}``:
* ``POST /oauth/token`` -- OAuth2 client credentials (Basic auth, form ``grant_type`` and ``scope``); tokens expire
  after ``token_ttl_seconds`` and are then answered 401.
* ``GET /ims/oneroster/rostering/v1p2/{users|classes}`` and ``GET /ims/oneroster/gradebook/v1p2/{lineItems|results}``
  -- ``limit`` (default and cap 100) / ``offset`` paging with ``X-Total-Count`` and ``Link`` (next, prev, first,
  last); envelopes keyed by the plural; ``filter`` with up to two ``=`` predicates joined by `` AND ``.
* ``GET|PUT /ims/oneroster/gradebook/v1p2/results/{sourcedId}`` -- PUT upserts (201 created, 200 updated);
  ``POST /ims/oneroster/gradebook/v1p2/results`` creates and returns ``sourcedIdPairs``; with
  ``conflict_on_post`` it answers 409 when a result for the (line item, student) pair exists, like some SIS
  gradebooks (non-standard, flagged in the spec).
Errors carry imsx_StatusInfo bodies; every Nth request answers 429 ``server_busy``; writes need the
``gradebook.createput`` scope (403 ``forbidden`` otherwise); scores outside the line item's range or an unknown
``scoreStatus`` answer 422; an unknown line item 404 ``unknownobject``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from urllib.parse import parse_qs, urlencode
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.simulator.common import RequestLog, origin, parse_as_of, query_params, respond
from lms_pipeline.simulator.sis_world import SCORE_STATUSES, SisWorld

DATE_HEADER = "HTTP_X_SIMULATED_DATE"
SCOPE_ROOT = "https://purl.imsglobal.org/spec/or/v1p2/scope/"
READ_SCOPES = {"users": "roster-core.readonly", "classes": "roster-core.readonly",
               "lineItems": "gradebook.readonly", "results": "gradebook.readonly"}  # fmt: skip
WRITE_SCOPE = "gradebook.createput"
_FILTER = re.compile(r"^\s*([A-Za-z.]+)\s*=\s*'([^']*)'\s*$")


class _ImsxError(Exception):
    def __init__(self, status: int, minor: str, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status, self.minor, self.description, self.headers = status, minor, description, headers or {}

    def body(self) -> bytes:
        return json.dumps({
            "imsx_codeMajor": "failure", "imsx_severity": "error", "imsx_description": self.description,
            "imsx_CodeMinor": {"imsx_codeMinorField": [
                {"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": self.minor}]},
        }).encode()  # fmt: skip


class SisSimulatorApp:
    """Serves each SIS world at ``/sis/{sis_id}/...`` as of the ``X-Simulated-Date`` day (default: ``clock``)."""

    def __init__(
        self,
        worlds: Iterable[SisWorld],
        credentials: Mapping[str, tuple[str, str]],
        clock: Callable[[], date] | None = None,
    ) -> None:
        self.worlds = {w.spec.sis_id: w for w in worlds}
        self._credentials = dict(credentials)  # sis_id -> (client_id, client_secret)
        self.clock = clock or (lambda: datetime.now(UTC).date())
        self._tokens: dict[str, tuple[str, float, frozenset[str]]] = {}  # token -> (sis_id, expires, scopes)
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.request_log = RequestLog()

    def expire_tokens(self) -> None:
        """Make every issued token expire now (tests of the client's refresh)."""
        with self._lock:
            self._tokens = {t: (sis, 0.0, scopes) for t, (sis, _, scopes) in self._tokens.items()}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        entry = {"method": environ.get("REQUEST_METHOD"), "path": environ.get("PATH_INFO", ""), "status": None}
        try:
            status, payload, headers = self._handle(environ, entry)
            body = json.dumps(payload).encode() if payload is not None else b""
        except _ImsxError as err:
            status, body, headers = err.status, err.body(), err.headers
        entry["status"] = status
        self.request_log.append(entry)
        return respond(start_response, status, body, "application/json", headers)

    # ---- routing ---------------------------------------------------------------------------------------------
    def _handle(self, environ: WSGIEnvironment, entry: dict) -> tuple[int, object, dict[str, str]]:
        parts = environ.get("PATH_INFO", "").strip("/").split("/")
        if len(parts) < 3 or parts[0] != "sis" or parts[1] not in self.worlds:
            raise _ImsxError(404, "unknownobject", "Not found: expected /sis/{sis_id}/...")
        world, rest, method = self.worlds[parts[1]], parts[2:], environ.get("REQUEST_METHOD")
        self._throttle(world)
        if rest == ["oauth", "token"]:
            if method != "POST":
                raise _ImsxError(405, "invaliddata", "use POST", {"Allow": "POST"})
            return 200, self._token(world, environ), {"Cache-Control": "no-store"}
        if rest[:3] == ["ims", "oneroster", "rostering"] and len(rest) == 5 and rest[3] == "v1p2":
            service, collection, sourced_id = "rostering", rest[4], None
        elif rest[:3] == ["ims", "oneroster", "gradebook"] and len(rest) in (5, 6) and rest[3] == "v1p2":
            service, collection, sourced_id = "gradebook", rest[4], rest[5] if len(rest) == 6 else None
        else:
            raise _ImsxError(404, "unknownobject", f"Not found: {environ.get('PATH_INFO')}")
        if collection not in READ_SCOPES or (service == "rostering") != (collection in ("users", "classes")):
            raise _ImsxError(404, "unknownobject", f"Unknown collection {collection}")
        scopes = self._authorize(world, environ)
        day = _as_of(environ.get(DATE_HEADER)) or self.clock()
        entry.update(collection=collection, as_of=day.isoformat())
        if method == "GET":
            if READ_SCOPES[collection] not in scopes and WRITE_SCOPE not in scopes:
                raise _ImsxError(403, "forbidden", f"scope {SCOPE_ROOT}{READ_SCOPES[collection]} required")
            if sourced_id is not None:
                return 200, self._one(world, day, collection, sourced_id), {}
            return self._list(world, day, collection, environ)
        if collection != "results" or method not in ("PUT", "POST") or (method == "PUT") != (sourced_id is not None):
            raise _ImsxError(405, "invaliddata", f"{method} not allowed here")
        if WRITE_SCOPE not in scopes:
            raise _ImsxError(403, "forbidden", f"scope {SCOPE_ROOT}{WRITE_SCOPE} required for writes")
        body = _json_body(environ)
        return self._put(world, day, sourced_id, body) if method == "PUT" else self._post(world, day, body)

    def _throttle(self, world: SisWorld) -> None:
        every = world.spec.rate_limit_every
        with self._lock:
            self._counts[world.spec.sis_id] = count = self._counts.get(world.spec.sis_id, 0) + 1
        if every and count % every == 0:
            raise _ImsxError(429, "server_busy", "Too many requests", {"Retry-After": "0"})

    # ---- auth ------------------------------------------------------------------------------------------------
    def _token(self, world: SisWorld, environ: WSGIEnvironment) -> dict:
        client_id, secret = self._credentials[world.spec.sis_id]
        expected = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        if environ.get("HTTP_AUTHORIZATION") != expected:
            raise _ImsxError(401, "unauthorisedrequest", "invalid client credentials")
        form = parse_qs(_read(environ).decode(), keep_blank_values=True)
        if form.get("grant_type") != ["client_credentials"]:
            raise _ImsxError(400, "invaliddata", "grant_type must be client_credentials")
        scopes = frozenset(s.removeprefix(SCOPE_ROOT) for value in form.get("scope", []) for s in value.split() if s)
        token = secrets.token_urlsafe(24)
        ttl = world.spec.token_ttl_seconds
        with self._lock:
            self._tokens[token] = (world.spec.sis_id, time.monotonic() + ttl, scopes)
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(ttl),
                "scope": " ".join(SCOPE_ROOT + s for s in sorted(scopes))}  # fmt: skip

    def _authorize(self, world: SisWorld, environ: WSGIEnvironment) -> frozenset[str]:
        header = environ.get("HTTP_AUTHORIZATION", "")
        with self._lock:
            grant = self._tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if grant is None or grant[0] != world.spec.sis_id:
            raise _ImsxError(401, "unauthorisedrequest", "missing or invalid access token")
        if grant[1] <= time.monotonic():
            raise _ImsxError(401, "unauthorisedrequest", "access token expired")
        return grant[2]

    # ---- reads -----------------------------------------------------------------------------------------------
    @staticmethod
    def _records(world: SisWorld, day: date, collection: str) -> list[dict]:
        return {"users": world.users, "classes": world.classes, "lineItems": world.line_items,
                "results": world.results}[collection](day)  # fmt: skip

    def _one(self, world: SisWorld, day: date, collection: str, sourced_id: str) -> dict:
        found = next((r for r in self._records(world, day, collection) if r["sourcedId"] == sourced_id), None)
        if found is None:
            raise _ImsxError(404, "unknownobject", f"{collection[:-1]} {sourced_id} not found")
        return {collection[:-1]: found}

    def _list(
        self, world: SisWorld, day: date, collection: str, environ: WSGIEnvironment
    ) -> tuple[int, dict, dict[str, str]]:
        params = query_params(environ)
        limit, offset = _int(params, "limit", 100), _int(params, "offset", 0)
        if limit < 1 or offset < 0:
            raise _ImsxError(400, "invaliddata", "limit must be >= 1 and offset >= 0")
        limit = min(limit, world.spec.max_limit)
        records = _filtered(self._records(world, day, collection), params.get("filter", [None])[0])
        page = records[offset : offset + limit]
        base = _base_url(environ)
        keep = {k: v[0] for k, v in params.items() if k not in ("limit", "offset")}

        def link(at: int, rel: str) -> str:
            return f'<{base}?{urlencode({**keep, "limit": limit, "offset": at})}>; rel="{rel}"'

        last = max(0, (len(records) - 1) // limit * limit)
        links = [link(0, "first"), link(last, "last")]
        if offset + limit < len(records):
            links.append(link(offset + limit, "next"))
        if offset > 0:
            links.append(link(max(0, offset - limit), "prev"))
        return 200, {collection: page}, {"X-Total-Count": str(len(records)), "Link": ", ".join(links)}

    # ---- writes ----------------------------------------------------------------------------------------------
    def _validated(self, world: SisWorld, day: date, body: object, sourced_id: str | None) -> dict:
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            raise _ImsxError(400, "invaliddata", 'body must be {"result": {...}}')
        sourced_id = sourced_id or result.get("sourcedId")
        if not isinstance(sourced_id, str) or not sourced_id:
            raise _ImsxError(400, "invaliddata", "result.sourcedId is required")
        for key in ("lineItem", "student"):
            if not isinstance(result.get(key), dict) or not result[key].get("sourcedId"):
                raise _ImsxError(400, "invaliddata", f"result.{key}.sourcedId is required")
        if result.get("scoreStatus") not in SCORE_STATUSES:
            raise _ImsxError(422, "invaliddata", f"scoreStatus must be one of {', '.join(SCORE_STATUSES)}")
        item = world.line_item(day, result["lineItem"]["sourcedId"])
        if item is None:
            raise _ImsxError(404, "unknownobject", f"Line item {result['lineItem']['sourcedId']} not found")
        score = result.get("score")
        if score is not None:
            top = item["resultValueMax"]
            if not isinstance(score, int | float) or top is None or not item["resultValueMin"] <= score <= top:
                raise _ImsxError(422, "invaliddata", f"score {score!r} outside [{item['resultValueMin']}, {top}]")
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {**result, "sourcedId": sourced_id, "status": "active", "dateLastModified": stamp,
                "class": item["class"]}  # fmt: skip

    def _put(self, world: SisWorld, day: date, sourced_id: str, body: object) -> tuple[int, dict, dict]:
        result = self._validated(world, day, body, sourced_id)
        exists = any(r["sourcedId"] == sourced_id for r in world.results(day))
        world.write(result)
        return (200 if exists else 201), {"result": result}, {}

    def _post(self, world: SisWorld, day: date, body: object) -> tuple[int, dict, dict]:
        result = self._validated(world, day, body, None)
        pair = (result["lineItem"]["sourcedId"], result["student"]["sourcedId"])
        existing = [r for r in world.results(day)
                    if (r["lineItem"]["sourcedId"], r["student"]["sourcedId"]) == pair]  # fmt: skip
        if existing and world.spec.conflict_on_post:
            raise _ImsxError(409, "invaliddata", f"a result for line item {pair[0]} and student {pair[1]} exists")
        world.write(result)
        pairs = [{"suppliedSourcedId": result["sourcedId"], "allocatedSourcedId": result["sourcedId"]}]
        return 201, {"sourcedIdPairs": pairs}, {}


def _filtered(records: list[dict], expression: str | None) -> list[dict]:
    """OneRoster ``filter``: at most two ``field='value'`` predicates joined by AND (dotted fields traverse refs)."""
    if not expression:
        return records
    predicates = expression.split(" AND ")
    if len(predicates) > 2:
        raise _ImsxError(400, "invalid_filter_field", "at most two predicates")
    tests = []
    for predicate in predicates:
        match = _FILTER.match(predicate)
        if match is None:
            raise _ImsxError(400, "invalid_filter_field", f"cannot read filter {predicate!r}")
        tests.append((match.group(1).split("."), match.group(2)))

    def value(record: dict, path: list[str]) -> object:
        for key in path:
            record = record.get(key) if isinstance(record, dict) else None
        return record

    return [r for r in records if all(str(value(r, path)) == wanted for path, wanted in tests)]


def _read(environ: WSGIEnvironment) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length > 0 else b""


def _json_body(environ: WSGIEnvironment) -> object:
    try:
        return json.loads(_read(environ) or b"null")
    except ValueError:
        raise _ImsxError(400, "invaliddata", "body is not JSON") from None


def _int(params: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return int(params[name][0]) if name in params else default
    except ValueError:
        raise _ImsxError(400, "invaliddata", f"{name} must be an integer") from None


def _as_of(value: str | None) -> date | None:
    try:
        return parse_as_of(value)
    except ValueError as err:
        raise _ImsxError(400, "invaliddata", str(err)) from None


def _base_url(environ: WSGIEnvironment) -> str:
    return f"{origin(environ)}{environ.get('PATH_INFO', '')}"
