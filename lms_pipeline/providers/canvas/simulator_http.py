"""Canvas's HTTP as the simulator speaks it (docs/providers.md §9.3): the routes, query strings parsed as Rack
parses them, and Link pages (numbered, or by bookmark) whose URLs carry the request's parameters re-encoded the Rails
way (``to_query``: sorted, arrays as ``k[]=``), then ``page`` and ``per_page``. Every refusal is an ``HttpError``
with Canvas's error body."""

from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple
from urllib.parse import parse_qsl, quote_plus, urlencode

from lms_pipeline.simulator.common import parse_as_of

DEFAULT_PER_PAGE, MAX_PER_PAGE = 10, 100  # Api::PER_PAGE and MAX_PER_PAGE in canvas-lms lib/api.rb
COURSE_ENDPOINTS = ("enrollments", "sections", "assignments", "grading_standards", "submissions")  # /courses/:id/...
PAGINATION_EXCLUDED = ("page", "per_page", "access_token", "api_key")  # lib/api.rb EXCLUDE_IN_PAGINATION_LINKS
JSON_TYPE, TEXT_TYPE = "application/json; charset=utf-8", "text/plain; charset=utf-8"
MAX_STUDENT_IDS = 100  # submissions_api_controller.rb: more explicit student_ids[] than this is a 400
NOT_FOUND = "The specified resource does not exist."

Params = dict[str, str | list[str]]  # a query string as Rack parses it: a plain value or an array
SubmissionKey = tuple[int]  # the flat submissions listing is ordered by submission id


class HttpError(Exception):
    """Ends a request; the body is Canvas's ``{"errors": [{"message": ...}]}`` unless given verbatim."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *,
                 body: bytes | None = None, content_type: str = JSON_TYPE) -> None:  # fmt: skip
        super().__init__(message)
        self.status, self.headers, self.content_type = status, headers or {}, content_type
        self.body = body if body is not None else json.dumps({"errors": [{"message": message}]}).encode()


@dataclass(frozen=True)
class SubmissionQuery:
    """The parameters of ``GET /courses/:id/students/submissions`` this app honours."""

    student_ids: frozenset[int] | None  # None: student_ids[]=all; empty: omitted (the caller's own submissions)
    graded_since: datetime | None
    include_user: bool


# ---- paging ---------------------------------------------------------------------------------------------------
def numbered(
    items: list[dict], params: Params, per_page: int, url: str, *, last: bool = True
) -> tuple[list[dict], dict[str, str]]:
    """``page=N`` pages with current/next/prev/first links, and ``last`` where Canvas counts the total (the account
    listing pages with ``total_entries: nil``, so it gives none)."""
    raw = scalar(params, "page") or "1"
    try:
        page = int(raw)
    except ValueError:
        raise HttpError(400, f"page must be a number, got {raw!r}") from None
    if page < 1:
        raise HttpError(400, f"page must be >= 1, got {page}")
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


def bookmarked(
    keyed: Sequence[tuple[tuple, dict]],
    params: Params,
    per_page: int,
    url: str,
    shape: tuple[type, ...] = (str, str, int),
) -> tuple[list[dict], dict[str, str]]:
    """``page=bookmark:<b64 of the last key read>`` pages: no page numbers, so no ``rel="last"``. ``shape`` is the
    types of the listing's sort key (enrollments: type, sortable name, id)."""
    raw = scalar(params, "page") or "first"
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
        raise HttpError(400, f"page must be 'first' or a bookmark, got {raw!r}")
    token = raw.removeprefix("bookmark:")
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, TypeError):
        raise HttpError(400, "invalid bookmark") from None
    if not isinstance(key, list) or len(key) != len(shape):
        raise HttpError(400, "invalid bookmark")
    if not all(isinstance(part, kind) and not isinstance(part, bool) for part, kind in zip(key, shape, strict=True)):
        raise HttpError(400, "invalid bookmark")
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
class Route(NamedTuple):
    connection_id: str
    endpoint: str
    course_id: int | None = None
    account: str | None = None  # the path's :account_id, as given ("self", "1", ...)


def parse_route(path: str) -> Route:
    """The route of ``/canvas/{connection}/api/v1/<path>``: ``accounts`` (accounts), ``accounts/:id`` (account),
    ``accounts/:id/courses`` (courses: the account's), ``courses`` (user_courses: the token user's own),
    ``courses/:id/{enrollments,sections,assignments,grading_standards}`` and ``courses/:id/students/submissions``
    (submissions)."""
    parts = path.strip("/").split("/")
    if len(parts) < 5 or parts[0] != "canvas" or parts[2:4] != ["api", "v1"]:
        raise HttpError(404, NOT_FOUND)
    connection, rest = parts[1], parts[4:]
    if rest == ["accounts"]:
        return Route(connection, "accounts")
    if rest[0] == "accounts" and len(rest) in (2, 3) and rest[1] and rest[2:] in ([], ["courses"]):
        return Route(connection, "courses" if len(rest) == 3 else "account", account=rest[1])
    if rest == ["courses"]:
        return Route(connection, "user_courses")
    if rest[0] != "courses" or len(rest) < 3 or not rest[1].isdigit():
        raise HttpError(404, NOT_FOUND)
    if len(rest) == 3 and rest[2] in COURSE_ENDPOINTS and rest[2] != "submissions":
        return Route(connection, rest[2], int(rest[1]))
    if rest[2:] == ["students", "submissions"]:
        return Route(connection, "submissions", int(rest[1]))
    raise HttpError(404, NOT_FOUND)


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
                raise HttpError(400, f"Invalid query parameters: expected Array (got String) for param `{name[:-2]}'")
            current.append(value)
        else:
            params[name] = value
    return params


def scalar(params: Params, name: str) -> str | None:
    """A parameter read as a plain value (``params[:x].to_i`` and the like): an array reads as absent."""
    value = params.get(name)
    return value if isinstance(value, str) else None


def as_array(params: Params, name: str) -> list[str] | None:
    """A parameter read as Ruby's ``Array(params[:x])``: a plain value or an array; None when absent."""
    value = params.get(name)
    return None if value is None else [value] if isinstance(value, str) else value


def only_array(params: Params, name: str) -> list[str] | None:
    """A parameter Canvas reads only ``if params[:x].is_a?(Array)``: sent plain (``x=v``), it is ignored."""
    value = params.get(name)
    return value if isinstance(value, list) else None


def per_page_of(params: Params) -> int:
    """lib/api.rb: a missing, non-numeric or non-positive per_page means the default; above the max, the max."""
    try:
        per_page = int(scalar(params, "per_page") or 0)
    except ValueError:
        per_page = 0
    return DEFAULT_PER_PAGE if per_page <= 0 else min(per_page, MAX_PER_PAGE)


def choices(params: Params, name: str, allowed: Sequence[str]) -> frozenset[str] | None:
    """The values of a filter (``name[]`` or plain ``name``); None when absent (the endpoint's default applies)."""
    values = as_array(params, name)
    if values is None:
        return None
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise HttpError(400, f"{name}[] must be among {', '.join(allowed)}; got {', '.join(unknown)}")
    return frozenset(values)


def submission_query(params: Params) -> SubmissionQuery:
    """student_ids[] (``all``, or at most 100 integer ids; omitted: the caller's own, none for a teacher token),
    graded_since (ISO 8601 with a time and zone, else 400) and include[] (unknown values ignored, as Canvas does)."""
    raw_ids = as_array(params, "student_ids") or []
    student_ids: frozenset[int] | None
    if "all" in raw_ids:
        student_ids = None
    elif len(raw_ids) > MAX_STUDENT_IDS:
        raise HttpError(400, "too many students", body=json.dumps({"error": "too many students"}).encode())
    elif not all(value.isdigit() for value in raw_ids):
        raise HttpError(400, f"student_ids[] must be 'all' or user ids, got {sorted(set(raw_ids))[:3]}")
    else:
        student_ids = frozenset(int(value) for value in raw_ids)
    since = scalar(params, "graded_since")
    graded_since = None
    if since is not None:
        try:
            graded_since = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            graded_since = None
        if graded_since is None or "T" not in since or graded_since.tzinfo is None:
            raise HttpError(400, f"graded_since must be an ISO 8601 time (YYYY-MM-DDTHH:MM:SSZ), got {since!r}")
    return SubmissionQuery(student_ids, graded_since, "user" in (as_array(params, "include") or []))


def select_submissions(
    keyed: list[tuple[SubmissionKey, dict]], query: SubmissionQuery
) -> list[tuple[SubmissionKey, dict]]:
    """The submissions the query asks for: its students, graded at or after graded_since."""
    ids, since = query.student_ids, query.graded_since
    if ids is None and since is None:
        return keyed
    return [
        (key, s) for key, s in keyed
        if (ids is None or s["user_id"] in ids)
        and (since is None or (s["graded_at"] is not None and utc(s["graded_at"]) >= since))
    ]  # fmt: skip


def as_of_day(value: str | None) -> date | None:
    try:
        return parse_as_of(value)
    except ValueError as err:
        raise HttpError(400, str(err)) from None


def utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
