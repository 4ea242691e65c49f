"""A Unified connection's grades: each activity's ``assigned_grade`` in the stored activity pages (the progress
assets fetched them: one fetch, one raw store), and the students' emails from the student list, for matching with
the SIS."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from lms_pipeline.providers.base import SIDE_GRADE_COLUMNS, GradeSides, RawPage
from lms_pipeline.providers.unified.client import UnifiedLmsClient

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

_ACTIVITY_GRADES_SQL = """
WITH items AS (
    SELECT course_id AS filter_course, page_index,
           unnest(from_json(payload, '[{"course_id": "VARCHAR", "student_id": "VARCHAR", "content_id": "VARCHAR",
                                        "assigned_grade": "VARCHAR", "updated_at": "VARCHAR"}]')) AS o
    FROM pages WHERE endpoint = 'activity'
)
SELECT coalesce(o.course_id, filter_course) AS course_id, o.content_id AS content_id,
       o.student_id AS student_id, o.assigned_grade AS raw_grade, CAST(NULL AS DOUBLE) AS points_possible,
       TRY_CAST(o.updated_at AS TIMESTAMPTZ) AS graded_at
FROM items
-- the newest version of each activity first; one without the grade field carries no grade (yet)
QUALIFY row_number() OVER (PARTITION BY course_id, o.content_id, o.student_id
                           ORDER BY TRY_CAST(o.updated_at AS TIMESTAMPTZ) DESC NULLS LAST, page_index DESC) = 1
    AND o.assigned_grade IS NOT NULL
ORDER BY 1, 2, 3
"""

_STUDENT_EMAILS_SQL = """
SELECT DISTINCT s.id AS student_id, e.email AS email FROM (
    SELECT unnest(from_json(payload, '[{"id": "VARCHAR", "emails": [{"email": "VARCHAR"}]}]')) AS s
    FROM pages WHERE endpoint = 'student')
CROSS JOIN unnest(coalesce(s.emails, [])) AS u(e)
WHERE e.email IS NOT NULL ORDER BY 1, 2
"""


def activity_grades(pages: pd.DataFrame) -> pd.DataFrame:
    """LMS grades (``SIDE_GRADE_COLUMNS``, not parsed) from one day's stored activity pages (``raw_progress_pages``):
    one row per (course, content, learner) whose activity carries an ``assigned_grade``. Unified.to contents carry no
    points possible, so a bare number is read as a percent."""
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.register("pages", pages[["endpoint", "course_id", "page_index", "payload"]])
        return conn.execute(_ACTIVITY_GRADES_SQL).df()


def student_emails(pages: pd.DataFrame) -> pd.DataFrame:
    """Student pages (Unified ``student`` objects) -> (student_id, email), every email of each student."""
    with duckdb.connect() as conn:
        conn.register("pages", pages[["endpoint", "payload"]])
        return conn.execute(_STUDENT_EMAILS_SQL).df()


class UnifiedGrades:
    """Activities' ``assigned_grade``; the student list (its emails) is what this source fetches."""

    def fetch(self, client: UnifiedLmsClient) -> list[RawPage]:
        return list(client.iter_pages("student", {"fields": ["id", "emails"]}))

    def sides(self, conn: ConnectionConfig, pages: pd.DataFrame, stored: Callable[[str], pd.DataFrame]) -> GradeSides:
        grades = activity_grades(stored("raw_progress_pages"))
        contents = stored("course_contents")[["course_id", "content_id", "name"]]
        return GradeSides(grades[SIDE_GRADE_COLUMNS], student_emails(pages), contents)
