"""LTI AGS raw pages (``LtiAgsClient.grade_pages``) -> LMS grades, in DuckDB SQL.

One row per AGS result: ``course_id`` (the context), ``content_id`` (the line item's ``resourceId``, else
``lti-lineitem:<id>``), ``student_id``, ``raw_grade``, ``score_given``, ``score_maximum``, ``percent``,
``grade_status``, ``lti_user_id``, ``identity_matched`` and ``comment``.

What AGS can and cannot say (docs/providers.md §3.3, peers-and-user-pains.md item 16):

- A result with ``resultScore`` is ``graded``: ``raw_grade`` is ``"<resultScore>/<resultMaximum>"`` (e.g. "17/20",
  "84.5/100", "0/20"), and ``percent`` is resultScore / resultMaximum * 100 (the result's own maximum, which may
  differ from its line item's ``scoreMaximum``; AGS's default of 1 when absent), computed exactly: scores are read
  from their JSON text into DECIMAL and divided in integers, rounded half away from zero to 6 decimals, so it equals
  what ``transforms.grades.parse_grades`` gives for the same score. A score of 0 is a graded 0.
- A result without ``resultScore`` (optional in AGS: a platform lists the user but holds no score, e.g. an excused
  or pass/fail entry, whose text may be in ``comment``) is ``ungraded``: no raw grade, no percent, never a 0.
- No result at all makes no row: platforms may omit users without a score, so AGS cannot tell ungraded from
  missing, and a row for them would be a guess. ``missing`` is therefore never produced here.

Identity: ``userId`` is an opaque LTI ``sub``. NRPS members with a ``lis_person_sourcedid`` (in any context of the
connection, whatever their status: a student who left keeps their id) give it a student id; a ``sub`` with none, or
with two different ones, keeps ``lti-user:<userId>`` with ``identity_matched`` false. Never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from lms_pipeline.providers.base import SIDE_GRADE_COLUMNS, GradeSides, PayloadError, RawPage
from lms_pipeline.providers.lti_ags.client import LtiAgsClient
from lms_pipeline.providers.pages import page_frame, raise_on_problems

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

GRADE_COLUMNS = ["course_id", "content_id", "student_id", "raw_grade", "score_given", "score_maximum", "percent",
                 "grade_status", "lti_user_id", "identity_matched", "comment"]  # fmt: skip
PAGE_COLUMNS = ["endpoint", "course_id", "page_index", "url", "status", "payload"]
_NUMBER_OR_NULL = "('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL')"  # json_type of a JSON number, or of null


class LtiPayloadError(PayloadError):
    """Raw pages break the AGS/NRPS contract; the message names the connection, each bad page's URL and index."""


# A page is checked as a whole before any item is read: the CASE stops at the first failing test, so json_type
# never sees text that is not JSON.
_PAGE_PROBLEMS_SQL = """
SELECT endpoint, course_id, page_index, url, NULL AS position,
    CASE
        WHEN endpoint NOT IN ('contexts', 'lineitems', 'results', 'memberships') THEN 'unknown endpoint ' || endpoint
        WHEN status IS DISTINCT FROM 200 THEN 'status ' || coalesce(status::VARCHAR, 'missing') || ' is not a page'
        WHEN payload IS NULL THEN 'no body'
        WHEN NOT json_valid(payload) THEN 'the body is not JSON'
        WHEN endpoint = 'memberships' AND json_type(payload, '$.members') IS DISTINCT FROM 'ARRAY'
            THEN 'the body is not a membership container (an object with a members list)'
        WHEN endpoint <> 'memberships' AND json_type(payload) <> 'ARRAY'
            THEN 'the body is a JSON ' || lower(json_type(payload)) || ', not a list'
        WHEN endpoint = 'memberships' AND list_bool_or(list_transform(json_type(payload, '$.members[*]'),
                                                                      lambda t: t <> 'OBJECT'))
            THEN 'the members list holds an item that is not an object'
        WHEN endpoint <> 'memberships' AND list_bool_or(list_transform(json_type(payload, '$[*]'),
                                                                       lambda t: t <> 'OBJECT'))
            THEN 'the list holds an item that is not an object'
    END AS problem
FROM pages
"""

_ITEMS_SQL = """
CREATE OR REPLACE TEMP TABLE items AS
SELECT endpoint, course_id, page_index, url, unnest(list) AS item, generate_subscripts(list, 1) - 1 AS position
FROM (
    SELECT *, CAST(CASE WHEN endpoint = 'memberships' THEN json_extract(payload, '$.members') ELSE payload END
                   AS JSON[]) AS list
    FROM pages WHERE endpoint IN ('lineitems', 'results', 'memberships')
)
"""

_ITEM_PROBLEMS_SQL = f"""
SELECT endpoint, course_id, page_index, url, position,
    CASE
        WHEN endpoint = 'lineitems' AND json_type(item, '$.id') IS DISTINCT FROM 'VARCHAR'
            THEN 'is a line item without a string id'
        WHEN endpoint = 'lineitems' AND json_type(item, '$.resourceId') NOT IN ('VARCHAR', 'NULL')
            THEN 'is a line item whose resourceId is not a string'
        WHEN endpoint = 'memberships' AND json_type(item, '$.user_id') IS DISTINCT FROM 'VARCHAR'
            THEN 'is a member without a string user_id'
        WHEN endpoint <> 'results' THEN NULL
        WHEN json_type(item, '$.userId') IS DISTINCT FROM 'VARCHAR' THEN 'is a result without a string userId'
        WHEN json_type(item, '$.scoreOf') IS DISTINCT FROM 'VARCHAR' THEN 'is a result without a string scoreOf'
        WHEN json_type(item, '$.resultScore') NOT IN {_NUMBER_OR_NULL}
            THEN 'is a result whose resultScore is not a number'
        WHEN json_type(item, '$.resultMaximum') NOT IN {_NUMBER_OR_NULL}
            OR TRY_CAST(item->>'resultMaximum' AS DECIMAL(38, 6)) <= 0
            THEN 'is a result whose resultMaximum is not a number > 0'
    END AS problem
FROM items
"""

_TABLES_SQL = """
CREATE OR REPLACE TEMP TABLE line_items AS
SELECT DISTINCT course_id, item->>'id' AS lineitem_id,
       coalesce(item->>'resourceId', 'lti-lineitem:' || (item->>'id')) AS content_id
FROM items WHERE endpoint = 'lineitems';

-- a result read twice (the listing shifted while paged) counts once: the copy read last
CREATE OR REPLACE TEMP TABLE results AS
SELECT course_id, page_index, url, position, item->>'scoreOf' AS lineitem_id, item->>'userId' AS lti_user_id,
       CAST(item->>'resultScore' AS DECIMAL(38, 6)) AS score,
       coalesce(CAST(item->>'resultMaximum' AS DECIMAL(38, 6)), 1) AS maximum,  -- AGS: 1 when absent
       item->>'comment' AS comment
FROM items WHERE endpoint = 'results'
QUALIFY row_number() OVER (PARTITION BY course_id, item->>'scoreOf', item->>'userId'
                           ORDER BY page_index DESC, position DESC) = 1;

CREATE OR REPLACE TEMP TABLE identities AS
SELECT item->>'user_id' AS lti_user_id, min(trim(item->>'lis_person_sourcedid')) AS student_id
FROM items WHERE endpoint = 'memberships' AND nullif(trim(item->>'lis_person_sourcedid'), '') IS NOT NULL
GROUP BY ALL
HAVING count(DISTINCT trim(item->>'lis_person_sourcedid')) = 1;  -- two SIS ids for one sub: not matched
"""

_LINK_PROBLEMS_SQL = """
SELECT 'results' AS endpoint, r.course_id, r.page_index, r.url, r.position,
       'is a result of ' || r.lineitem_id || ', a line item its context did not list' AS problem
FROM results r ANTI JOIN line_items l USING (course_id, lineitem_id)
UNION ALL
SELECT 'lineitems', course_id, NULL, NULL, NULL,
       'lists ' || count(*) || ' line items for content ' || content_id || ': ' || string_agg(lineitem_id, ', ')
FROM line_items GROUP BY course_id, content_id HAVING count(*) > 1
"""

# Decimal division in DuckDB goes through DOUBLE, so the percent is divided in integers: micro-units of score and
# maximum, rounded half away from zero to micro-percent.
_GRADES_SQL = """
WITH scaled AS (
    SELECT *, CAST(score * 1000000 AS HUGEINT) AS s, CAST(maximum * 1000000 AS HUGEINT) AS m FROM results
)
SELECT r.course_id, l.content_id, coalesce(i.student_id, 'lti-user:' || r.lti_user_id) AS student_id,
       CASE WHEN r.score IS NOT NULL THEN _text(r.score) || '/' || _text(r.maximum) END AS raw_grade,
       CAST(r.score AS DOUBLE) AS score_given, CAST(r.maximum AS DOUBLE) AS score_maximum,
       CAST(CAST(sign(r.s) * ((2 * abs(r.s) * 100000000 + r.m) // (2 * r.m)) AS DECIMAL(38, 0)) * 0.000001
            AS DECIMAL(18, 6)) AS percent,
       CASE WHEN r.score IS NOT NULL THEN 'graded' ELSE 'ungraded' END AS grade_status,
       r.lti_user_id, i.student_id IS NOT NULL AS identity_matched, r.comment
FROM scaled r JOIN line_items l USING (course_id, lineitem_id) LEFT JOIN identities i USING (lti_user_id)
ORDER BY 1, 2, 3
"""

_DUPLICATES_SQL = """
SELECT 'results' AS endpoint, course_id, NULL AS page_index, NULL AS url, NULL AS position,
       'gives ' || count(*) || ' results to student ' || student_id || ' for content ' || content_id
       || ' (LTI users ' || string_agg(lti_user_id, ', ' ORDER BY lti_user_id) || ')' AS problem
FROM grades GROUP BY course_id, content_id, student_id HAVING count(*) > 1
"""


def normalize_lti_grades(pages: pd.DataFrame | Sequence[Mapping[str, object]], connection_id: str) -> pd.DataFrame:
    """LMS grades of one scan of one connection from its raw pages (dicts as the client returns them, or a frame
    with their columns), one row per (course, content, student). Raises LtiPayloadError when a page or item breaks
    the contract, a result names a line item its context did not list, or two results land on one key. Set-based:
    no Python loop touches a result."""
    frame = page_frame(pages, PAGE_COLUMNS, {"course_id": "string", "page_index": "int64", "status": "Int64"})
    with duckdb.connect() as conn:
        conn.execute("CREATE MACRO _text(d) AS rtrim(rtrim(CAST(d AS VARCHAR), '0'), '.')")  # 84.500000 -> 84.5
        conn.register("pages", frame)
        _raise_on_problems(conn, _PAGE_PROBLEMS_SQL, connection_id)
        conn.execute(_ITEMS_SQL)
        _raise_on_problems(conn, _ITEM_PROBLEMS_SQL, connection_id)
        conn.execute(_TABLES_SQL)
        _raise_on_problems(conn, _LINK_PROBLEMS_SQL, connection_id)
        conn.execute(f"CREATE TEMP TABLE grades AS {_GRADES_SQL}")
        _raise_on_problems(conn, _DUPLICATES_SQL, connection_id)
        grades = conn.execute("SELECT * FROM grades").df()
    grades["percent"] = grades["percent"].astype("float64")
    return grades.astype({"identity_matched": "bool"})[GRADE_COLUMNS]


def _raise_on_problems(conn: duckdb.DuckDBPyConnection, problems_sql: str, connection_id: str) -> None:
    raise_on_problems(
        conn, problems_sql, LtiPayloadError, f"connection {connection_id!r}: ", label="LTI ", line=_problem_line
    )


def _problem_line(endpoint: str, course: object, index: object, url: object, position: object, problem: str) -> str:
    """As ``pages.page_problem``, but a link or duplicate problem may have no page index or URL to name."""
    return (
        f"{endpoint}" + (f" page {index}" if index is not None else "")
        + (f" of course {course}" if course is not None else "") + (f" (GET {url})" if url is not None else "")
        + ": " + (f"item {position} {problem}" if position is not None else problem)
    )  # fmt: skip


_SIDES_SQL = {
    # Line items name their content (``label``) and point to it (``resourceId``): what title matching needs.
    "contents": """
        SELECT DISTINCT course_id, coalesce(i.resourceId, 'lti-lineitem:' || i.id) AS content_id, i.label AS name
        FROM (SELECT course_id, unnest(from_json(payload, '[{"id": "VARCHAR", "label": "VARCHAR",
                                                         "resourceId": "VARCHAR"}]')) AS i
              FROM pages WHERE endpoint = 'lineitems')
        ORDER BY 1, 2""",
    # NRPS members with a sourced id and an email: the LMS side of the email match with the SIS.
    "students": """
        SELECT DISTINCT m.lis_person_sourcedid AS student_id, m.email AS email
        FROM (SELECT unnest(from_json(payload, '{"members": [{"lis_person_sourcedid": "VARCHAR",
                                                              "email": "VARCHAR"}]}').members) AS m
              FROM pages WHERE endpoint = 'memberships')
        WHERE m.lis_person_sourcedid IS NOT NULL AND m.email IS NOT NULL
        ORDER BY 1, 2""",
}


def lti_sides(pages: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(contents: course_id, content_id, name; students: student_id, email) from pages ``normalize_lti_grades``
    has already accepted."""
    frame = page_frame(pages, PAGE_COLUMNS, {"course_id": "string", "page_index": "int64", "status": "Int64"})
    with duckdb.connect() as conn:
        conn.register("pages", frame)
        return conn.execute(_SIDES_SQL["contents"]).df(), conn.execute(_SIDES_SQL["students"]).df()


class LtiGrades:
    """AGS results as ``<score>/<maximum>``; a learner listed without a score is ungraded (""), never 0."""

    def fetch(self, client: LtiAgsClient) -> list[RawPage]:
        return client.grade_pages()

    def sides(self, conn: ConnectionConfig, pages: pd.DataFrame, stored: Callable[[str], pd.DataFrame]) -> GradeSides:
        frame = normalize_lti_grades(pages, conn.id)
        frame = frame.assign(raw_grade=frame["raw_grade"].where(frame["grade_status"] != "ungraded", ""),
                             points_possible=None, graded_at=pd.NaT)  # fmt: skip
        contents, students = lti_sides(pages)
        return GradeSides(frame[SIDE_GRADE_COLUMNS], students, contents)
