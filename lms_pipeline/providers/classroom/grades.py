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
from typing import TYPE_CHECKING, NamedTuple

import duckdb
import pandas as pd

from lms_pipeline.providers.base import SIDE_GRADE_COLUMNS, GradeSides, RawPage
from lms_pipeline.providers.classroom.client import ClassroomClient
from lms_pipeline.providers.classroom.options import ClassroomOptions
from lms_pipeline.providers.classroom.rosters import (
    PAGE_COLUMNS,
    Identity,
    email_directory,
    raise_on_classroom_problems,
)
from lms_pipeline.providers.pages import page_frame

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

GRADE_COLUMNS = ["course_id", "content_id", "student_id", "raw_grade", "points_possible", "draft_grade", "state",
                 "graded_at", "classroom_user_id", "identity_matched"]  # fmt: skip
CONTENT_COLUMNS = ["course_id", "content_id", "name"]
CONTENT_MARKER = "lms-content:"
_NUMBER_OR_NULL = "('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL')"  # json_type of a JSON number, or of null


class ClassroomGradeFrames(NamedTuple):
    grades: pd.DataFrame
    contents: pd.DataFrame


# Page-level checks first (json_type is only evaluated where the body is valid JSON: DuckDB's CASE is lazy).
_PAGE_PROBLEMS_SQL = """
WITH typed AS (
    SELECT *, coalesce(json_valid(payload), false) AS is_json,
        CASE WHEN coalesce(json_valid(payload), false) THEN json_type(payload) END AS body_type
    FROM pages
), shaped AS (
    SELECT *, CASE WHEN body_type = 'OBJECT' THEN json_type(payload, '$.' || endpoint) END AS items_type,
        CASE WHEN body_type = 'OBJECT' THEN json_type(payload, '$.nextPageToken') END AS token_type
    FROM typed
)
SELECT connection_id, url, page_index,
    CASE
        WHEN endpoint NOT IN ('courses', 'aliases', 'students', 'courseWork', 'studentSubmissions')
            THEN 'unknown endpoint ' || coalesce(endpoint, 'NULL')
        WHEN endpoint <> 'courses' AND course_id IS NULL THEN endpoint || ' page without a course_id'
        WHEN status = 403 AND endpoint IN ('students', 'courseWork', 'studentSubmissions') THEN NULL
        WHEN status IS DISTINCT FROM 200 THEN 'HTTP ' || coalesce(status::VARCHAR, 'NULL') || ' is not a page'
        WHEN NOT is_json THEN 'the body is not JSON'
        WHEN body_type <> 'OBJECT' THEN 'the body is a JSON ' || body_type || ', not an object'
        WHEN items_type NOT IN ('ARRAY', 'NULL') THEN endpoint || ' is ' || items_type || ', not a list'
        WHEN token_type NOT IN ('VARCHAR', 'NULL') THEN 'nextPageToken is ' || token_type || ', not a string'
    END AS problem
FROM shaped
"""

# Every listing read to its end: pages 0..n-1 all there, and only the last without a token.
_LISTING_PROBLEMS_SQL = """
SELECT any_value(connection_id), arg_max(url, page_index), max(page_index),
    CASE
        WHEN count(DISTINCT page_index) <> max(page_index) + 1 OR min(page_index) <> 0
            THEN 'the listing has missing or repeated pages'
        WHEN arg_max(coalesce(payload->>'$.nextPageToken', ''), page_index) <> ''
            THEN 'the last page still gives a nextPageToken: the listing was not read to its end'
    END AS problem
FROM pages WHERE status = 200
GROUP BY endpoint, course_id
"""

_ITEMS_SQL = """
CREATE OR REPLACE TEMP TABLE items AS
SELECT connection_id, endpoint, course_id AS classroom_id, page_index, url,
       unnest(CAST(json_extract(payload, '$.' || endpoint) AS JSON[])) AS item
FROM pages WHERE status = 200 AND json_type(payload, '$.' || endpoint) = 'ARRAY'
"""

_ITEM_PROBLEMS_SQL = f"""
SELECT connection_id, url, page_index,
    CASE
        WHEN json_type(item) <> 'OBJECT' THEN 'an item that is a JSON ' || json_type(item) || ', not an object'
        WHEN endpoint = 'courses' AND json_type(item, '$.id') IS DISTINCT FROM 'VARCHAR'
            THEN 'a course without a string id'
        WHEN endpoint = 'aliases' AND json_type(item, '$.alias') IS DISTINCT FROM 'VARCHAR'
            THEN 'an alias without a string alias'
        WHEN endpoint = 'students' AND json_type(item, '$.userId') IS DISTINCT FROM 'VARCHAR'
            THEN 'a student without a string userId'
        WHEN endpoint = 'courseWork' AND json_type(item, '$.id') IS DISTINCT FROM 'VARCHAR'
            THEN 'a courseWork without a string id'
        WHEN endpoint = 'courseWork' AND coalesce(json_type(item, '$.maxPoints'), 'NULL') NOT IN {_NUMBER_OR_NULL}
            THEN 'a courseWork whose maxPoints is not a number'
        WHEN endpoint = 'studentSubmissions' AND json_type(item, '$.courseWorkId') IS DISTINCT FROM 'VARCHAR'
            THEN 'a submission without a string courseWorkId'
        WHEN endpoint = 'studentSubmissions' AND json_type(item, '$.userId') IS DISTINCT FROM 'VARCHAR'
            THEN 'a submission without a string userId'
        WHEN endpoint = 'studentSubmissions' AND json_type(item, '$.state') IS DISTINCT FROM 'VARCHAR'
            THEN 'a submission without a string state'
        WHEN endpoint = 'studentSubmissions'
             AND coalesce(json_type(item, '$.assignedGrade'), 'NULL') NOT IN {_NUMBER_OR_NULL}
            THEN 'a submission whose assignedGrade is not a number'
        WHEN endpoint = 'studentSubmissions'
             AND coalesce(json_type(item, '$.draftGrade'), 'NULL') NOT IN {_NUMBER_OR_NULL}
            THEN 'a submission whose draftGrade is not a number'
    END AS problem
FROM items
"""

# Courses by the id the client asked with (every page names it), so a scan given course ids needs no courses page.
_COURSES_SQL = """
CREATE OR REPLACE TEMP TABLE course_ids AS
WITH asked AS (
    SELECT DISTINCT course_id AS classroom_id FROM pages WHERE course_id IS NOT NULL
), sis AS (  -- domain aliases ('d:'); project aliases ('p:') name no SIS record
    SELECT classroom_id, min(substr(item->>'alias', 3)) AS sis_course_id
    FROM items WHERE endpoint = 'aliases' AND starts_with(item->>'alias', 'd:') GROUP BY classroom_id
)
SELECT classroom_id, coalesce(sis_course_id, 'classroom-course:' || classroom_id) AS course_id
FROM asked LEFT JOIN sis USING (classroom_id)
"""

_WORK_SQL = f"""
CREATE OR REPLACE TEMP TABLE work AS
WITH listed AS (
    SELECT classroom_id, item->>'id' AS work_id, item->>'title' AS name,
        nullif(regexp_extract(coalesce(item->>'description', ''), '(^|\\s){CONTENT_MARKER}(\\S+)', 2), '') AS tagged,
        coalesce(TRY_CAST(item->>'maxPoints' AS DOUBLE), 0) AS max_points
    FROM items WHERE endpoint = 'courseWork'
    QUALIFY row_number() OVER (PARTITION BY classroom_id, item->>'id' ORDER BY page_index DESC) = 1
)
SELECT c.course_id, l.classroom_id, l.work_id, coalesce(l.tagged, 'classroom-coursework:' || l.work_id) AS content_id,
    l.name, l.max_points
FROM listed l JOIN course_ids c USING (classroom_id)
"""

_GRADES_SQL = """
WITH submissions AS (
    SELECT classroom_id, item->>'courseWorkId' AS work_id, item->>'userId' AS user_id, item->>'state' AS state,
        item->>'assignedGrade' AS assigned, item->>'draftGrade' AS draft,
        TRY_CAST(item->>'updateTime' AS TIMESTAMPTZ) AS updated_at
    FROM items WHERE endpoint = 'studentSubmissions'
    QUALIFY row_number() OVER (PARTITION BY classroom_id, item->>'courseWorkId', item->>'userId'
                               ORDER BY TRY_CAST(item->>'updateTime' AS TIMESTAMPTZ) DESC NULLS LAST,
                                        page_index DESC) = 1
), users AS (  -- a user's profile is the same in every course
    SELECT item->>'userId' AS user_id, min(item->'$.profile'->>'emailAddress') AS email
    FROM items WHERE endpoint = 'students' GROUP BY ALL
)
SELECT c.course_id, coalesce(w.content_id, 'classroom-coursework:' || s.work_id) AS content_id,
    coalesce(d.student_id, 'classroom-user:' || s.user_id) AS student_id,
    coalesce(s.assigned, '') AS raw_grade,  -- a draft is not a grade of record
    coalesce(w.max_points, 0) AS points_possible, s.draft AS draft_grade, s.state,
    CASE WHEN s.state = 'RETURNED' AND s.assigned IS NOT NULL THEN s.updated_at END AS graded_at,
    s.user_id AS classroom_user_id, d.student_id IS NOT NULL AS identity_matched
FROM submissions s JOIN course_ids c USING (classroom_id)
LEFT JOIN work w USING (classroom_id, work_id)
LEFT JOIN users u USING (user_id)
LEFT JOIN directory d ON lower(u.email) = d.email  -- empty with identity="provider"
ORDER BY 1, 2, 3
"""


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
        conn.execute("SET TimeZone = 'UTC'")
        conn.register("pages", page_frame(pages, PAGE_COLUMNS).assign(connection_id=connection_id))
        conn.register("directory", email_directory(identity, directory))
        raise_on_classroom_problems(conn, _PAGE_PROBLEMS_SQL)
        raise_on_classroom_problems(conn, _LISTING_PROBLEMS_SQL)
        conn.execute(_ITEMS_SQL)
        raise_on_classroom_problems(conn, _ITEM_PROBLEMS_SQL)
        conn.execute(_COURSES_SQL)
        conn.execute(_WORK_SQL)
        grades = conn.execute(_GRADES_SQL).df()
        contents = conn.execute(f"SELECT {', '.join(CONTENT_COLUMNS)} FROM work ORDER BY ALL").df()
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
