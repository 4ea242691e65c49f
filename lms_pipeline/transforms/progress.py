"""Stored content/activity pages + the day's roster snapshot -> contents, learner progress, per-course summary.

The rule that matters: an activity is progress, never membership. Each activity row is *labelled* against the
day's roster (``enrolled`` / ``not_enrolled``, or ``roster_not_exposed`` when the roster is unknown); nothing here
reads or writes an edge. Dropped students keep their activity rows (``not_enrolled``), and learners who were never
on the roster are counted, not enrolled.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import PayloadError

SQL = statements.load(Path(__file__).with_suffix(".sql"))

CONTENT_COLUMNS = ["connection_id", "snapshot_date", "course_id", "content_id", "name", "is_active",
                   "duration_minutes", "updated_at"]  # fmt: skip
PROGRESS_COLUMNS = ["connection_id", "snapshot_date", "course_id", "student_id", "content_id", "is_completed",
                    "progress_percentage", "started_at", "completed_at", "updated_at", "enrollment_state"]  # fmt: skip
SUMMARY_COLUMNS = ["connection_id", "snapshot_date", "course_id", "roster_status", "enrolled_students",
                   "learners_with_activity", "enrolled_with_activity", "active_contents", "completed_share",
                   "average_progress", "activities_not_on_roster"]  # fmt: skip


class ProgressFrames(NamedTuple):
    course_contents: pd.DataFrame
    student_progress: pd.DataFrame
    course_progress_summary: pd.DataFrame


def normalize_progress(pages: pd.DataFrame, rosters: pd.DataFrame, edges: pd.DataFrame) -> ProgressFrames:
    """Normalize one partition's content/activity pages against its roster snapshot.

    ``pages``: ``raw_progress_pages`` rows; ``rosters`` / ``edges``: that day's ``course_rosters`` and
    ``course_student_edges``. Set-based SQL; no Python loop touches an item.
    """
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.register("pages", pages[["connection_id", "snapshot_date", "endpoint", "course_id", "page_index",
                                      "page_offset", "payload"]])  # fmt: skip
        conn.register("rosters", rosters[["connection_id", "snapshot_date", "course_id", "roster_status",
                                          "student_count"]])  # fmt: skip
        conn.register("edges", edges[["course_id", "student_id"]])
        conn.execute(SQL["contents_items"])
        conn.execute(SQL["activities_items"])
        _raise_on_problems(conn)
        contents = conn.execute(SQL["contents"]).df()
        progress = conn.execute(SQL["progress"]).df()
        summary = conn.execute(SQL["summary"]).df()
    return ProgressFrames(contents[CONTENT_COLUMNS], progress[PROGRESS_COLUMNS], summary[SUMMARY_COLUMNS])


def _raise_on_problems(conn: duckdb.DuckDBPyConnection, shown: int = 5) -> None:
    problems = conn.execute(SQL["problems"]).fetchall()
    if not problems:
        return
    connection_id = conn.execute("SELECT any_value(connection_id) FROM pages").fetchone()[0]
    lines = [
        f"connection {connection_id!r}: GET /lms/{connection_id}/{endpoint}?course_id={course} page at offset "
        f"{offset}, item {item!r}: {problem}"
        for endpoint, course, offset, item, problem in problems[:shown]
    ]
    more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
    raise PayloadError(f"{len(problems)} malformed item(s) in stored pages:\n  " + "\n  ".join(lines) + more)
