"""Where a student is named in what the pipeline stores: the tables whose rows are one student's, the raw-page tables
and their text columns, and how each provider's JSON names a person (a roster entry, a person record, a record that
refers to one). ``scrub`` cuts a student out of a page; ``linked_identities`` finds the ids that are the same person
in another system. Used by ``lms_pipeline.privacy`` (erasure); plain functions over parsed JSON, tested there."""

from __future__ import annotations

import json
import re

import pandas as pd

# Tables whose rows are one student's, and the columns naming the student.
PERSON_COLUMNS: dict[str, tuple[str, ...]] = {
    "course_student_edges": ("student_id",),
    "class_student_edges": ("student_id",),
    "enrollment_changes": ("student_id",),
    "student_progress": ("student_id",),
    "lms_grades": ("student_id",),
    "grade_discrepancies": ("lms_student_id", "sis_student_id"),
    "grade_sync_log": ("lms_student_id", "sis_student_id"),
    "roster_discrepancies": ("lms_student_id", "sis_student_id"),
}
# Stored pages: the column saying what was listed, and the text columns beside the payload.
PAGE_TABLES: dict[str, tuple[str, tuple[str, ...], bool]] = {
    # table: (what was listed, text columns that may name a person, has item_count)
    "raw_course_pages": ("endpoint", ("request_params", "url"), True),
    "raw_progress_pages": ("endpoint", ("request_params", "url"), True),
    "raw_grade_pages": ("collection", ("request_params", "url"), True),
    "raw_sis_roster_pages": ("endpoint", ("request_params", "url"), True),
}
# The student id conventions of the dialect normalizers (providers/canvas, providers/classroom): the part
# after the prefix is the provider's own user id, found in the pages.
PROVIDER_PREFIXES = ("canvas-user:", "classroom-user:")

# How a page's JSON names people (every dialect's shapes; docs/providers.md):
# keys holding a person's identity inside a person record
IDENTITY_KEYS = ("id", "sourcedId", "user_id", "userId", "sis_user_id", "login_id", "email", "emailAddress",
                 "lis_person_sourcedid", "identifier", "username")  # fmt: skip
# keys that, on any record, name the person the record is about (an activity, a submission, a result, a member)
REFERENCE_KEYS = ("user_id", "userId", "student_id", "studentId", "sis_user_id", "lis_person_sourcedid")
# child objects describing or referring to a person (OneRoster's user/student refs, Canvas's user, Classroom's
# profile), and lists of people (Unified's students, LTI's members, OneRoster's users)
PERSON_CHILD_KEYS = ("user", "student", "profile")
PERSON_LIST_KEYS = ("students", "members", "users", "student")
# lists of bare student ids (Unified's deprecated roster field); elsewhere a bare number in a list is not a person
ID_LIST_KEYS = ("student_ids", "user_ids", *PERSON_LIST_KEYS)
# keys only a person record has
PERSON_MARKERS = ("email", "emails", "emailAddress", "sortable_name", "givenName", "familyName", "given_name",
                  "family_name", "login_id", "lis_person_sourcedid")  # fmt: skip


def _is_person(record: dict, context: str | None) -> bool:
    return context in PERSON_LIST_KEYS or context in PERSON_CHILD_KEYS or any(k in record for k in PERSON_MARKERS)


def _identity_values(record: dict) -> set[str]:
    values = {str(record[k]) for k in IDENTITY_KEYS if isinstance(record.get(k), str | int) and record.get(k) != ""}
    for email in record.get("emails") or []:
        if isinstance(email, dict) and email.get("email"):
            values.add(str(email["email"]))
    return values


def _names(record: dict, ids: set[str], context: str | None) -> bool:
    """The record is one of the student's: their person record, or a record about them."""
    if _is_person(record, context) and _identity_values(record) & ids:
        return True
    refs = {str(record[k]) for k in REFERENCE_KEYS if isinstance(record.get(k), str | int)}
    if refs & ids:
        return True
    return any(isinstance(record.get(k), dict) and _identity_values(record[k]) & ids for k in PERSON_CHILD_KEYS)


def scrub(value: object, ids: set[str], context: str | None = None) -> tuple[object, int]:
    """``value`` without the student: list entries that are theirs (an id string, their record, a record about them)
    are removed; everything else is kept as it was. Returns the new value and how many entries were removed."""
    if isinstance(value, list):
        kept, removed = [], 0
        for item in value:
            bare = isinstance(item, str | int) and not isinstance(item, bool) and str(item) in ids
            if (bare and (context in ID_LIST_KEYS or not str(item).isdigit())) or (
                isinstance(item, dict) and _names(item, ids, context)
            ):
                removed += 1
                continue
            new, n = scrub(item, ids, context)
            kept.append(new)
            removed += n
        return kept, removed
    if isinstance(value, dict):
        out, removed = {}, 0
        for key, item in value.items():
            if isinstance(item, dict) and key in PERSON_CHILD_KEYS and _identity_values(item) & ids:
                out[key], removed = None, removed + 1  # a person object outside a list: emptied
                continue
            out[key], n = scrub(item, ids, key)
            removed += n
        return out, removed
    return value, 0


def linked_identities(value: object, ids: set[str], context: str | None = None) -> set[str]:
    """Every identity value of the person records in ``value`` that match ``ids`` (their other ids and emails)."""
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= linked_identities(item, ids, context)
    elif isinstance(value, dict):
        if _is_person(value, context) and _identity_values(value) & ids:
            found |= _identity_values(value)
        for key in PERSON_CHILD_KEYS:
            child = value.get(key)
            if isinstance(child, dict) and _identity_values(child) & ids:
                found |= _identity_values(child)
        refs = {k: str(value[k]) for k in REFERENCE_KEYS if isinstance(value.get(k), str | int)}
        if set(refs.values()) & ids and "lis_person_sourcedid" in refs:  # an LTI member: its user_id is the person
            found |= set(refs.values())
        for key, item in value.items():
            if isinstance(item, list | dict):
                found |= linked_identities(item, ids, key)
    return found


def _token_pattern(identifier: str) -> str:
    return r"(^|[^A-Za-z0-9])" + re.escape(identifier) + r"([^A-Za-z0-9]|$)"


def scrub_text(text: str | None, ids: set[str]) -> str | None:
    """Request parameters and URLs naming the student (a per-user listing): the id is replaced. Numeric ids are
    left alone (the pipeline's clients list per course, never per Canvas user number)."""
    if text is None:
        return None
    for identifier in ids:
        if identifier.isdigit():  # a number in a URL is a course, a page size...: only named ids are replaced
            continue
        text = re.sub(_token_pattern(identifier), lambda m: f"{m.group(1)}erased{m.group(2)}", text)
    return text


def scrubbed_pages(rows: pd.DataFrame, name: str, ids: set[str]) -> tuple[pd.DataFrame, int]:
    """The rows whose payload or text columns change, with their new values; and the entries removed."""
    kind, texts, has_count = PAGE_TABLES[name]
    changed, removed = [], 0
    for row in rows.to_dict("records"):
        payload, n = scrub(json.loads(row["payload"]), ids, row[kind])
        new = {t: scrub_text(row[t], ids) for t in texts}
        if n == 0 and all(new[t] == row[t] for t in texts):
            continue
        removed += n
        out = {"row_key": row["row_key"], "connection_id": row["connection_id"], "snapshot_date": row["snapshot_date"],
               "payload": json.dumps(payload, separators=(",", ":")), **new}  # fmt: skip
        if has_count:
            out["item_count"] = _item_count(payload, row["item_count"])
        changed.append(out)
    columns = ["row_key", "connection_id", "snapshot_date", "payload", *texts, *(["item_count"] if has_count else [])]
    return pd.DataFrame(changed, columns=columns), removed


def _item_count(payload: object, before: int) -> int:
    """Records left on a rewritten page: the body's list (Unified, Canvas, OneRoster) or the one list of its object
    (Classroom's ``{"students": [...], "nextPageToken": ...}``); a body of another shape keeps its count."""
    if isinstance(payload, list):
        return len(payload)
    lists = [v for v in payload.values() if isinstance(v, list)] if isinstance(payload, dict) else []
    return len(lists[0]) if len(lists) == 1 else int(before)


def rewritten_columns(name: str) -> list[str]:
    _, texts, has_count = PAGE_TABLES[name]
    return ["payload", *texts, *(["item_count"] if has_count else [])]
