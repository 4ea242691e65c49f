-- Stored Unified course/class pages -> course_rosters, course_student_edges, class_student_edges, inside the
-- warehouse (lms_pipeline.transforms.rosters runs these, in this order, in one transaction). `roster_pages` is a temp
-- view over the table holding the partition's pages (stored or staged); every value is a bound parameter.

-- name: create_items
-- The day's items, parsed once: what the contract checks, the dedupe and every output read. `roster` is the union of
-- the deprecated student_ids and the newer students[].id (provider-apis.md §1.4, §9.4), without repeats.
CREATE OR REPLACE TEMP TABLE roster_items (
    endpoint VARCHAR,
    page_index INTEGER,
    page_offset INTEGER,
    page_shape_ok BOOLEAN,
    item_id VARCHAR,
    item_name VARCHAR,
    is_active BOOLEAN,
    parent_course_id VARCHAR,
    created_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ,
    has_ids BOOLEAN,
    has_refs BOOLEAN,
    holds_null BOOLEAN,
    roster VARCHAR[]
);

-- name: last_page
SELECT max(page_index) FROM roster_pages WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE;

-- name: page_sizes
-- Sizes only, to cut the day into batches of bounded bytes: a DuckDB vector holds 2,048 rows, and 2,048 pages of a
-- big tenant parsed at once need gigabytes. Read in two halves, in parallel (see parse_pages); this first read of
-- the bodies also brings them into DuckDB's buffers for the parse.
SELECT endpoint, page_index, strlen(payload) AS bytes FROM roster_pages
WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE AND page_index <= $middle_page
UNION ALL
SELECT endpoint, page_index, strlen(payload) AS bytes FROM roster_pages
WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE AND page_index > $middle_page
ORDER BY endpoint, page_index;

-- name: parse_pages
-- One batch of pages parsed as whole pages (per-item JSON functions cost 5x more). The lenient parse would read
-- `"student_ids": "x"` as NULL, i.e. "not exposed", and 7 as '7', so the page's merged JSON shape is judged in the
-- same pass (json_structure) and kept on each of its items; a page whose shape breaks the contract, or whose items
-- hold a NULL id or a NULL roster entry, is diagnosed item by item afterwards (problems).
-- The batch comes as two halves in a UNION ALL: DuckDB scans a table in parallel by row group, and a day's pages
-- fit in one, so the halves are what lets both cores parse (union branches run in parallel when insertion order
-- need not be kept, which Warehouse.rewrite sets).
INSERT INTO roster_items
WITH halves AS (
    SELECT endpoint, page_index, page_offset, payload FROM roster_pages
    WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE AND endpoint = $endpoint
      AND page_index BETWEEN $first_page AND $middle_page
    UNION ALL
    SELECT endpoint, page_index, page_offset, payload FROM roster_pages
    WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE AND endpoint = $endpoint
      AND page_index > $middle_page AND page_index <= $last_page
),
pages AS (
    SELECT endpoint, page_index, page_offset, json_structure(payload) AS shape,
        from_json(payload, '[{"id": "VARCHAR", "name": "VARCHAR", "is_active": "BOOLEAN", "created_at": "VARCHAR",
                              "updated_at": "VARCHAR", "course_id": "VARCHAR", "student_ids": ["VARCHAR"],
                              "students": [{"id": "VARCHAR"}]}]') AS items
    FROM halves
),
parsed AS (
    SELECT endpoint, page_index, page_offset,
        -- an absent key is fine (not exposed); a present one must have the contract's shape
        coalesce(shape::VARCHAR = '["NULL"]'
            OR (json_type(shape, '$[0]') = 'OBJECT'
                AND (shape->'$[0].id')::VARCHAR = '"VARCHAR"'
                AND coalesce((shape->'$[0].student_ids')::VARCHAR IN ('"NULL"', '["VARCHAR"]', '["NULL"]'), true)
                AND ((shape->'$[0].students') IS NULL
                     OR (shape->'$[0].students')::VARCHAR IN ('"NULL"', '["NULL"]')
                     OR coalesce((shape->'$[0].students[0].id')::VARCHAR = '"VARCHAR"', false))),
            false) AS page_shape_ok,
        -- a page that is not an array yields one NULL item, so that it is diagnosed rather than skipped
        unnest(coalesce(items, [NULL])) AS o
    FROM pages
),
referenced AS (
    SELECT *, list_transform(o.students, lambda entry: entry.id) AS ref_ids FROM parsed
)
SELECT endpoint, page_index, page_offset, page_shape_ok, o.id, o.name, o.is_active, o.course_id,
    TRY_CAST(o.created_at AS TIMESTAMPTZ), TRY_CAST(o.updated_at AS TIMESTAMPTZ),
    -- absent and null both parse to NULL: the roster is not exposed; only a list (even []) is known
    o.student_ids IS NOT NULL, o.students IS NOT NULL,
    list_position(o.student_ids, NULL) IS NOT NULL OR list_position(ref_ids, NULL) IS NOT NULL,
    list_distinct(list_concat(coalesce(o.student_ids, []), coalesce(ref_ids, [])))
FROM referenced;

-- name: suspect_pages
CREATE OR REPLACE TEMP TABLE suspect_pages AS
SELECT DISTINCT endpoint, page_index FROM roster_items WHERE NOT page_shape_ok OR item_id IS NULL OR holds_null
UNION
SELECT endpoint, page_index FROM roster_items GROUP BY endpoint, page_index, item_id HAVING count(*) > 1;

-- name: problems
-- Each item of a suspect page, with what is wrong with it (NULL: nothing). Slow and exact: only suspect pages.
WITH raw AS (
    SELECT p.connection_id, p.endpoint, p.page_index, p.page_offset, json_type(p.payload) AS page_type,
        unnest(CASE WHEN json_type(p.payload) = 'ARRAY' THEN CAST(p.payload AS JSON[]) ELSE [NULL] END) AS item
    FROM roster_pages p SEMI JOIN suspect_pages s ON p.endpoint = s.endpoint AND p.page_index = s.page_index
    WHERE p.connection_id = $connection_id AND p.snapshot_date = $snapshot_date::DATE
),
typed AS (
    SELECT connection_id, endpoint, page_index, page_offset, page_type, item->>'id' AS item_id,
        json_type(item) AS item_type, json_type(item, '$.id') AS id_type, json_type(item, '$.student_ids') AS ids_type,
        json_type(item, '$.students') AS refs_type, json_type(item, '$.student_ids[*]') AS id_elem_types,
        json_type(item, '$.students[*].id') AS ref_id_types, json_array_length(item, '$.students') AS refs_len,
        count(*) OVER (PARTITION BY connection_id, endpoint, page_index, item->>'id') AS copies
    FROM raw
)
SELECT connection_id, endpoint, page_offset, coalesce(item_id, '?') AS item_id,
    CASE
        WHEN page_type IS DISTINCT FROM 'ARRAY' THEN 'the page is ' || page_type || ', not a JSON array'
        WHEN item_type IS DISTINCT FROM 'OBJECT' THEN 'the item is ' || coalesce(item_type, 'NULL') || ', not an object'
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
FROM typed;

-- name: superseded_items
-- The same id comes on two pages when it changed while the listing was paged (a keyset scan reads it again at the
-- end): the newest version of each item is kept, and of equal versions the one read last. Few ids repeat, so only
-- their narrow rows are ranked.
CREATE OR REPLACE TEMP TABLE superseded_items AS
SELECT endpoint, item_id, page_index FROM (
    SELECT i.endpoint, i.item_id, i.page_index,
        row_number() OVER (PARTITION BY i.endpoint, i.item_id ORDER BY i.updated_at DESC NULLS LAST,
                           i.page_index DESC) AS newest_first
    FROM roster_items i SEMI JOIN (
        SELECT endpoint, item_id FROM roster_items GROUP BY endpoint, item_id HAVING count(*) > 1
    ) repeated ON i.endpoint = repeated.endpoint AND i.item_id = repeated.item_id
)
WHERE newest_first > 1;

-- name: latest_items
CREATE OR REPLACE TEMP VIEW roster_latest AS
SELECT i.* FROM roster_items i ANTI JOIN superseded_items s
    ON i.endpoint = s.endpoint AND i.item_id = s.item_id AND i.page_index = s.page_index;

-- name: delete_rosters
DELETE FROM lms.course_rosters WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE;

-- name: delete_course_edges
DELETE FROM lms.course_student_edges WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE;

-- name: delete_class_edges
DELETE FROM lms.class_student_edges WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE;

-- name: write_rosters
-- The writers also build an incremental day: the base day's rows of every course (class) the poll did not return
-- are carried forward unchanged (a roster's fetched_on stays the day it was last read), never read as deleted: only
-- a full scan can see deletions. On a full day $base_date is NULL and that half is empty.
INSERT INTO lms.course_rosters BY NAME
SELECT $connection_id AS connection_id, $snapshot_date::DATE AS snapshot_date, item_id AS course_id,
    item_name AS course_name, is_active,
    CASE WHEN NOT (has_ids OR has_refs) THEN 'not_exposed' WHEN len(roster) = 0 THEN 'empty' ELSE 'exposed' END
        AS roster_status,
    CASE WHEN has_ids AND has_refs THEN 'both' WHEN has_ids THEN 'student_ids' WHEN has_refs THEN 'students' END
        AS roster_source,
    CASE WHEN has_ids OR has_refs THEN len(roster) END AS student_count,
    created_at, updated_at, $snapshot_date::DATE AS fetched_on
FROM roster_latest WHERE endpoint = 'course'
UNION ALL BY NAME
SELECT * REPLACE ($snapshot_date::DATE AS snapshot_date) FROM lms.course_rosters b
WHERE b.connection_id = $connection_id AND b.snapshot_date = $base_date::DATE
  AND NOT EXISTS (SELECT 1 FROM roster_latest p WHERE p.endpoint = 'course' AND p.item_id = b.course_id);

-- name: write_course_edges
INSERT INTO lms.course_student_edges BY NAME
SELECT $connection_id AS connection_id, $snapshot_date::DATE AS snapshot_date, item_id AS course_id,
    unnest(roster) AS student_id
FROM roster_latest WHERE endpoint = 'course'
UNION ALL BY NAME
SELECT * REPLACE ($snapshot_date::DATE AS snapshot_date) FROM lms.course_student_edges b
WHERE b.connection_id = $connection_id AND b.snapshot_date = $base_date::DATE
  AND NOT EXISTS (SELECT 1 FROM roster_latest p WHERE p.endpoint = 'course' AND p.item_id = b.course_id);

-- name: write_class_edges
INSERT INTO lms.class_student_edges BY NAME
SELECT $connection_id AS connection_id, $snapshot_date::DATE AS snapshot_date, item_id AS class_id,
    parent_course_id AS course_id, unnest(roster) AS student_id
FROM roster_latest WHERE endpoint = 'class'
UNION ALL BY NAME
SELECT * REPLACE ($snapshot_date::DATE AS snapshot_date) FROM lms.class_student_edges b
WHERE b.connection_id = $connection_id AND b.snapshot_date = $base_date::DATE
  AND NOT EXISTS (SELECT 1 FROM roster_latest p WHERE p.endpoint = 'class' AND p.item_id = b.class_id);

-- name: base_courses
SELECT count(*) FROM lms.course_rosters WHERE connection_id = $connection_id AND snapshot_date = $base_date::DATE;
