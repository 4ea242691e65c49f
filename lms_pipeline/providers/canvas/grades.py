"""Canvas raw pages (``CanvasClient.grade_pages``) -> LMS grades, assignments and student emails, in DuckDB SQL.

``grades`` has one row per submission that holds a grade or was handed in, shaped for
``transforms.grades.parse_grades`` (which reads ``raw_grade`` and ``points_possible``):

- ``raw_grade`` is what a teacher sees, never a guess: ``"EX"`` when excused (whatever score the submission
  carries, so excused never becomes 0); for ``points``/``percent`` assignments the score as text (the JSON number's
  own text, so "0.0" stays a graded 0 and ``parse_grades`` computes score * 100 / points_possible); otherwise the
  ``grade`` text (a letter for ``letter_grade``, "pass", "complete", ...); ``""`` when submitted (or graded and then
  cleared) with neither score nor grade, so ungraded never becomes 0. An ``unsubmitted`` submission with no grade is
  no row: Canvas lists one for every student and assignment, and it holds no grade (``missing`` is the absence).
- ``course_id`` is the course's ``sis_course_id`` else ``canvas-course:<id>`` (as the roster normalizer);
  ``content_id`` the assignment's ``integration_id`` else ``canvas-assignment:<id>``; ``student_id`` the
  submission's (or its user's) ``sis_user_id`` else ``canvas-user:<user_id>`` (no SIS permission, or a user
  without an SIS id).
- ``graded_at`` as given; Canvas's Submission has no ``updated_at``, so ``updated_at`` is the item's own when
  present, else the latest of graded_at, submitted_at and posted_at. Extra columns ``score`` and ``grading_type``
  keep the number behind a letter and say how to read ``raw_grade``.

A refused submissions page (401 or 403 with Canvas's permission body: the token may not read the course's roster)
gives that course no grades: unknown, never empty. ``contents`` lists the assignments (readable even then);
``students`` the login emails from ``include[]=user`` (``login_id`` when it is an email; guests and username logins
have none). A submission for an assignment its course's assignment pages do not list is an error (its points
possible would be a guess).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import SIDE_GRADE_COLUMNS, GradeSides, RawPage
from lms_pipeline.providers.canvas.client import CanvasClient
from lms_pipeline.providers.canvas.rosters import PAGE_COLUMNS, CanvasPayloadError, raise_on_canvas_problems
from lms_pipeline.providers.pages import page_frame, register_pages

SQL = statements.load(Path(__file__).with_suffix(".sql"))

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

GRADE_COLUMNS = ["course_id", "content_id", "student_id", "raw_grade", "points_possible", "graded_at", "updated_at",
                 "score", "grading_type"]  # fmt: skip
CONTENT_COLUMNS = ["course_id", "content_id", "name"]
STUDENT_COLUMNS = ["student_id", "email"]
GRADE_ENDPOINTS = ("assignments", "grading_standards", "submissions")

__all__ = ["CanvasGradeFrames", "CanvasPayloadError", "normalize_canvas_grades"]


class CanvasGradeFrames(NamedTuple):
    grades: pd.DataFrame
    contents: pd.DataFrame
    students: pd.DataFrame


def normalize_canvas_grades(
    pages: pd.DataFrame | Sequence[Mapping[str, object]], connection_id: str
) -> CanvasGradeFrames:
    """Grades, assignments and student emails of one scan of one connection from its raw pages (dicts as the client
    returns them, or a frame with their columns). Raises CanvasPayloadError, naming the connection and each bad
    page's URL and index, when a page or item breaks the contract. Set-based: no Python loop touches a submission."""
    frame = page_frame(pages, PAGE_COLUMNS, {"course_id": "Int64", "page_index": "int64", "status": "Int64"})
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        register_pages(conn, frame)
        raise_on_canvas_problems(conn, SQL["page_problems"], connection_id)
        conn.execute(SQL["items"])
        raise_on_canvas_problems(conn, SQL["item_problems"], connection_id)
        conn.execute(SQL["tables"])
        grades = conn.execute(SQL["grades"]).df()
        contents = conn.execute(SQL["contents"]).df()
        students = conn.execute(SQL["students"]).df()
    grades = grades.astype({"points_possible": "float64", "score": "float64"})
    return CanvasGradeFrames(grades[GRADE_COLUMNS], contents[CONTENT_COLUMNS], students[STUDENT_COLUMNS])


class CanvasGrades:
    """Assignments and submissions: the score is compared, an excused submission stays excused."""

    def fetch(self, client: CanvasClient) -> list[RawPage]:
        return client.grade_pages()

    def sides(self, conn: ConnectionConfig, pages: pd.DataFrame, stored: Callable[[str], pd.DataFrame]) -> GradeSides:
        frames = normalize_canvas_grades(pages.assign(course_id=pd.to_numeric(pages["course_id"]).astype("Int64")),
                                         conn.id)  # fmt: skip
        grades = frames.grades
        # A letter-graded assignment still has its score: compare the score (the SIS's scheme decides letters), so a
        # letter the LMS rounded differently never hides a percent.
        by_score = (grades["grading_type"] == "letter_grade") & grades["score"].notna() & (grades["raw_grade"] != "EX")
        grades = grades.assign(raw_grade=grades["raw_grade"].where(~by_score, grades["score"].map("{:g}".format)))
        return GradeSides(grades[SIDE_GRADE_COLUMNS], frames.students[["student_id", "email"]],
                          frames.contents[["course_id", "content_id", "name"]])  # fmt: skip
