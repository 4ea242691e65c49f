-- Google Classroom roster pages -> course rosters and course-student edges (lms_pipeline.providers.classroom.rosters
-- runs these, in this order, over the registered frames `pages` and `directory`).

-- name: page_problems
-- Page-level checks first (json_type is only evaluated where the body is valid JSON: DuckDB's CASE is lazy).
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
FROM shaped;

-- name: listing_problems
-- Every listing read to its end: pages 0..n-1 all there, and only the last without a token.
SELECT any_value(connection_id), arg_max(url, page_index), max(page_index),
    CASE
        WHEN count(DISTINCT page_index) <> max(page_index) + 1 OR min(page_index) <> 0
            THEN 'the listing has missing or repeated pages'
        WHEN arg_max(coalesce(payload->>'$.nextPageToken', ''), page_index) <> ''
            THEN 'the last page still gives a nextPageToken: the listing was not read to its end'
    END AS problem
FROM pages WHERE status = 200 AND endpoint IN ('courses', 'aliases', 'students')
GROUP BY endpoint, course_id;

-- name: items
CREATE OR REPLACE TEMP TABLE items AS
SELECT connection_id, endpoint, course_id AS classroom_id, page_index, url,
       unnest(CAST(json_extract(payload, '$.' || endpoint) AS JSON[])) AS item
FROM pages WHERE status = 200 AND json_type(payload, '$.' || endpoint) = 'ARRAY';

-- name: item_problems
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
FROM items;

-- name: rosters
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
LEFT JOIN members m USING (classroom_id);

-- name: roster_rows
SELECT course_id, course_name, is_active, roster_status, student_count, updated_at FROM rosters ORDER BY course_id;

-- name: edges
WITH students AS (
    SELECT classroom_id, item->>'userId' AS user_id, item->'$.profile'->>'emailAddress' AS email
    FROM items WHERE endpoint = 'students'
)
SELECT DISTINCT r.course_id, coalesce(d.student_id, 'classroom-user:' || s.user_id) AS student_id,
    s.email AS student_email, d.student_id IS NOT NULL AS identity_matched
FROM students s JOIN rosters r ON r.classroom_id = s.classroom_id AND r.roster_status = 'exposed'
LEFT JOIN directory d ON lower(s.email) = d.email  -- empty with identity="provider"
ORDER BY r.course_id, student_id;
