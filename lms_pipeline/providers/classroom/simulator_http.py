"""The simulated Classroom's HTTP (docs/providers.md §5): routes, Google's error bodies, page tokens bound to the
request they answer, and the listings' filters as the discovery document describes them (states, orderBy, userId,
late, studentId)."""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from dataclasses import dataclass
from datetime import date
from urllib.parse import unquote

from lms_pipeline.simulator.common import (
    parse_as_of,
)

MAX_PAGE_SIZE = 30  # larger pageSize values are truncated silently (code-dot-org#17113, Empirical-Core#2834)


COURSE_STATES = ("ACTIVE", "ARCHIVED", "PROVISIONED", "DECLINED", "SUSPENDED")


DEFAULT_COURSE_STATES = frozenset(COURSE_STATES) - {"SUSPENDED"}


COURSEWORK_STATES = ("PUBLISHED", "DRAFT", "DELETED")


SUBMISSION_STATES = ("NEW", "CREATED", "TURNED_IN", "RETURNED", "RECLAIMED_BY_STUDENT")


# endpoint -> (its state filter parameter, the states it accepts, the states listed when none is given)
STATE_FILTERS = {
    "courses": ("courseStates", COURSE_STATES, DEFAULT_COURSE_STATES),
    "courseWork": ("courseWorkStates", COURSEWORK_STATES, frozenset({"PUBLISHED"})),
    "studentSubmissions": ("states", SUBMISSION_STATES, frozenset(SUBMISSION_STATES)),
}


GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip


INVALID_ARGUMENT = "Request contains an invalid argument."


NOT_FOUND = "Requested entity was not found."


Params = dict[str, list[str]]


class HttpError(Exception):
    """Ends a request with a Google error body; ``detail`` only goes to the request log (Google's own messages are
    generic, e.g. every bad page token is just "Request contains an invalid argument.")."""

    def __init__(
        self, status: int, message: str, detail: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.detail, self.headers = status, message, detail, headers or {}


@dataclass(frozen=True)
class Request:
    """A list request's validated paging state."""

    size: int
    offset: int
    index: int  # page index within the listing: 0 without a token
    fingerprint: int  # what a token issued for this request is bound to


@dataclass(frozen=True)
class Filters:
    """A listing's other filters, as the discovery document describes them: courseWork ``orderBy``,
    studentSubmissions ``userId`` and ``late``, courses ``studentId``."""

    order: tuple[tuple[str, bool], ...] = (("updateTime", True),)  # (field, descending); "updateTime desc" default
    user: str | None = None
    late: str | None = None  # LATE_ONLY or NOT_LATE_ONLY; None: regardless of lateness
    student: str | None = None


def parse_route(path: str) -> tuple[str, str, str | None, str | None]:
    """(connection id, endpoint, course id or alias, courseWork id or '-') of a known path; anything else is 404."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if len(parts) == 4 and parts[0] == "classroom" and parts[2:] == ["v1", "courses"]:
        return parts[1], "courses", None, None
    if len(parts) >= 6 and parts[0] == "classroom" and parts[2:4] == ["v1", "courses"]:
        if len(parts) == 6 and parts[5] in ("students", "aliases", "courseWork"):
            return parts[1], parts[5], parts[4], None
        if len(parts) == 8 and parts[5] == "courseWork" and parts[7] == "studentSubmissions" and parts[6]:
            return parts[1], "studentSubmissions", parts[4], parts[6]
    raise HttpError(404, NOT_FOUND, "expected /classroom/{connection_id}/v1/courses[/{courseId}/students|aliases|"
                     "courseWork|courseWork/{courseWorkId}/studentSubmissions]")  # fmt: skip


def filters_of(endpoint: str, params: Params) -> Filters:
    """The endpoint's filters from the query (400 INVALID_ARGUMENT for a malformed one). ``teacherId`` is not
    simulated (the simulated Classroom has no teachers): it is refused rather than silently ignored."""
    one = {name: values[-1] for name, values in params.items()}
    if endpoint == "courseWork" and "orderBy" in one:
        return Filters(order=order_by(one["orderBy"]))
    if endpoint == "studentSubmissions":
        late = one.get("late")
        if late not in (None, "LATE_VALUES_UNSPECIFIED", "LATE_ONLY", "NOT_LATE_ONLY"):
            raise HttpError(400, INVALID_ARGUMENT, f"late {late!r} is not a lateness value")
        return Filters(user=one.get("userId") or None, late=None if late == "LATE_VALUES_UNSPECIFIED" else late)
    if endpoint == "courses":
        if one.get("studentId") and one.get("teacherId"):
            raise HttpError(400, INVALID_ARGUMENT, "studentId and teacherId together (teacherId must be empty)")
        if one.get("teacherId"):
            raise HttpError(400, INVALID_ARGUMENT, "teacherId is not simulated")
        return Filters(student=one.get("studentId") or None)
    return Filters()


def order_by(text: str) -> tuple[tuple[str, bool], ...]:
    """courseWork ``orderBy``: comma-separated ``updateTime`` or ``dueDate``, each optionally ``asc``/``desc``
    (ascending unless ``desc``); anything else is INVALID_ARGUMENT."""
    order = []
    for part in text.split(","):
        words = part.split()
        known = 1 <= len(words) <= 2 and words[0] in ("updateTime", "dueDate") and words[1:] in ([], ["asc"], ["desc"])
        if not known:
            raise HttpError(400, INVALID_ARGUMENT, f"orderBy {text!r}: fields are updateTime, dueDate; asc or desc")
        order.append((words[0], words[1:] == ["desc"]))
    return tuple(order)


def ordered_work(work: list[dict], order: tuple[tuple[str, bool], ...]) -> list[dict]:
    """courseWork sorted by ``order``, the first key first (stable sorts, last key first). A missing ``dueDate``
    (all simulated courseWork has none) sorts as equal."""
    out = list(work)
    for field, descending in reversed(order):
        key = (lambda w: w["updateTime"]) if field == "updateTime" else (lambda w: json.dumps(w.get("dueDate")))
        out.sort(key=key, reverse=descending)
    return out


def states_of(endpoint: str, params: Params) -> frozenset[str]:
    """The listing's state filter (courseStates, courseWorkStates or states); empty for unfiltered endpoints."""
    if endpoint not in STATE_FILTERS:
        return frozenset()
    name, known, default = STATE_FILTERS[endpoint]
    states = frozenset(params.get(name, []))
    unknown = states - set(known)
    if unknown:
        raise HttpError(400, INVALID_ARGUMENT, f"unknown {name} {sorted(unknown)}")
    return states or default


def paging_request(params: Params, bound_to: str) -> Request:
    """Validate pageSize and pageToken. A token is bound to the path, the as-of date, the state and other filters
    and pageSize as sent: replayed with any of them changed it is refused, as Google refuses it (docs/providers.md
    §5.5)."""
    raw_size = params.get("pageSize", [""])[0]
    try:
        requested = int(raw_size) if raw_size else 0
    except ValueError:
        raise HttpError(400, INVALID_ARGUMENT, f"pageSize must be an integer, got {raw_size!r}") from None
    if requested < 0:
        raise HttpError(400, INVALID_ARGUMENT, "pageSize must be >= 0")
    fingerprint = zlib.crc32(f"{bound_to}|{requested}".encode())
    size = min(requested or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    if "pageToken" not in params:
        return Request(size, 0, 0, fingerprint)
    offset, index, bound = read_token(params["pageToken"][0])
    if bound != fingerprint:
        raise HttpError(400, INVALID_ARGUMENT, "pageToken was issued for other parameters")
    return Request(size, offset, index, fingerprint)


def page_token(offset: int, index: int, fingerprint: int) -> str:
    raw = json.dumps([offset, index, fingerprint], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str) -> tuple[int, int, int]:
    """(offset, page index, fingerprint) of a token this app issued; an empty or garbage token is a 400
    (google-api-python-client#117: an empty-string token is an error, not "the first page")."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        decoded = None
    if not (isinstance(decoded, list) and len(decoded) == 3 and all(type(v) is int and v >= 0 for v in decoded)):
        raise HttpError(400, INVALID_ARGUMENT, f"pageToken {token!r} is not a token this server issued")
    offset, index, fingerprint = decoded
    return offset, index, fingerprint


def as_of_day(value: str | None) -> date | None:
    try:
        return parse_as_of(value)
    except ValueError as err:
        raise HttpError(400, INVALID_ARGUMENT, str(err)) from None
