-- Google Classroom pages, roster and grade listings alike -> the checked items every Classroom normalizer reads
-- (lms_pipeline.providers.classroom.rosters.checked_items runs these, in this order, over the frame `pages`).

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
FROM pages WHERE status = 200
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
        WHEN endpoint = 'courseWork' AND json_type(item, '$.id') IS DISTINCT FROM 'VARCHAR'
            THEN 'a courseWork without a string id'
        WHEN endpoint = 'courseWork' AND coalesce(json_type(item, '$.maxPoints'), 'NULL') NOT IN ('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL')
            THEN 'a courseWork whose maxPoints is not a number'
        WHEN endpoint = 'studentSubmissions' AND json_type(item, '$.courseWorkId') IS DISTINCT FROM 'VARCHAR'
            THEN 'a submission without a string courseWorkId'
        WHEN endpoint = 'studentSubmissions' AND json_type(item, '$.userId') IS DISTINCT FROM 'VARCHAR'
            THEN 'a submission without a string userId'
        WHEN endpoint = 'studentSubmissions' AND json_type(item, '$.state') IS DISTINCT FROM 'VARCHAR'
            THEN 'a submission without a string state'
        WHEN endpoint = 'studentSubmissions'
             AND coalesce(json_type(item, '$.assignedGrade'), 'NULL') NOT IN ('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL')
            THEN 'a submission whose assignedGrade is not a number'
        WHEN endpoint = 'studentSubmissions'
             AND coalesce(json_type(item, '$.draftGrade'), 'NULL') NOT IN ('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL')
            THEN 'a submission whose draftGrade is not a number'
    END AS problem
FROM items;
