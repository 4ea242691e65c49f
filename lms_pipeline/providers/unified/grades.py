"""A Unified connection's grades: each activity's ``assigned_grade`` in the stored activity pages (the progress
assets fetched them: one fetch, one raw store), and the students' emails from the student list, for matching with
the SIS."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import SIDE_GRADE_COLUMNS, GradeSides, RawPage
from lms_pipeline.providers.unified.client import UnifiedLmsClient

SQL = statements.load(Path(__file__).with_suffix(".sql"))

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig


def activity_grades(pages: pd.DataFrame) -> pd.DataFrame:
    """LMS grades (``SIDE_GRADE_COLUMNS``, not parsed) from one day's stored activity pages (``raw_progress_pages``):
    one row per (course, content, learner) whose activity carries an ``assigned_grade``. Unified.to contents carry no
    points possible, so a bare number is read as a percent."""
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.register("pages", pages[["endpoint", "course_id", "page_index", "payload"]])
        return conn.execute(SQL["activity_grades"]).df()


def student_emails(pages: pd.DataFrame) -> pd.DataFrame:
    """Student pages (Unified ``student`` objects) -> (student_id, email), every email of each student."""
    with duckdb.connect() as conn:
        conn.register("pages", pages[["endpoint", "payload"]])
        return conn.execute(SQL["student_emails"]).df()


class UnifiedGrades:
    """Activities' ``assigned_grade``; the student list (its emails) is what this source fetches."""

    def fetch(self, client: UnifiedLmsClient) -> list[RawPage]:
        return list(client.iter_pages("student", {"fields": ["id", "emails"]}))

    def sides(self, conn: ConnectionConfig, pages: pd.DataFrame, stored: Callable[[str], pd.DataFrame]) -> GradeSides:
        grades = activity_grades(stored("raw_progress_pages"))
        contents = stored("course_contents")[["course_id", "content_id", "name"]]
        return GradeSides(grades[SIDE_GRADE_COLUMNS], student_emails(pages), contents)
