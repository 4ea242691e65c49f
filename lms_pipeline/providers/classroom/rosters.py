"""Google Classroom raw pages -> course rosters and course-student edges, in DuckDB SQL.

Input: the raw pages of one scan (``ClassroomClient.scan_rosters``): connection_id, endpoint ('courses' | 'aliases'
| 'students'), course_id (the Classroom id; None for courses), page_index, url, status and payload (body text).

Identities. A course's ``course_id`` is its domain alias without the ``d:`` prefix (the SIS link Classroom keeps in
the aliases sub-collection), else ``classroom-course:<id>``. Classroom has no SIS id for a user, so the caller says
how students are identified: ``identity="email"`` maps ``profile.emailAddress`` (case-insensitively) through a
directory frame (``email, student_id``, e.g. from the SIS) and leaves a user without a match (no email scope, an
email the SIS lacks) as ``classroom-user:<userId>`` with ``identity_matched`` False; ``identity="provider"`` uses
``classroom-user:<userId>`` for everyone (``identity_matched`` always False).

Roster status: a 403 students page is ``not_exposed`` (PERMISSION_DENIED: the provider does not tell), and so is a
course whose students were not read at all; only a complete 200 listing is known, ``empty`` when it holds no one.
Google omits an empty repeated field, so a page without ``students`` is an empty page, not a missing roster. A
listing whose last page still carries a ``nextPageToken``, or with a page missing, is not complete: it raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal, NamedTuple

import duckdb
import pandas as pd

from lms_pipeline.providers.base import PayloadError, RawPage
from lms_pipeline.providers.pages import page_frame, raise_on_problems

Identity = Literal["email", "provider"]

PAGE_COLUMNS = ["endpoint", "course_id", "page_index", "url", "status", "payload"]
ROSTER_COLUMNS = ["course_id", "course_name", "is_active", "roster_status", "student_count", "updated_at"]
EDGE_COLUMNS = ["course_id", "student_id", "student_email", "identity_matched"]


class ClassroomPayloadError(PayloadError):
    """Raw pages break Classroom's contract; the message names the connection, each bad page's URL and index."""


class ClassroomFrames(NamedTuple):
    course_rosters: pd.DataFrame
    course_student_edges: pd.DataFrame


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
        WHEN endpoint NOT IN ('courses', 'aliases', 'students') THEN 'unknown endpoint ' || coalesce(endpoint, 'NULL')
        WHEN endpoint <> 'courses' AND course_id IS NULL THEN endpoint || ' page without a course_id'
        WHEN status = 403 AND endpoint = 'students' THEN NULL
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
FROM pages WHERE status = 200 AND endpoint IN ('courses', 'aliases', 'students')
GROUP BY endpoint, course_id
"""

_ITEMS_SQL = """
CREATE OR REPLACE TEMP TABLE items AS
SELECT connection_id, endpoint, course_id AS classroom_id, page_index, url,
       unnest(CAST(json_extract(payload, '$.' || endpoint) AS JSON[])) AS item
FROM pages WHERE status = 200 AND json_type(payload, '$.' || endpoint) = 'ARRAY'
"""

_ITEM_PROBLEMS_SQL = """
SELECT connection_id, url, page_index,
    CASE
        WHEN json_type(item) <> 'OBJECT' THEN 'an item that is a JSON ' || json_type(item) || ', not an object'
        WHEN endpoint = 'courses' AND json_type(item, '$.id') IS DISTINCT FROM 'VARCHAR'
            THEN 'a course without a string id'
        WHEN endpoint = 'aliases' AND json_type(item, '$.alias') IS DISTINCT FROM 'VARCHAR'
            THEN 'an alias without a string alias'
        WHEN endpoint = 'students' AND json_type(item, '$.userId') IS DISTINCT FROM 'VARCHAR'
            THEN 'a student without a string userId'
    END AS problem
FROM items
"""

_ROSTERS_SQL = """
CREATE OR REPLACE TEMP TABLE rosters AS
WITH courses AS (
    SELECT item->>'id' AS classroom_id, item->>'name' AS course_name, item->>'courseState' AS course_state,
           TRY_CAST(item->>'updateTime' AS TIMESTAMPTZ) AS updated_at
    FROM items WHERE endpoint = 'courses'
    QUALIFY row_number() OVER (PARTITION BY item->>'id' ORDER BY page_index DESC) = 1
), sis AS (  -- domain aliases ('d:'); project aliases ('p:') name no SIS record
    SELECT classroom_id, min(substr(item->>'alias', 3)) AS sis_course_id
    FROM items WHERE endpoint = 'aliases' AND starts_with(item->>'alias', 'd:') GROUP BY classroom_id
), listed AS (
    SELECT course_id AS classroom_id, bool_or(status = 403) AS denied FROM pages
    WHERE endpoint = 'students' GROUP BY course_id
), members AS (
    SELECT classroom_id, count(DISTINCT item->>'userId') AS n FROM items
    WHERE endpoint = 'students' GROUP BY classroom_id
)
SELECT c.classroom_id, coalesce(s.sis_course_id, 'classroom-course:' || c.classroom_id) AS course_id,
    c.course_name, c.course_state = 'ACTIVE' AS is_active,
    CASE WHEN l.classroom_id IS NULL OR l.denied THEN 'not_exposed'
         WHEN coalesce(m.n, 0) = 0 THEN 'empty' ELSE 'exposed' END AS roster_status,
    CASE WHEN l.classroom_id IS NOT NULL AND NOT l.denied THEN coalesce(m.n, 0) END::INTEGER AS student_count,
    c.updated_at
FROM courses c LEFT JOIN sis s USING (classroom_id) LEFT JOIN listed l USING (classroom_id)
LEFT JOIN members m USING (classroom_id)
"""

_EDGES_SQL = """
WITH students AS (
    SELECT classroom_id, item->>'userId' AS user_id, item->'$.profile'->>'emailAddress' AS email
    FROM items WHERE endpoint = 'students'
)
SELECT DISTINCT r.course_id, coalesce(d.student_id, 'classroom-user:' || s.user_id) AS student_id,
    s.email AS student_email, d.student_id IS NOT NULL AS identity_matched
FROM students s JOIN rosters r ON r.classroom_id = s.classroom_id AND r.roster_status = 'exposed'
LEFT JOIN directory d ON lower(s.email) = d.email  -- empty with identity="provider"
ORDER BY r.course_id, student_id
"""


def normalize_classroom_pages(
    pages: pd.DataFrame | Iterable[RawPage | Mapping],
    connection_id: str,
    *,
    identity: Identity,
    directory: pd.DataFrame | None = None,
) -> ClassroomFrames:
    """Normalize one scan's raw pages; set-based, no Python loop touches a course or an edge.

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
        conn.execute(_ROSTERS_SQL)
        rosters = conn.execute(f"SELECT {', '.join(ROSTER_COLUMNS)} FROM rosters ORDER BY course_id").df()
        edges = conn.execute(_EDGES_SQL).df()
    rosters["student_count"] = rosters["student_count"].astype("Int64")
    return ClassroomFrames(rosters, edges[EDGE_COLUMNS])


def email_directory(identity: Identity, directory: pd.DataFrame | None) -> pd.DataFrame:
    """The email -> student id map, lower-cased; an email naming two students would make edges up, so it raises."""
    if identity not in ("email", "provider"):
        raise ValueError(f"identity must be 'email' or 'provider', got {identity!r}")
    if identity == "provider":
        return pd.DataFrame({"email": pd.Series(dtype="string"), "student_id": pd.Series(dtype="string")})
    if directory is None:
        raise ValueError('identity="email" needs a directory frame with columns email, student_id')
    out = pd.DataFrame({"email": directory["email"].str.lower(), "student_id": directory["student_id"]})
    out = out.dropna().drop_duplicates()
    clashes = out.loc[out["email"].duplicated(), "email"]
    if len(clashes):
        raise ValueError(f"the directory maps {len(clashes)} email(s) to several students, e.g. {clashes.iloc[0]!r}")
    return out


def raise_on_classroom_problems(conn: duckdb.DuckDBPyConnection, problems_sql: str, shown: int = 5) -> None:
    """Raise ClassroomPayloadError listing the first problems found by ``problems_sql`` (rows of connection, URL,
    page index and problem); the grade normalizer checks its pages with it too."""
    raise_on_problems(
        conn,
        f"SELECT * FROM ({problems_sql}) AS p(connection_id, url, page_index, problem)",
        ClassroomPayloadError,
        shown=shown,
        line=lambda c, url, page, problem: f"connection {c!r}: page {page} of GET {url}: {problem}",
        order_by="ALL",
    )
