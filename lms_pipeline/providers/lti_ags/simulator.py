"""A simulated LTI Advantage platform (docs/providers.md §3) as a WSGI app: Assignment and Grade Services 2.0 line
items and results, and Names and Role Provisioning Services 2.0 memberships, over the same worlds as the other apps.

One app serves several connections under ``/lti/{connection_id}/``; each LTI context is a world course:

- ``GET contexts``: the contexts with the AGS and NRPS claims a tool would have stored from its launches (LTI has
  no platform-wide listing of contexts; this stands in for the launch claims so that a client is *given* every
  service URL). ``application/json``.
- ``GET contexts/{course}/lineitems``: line items, ``application/vnd.ims.lis.v2.lineitemcontainer+json``, filtered
  by ``resource_id``, ``tag`` and ``resource_link_id`` as AGS defines.
- ``GET {line item id}``: one line item, ``application/vnd.ims.lis.v2.lineitem+json``.
- ``GET {line item id with /results before its query}``: results (``user_id`` filter: at most one),
  ``application/vnd.ims.lis.v2.resultcontainer+json``.
- ``GET contexts/{course}/memberships``: NRPS members, ``application/vnd.ims.lti-nrps.v2.membershipcontainer+json``.

How the world becomes AGS (deterministic):

- A line item per content of the course with at least one activity carrying ``assigned_grade``; ``resourceId`` is
  the content id, ``scoreMaximum`` 100. About half the line item ids carry a query string (``?type_id=N``, as
  Moodle's do), which the platform requires back: ``{id}/results`` built by string concatenation puts ``/results``
  inside the query and answers 404 (peers-and-user-pains.md item 18).
- A result per learner whose grade the gradebook holds: "87" is 87 of 100, "84.5%" 84.5 of 100, "17/20" 17 with
  ``resultMaximum`` 20 (AGS lets a result's maximum differ from its line item's). An ungraded learner ("") has no
  result at all (the platform MAY omit them, docs/providers.md §3.3), so AGS cannot tell ungraded from missing. A
  non-numeric entry ("EX", "pass") is a result without ``resultScore`` (optional in AGS) whose ``comment`` holds the
  gradebook's text: listed, with no score, never a 0.
- Planted zeros: the world never grades below 40, so ``platform_grade`` scores one numeric cell in ``ZERO_EVERY``
  (by a hash of learner and content) 0, keeping its maximum: a real graded 0 for clients to keep apart from "none".
- ``userId`` is an opaque ``sub`` (``lti_user_id``: sha256 of the learner id, 16 hex digits), never the SIS id.
  NRPS lists enrolled students (``Active``), students who left (``Inactive``, or ``Deleted`` for some) and the
  instructor, each with ``lis_person_sourcedid`` = the world's id. Guests (learners never on the roster) are in
  results but not properly in NRPS: in even-numbered courses they are absent, in odd ones they are listed without
  ``lis_person_sourcedid``; either way nothing ties their ``sub`` to a student id.

Paging on every listing: ``limit`` (default 10, at most 100; anything but a positive integer is a 400) and an
opaque ``page``; the only end signal is a response without ``Link: <...>; rel="next"``. Results are paged over
every learner with a grade entry and the ungraded ones dropped afterwards, so a page can be short, even empty,
while a next link follows. Media types are strict on purpose: the ``Accept`` header must name the endpoint's media
type, else 406 (``*/*`` and ``application/json`` included), so a client that sends the wrong one is caught.

Requests are checked in this order: path (404), connection (404), rate limit (429 + Retry-After, every
``rate_limit_every``-th request of a connection), method (405), token (401), scope (403), as-of date and
``limit``/``page`` (400), context and line item with its ``type_id`` (404), Accept (406), injected fault.
"""

from __future__ import annotations

import json
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, urlencode
from wsgiref.types import StartResponse, WSGIEnvironment

from lms_pipeline.providers.lti_ags.simulator_world import (
    AGS,
    Context,
    build_contexts,
    context_claims,
    line_item,
    line_item_id,
    result_score,
    type_id,
)
from lms_pipeline.simulator.common import (
    DATE_HEADER,
    SimulatedApp,
    logged_params,
    origin,
    parse_as_of,
    query_params,
    request_url,
    respond,
)
from lms_pipeline.simulator.world import DateOutOfRangeError, World

DEFAULT_LIMIT, MAX_LIMIT = 10, 100

LINEITEM_SCOPE, LINEITEM_READ_SCOPE, RESULT_SCOPE = AGS + "lineitem", AGS + "lineitem.readonly", AGS + "result.readonly"
MEMBERSHIP_SCOPE = "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly"
ALL_SCOPES = (LINEITEM_READ_SCOPE, RESULT_SCOPE, MEMBERSHIP_SCOPE)

MEDIA_TYPES = {
    "contexts": "application/json",
    "lineitems": "application/vnd.ims.lis.v2.lineitemcontainer+json",
    "lineitem": "application/vnd.ims.lis.v2.lineitem+json",
    "results": "application/vnd.ims.lis.v2.resultcontainer+json",
    "memberships": "application/vnd.ims.lti-nrps.v2.membershipcontainer+json",
}
# Reading line items needs either line item scope; the other listings need their own.
REQUIRED_SCOPES = {
    "lineitems": (LINEITEM_READ_SCOPE, LINEITEM_SCOPE),
    "lineitem": (LINEITEM_READ_SCOPE, LINEITEM_SCOPE),
    "results": (RESULT_SCOPE,),
    "memberships": (MEMBERSHIP_SCOPE,),
}
JSON_TYPE = "application/json"

Params = dict[str, list[str]]


@dataclass(frozen=True)
class LtiOptions:
    """How the simulated platform behaves. ``scopes``: what every connection's token was granted."""

    scopes: tuple[str, ...] = ALL_SCOPES
    rate_limit_every: int = 0  # every N-th request of a connection answers 429 (0: never)
    retry_after_seconds: float = 1.0  # the Retry-After of those answers

    def __post_init__(self) -> None:
        if self.rate_limit_every < 0 or self.retry_after_seconds < 0:
            raise ValueError(f"rate_limit_every and retry_after_seconds must be >= 0: {self}")


class _HttpError(Exception):
    """Ends a request with an RFC 6750-style ``{"error", "error_description"}`` body."""

    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status, self.headers = status, headers or {}
        self.body = json.dumps({"error": error, "error_description": description}).encode()


class _Route(NamedTuple):
    connection_id: str
    endpoint: str  # contexts | lineitems | lineitem | results | memberships
    course_id: str | None = None
    content_id: str | None = None


class LtiPlatformApp(SimulatedApp):
    """Serves each world's courses as LTI contexts at ``/lti/{connection_id}/...`` as of a simulated date
    (``X-Simulated-Date`` header, else ``clock()``). ``options`` are LtiOptions fields."""

    FAULT_FIELDS = ("endpoint", "course_id")

    def __init__(
        self,
        worlds: Iterable[World],
        tokens: Mapping[str, str],
        clock: Callable[[], date] | None = None,
        **options: object,
    ) -> None:
        super().__init__(worlds, clock)
        self.options = LtiOptions(**options)  # type: ignore[arg-type]
        self._tokens = dict(tokens)
        self._requests: dict[str, int] = defaultdict(int)
        self._contexts: OrderedDict[tuple, dict[str, Context]] = OrderedDict()

    # ---- WSGI ------------------------------------------------------------------------------------------------
    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        params = query_params(environ)
        entry: dict = {"connection_id": None, "endpoint": None, "course_id": None, "content_id": None,
                       "as_of": None, "status": None, "url": request_url(environ),
                       "accept": environ.get("HTTP_ACCEPT"), "next": None, "throttled": False,
                       "params": logged_params(params)}  # fmt: skip
        headers: dict[str, str] = {}
        try:
            status, body, content_type = self._handle(environ, params, entry, headers)
        except _HttpError as err:
            status, body, content_type = err.status, err.body, JSON_TYPE
            headers.update(err.headers)
        entry["status"] = status
        self.request_log.append(entry)
        return respond(start_response, status, body, content_type, headers)

    def _handle(
        self, environ: WSGIEnvironment, params: Params, entry: dict, headers: dict[str, str]
    ) -> tuple[int, bytes, str]:
        route = _route(environ.get("PATH_INFO", ""))
        entry.update(connection_id=route.connection_id, endpoint=route.endpoint, course_id=route.course_id,
                     content_id=route.content_id)  # fmt: skip
        world = self.worlds.get(route.connection_id)
        if world is None:
            raise _HttpError(404, "not_found", f"no connection {route.connection_id!r}")
        self._throttle(route.connection_id, entry)
        if environ.get("REQUEST_METHOD") != "GET":
            raise _HttpError(405, "method_not_allowed", "only GET is served", {"Allow": "GET"})
        self._authorize(environ.get("HTTP_AUTHORIZATION"), route)
        entry["as_of"] = as_of = _as_of(environ.get(DATE_HEADER)) or self.clock()
        limit, page = _limit(params), _page_number(params)
        try:
            contexts = self._context_views(world, as_of)
        except DateOutOfRangeError as err:
            raise _HttpError(400, "invalid_request", str(err)) from None
        context = None if route.course_id is None else contexts.get(route.course_id)
        if route.course_id is not None and context is None:
            raise _HttpError(404, "not_found", f"no context {route.course_id!r}")
        content_id = None if context is None or route.content_id is None else _line_item_of(context, route, params)
        media_type = MEDIA_TYPES[route.endpoint]
        if media_type not in _accepted(environ.get("HTTP_ACCEPT")):
            raise _HttpError(406, "not_acceptable", f"{route.endpoint} are served as {media_type} only")
        fault = self._faults.take(route.connection_id, endpoint=route.endpoint, course_id=route.course_id)
        if fault is not None:
            if fault.body is None:
                raise _HttpError(fault.status, "server_error", "simulated upstream error")
            return fault.status, fault.payload, media_type
        url, base = entry["url"], f"{origin(environ)}/lti/{quote(route.connection_id)}"
        if context is None:
            items = [context_claims(base, c, self.options.scopes) for c in contexts.values()]
            payload, more = _chunk(items, limit, page)
        elif route.endpoint == "memberships":
            members, more = _chunk(context.members, limit, page)
            payload = {"id": url, "context": {"id": context.view.id, "label": f"C{context.view.number:05d}",
                                              "title": context.view.name}, "members": members}  # fmt: skip
        elif route.endpoint == "lineitems":
            items = _filter_line_items([line_item(base, context, c) for c in context.line_items], params)
            payload, more = _chunk(items, limit, page)
        elif route.endpoint == "lineitem":
            payload, more = line_item(base, context, content_id), False  # type: ignore[arg-type]
        else:
            payload, more = _results(base, context, content_id, params, limit, page)  # type: ignore[arg-type]
        if more:
            entry["next"] = _link(url, page + 1, limit)
            headers["Link"] = f'<{entry["next"]}>; rel="next"'
        return 200, json.dumps(payload).encode(), media_type

    # ---- throttling and auth ---------------------------------------------------------------------------------
    def _throttle(self, connection_id: str, entry: dict) -> None:
        every = self.options.rate_limit_every
        with self._lock:
            self._requests[connection_id] += 1
            count = self._requests[connection_id]
        if every and count % every == 0:
            entry["throttled"] = True
            raise _HttpError(429, "rate_limited", "too many requests",
                             {"Retry-After": f"{self.options.retry_after_seconds:g}"})  # fmt: skip

    def _authorize(self, header: str | None, route: _Route) -> None:
        """401 for a missing or wrong token; 403 when the token lacks the endpoint's scope (RFC 6750 §3.1)."""
        if header is None or header != f"Bearer {self._tokens.get(route.connection_id)}":
            raise _HttpError(401, "invalid_token", "the access token is missing, expired or not valid here",
                             {"WWW-Authenticate": 'Bearer error="invalid_token"'})  # fmt: skip
        needed = REQUIRED_SCOPES.get(route.endpoint, ())
        if needed and not set(needed) & set(self.options.scopes):
            challenge = f'Bearer error="insufficient_scope", scope="{needed[0]}"'
            raise _HttpError(403, "insufficient_scope", f"{route.endpoint} need the scope {needed[0]}",
                             {"WWW-Authenticate": challenge})  # fmt: skip

    # ---- the world in AGS and NRPS shapes --------------------------------------------------------------------
    def _context_views(self, world: World, as_of: date) -> dict[str, Context]:
        """The day's contexts by course id; cached, as a scan asks for the same day hundreds of times."""
        key = (world.spec.connection_id, as_of, world.churn_fired(as_of)[0])
        with self._lock:
            if key in self._contexts:
                self._contexts.move_to_end(key)
                return self._contexts[key]
        contexts = build_contexts(world, as_of)
        with self._lock:
            self._contexts[key] = contexts
            while len(self._contexts) > 8:
                self._contexts.popitem(last=False)
        return contexts


def _line_item_of(context: Context, route: _Route, params: Params) -> str:
    """The content a line item URL names; 404 unless its ``type_id`` is exactly the one its id carries."""
    content_id = route.content_id or ""
    given = params.get("type_id")
    if content_id not in context.line_items or given != ([type_id(content_id)] if type_id(content_id) else None):
        raise _HttpError(404, "not_found", f"no line item {content_id!r} with type_id {given} in {context.view.id}")
    return content_id


# The line item container's filters (AGS 2.0, docs/providers.md §9.5): query parameter -> line item property.
LINE_ITEM_FILTERS = {"resource_id": "resourceId", "tag": "tag", "resource_link_id": "resourceLinkId"}


def _filter_line_items(items: list[dict], params: Params) -> list[dict]:
    """The line items matching every filter given (a line item without the property matches none)."""
    wanted = {prop: params[name][0] for name, prop in LINE_ITEM_FILTERS.items() if name in params}
    return [i for i in items if all(i.get(prop) == value for prop, value in wanted.items())]


def _results(base: str, context: Context, content_id: str, params: Params, limit: int,
             page: int) -> tuple[list[dict], bool]:  # fmt: skip
    """A page of results: paged over every grade cell, then the ungraded ones dropped (AGS omits them)."""
    cells = context.cells[content_id]
    if "user_id" in params:
        cells = [c for c in cells if c.user_id == params["user_id"][0]]
    chunk, more = _chunk(cells, limit, page)
    item_id = line_item_id(base, context.view.id, content_id)
    path, _, query = item_id.partition("?")
    results = []
    for cell in chunk:
        if cell.grade == "":
            continue
        result: dict = {"id": f"{path}/results/{cell.user_id}" + (f"?{query}" if query else ""),
                        "scoreOf": item_id, "userId": cell.user_id}  # fmt: skip
        numeric = result_score(cell.grade)
        if numeric is None:
            result.update(resultMaximum=100, comment=cell.grade)
        else:
            result.update(resultScore=numeric[0], resultMaximum=numeric[1])
        results.append(result)
    return results, more


# ---- paging and request parsing -------------------------------------------------------------------------------
def _chunk(items: list, limit: int, page: int) -> tuple[list, bool]:
    """Page ``page`` (from 1) of ``items`` and whether more follow."""
    return items[(page - 1) * limit : page * limit], page * limit < len(items)


def _link(url: str, page: int, limit: int) -> str:
    """The request URL with page and limit replaced: every other parameter (type_id, user_id) is kept."""
    base, _, query = url.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in ("page", "limit")]
    return f"{base}?{urlencode([*kept, ('limit', str(limit)), ('page', str(page))])}"


def _route(path: str) -> _Route:
    """``/lti/{conn}/contexts[/{course}/(lineitems[/{content}/lineitem[/results]] | memberships)]``."""
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[0] != "lti" or parts[2] != "contexts":
        raise _HttpError(404, "not_found", f"no such path {path!r}")
    conn, rest = parts[1], parts[3:]
    if not rest:
        return _Route(conn, "contexts")
    if len(rest) == 2 and rest[1] in ("lineitems", "memberships"):
        return _Route(conn, rest[1], rest[0])
    if len(rest) in (4, 5) and rest[1] == "lineitems" and rest[3] == "lineitem" and rest[4:] in ([], ["results"]):
        return _Route(conn, "results" if rest[4:] else "lineitem", rest[0], rest[2])
    raise _HttpError(404, "not_found", f"no such path {path!r}")


def _accepted(header: str | None) -> set[str]:
    """The media types an Accept header names, parameters (q=...) dropped."""
    return {part.split(";", 1)[0].strip().lower() for part in (header or "").split(",")}


def _limit(params: Params) -> int:
    raw = params.get("limit", [str(DEFAULT_LIMIT)])[0]
    if not raw.isdigit() or int(raw) < 1:
        raise _HttpError(400, "invalid_request", f"limit must be a positive integer, got {raw!r}")
    return min(int(raw), MAX_LIMIT)


def _page_number(params: Params) -> int:
    raw = params.get("page", ["1"])[0]
    if not raw.isdigit() or int(raw) < 1:
        raise _HttpError(400, "invalid_request", f"invalid page {raw!r}")
    return int(raw)


def _as_of(value: str | None) -> date | None:
    try:
        return parse_as_of(value)
    except ValueError as err:
        raise _HttpError(400, "invalid_request", str(err)) from None
