"""The simulated Unified.to LMS API as a WSGI app: mount it in-process or serve it on 127.0.0.1.

Behaviour follows provider-apis.md §1 and its simulator checklist: bare JSON arrays, ``limit`` clamped to 100,
the end signalled by a short page, bearer auth (401), 429 with or without Retry-After, ``fields``,
``updated_gte`` (optionally ignored, like integrations that do not support it), ``sort``/``order``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from urllib.parse import parse_qs

from lms_pipeline.simulator.world import World

DATE_HEADER = "HTTP_X_SIMULATED_DATE"
MAX_LIMIT = 100
SORT_KEYS = ("name", "updated_at", "created_at")


@dataclass
class _Fault:
    connection_id: str
    status: int
    body: bytes | str | None
    endpoint: str | None
    offset: int | None
    times: int


class _HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.message, self.headers = status, message, headers or {}


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            429: "Too Many Requests", 500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


class SimulatorApp:
    def __init__(self, worlds: Iterable[World], tokens: Mapping[str, str],
                 clock: Callable[[], date] | None = None) -> None:  # fmt: skip
        self.worlds = {w.spec.connection_id: w for w in worlds}
        self._tokens = dict(tokens)
        self.clock = clock or (lambda: datetime.now(UTC).date())
        self.request_log: list[dict] = []
        self._faults: list[_Fault] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    # ---- test controls -----------------------------------------------------------------------------------
    def inject_fault(self, connection_id: str, *, status: int = 500, body: bytes | str | None = None,
                     endpoint: str | None = None, offset: int | None = None, times: int = 1) -> None:  # fmt: skip
        with self._lock:
            self._faults.append(_Fault(connection_id, status, body, endpoint, offset, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_log(self) -> None:
        with self._lock:
            self.request_log.clear()

    # ---- WSGI --------------------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        entry: dict = {"connection_id": None, "endpoint": None, "params": {}, "as_of": None, "status": None}
        try:
            status, body, headers = self._handle(environ, entry)
        except _HttpError as err:
            status, body, headers = err.status, json.dumps({"message": err.message}).encode(), err.headers
        entry["status"] = status
        with self._lock:
            self.request_log.append(entry)
        start_response(f"{status} {_REASONS.get(status, 'Error')}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                        *headers.items()])  # fmt: skip
        return [body]

    def _handle(self, environ: dict, entry: dict) -> tuple[int, bytes, dict[str, str]]:
        parts = environ.get("PATH_INFO", "").strip("/").split("/")
        if len(parts) != 3 or parts[0] != "lms":
            raise _HttpError(404, "Not found")
        _, connection_id, endpoint = parts
        params = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        entry.update(connection_id=connection_id, endpoint=endpoint,
                     params={k: v[0] if len(v) == 1 else v for k, v in params.items()})  # fmt: skip
        world = self.worlds.get(connection_id)
        if world is None:
            raise _HttpError(404, f"connection {connection_id} not found")
        if environ.get("REQUEST_METHOD", "GET") != "GET":
            raise _HttpError(405, "Method not allowed")
        if environ.get("HTTP_AUTHORIZATION", "") != f"Bearer {self._tokens.get(connection_id)}":
            raise _HttpError(401, "Unauthorized")
        with self._lock:
            self._counts[connection_id] = count = self._counts.get(connection_id, 0) + 1
        every = world.spec.rate_limit_every
        if every and count % every == 0:
            retry = world.spec.retry_after_seconds
            raise _HttpError(429, "Too many requests to Unified.to",
                             {"Retry-After": str(int(retry))} if retry is not None else {})  # fmt: skip
        limit = min(max(_int(params, "limit", 100), 1), MAX_LIMIT)
        offset = _int(params, "offset", 0)
        if offset < 0:
            raise _HttpError(400, "offset must be >= 0")
        fault = self._take_fault(connection_id, endpoint, offset)
        if fault is not None:
            if fault.body is not None:
                body = fault.body.encode() if isinstance(fault.body, str) else fault.body
                return fault.status, body, {}
            raise _HttpError(fault.status, "Simulated upstream error")
        as_of = _as_of(environ.get(DATE_HEADER)) or self.clock()
        entry["as_of"] = as_of
        items = self._list(world, endpoint, as_of, params)
        page = items[offset : offset + limit]
        fields = {f for value in params.get("fields", []) for f in value.split(",") if f}
        if fields:
            page = [{k: v for k, v in item.items() if k in fields or k == "id"} for item in page]
        return 200, json.dumps(page).encode(), {}

    def _take_fault(self, connection_id: str, endpoint: str, offset: int) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if (fault.connection_id == connection_id and fault.times > 0
                        and fault.endpoint in (None, endpoint) and fault.offset in (None, offset)):  # fmt: skip
                    fault.times -= 1
                    return fault
        return None

    def _list(self, world: World, endpoint: str, as_of: date, params: dict[str, list[str]]) -> list[dict]:
        if endpoint == "course":
            items = world.courses(as_of)
        elif endpoint == "class":
            if world.spec.classes == "none":
                raise _HttpError(501, "class is not supported by this integration")
            items = world.classes(as_of)
            if "course_id" in params:
                items = [i for i in items if i["course_id"] == params["course_id"][0]]
        elif endpoint == "student":
            items = self._students(world, as_of, params)
        else:
            raise _HttpError(404, f"unknown object {endpoint}")
        if "updated_gte" in params and world.spec.supports_updated_gte:
            since = _timestamp(params["updated_gte"][0])
            items = [i for i in items if i.get("updated_at") and i["updated_at"] >= since]
        sort = params.get("sort", ["updated_at"])[0]
        if sort not in SORT_KEYS:
            raise _HttpError(400, f"sort must be one of {', '.join(SORT_KEYS)}")
        order = params.get("order", ["asc"])[0]
        if order not in ("asc", "desc"):
            raise _HttpError(400, "order must be asc or desc")
        items = sorted(items, key=lambda i: (i.get(sort) is not None, i.get(sort) or "", i["id"]))
        return items[::-1] if order == "desc" else items

    def _students(self, world: World, as_of: date, params: dict[str, list[str]]) -> list[dict]:
        students = world.students(as_of)
        if "course_id" in params:
            members = {s for c, s in world.true_course_edges(as_of) if c == params["course_id"][0]}
            students = [s for s in students if s["id"] in members]
        if "class_id" in params:
            members = {s for k, _, s in world.true_class_edges(as_of) if k == params["class_id"][0]}
            students = [s for s in students if s["id"] in members]
        return students


def _int(params: dict[str, list[str]], name: str, default: int) -> int:
    if name not in params:
        return default
    try:
        return int(params[name][0])
    except ValueError:
        raise _HttpError(400, f"{name} must be an integer") from None


def _as_of(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _HttpError(400, "X-Simulated-Date must be YYYY-MM-DD") from None


def _timestamp(value: str) -> str:
    """updated_gte as a comparable 'YYYY-MM-DDTHH:MM:SSZ' string (a bare date means midnight UTC)."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value).strftime("%Y-%m-%dT00:00:00Z")
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise _HttpError(400, "updated_gte must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ") from None
