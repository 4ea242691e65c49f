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
from typing import TYPE_CHECKING, NamedTuple

import duckdb
import pandas as pd

from lms_pipeline.providers.base import SIDE_GRADE_COLUMNS, GradeSides, RawPage
from lms_pipeline.providers.canvas.client import CanvasClient
from lms_pipeline.providers.canvas.rosters import PAGE_COLUMNS, CanvasPayloadError, raise_on_canvas_problems
from lms_pipeline.providers.pages import page_frame

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

GRADE_COLUMNS = ["course_id", "content_id", "student_id", "raw_grade", "points_possible", "graded_at", "updated_at",
                 "score", "grading_type"]  # fmt: skip
CONTENT_COLUMNS = ["course_id", "content_id", "name"]
STUDENT_COLUMNS = ["student_id", "email"]
GRADE_ENDPOINTS = ("assignments", "grading_standards", "submissions")
_ID = "('UBIGINT', 'BIGINT', 'VARCHAR')"  # json_type of an id (Canvas may send ids as strings)
_NUMBER_OR_NULL = "('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL')"

__all__ = ["CanvasGradeFrames", "CanvasPayloadError", "normalize_canvas_grades"]


class CanvasGradeFrames(NamedTuple):
    grades: pd.DataFrame
    contents: pd.DataFrame
    students: pd.DataFrame


# Roster listings may share the page store: they are accepted and ignored. A page is checked as a whole before any
# item is read, so json_type never sees text that is not JSON.
_PAGE_PROBLEMS_SQL = """
SELECT endpoint, course_id, page_index, url, NULL AS position,
    CASE
        WHEN endpoint IN ('enrollments', 'sections') THEN NULL
        WHEN endpoint NOT IN ('courses', 'assignments', 'grading_standards', 'submissions')
            THEN 'unknown endpoint ' || endpoint
        WHEN endpoint <> 'courses' AND course_id IS NULL THEN 'has no course id'
        WHEN status IN (401, 403) AND endpoint <> 'courses' THEN  -- the token may not read this part of the course
            CASE WHEN NOT coalesce(json_valid(payload), false) OR json_type(payload) <> 'OBJECT'
                     THEN 'status ' || status || ' without Canvas''s permission body'
                 WHEN (payload->>'status') IS DISTINCT FROM 'unauthorized'
                     THEN 'status ' || status || ' without Canvas''s permission body' END
        WHEN status IS DISTINCT FROM 200 THEN 'status ' || coalesce(status::VARCHAR, 'missing') || ' is not a page'
        WHEN payload IS NULL THEN 'no body'
        WHEN NOT json_valid(payload) THEN 'the body is not JSON'
        WHEN json_type(payload) <> 'ARRAY' THEN 'the body is a JSON ' || lower(json_type(payload)) || ', not a list'
        WHEN list_bool_or(list_transform(json_type(payload, '$[*]'), lambda t: t <> 'OBJECT'))
            THEN 'the list holds an item that is not an object'
    END AS problem
FROM pages
"""

_ITEMS_SQL = """
CREATE OR REPLACE TEMP TABLE items AS
SELECT endpoint, CAST(course_id AS VARCHAR) AS page_course_id, page_index, url,
       unnest(list) AS item, generate_subscripts(list, 1) - 1 AS position
FROM (
    SELECT *, CAST(payload AS JSON[]) AS list FROM pages
    WHERE status = 200 AND endpoint IN ('courses', 'assignments', 'grading_standards', 'submissions')
)
"""

_ITEM_PROBLEMS_SQL = f"""
WITH listed AS (  -- the assignments each course's pages list
    SELECT DISTINCT page_course_id, item->>'id' AS assignment_id FROM items WHERE endpoint = 'assignments'
)
SELECT i.endpoint, i.page_course_id AS course_id, i.page_index, i.url, i.position,
    CASE
        WHEN NOT coalesce(json_type(i.item, '$.id') IN {_ID}, false) THEN 'has no id'
        WHEN i.endpoint = 'assignments' AND coalesce(json_type(i.item, '$.points_possible') NOT IN {_NUMBER_OR_NULL},
                                                     false)
            THEN 'is an assignment whose points_possible is not a number'
        WHEN i.endpoint = 'assignments' AND coalesce(json_type(i.item, '$.grading_type') NOT IN ('VARCHAR', 'NULL'),
                                                     false)
            THEN 'is an assignment whose grading_type is not text'
        WHEN i.endpoint = 'grading_standards' AND json_type(i.item, '$.grading_scheme') IS DISTINCT FROM 'ARRAY'
            THEN 'is a grading standard without a grading_scheme list'
        WHEN i.endpoint <> 'submissions' THEN NULL
        WHEN NOT coalesce(json_type(i.item, '$.assignment_id') IN {_ID}, false)
            THEN 'is a submission without assignment_id'
        WHEN NOT coalesce(json_type(i.item, '$.user_id') IN {_ID}, false) THEN 'is a submission without user_id'
        WHEN coalesce(json_type(i.item, '$.score') NOT IN {_NUMBER_OR_NULL}, false)
            THEN 'is a submission whose score is not a number'
        WHEN coalesce(json_type(i.item, '$.grade') NOT IN ('VARCHAR', 'NULL'), false)
            THEN 'is a submission whose grade is not text'
        WHEN coalesce(json_type(i.item, '$.excused') NOT IN ('BOOLEAN', 'NULL'), false)
            THEN 'is a submission whose excused is not a boolean'
        WHEN l.assignment_id IS NULL
            THEN 'is a submission for assignment ' || (i.item->>'assignment_id')
                 || ', which the course''s assignment pages do not list'
    END AS problem
FROM items i
LEFT JOIN listed l ON l.page_course_id = i.page_course_id AND l.assignment_id = i.item->>'assignment_id'
"""

# An item on two pages (a listing shifted while paged) counts once: the copy read last.
_TABLES_SQL = """
CREATE OR REPLACE TEMP TABLE courses AS
SELECT item->>'id' AS canvas_course, coalesce(item->>'sis_course_id', 'canvas-course:' || (item->>'id')) AS course_id
FROM items WHERE endpoint = 'courses'
QUALIFY row_number() OVER (PARTITION BY item->>'id' ORDER BY page_index DESC, position DESC) = 1;

CREATE OR REPLACE TEMP TABLE assignments AS
SELECT a.page_course_id AS canvas_course, a.item->>'id' AS assignment_id,
       coalesce(c.course_id, 'canvas-course:' || a.page_course_id) AS course_id,
       coalesce(nullif(a.item->>'integration_id', ''), 'canvas-assignment:' || (a.item->>'id')) AS content_id,
       a.item->>'name' AS name, CAST(a.item->>'points_possible' AS DOUBLE) AS points_possible,
       a.item->>'grading_type' AS grading_type
FROM items a LEFT JOIN courses c ON c.canvas_course = a.page_course_id
WHERE a.endpoint = 'assignments'
QUALIFY row_number() OVER (PARTITION BY a.page_course_id, a.item->>'id' ORDER BY a.page_index DESC,
                           a.position DESC) = 1;

CREATE OR REPLACE TEMP TABLE submissions AS
SELECT page_course_id AS canvas_course, item->>'assignment_id' AS assignment_id,
       coalesce(item->>'sis_user_id', item->'user'->>'sis_user_id', 'canvas-user:' || (item->>'user_id')) AS student_id,
       item->>'score' AS score_text, CAST(item->>'score' AS DOUBLE) AS score, item->>'grade' AS grade,
       coalesce(CAST(item->>'excused' AS BOOLEAN), false) AS excused, item->>'workflow_state' AS workflow_state,
       TRY_CAST(item->>'graded_at' AS TIMESTAMPTZ) AS graded_at,
       coalesce(TRY_CAST(item->>'updated_at' AS TIMESTAMPTZ),
                greatest(TRY_CAST(item->>'graded_at' AS TIMESTAMPTZ), TRY_CAST(item->>'submitted_at' AS TIMESTAMPTZ),
                         TRY_CAST(item->>'posted_at' AS TIMESTAMPTZ))) AS updated_at,
       CASE WHEN (item->'user'->>'login_id') LIKE '%_@_%' THEN item->'user'->>'login_id' END AS email
FROM items WHERE endpoint = 'submissions'
QUALIFY row_number() OVER (PARTITION BY page_course_id, item->>'id' ORDER BY page_index DESC, position DESC) = 1;
"""

_GRADES_SQL = """
SELECT a.course_id, a.content_id, s.student_id,
    CASE WHEN s.excused THEN 'EX'
         WHEN s.score_text IS NOT NULL AND coalesce(a.grading_type, 'points') IN ('points', 'percent')
             THEN s.score_text
         WHEN s.grade IS NOT NULL THEN s.grade
         WHEN s.score_text IS NOT NULL THEN s.score_text
         ELSE ''
    END AS raw_grade,
    a.points_possible, s.graded_at, s.updated_at, CASE WHEN NOT s.excused THEN s.score END AS score, a.grading_type
FROM submissions s JOIN assignments a USING (canvas_course, assignment_id)
WHERE s.excused OR s.score IS NOT NULL OR s.grade IS NOT NULL OR coalesce(s.workflow_state, '') <> 'unsubmitted'
-- one user with two Canvas ids sharing an SIS id: the newest grade
QUALIFY row_number() OVER (PARTITION BY a.course_id, a.content_id, s.student_id
                           ORDER BY s.updated_at DESC NULLS LAST, s.graded_at DESC NULLS LAST) = 1
ORDER BY 1, 2, 3
"""

_CONTENTS_SQL = "SELECT DISTINCT course_id, content_id, name FROM assignments ORDER BY ALL"

_STUDENTS_SQL = """
SELECT student_id, min(email) AS email FROM submissions WHERE email IS NOT NULL GROUP BY student_id ORDER BY 1
"""


def normalize_canvas_grades(
    pages: pd.DataFrame | Sequence[Mapping[str, object]], connection_id: str
) -> CanvasGradeFrames:
    """Grades, assignments and student emails of one scan of one connection from its raw pages (dicts as the client
    returns them, or a frame with their columns). Raises CanvasPayloadError, naming the connection and each bad
    page's URL and index, when a page or item breaks the contract. Set-based: no Python loop touches a submission."""
    frame = page_frame(pages, PAGE_COLUMNS, {"course_id": "Int64", "page_index": "int64", "status": "Int64"})
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.register("pages", frame)
        raise_on_canvas_problems(conn, _PAGE_PROBLEMS_SQL, connection_id)
        conn.execute(_ITEMS_SQL)
        raise_on_canvas_problems(conn, _ITEM_PROBLEMS_SQL, connection_id)
        conn.execute(_TABLES_SQL)
        grades = conn.execute(_GRADES_SQL).df()
        contents = conn.execute(_CONTENTS_SQL).df()
        students = conn.execute(_STUDENTS_SQL).df()
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
