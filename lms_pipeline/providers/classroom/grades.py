"""Google Classroom raw grade pages -> LMS grades and contents, in DuckDB SQL.

Input: the raw pages of one grade scan (``ClassroomClient.grade_pages``): connection_id, endpoint ('courses' |
'aliases' | 'students' | 'courseWork' | 'studentSubmissions'), course_id (the Classroom id or alias the client asked
with; None for courses), page_index, url, status and payload (body text).

Output (``ClassroomGradeFrames``), ready for ``transforms.grades.parse_grades``:

- ``grades``: one row per submission: ``course_id``, ``content_id``, ``student_id``, ``raw_grade``,
  ``points_possible``, ``draft_grade``, ``state``, ``graded_at``, ``classroom_user_id``, ``identity_matched``.
- ``contents``: one row per courseWork: ``course_id``, ``content_id``, ``name`` (its title).

Identities, as in ``transforms.classroom``: ``course_id`` is the course's domain alias without ``d:`` (else
``classroom-course:<id>``); ``student_id`` comes from ``profile.emailAddress`` in the course's students.list mapped
through the directory (``identity="email"``), else ``classroom-user:<userId>`` with ``identity_matched`` False
(``identity="provider"``: always). Classroom's CourseWork has no external-id field, so a content's id is read from a
``lms-content:<id>`` tag in its ``description`` (the convention the simulator follows, and a deployment's SIS sync
can write), else it is ``classroom-coursework:<id>``.

Grades. Classroom grades are points out of ``maxPoints``: ``raw_grade`` is ``assignedGrade`` as its JSON text and
``points_possible`` is ``maxPoints``, so ``parse_grades`` reads "17" of 20 as 85 %; a real 0 stays a graded 0.
``assignedGrade`` is the only grade of record: ``draftGrade`` is the teacher's not-yet-returned grade, kept in its
own column and never read as the grade, so a submission without ``assignedGrade`` has ``raw_grade`` "" (ungraded),
whatever its draft. Classroom has no excused state and no text grades, so an excused or pass/fail entry can only
show up ungraded. ``maxPoints`` zero or absent means an ungraded courseWork (Classroom's rule), and a submission
whose courseWork is not in the listing has no known scale: both get ``points_possible`` 0, so a grade on them is
flagged ``unparseable`` by ``parse_grades`` rather than read as a percent. ``graded_at`` is ``updateTime`` when the
submission is RETURNED with an ``assignedGrade``. A course whose courseWork or submissions answered 403 has no
grades; a listing not read to its end, or a page or item breaking the contract, raises ClassroomPayloadError naming
the connection, URL and page.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import SIDE_GRADE_COLUMNS, GradeSides, RawPage
from lms_pipeline.providers.classroom.client import ClassroomClient
from lms_pipeline.providers.classroom.options import ClassroomOptions
from lms_pipeline.providers.classroom.rosters import (
    Identity,
    checked_items,
)

SQL = statements.load(Path(__file__).with_suffix(".sql"))

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

GRADE_COLUMNS = ["course_id", "content_id", "student_id", "raw_grade", "points_possible", "draft_grade", "state",
                 "graded_at", "classroom_user_id", "identity_matched"]  # fmt: skip


class ClassroomGradeFrames(NamedTuple):
    grades: pd.DataFrame
    contents: pd.DataFrame


def normalize_classroom_grades(
    pages: pd.DataFrame | Iterable[RawPage | Mapping],
    connection_id: str,
    *,
    identity: Identity,
    directory: pd.DataFrame | None = None,
) -> ClassroomGradeFrames:
    """Normalize one grade scan's raw pages; set-based, no Python loop touches a submission.

    ``directory`` (columns ``email, student_id``) is required with ``identity="email"`` and ignored otherwise.
    Raises ClassroomPayloadError naming connection, URL and page for any page or item that breaks the contract.
    """
    with duckdb.connect() as conn:
        checked_items(conn, pages, connection_id, identity, directory)
        conn.execute(SQL["courses"])
        conn.execute(SQL["work"])
        grades = conn.execute(SQL["grades"]).df()
        contents = conn.execute(SQL["contents"]).df()
    return ClassroomGradeFrames(grades[GRADE_COLUMNS], contents)


class ClassroomGrades:
    """``studentSubmissions.assignedGrade`` out of the courseWork's ``maxPoints``; a draft grade never counts."""

    def fetch(self, client: ClassroomClient) -> list[RawPage]:
        return client.grade_pages()

    def sides(self, conn: ConnectionConfig, pages: pd.DataFrame, stored: Callable[[str], pd.DataFrame]) -> GradeSides:
        options: ClassroomOptions = conn.options  # type: ignore[assignment]
        identity = options.identity_args()
        frames = normalize_classroom_grades(pages, conn.id, **identity)
        # Classroom has no SIS id: the directory that identified the students also gives their emails.
        students = identity.get("directory", pd.DataFrame(columns=["email", "student_id"]))
        return GradeSides(frames.grades[SIDE_GRADE_COLUMNS], students[["student_id", "email"]],
                          frames.contents[["course_id", "content_id", "name"]])  # fmt: skip
