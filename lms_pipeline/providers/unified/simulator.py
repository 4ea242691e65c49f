"""The simulated Unified.to LMS API as a WSGI app: mount it in-process or serve it on 127.0.0.1.

Behaviour follows docs/providers.md §1 and its simulator checklist: bare JSON arrays, ``limit`` clamped to 100,
the end signalled by a short page, bearer auth (401), 429 with or without Retry-After, ``fields``,
``updated_gte`` (optionally ignored, like Udemy/Teachable), ``sort``/``order``, 501 for an object the integration
lacks. Requests are checked in this order: path, connection (404), rate limit (429), method (405), token (401),
as-of date and query (400), injected fault, object support (501). ``limit``/``offset`` may come as integral floats
(``5.0``: the vendor SDK sends them so, §9.4). ``updated_gte`` and sorting compare instants, not strings: records
may carry microseconds (``…:00.418207Z``) while the filter is sent in whole seconds. ``WorldSpec.ignores_paging``
makes listed endpoints ignore limit/offset (Unified list options ``-none-``) or only offset;
``WorldSpec.unstable_ties`` serves records tied on the sort key in a new order on every request.

Churn mode (``WorldSpec.churn_share``): before every course or class list request of an as-of date but its first,
the world applies its next mid-scan updates, so records move in ``updated_at`` order while a client pages.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.simulator.common import (
    DATE_HEADER,
    SimulatedApp,
    logged_params,
    parse_as_of,
    query_params,
    respond,
)
from lms_pipeline.simulator.world import DateOutOfRangeError, World

MAX_LIMIT = 100
ENDPOINTS = ("course", "class", "student", "content", "activity")
SORT_KEYS = ("name", "updated_at", "created_at")
ORDERS = ("asc", "desc")

Params = dict[str, list[str]]


class _HttpError(Exception):
    """Ends a request with a JSON error ``{"message": ...}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class _Query:
    """A list request's validated query parameters."""

    limit: int
    offset: int
    updated_gte: str | None  # None also when the integration ignores it
    sort: str
    descending: bool
    fields: frozenset[str]


class SimulatorApp(SimulatedApp):
    """Serves each world's truth at ``/lms/{connection_id}/{course|class|student|content|activity}`` as of a
    simulated date."""

    FAULT_FIELDS = ("endpoint", "offset")

    def __init__(
        self, worlds: Iterable[World], tokens: Mapping[str, str], clock: Callable[[], date] | None = None
    ) -> None:
        super().__init__(worlds, clock)
        self._tokens = dict(tokens)
        self._counts: dict[str, int] = {}
        self._list_requests: dict[tuple[str, date], int] = {}

    # ---- WSGI ------------------------------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        params = query_params(environ)
        entry: dict = {"connection_id": None, "endpoint": None, "as_of": None, "status": None,
                       "params": logged_params(params)}  # fmt: skip
        try:
            status, body, headers = self._handle(environ, params, entry)
        except _HttpError as err:
            status, body, headers = err.status, json.dumps({"message": err.message}).encode(), err.headers
        entry["status"] = status
        self.request_log.append(entry)
        return respond(start_response, status, body, "application/json", headers)

    def _handle(self, environ: WSGIEnvironment, params: Params, entry: dict) -> tuple[int, bytes, dict[str, str]]:
        parts = environ.get("PATH_INFO", "").strip("/").split("/")
        if len(parts) != 3 or parts[0] != "lms":
            raise _HttpError(404, "Not found: expected /lms/{connection_id}/{object}")
        _, connection_id, endpoint = parts
        entry.update(connection_id=connection_id, endpoint=endpoint)
        world = self.worlds.get(connection_id)
        if world is None:
            raise _HttpError(404, f"Connection {connection_id} not found")
        self._throttle(world)
        if environ.get("REQUEST_METHOD") != "GET":
            raise _HttpError(405, "Method not allowed", {"Allow": "GET"})
        if environ.get("HTTP_AUTHORIZATION") != f"Bearer {self._tokens.get(connection_id)}":
            raise _HttpError(401, "Unauthorized")
        entry["as_of"] = as_of = _as_of(environ.get(DATE_HEADER)) or self.clock()
        if endpoint not in ENDPOINTS:
            raise _HttpError(404, f"Object {endpoint} not found")
        query = _query(params, with_updated_gte=world.spec.supports_updated_gte, with_sort=world.spec.supports_sort)
        fault = self._faults.take(connection_id, endpoint=endpoint, offset=query.offset)
        if fault is not None:
            if fault.body is None:
                raise _HttpError(fault.status, "Simulated upstream error")
            return fault.status, fault.payload, {}
        try:
            self._churn(world, endpoint, as_of)
            items = self._records(world, endpoint, as_of, params)
        except DateOutOfRangeError as err:
            raise _HttpError(400, str(err)) from None
        spec = world.spec
        paging = spec.ignores_paging if endpoint in spec.ignores_paging_on else "no"
        ties = random.Random(f"{connection_id}:{self._counts[connection_id]}") if spec.unstable_ties else None
        return 200, json.dumps(_page(items, query, paging, ties)).encode(), {}

    def _throttle(self, world: World) -> None:
        """Every Nth request to a connection answers 429, whatever else is wrong with it."""
        spec = world.spec
        with self._lock:
            self._counts[spec.connection_id] = count = self._counts.get(spec.connection_id, 0) + 1
        if spec.rate_limit_every and count % spec.rate_limit_every == 0:
            retry = spec.retry_after_seconds
            headers = {} if retry is None else {"Retry-After": str(math.ceil(retry))}
            raise _HttpError(429, "Too many requests to Unified.to", headers)

    def _churn(self, world: World, endpoint: str, as_of: date) -> None:
        if endpoint not in ("course", "class") or not world.spec.churn_share:
            return
        key = (world.spec.connection_id, as_of)
        with self._lock:
            self._list_requests[key] = seen = self._list_requests.get(key, 0) + 1
        if seen > 1:
            world.fire(as_of)

    @staticmethod
    def _records(world: World, endpoint: str, as_of: date, params: Params) -> list[dict]:
        """The endpoint's records as of the date, narrowed by its parent filters."""
        if endpoint == "course":
            return world.courses(as_of)
        if endpoint == "class":
            if world.spec.classes == "none":
                raise _HttpError(501, "class is not supported by this integration")
            course_id = _first(params, "course_id")
            return [c for c in world.classes(as_of) if course_id is None or c["course_id"] == course_id]
        if endpoint in ("content", "activity"):
            if not world.spec.progress:
                raise _HttpError(501, f"{endpoint} is not supported by this integration")
            course_id = _first(params, "course_id")
            if endpoint == "content":
                return [c for c in world.contents(as_of) if course_id is None or course_id in c["course_ids"]]
            student, content = _first(params, "student_id"), _first(params, "content_id")
            rows = world.activities(as_of) if course_id is None else world.activities_of(as_of, course_id)
            return [
                a for a in rows
                if (student is None or a["student_id"] == student) and (content is None or a["content_id"] == content)
            ]  # fmt: skip
        members = None
        if (course_id := _first(params, "course_id")) is not None:
            members = {s for c, s in world.true_course_edges(as_of) if c == course_id}
        if (class_id := _first(params, "class_id")) is not None:
            in_class = {s for k, _, s in world.true_class_edges(as_of) if k == class_id}
            members = in_class if members is None else members & in_class
        return [s for s in world.students(as_of) if members is None or s["id"] in members]


def _page(items: list[dict], query: _Query, paging: str = "no", ties: random.Random | None = None) -> list[dict]:
    """The filtered, sorted listing cut at offset/limit, or as an integration ignoring them answers; ``ties``
    shuffles records tied on the sort key (``WorldSpec.unstable_ties``)."""
    if query.updated_gte is not None:
        since = _instant(query.updated_gte)
        items = [i for i in items if i.get("updated_at") is not None and _instant(i["updated_at"]) >= since]
    items = _sorted(items, query.sort, query.descending, ties)
    if paging == "no":
        items = items[query.offset : query.offset + query.limit]
    elif paging == "offset":
        items = items[: query.limit]
    if query.fields:
        items = [{k: v for k, v in i.items() if k in query.fields or k == "id"} for i in items]
    return items


def _sorted(items: list[dict], key: str, descending: bool, ties: random.Random | None = None) -> list[dict]:
    """Records missing the key first, then by key (timestamps as instants); ties by id ascending in either order (a
    stable paging order), or in a random order when ``ties`` is given."""
    missing = sorted((i for i in items if i.get(key) is None), key=lambda i: i["id"])
    present = sorted((i for i in items if i.get(key) is not None), key=lambda i: i["id"])
    if ties is not None:
        ties.shuffle(present)
    value = (lambda i: _instant(i[key])) if key.endswith("_at") else (lambda i: i[key])
    present.sort(key=value, reverse=descending)  # stable, also when reversed
    return missing + present


def _instant(stamp: str) -> str:
    """A timestamp as a string that orders like the instant: 'YYYY-MM-DDTHH:MM:SS.ffffff' in UTC. As strings,
    '…:00.5Z' < '…:00Z' ('.' sorts before 'Z'): a record half a second after a whole-second filter would fail it."""
    if len(stamp) == 20 and stamp[-1] == "Z":  # YYYY-MM-DDTHH:MM:SSZ, the common case: no parsing
        return stamp[:19] + ".000000"
    if len(stamp) == 27 and stamp[-1] == "Z" and stamp[19] == ".":
        return stamp[:26]
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds")


def _query(params: Params, *, with_updated_gte: bool, with_sort: bool = True) -> _Query:
    """Validate the list parameters; an integration without updated_gte (or sort) ignores it entirely (not even
    a 400), like Udemy Business or Teachable (docs/providers.md §1.6)."""
    sort, order = _first(params, "sort") or "updated_at", _first(params, "order") or "asc"
    if not with_sort:
        sort, order = "updated_at", "asc"
    if sort not in SORT_KEYS:
        raise _HttpError(400, f"sort must be one of {', '.join(SORT_KEYS)}")
    if order not in ORDERS:
        raise _HttpError(400, f"order must be one of {', '.join(ORDERS)}")
    offset = _int(params, "offset", 0)
    if offset < 0:
        raise _HttpError(400, "offset must be >= 0")
    updated_gte = _first(params, "updated_gte") if with_updated_gte else None
    return _Query(
        limit=min(max(_int(params, "limit", MAX_LIMIT), 1), MAX_LIMIT),
        offset=offset,
        updated_gte=None if updated_gte is None else _timestamp(updated_gte),
        sort=sort,
        descending=order == "desc",
        fields=frozenset(f.strip() for value in params.get("fields", []) for f in value.split(",") if f.strip()),
    )


def _first(params: Params, name: str) -> str | None:
    return params[name][0] if name in params else None


def _int(params: Params, name: str, default: int) -> int:
    """An integer parameter; an integral float too, as unified-python-sdk types ``limit``/``offset`` as float and
    sends ``limit=5.0&offset=0.0``, so the real API accepts them (docs/providers.md §9.4)."""
    value = _first(params, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not number.is_integer():  # also nan and inf
        raise _HttpError(400, f"{name} must be an integer, got {value!r}")
    return int(number)


def _as_of(value: str | None) -> date | None:
    try:
        return parse_as_of(value)
    except ValueError as err:
        raise _HttpError(400, str(err)) from None


def _timestamp(value: str) -> str:
    """updated_gte as a comparable 'YYYY-MM-DDTHH:MM:SSZ' string; a bare date or a missing zone means UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _HttpError(400, f"updated_gte must be YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, got {value!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
