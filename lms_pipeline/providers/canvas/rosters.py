"""Canvas raw pages (``CanvasClient.roster_pages``) -> course rosters and course/class-student edges, in DuckDB SQL.

Who is enrolled: a StudentEnrollment whose ``enrollment_state`` is ``active``. ``invited`` is pending (the student
has not accepted, so is not yet on the roster), and ``inactive``, ``completed`` and ``deleted`` are students who
left; none of them makes an edge. A student with several active enrollments in one course (one per section) is
one course edge, and one class edge per section.

Roster status: ``not_exposed`` when the course's enrollments were refused (a 401 or 403 page with Canvas's
permission body ``{"status": "unauthorized"}``: the token may not read that roster) or were not read at all;
otherwise ``empty`` or ``exposed`` by its active student enrollments.
A refused roster is unknown, never an empty one.

Normalized ids fall back when the token lacks SIS permission (Canvas then omits every ``sis_*`` field):
``course_id`` = ``sis_course_id`` else ``canvas-course:<id>``, ``student_id`` = ``sis_user_id`` else
``canvas-user:<user_id>``, ``class_id`` = ``sis_section_id`` (of the enrollment, else of the listed section) else
``canvas-section:<course_section_id>``. Canvas's Course object has no ``updated_at``, so that column is null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
PAGE_COLUMNS = ["endpoint", "course_id", "page_index", "url", "status", "payload"]


class CanvasPayloadError(PayloadError):
    """Raw pages break Canvas's contract; the message names the connection, each bad page's URL and index."""


class CanvasRosterFrames(NamedTuple):
    course_rosters: pd.DataFrame
    course_student_edges: pd.DataFrame
    class_student_edges: pd.DataFrame


def normalize_canvas_pages(
    pages: pd.DataFrame | Sequence[Mapping[str, object]], connection_id: str
) -> CanvasRosterFrames:
    """Rosters and edges of one scan of one connection from its raw pages (dicts as the client returns them, or a
    frame with their columns). Raises CanvasPayloadError when a page or item breaks the contract. Set-based: no
    Python loop touches an enrollment."""
    frame = page_frame(pages, PAGE_COLUMNS, {"course_id": "Int64", "page_index": "int64", "status": "Int64"})
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        register_pages(conn, frame)
        raise_on_canvas_problems(conn, SQL["page_problems"], connection_id)
        conn.execute(SQL["items"])
        raise_on_canvas_problems(conn, SQL["item_problems"], connection_id)
        conn.execute(SQL["tables"])
        rosters = conn.execute(SQL["rosters"]).df()
        course_edges = conn.execute(SQL["course_edges"]).df()
        class_edges = conn.execute(SQL["class_edges"]).df()
    rosters = rosters.astype({"is_active": "boolean", "student_count": "Int64"})
    return CanvasRosterFrames(rosters[ROSTER_COLUMNS], course_edges[COURSE_EDGE_COLUMNS],
                              class_edges[CLASS_EDGE_COLUMNS])  # fmt: skip


def raise_on_canvas_problems(conn: duckdb.DuckDBPyConnection, problems_sql: str, connection_id: str) -> None:
    """Raise CanvasPayloadError listing the first problems ``problems_sql`` finds (the grade normalizer's too)."""
    raise_on_problems(conn, problems_sql, CanvasPayloadError, f"connection {connection_id!r}: ", label="Canvas ")
