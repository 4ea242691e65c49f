"""Stored course/class pages -> course rosters and course/class-student edges, in DuckDB SQL.

The one rule that matters: a course whose roster keys are absent (or null) is ``not_exposed`` (the provider does
not tell), never ``empty``. Only a present, empty list means "no students". The roster is the union of the
deprecated ``student_ids`` and the newer ``students[].id`` (docs/providers.md §1.4), so a provider moving from one
field to the other changes nothing downstream.
"""

from __future__ import annotations

from typing import NamedTuple

import duckdb
import pandas as pd

COURSE_STRUCTURE = (
    '{"id": "VARCHAR", "name": "VARCHAR", "is_active": "BOOLEAN", "created_at": "VARCHAR", '
    '"updated_at": "VARCHAR", "course_id": "VARCHAR", "student_ids": ["VARCHAR"], "students": [{"id": "VARCHAR"}]}'
)

ROSTER_COLUMNS = [
    "connection_id", "snapshot_date", "course_id", "course_name", "is_active", "roster_status",
    "roster_source", "student_count", "created_at", "updated_at", "fetched_on",
]  # fmt: skip
COURSE_EDGE_COLUMNS = ["connection_id", "snapshot_date", "course_id", "student_id"]
CLASS_EDGE_COLUMNS = ["connection_id", "snapshot_date", "class_id", "course_id", "student_id"]


class MalformedPayloadError(ValueError):
    """Stored pages hold items that break the API's contract; the message names connection, endpoint, offset."""


class RosterFrames(NamedTuple):
    course_rosters: pd.DataFrame
    course_student_edges: pd.DataFrame
    class_student_edges: pd.DataFrame


# Every page is parsed once, as a whole (per-item JSON functions cost 5x more). The lenient parse would turn
# `"student_ids": "x"` into NULL, i.e. "not exposed", so each page's merged JSON shape is checked too: a page
# whose shape breaks the contract, or whose parsed items hold NULL ids, is diagnosed item by item (_PROBLEMS_SQL).
_ITEMS_SQL = f"""
CREATE OR REPLACE TEMP TABLE items AS
SELECT connection_id, CAST(snapshot_date AS DATE) AS snapshot_date, endpoint, page_index, page_offset,
       unnest(from_json(payload, '[{COURSE_STRUCTURE}]')) AS o
FROM pages
"""

_SUSPECT_PAGES_SQL = """
WITH shapes AS (
    SELECT connection_id, snapshot_date, endpoint, page_index, page_offset, json_structure(payload) AS shape
    FROM pages
)
SELECT connection_id, snapshot_date, endpoint, page_index, page_offset FROM shapes
WHERE NOT (
    shape::VARCHAR = '["NULL"]'
    OR (json_type(shape, '$[0]') = 'OBJECT'
        AND (shape->'$[0].id')::VARCHAR = '"VARCHAR"'
        AND coalesce((shape->'$[0].student_ids')::VARCHAR IN ('"NULL"', '["VARCHAR"]', '["NULL"]'), true)
        AND coalesce((shape->'$[0].students')::VARCHAR IN ('"NULL"', '["NULL"]')
                     OR (shape->'$[0].students[0].id')::VARCHAR = '"VARCHAR"', true))
)
UNION
SELECT DISTINCT connection_id, snapshot_date, endpoint, page_index, page_offset FROM items
WHERE o.id IS NULL
   OR list_bool_or(list_transform(o.student_ids, lambda x: x IS NULL))
   OR list_bool_or(list_transform(o.students, lambda x: x.id IS NULL))
UNION
SELECT connection_id, snapshot_date, endpoint, page_index, page_offset FROM items
GROUP BY connection_id, snapshot_date, endpoint, page_index, page_offset, o.id HAVING count(*) > 1
"""

_PROBLEMS_SQL = """
WITH raw AS (
    SELECT p.connection_id, p.endpoint, p.page_index, p.page_offset, unnest(CAST(p.payload AS JSON[])) AS item
    FROM pages p SEMI JOIN suspect_pages s
      ON p.connection_id = s.connection_id AND p.snapshot_date = s.snapshot_date
     AND p.endpoint = s.endpoint AND p.page_index = s.page_index
), typed AS (
    SELECT connection_id, endpoint, page_index, page_offset, item->>'id' AS item_id,
           json_type(item, '$.id') AS id_type, json_type(item, '$.student_ids') AS ids_type,
           json_type(item, '$.students') AS refs_type, json_type(item, '$.student_ids[*]') AS id_elem_types,
           json_type(item, '$.students[*].id') AS ref_id_types, json_array_length(item, '$.students') AS refs_len,
           count(*) OVER (PARTITION BY connection_id, endpoint, page_index, item->>'id') AS copies
    FROM raw
)
SELECT connection_id, endpoint, page_offset, coalesce(item_id, '?') AS item_id,
    CASE
        WHEN id_type IS DISTINCT FROM 'VARCHAR' THEN 'id is missing or not a string'
        WHEN ids_type NOT IN ('ARRAY', 'NULL') THEN 'student_ids is ' || ids_type || ', not a list'
        WHEN list_bool_or(list_transform(id_elem_types, lambda t: t IS DISTINCT FROM 'VARCHAR'))
            THEN 'student_ids holds a non-string'
        WHEN refs_type NOT IN ('ARRAY', 'NULL') THEN 'students is ' || refs_type || ', not a list'
        WHEN refs_type = 'ARRAY' AND (len(ref_id_types) <> refs_len
            OR list_bool_or(list_transform(ref_id_types, lambda t: t IS DISTINCT FROM 'VARCHAR')))
            THEN 'students holds an entry without a string id'
        WHEN copies > 1 THEN 'the same id appears ' || copies || ' times on one page'
    END AS problem
FROM typed
"""

_ROSTERS_SQL = """
CREATE OR REPLACE TEMP TABLE rosters AS
WITH shaped AS (
    SELECT connection_id, snapshot_date, endpoint, page_index,
        o.id AS item_id, o.name AS item_name, o.is_active, o.course_id AS parent_course_id,
        TRY_CAST(o.created_at AS TIMESTAMPTZ) AS created_at,
        TRY_CAST(o.updated_at AS TIMESTAMPTZ) AS updated_at,
        -- absent and null both parse to NULL: the roster is not exposed; only a list (even []) is known
        o.student_ids IS NOT NULL AS has_ids, o.students IS NOT NULL AS has_refs,
        list_distinct(list_concat(coalesce(o.student_ids, []),
                                  coalesce(list_transform(o.students, lambda s: s.id), []))) AS roster
    FROM items
),
-- The same id comes on two pages when it changed while the listing was paged (a keyset scan reads it again at the
-- end): keep the newest version of each item, and of equal versions the one read last.
latest AS (
    SELECT * FROM shaped
    QUALIFY row_number() OVER (
        PARTITION BY connection_id, snapshot_date, endpoint, item_id
        ORDER BY updated_at DESC NULLS LAST, page_index DESC) = 1
)
SELECT connection_id, snapshot_date, endpoint, item_id, item_name, is_active, parent_course_id,
    created_at, updated_at,
    CASE WHEN NOT (has_ids OR has_refs) THEN 'not_exposed'
         WHEN len(roster) = 0 THEN 'empty' ELSE 'exposed' END AS roster_status,
    CASE WHEN has_ids AND has_refs THEN 'both' WHEN has_ids THEN 'student_ids'
         WHEN has_refs THEN 'students' END AS roster_source,
    CASE WHEN has_ids OR has_refs THEN roster END AS roster
FROM latest
"""


def normalize_pages(pages: pd.DataFrame) -> RosterFrames:
    """Normalize stored pages (``raw_course_pages`` rows) of one or more partitions.

    ``pages`` needs connection_id, snapshot_date, endpoint ('course' | 'class'), page_index (order of reading),
    page_offset and payload (a JSON array as text). Set-based: no Python loop touches an item or an edge.
    """
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.register(
            "pages", pages[["connection_id", "snapshot_date", "endpoint", "page_index", "page_offset", "payload"]]
        )
        conn.execute(_ITEMS_SQL)
        _raise_on_problems(conn)
        conn.execute(_ROSTERS_SQL)
        rosters = conn.execute(
            """
            SELECT connection_id, snapshot_date, item_id AS course_id, item_name AS course_name, is_active,
                   roster_status, roster_source, CAST(len(roster) AS INTEGER) AS student_count,
                   created_at, updated_at, snapshot_date AS fetched_on
            FROM rosters WHERE endpoint = 'course'
            ORDER BY connection_id, snapshot_date, course_id
            """
        ).df()
        course_edges = conn.execute(
            """
            SELECT connection_id, snapshot_date, item_id AS course_id, unnest(roster) AS student_id
            FROM rosters WHERE endpoint = 'course' AND roster_status = 'exposed'
            """
        ).df()
        class_edges = conn.execute(
            """
            SELECT connection_id, snapshot_date, item_id AS class_id, parent_course_id AS course_id,
                   unnest(roster) AS student_id
            FROM rosters WHERE endpoint = 'class' AND roster_status = 'exposed'
            """
        ).df()
    return RosterFrames(rosters[ROSTER_COLUMNS], course_edges[COURSE_EDGE_COLUMNS], class_edges[CLASS_EDGE_COLUMNS])


def _raise_on_problems(conn: duckdb.DuckDBPyConnection, shown: int = 5) -> None:
    conn.execute(f"CREATE OR REPLACE TEMP TABLE suspect_pages AS {_SUSPECT_PAGES_SQL}")
    if not conn.execute("SELECT count(*) FROM suspect_pages").fetchone()[0]:
        return
    problems = conn.execute(
        f"SELECT * FROM ({_PROBLEMS_SQL}) WHERE problem IS NOT NULL ORDER BY ALL LIMIT {shown + 1}"
    ).fetchall()
    total = conn.execute(f"SELECT count(*) FROM ({_PROBLEMS_SQL}) WHERE problem IS NOT NULL").fetchone()[0]
    if total == 0:  # an unusual but valid page shape: nothing to report
        return
    lines = [
        f"connection {c!r}: GET /lms/{c}/{endpoint} page at offset {offset}, item {item!r}: {problem}"
        for c, endpoint, offset, item, problem in problems[:shown]
    ]
    more = f"\n  ... and {total - shown} more" if total > shown else ""
    raise MalformedPayloadError(f"{total} malformed item(s) in stored pages:\n  " + "\n  ".join(lines) + more)


def listed_ids(pages: pd.DataFrame, endpoint: str) -> pd.Series:
    """Distinct ids of the ``endpoint`` items on the stored pages (whether or not they expose a roster)."""
    with duckdb.connect() as conn:
        conn.register("pages", pages[["endpoint", "payload"]])
        return conn.execute(
            """SELECT DISTINCT unnest(from_json(payload, '[{"id": "VARCHAR"}]')).id AS id
               FROM pages WHERE endpoint = ?""",
            [endpoint],
        ).df()["id"]


def apply_incremental(
    base: RosterFrames, polled: RosterFrames, polled_class_ids: pd.Series, snapshot_date: pd.Timestamp
) -> RosterFrames:
    """The day's snapshot from an incremental poll: the base snapshot with every polled course (and class)
    replaced by its polled version. A course the poll did not return is carried forward unchanged (its
    ``fetched_on`` stays the day it was last read), never read as deleted: only a full scan can see deletions.
    """
    polled_courses = polled.course_rosters["course_id"]

    def carried(frame: pd.DataFrame, key: str, replaced: pd.Series) -> pd.DataFrame:
        kept = frame.loc[~frame[key].isin(replaced)].copy()
        kept["snapshot_date"] = snapshot_date
        return kept

    def merged(old: pd.DataFrame, new: pd.DataFrame, key: str, replaced: pd.Series, columns: list[str]) -> pd.DataFrame:
        parts = [p for p in (carried(old, key, replaced)[columns], new[columns]) if len(p)]
        frame = pd.concat(parts, ignore_index=True) if parts else new[columns].iloc[0:0]
        return frame.sort_values(columns[2:4], ignore_index=True)

    return RosterFrames(
        merged(base.course_rosters, polled.course_rosters, "course_id", polled_courses, ROSTER_COLUMNS),
        merged(base.course_student_edges, polled.course_student_edges, "course_id", polled_courses,
               COURSE_EDGE_COLUMNS),
        merged(base.class_student_edges, polled.class_student_edges, "class_id", polled_class_ids,
               CLASS_EDGE_COLUMNS),
    )  # fmt: skip
