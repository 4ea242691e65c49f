"""Stored content/activity pages + the day's roster snapshot -> contents, learner progress, per-course summary.

The rule that matters: an activity is progress, never membership. Each activity row is *labelled* against the
day's roster (``enrolled`` / ``not_enrolled``, or ``roster_not_exposed`` when the roster is unknown); nothing here
reads or writes an edge. Dropped students keep their activity rows (``not_enrolled``), and learners who were never
on the roster are counted, not enrolled.
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb
import pandas as pd

from lms_pipeline.providers.base import PayloadError

CONTENT_STRUCTURE = (
    '{"id": "VARCHAR", "name": "VARCHAR", "course_ids": ["VARCHAR"], "course_id": "VARCHAR", "is_active": "BOOLEAN", '
    '"duration_minutes": "DOUBLE", "updated_at": "VARCHAR"}'
)
ACTIVITY_STRUCTURE = (
    '{"id": "VARCHAR", "course_id": "VARCHAR", "student_id": "VARCHAR", "content_id": "VARCHAR", '
    '"is_completed": "BOOLEAN", "progress_percentage": "DOUBLE", "started_at": "VARCHAR", '
    '"completed_at": "VARCHAR", "updated_at": "VARCHAR"}'
)
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


_ITEMS_SQL = """
CREATE OR REPLACE TEMP TABLE {name} AS
SELECT connection_id, CAST(snapshot_date AS DATE) AS snapshot_date, course_id AS filter_course, page_index,
       page_offset, unnest(from_json(payload, '[{structure}]')) AS o
FROM pages WHERE endpoint = '{endpoint}'
"""

# The newest version of each record: a course's listing may return one twice if it changed while paged.
_CONTENTS_SQL = """
SELECT connection_id, snapshot_date, filter_course AS course_id, o.id AS content_id, o.name,
       o.is_active, CAST(o.duration_minutes AS INTEGER) AS duration_minutes,
       TRY_CAST(o.updated_at AS TIMESTAMPTZ) AS updated_at
FROM contents
QUALIFY row_number() OVER (PARTITION BY connection_id, snapshot_date, filter_course, o.id
                           ORDER BY TRY_CAST(o.updated_at AS TIMESTAMPTZ) DESC NULLS LAST, page_index DESC) = 1
"""

_PROGRESS_SQL = """
WITH latest AS (
    SELECT connection_id, snapshot_date, coalesce(o.course_id, filter_course) AS course_id,
           o.student_id, o.content_id, o.is_completed, o.progress_percentage,
           TRY_CAST(o.started_at AS TIMESTAMPTZ) AS started_at, TRY_CAST(o.completed_at AS TIMESTAMPTZ) AS completed_at,
           TRY_CAST(o.updated_at AS TIMESTAMPTZ) AS updated_at
    FROM activities
    QUALIFY row_number() OVER (PARTITION BY connection_id, snapshot_date, course_id, o.student_id, o.content_id
                               ORDER BY TRY_CAST(o.updated_at AS TIMESTAMPTZ) DESC NULLS LAST, page_index DESC) = 1
)
SELECT a.*,
    CASE WHEN r.roster_status IS NULL OR r.roster_status = 'not_exposed' THEN 'roster_not_exposed'
         WHEN e.student_id IS NOT NULL THEN 'enrolled'
         ELSE 'not_enrolled' END AS enrollment_state
FROM latest a
LEFT JOIN rosters r ON r.course_id = a.course_id
LEFT JOIN edges e ON e.course_id = a.course_id AND e.student_id = a.student_id
"""

_SUMMARY_SQL = """
WITH activity AS (
    SELECT course_id,
           count(DISTINCT student_id) AS learners_with_activity,
           count(DISTINCT student_id) FILTER (enrollment_state = 'enrolled') AS enrolled_with_activity,
           count(*) FILTER (enrollment_state = 'enrolled' AND is_completed) AS enrolled_completed,
           avg(progress_percentage) FILTER (enrollment_state <> 'not_enrolled') AS average_progress,
           count(*) FILTER (enrollment_state = 'not_enrolled') AS activities_not_on_roster
    FROM progress GROUP BY course_id
), content AS (
    SELECT course_id, count(*) FILTER (is_active IS DISTINCT FROM false) AS active_contents
    FROM course_contents GROUP BY course_id
)
SELECT r.connection_id, r.snapshot_date, r.course_id, r.roster_status,
    CASE WHEN r.roster_status <> 'not_exposed' THEN r.student_count END AS enrolled_students,
    coalesce(a.learners_with_activity, 0) AS learners_with_activity,
    CASE WHEN r.roster_status <> 'not_exposed' THEN coalesce(a.enrolled_with_activity, 0) END
        AS enrolled_with_activity,
    coalesce(c.active_contents, 0) AS active_contents,
    CASE WHEN r.roster_status <> 'not_exposed' AND r.student_count * coalesce(c.active_contents, 0) > 0
         THEN least(1.0, coalesce(a.enrolled_completed, 0) / (r.student_count * c.active_contents)) END
        AS completed_share,
    a.average_progress,
    coalesce(a.activities_not_on_roster, 0) AS activities_not_on_roster
FROM rosters r
LEFT JOIN activity a USING (course_id)
LEFT JOIN content c USING (course_id)
ORDER BY r.course_id
"""

_PROBLEMS_SQL = """
SELECT 'content' AS endpoint, filter_course, page_offset, coalesce(o.id, '?') AS item,
       'id is missing or not a string' AS problem
FROM contents WHERE o.id IS NULL
UNION ALL
SELECT 'activity', filter_course, page_offset, coalesce(o.id, '?'),
       CASE WHEN o.student_id IS NULL THEN 'student_id is missing or not a string'
            WHEN o.content_id IS NULL THEN 'content_id is missing or not a string'
            ELSE 'course_id ' || o.course_id || ' differs from the course asked for' END
FROM activities
WHERE o.student_id IS NULL OR o.content_id IS NULL OR o.course_id <> filter_course
ORDER BY ALL
"""


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
        conn.execute(_ITEMS_SQL.format(name="contents", structure=CONTENT_STRUCTURE, endpoint="content"))
        conn.execute(_ITEMS_SQL.format(name="activities", structure=ACTIVITY_STRUCTURE, endpoint="activity"))
        _raise_on_problems(conn)
        contents = conn.execute(f"CREATE TEMP TABLE course_contents AS {_CONTENTS_SQL}; FROM course_contents").df()
        progress = conn.execute(f"CREATE TEMP TABLE progress AS {_PROGRESS_SQL}; FROM progress").df()
        summary = conn.execute(_SUMMARY_SQL).df()
    return ProgressFrames(contents[CONTENT_COLUMNS], progress[PROGRESS_COLUMNS], summary[SUMMARY_COLUMNS])


def _raise_on_problems(conn: duckdb.DuckDBPyConnection, shown: int = 5) -> None:
    problems = conn.execute(_PROBLEMS_SQL).fetchall()
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
