"""OneRoster raw pages (``OneRosterRosterReader.roster_pages``) -> course rosters and course/class-student edges, in
DuckDB SQL.

Everything is judged as of ``day`` (the partition's day). Who is enrolled: an enrollment with ``role`` student,
``status`` active, and ``day`` inside its optional ``beginDate`` (included) .. ``endDate`` (excluded), as the 1.2
binding defines them (docs/providers.md §9.2: some SISs end-date a student who left instead of marking the row, or
list a student who starts later). ``tobedeleted`` (and 1.0's legacy ``inactive``, which clients read as
tobedeleted: §2.6) is a student who left; teachers, aides and the like are not students. None of them makes an
edge. A student in two sections of a course is one course edge and one class edge per section.

Roster status, per course: ``not_exposed`` when any of its classes' enrollments were refused (a status-403 page:
a course roster missing a section is not the course roster) or were not read at all; otherwise ``empty`` or
``exposed`` by its active student enrollments. A course without classes is ``empty``: OneRoster enrollments hang
off classes, and the class listing was read to its end. A refused roster is unknown, never empty.

Activity: OneRoster has no "course is active" flag (§9.2). A class runs on ``day`` when its ``status`` is active
and ``day`` is inside one of its ``terms`` (academicSessions: ``startDate`` included, ``endDate`` excluded); a course
is active when its own ``status`` is active, ``day`` is inside its optional ``schoolYear`` session, and at least one
of its classes runs (a course without classes runs nothing). A class or course naming a session the
academicSessions listing does not hold is an error, not a guess. A session's own ``status`` is not read: its dates
say when it runs.

Ids are OneRoster ``sourcedId``s: ``course_id`` the course's, ``class_id`` the class's, ``student_id`` the
enrollment's ``user.sourcedId``. A class's course is its ``course`` GUIDRef; ``updated_at`` is the course's
``dateLastModified``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import NamedTuple

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import PayloadError
from lms_pipeline.providers.pages import page_frame, raise_on_problems, register_pages

SQL = statements.load(Path(__file__).with_suffix(".sql"))

ROSTER_COLUMNS = ["course_id", "course_name", "is_active", "roster_status", "student_count", "updated_at"]
COURSE_EDGE_COLUMNS = ["course_id", "student_id"]
CLASS_EDGE_COLUMNS = ["class_id", "course_id", "student_id"]
PAGE_COLUMNS = ["endpoint", "course_id", "page_index", "url", "params", "status", "payload"]


class OneRosterPayloadError(PayloadError):
    """Raw pages break OneRoster's contract; the message names the connection, each bad page's URL and index."""


class OneRosterRosterFrames(NamedTuple):
    course_rosters: pd.DataFrame
    course_student_edges: pd.DataFrame
    class_student_edges: pd.DataFrame


def normalize_oneroster_pages(
    pages: pd.DataFrame | Sequence[Mapping[str, object]], connection_id: str, day: date
) -> OneRosterRosterFrames:
    """Rosters and edges of one full read of one connection, as of ``day``, from its raw pages (dicts as the reader
    returns them, or a frame with their columns; ``params`` as a dict or its JSON text). Raises
    OneRosterPayloadError when a page or item breaks the contract. Set-based: no Python loop touches an
    enrollment."""
    frame = page_frame(pages, PAGE_COLUMNS, {"course_id": "string", "page_index": "int64", "status": "Int64"})
    frame["params"] = frame["params"].map(_params_json)  # one value per page, not per enrollment
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET VARIABLE day = ?::DATE", [day])
        conn.execute(SQL["macros"])
        register_pages(conn, frame)
        _raise_on_problems(conn, SQL["page_problems"], connection_id)
        conn.execute(SQL["items"])
        _raise_on_problems(conn, SQL["item_problems"], connection_id)
        _raise_on_problems(conn, SQL["reference_problems"], connection_id)
        conn.execute(SQL["tables"])
        rosters = conn.execute(SQL["rosters"]).df()
        course_edges = conn.execute(SQL["course_edges"]).df()
        class_edges = conn.execute(SQL["class_edges"]).df()
    rosters = rosters.astype({"is_active": "boolean", "student_count": "Int64"})
    return OneRosterRosterFrames(rosters[ROSTER_COLUMNS], course_edges[COURSE_EDGE_COLUMNS],
                                 class_edges[CLASS_EDGE_COLUMNS])  # fmt: skip


def _params_json(params: object) -> str | None:
    """A page's query parameters as JSON text, whether they come as a dict (reader) or as stored text."""
    if params is None or isinstance(params, str):
        return params
    return json.dumps(dict(params))  # type: ignore[call-overload]


def _raise_on_problems(conn: duckdb.DuckDBPyConnection, problems_sql: str, connection_id: str) -> None:
    raise_on_problems(conn, problems_sql, OneRosterPayloadError, f"connection {connection_id!r}: ", label="OneRoster ")
