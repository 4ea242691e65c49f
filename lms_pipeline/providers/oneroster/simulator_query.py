"""The query language of the simulated OneRoster rostering service (docs/providers.md §2.4, §9.2): ``filter`` (at most
two predicates joined by AND or OR; dates compared as instants), ``sort``/``orderBy``, ``fields``, and the routes;
what a collection may not be filtered, sorted or selected by is a 400."""

from __future__ import annotations

import operator
import re
from datetime import UTC, datetime

from lms_pipeline.providers.oneroster.simulator_oauth import (
    ImsxError,
)

SERVICE_PATH = ("ims", "oneroster", "rostering", "v1p2")
COLLECTIONS = ("courses", "classes", "enrollments", "academicSessions", "terms")

Params = dict[str, list[str]]

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


CONJUNCTION = re.compile(r"\s+(AND|OR)\s+(?=(?:[^']*'[^']*')*[^']*$)")  # AND/OR outside quoted values


PREDICATE = re.compile(r"^\s*([A-Za-z][A-Za-z.]*)\s*(!=|>=|<=|=|>|<|~)\s*'([^']*)'\s*$")


class Filter:
    """A parsed ``filter``: at most two predicates, all joined by AND or all by OR."""

    def __init__(self, expression: str | None, collection: str) -> None:
        parts = CONJUNCTION.split(expression.strip()) if expression and expression.strip() else []
        self.any = "OR" in parts[1::2]
        predicates = parts[0::2]
        if len(predicates) > 2:
            raise ImsxError(400, "invalid_filter_field", f"at most two predicates, got {len(predicates)}")
        self.tests: list[tuple[list[str], str, object]] = []
        for predicate in predicates:
            match = PREDICATE.match(predicate)
            if match is None:
                raise ImsxError(400, "invalid_filter_field", f"cannot read filter predicate {predicate!r}")
            field, op, value = match.groups()
            if field not in FILTER_FIELDS[collection]:
                raise ImsxError(400, "invalid_filter_field", f"{collection} cannot be filtered by {field}")
            wanted: object = instant(value) if field in DATE_FIELDS and op != "~" else value
            if wanted is None:
                raise ImsxError(400, "invalid_filter_field", f"{field}: {value!r} is not a date or datetime")
            self.tests.append((field.split("."), op, wanted))

    def equals(self, field: str) -> set[str]:
        """The values an ``=`` predicate on ``field`` names (how a request targets one class)."""
        return {str(wanted) for path, op, wanted in self.tests if ".".join(path) == field and op == "="}

    def keep(self, records: list[dict]) -> list[dict]:
        if not self.tests:
            return records
        combine = any if self.any else all
        return [r for r in records if combine(holds(r, path, op, wanted) for path, op, wanted in self.tests)]


def parse_route(rest: list[str]) -> tuple[str, str | None]:
    """(endpoint, class id) from the path after the connection: a collection, or ``classes/{id}/students``."""
    if tuple(rest[:4]) == SERVICE_PATH:
        tail = rest[4:]
        if len(tail) == 1 and tail[0] in COLLECTIONS:
            return tail[0], None
        if len(tail) == 3 and tail[0] == "classes" and tail[2] == "students" and tail[1]:
            return "students", tail[1]
    raise ImsxError(404, "unknownobject", f"Not found: /{'/'.join(rest)}")


def instant(value: str) -> datetime | None:
    """A filter or record date: ``YYYY-MM-DD`` (midnight UTC) or an ISO datetime (UTC when naive)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def field_value(record: dict, path: list[str]) -> object:
    """A record's value at a dotted field (``class.sourcedId``); None when absent."""
    value: object = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def ordered_records(records: list[dict], params: Params, collection: str) -> list[dict]:
    """The records in ``sort`` order (``orderBy`` asc, the default, or desc; records without the field last when
    ascending), or as they are when no sort is asked."""
    field, order = params.get("sort", [None])[0], params.get("orderBy", ["asc"])[0]
    if order not in ("asc", "desc"):
        raise ImsxError(400, "invaliddata", f"orderBy must be asc or desc, got {order!r}")
    if field is None:
        return records
    if field not in FILTER_FIELDS[collection]:
        raise ImsxError(400, "invaliddata", f"{collection} cannot be sorted by {field}")
    path = field.split(".")

    def key(record: dict) -> tuple[bool, str]:
        value = field_value(record, path)
        return value is None, "" if value is None else str(value)

    return sorted(records, key=key, reverse=order == "desc")


def selected_fields(params: Params, collection: str) -> list[str] | None:
    """The properties ``fields`` selects (None: all), each checked against the entity's."""
    names = [name.strip() for value in params.get("fields", []) for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SELECTABLE[collection]]
    if unknown:
        raise ImsxError(400, "invalid_selection_field", f"{collection} have no field {', '.join(unknown)}")
    return names or None


def holds(record: dict, path: list[str], op: str, wanted: object) -> bool:
    value = field_value(record, path)
    if value is None:
        return False
    if isinstance(wanted, datetime):
        have: object = instant(str(value))
        if have is None:
            return False
    else:
        have = str(value)
    if op == "~":
        return str(wanted).lower() in str(have).lower()
    return COMPARISONS[op](have, wanted)
