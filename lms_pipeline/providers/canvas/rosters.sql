-- Canvas roster pages -> course rosters and course/class-student edges: lms_pipeline.providers.canvas.rosters runs
-- these, in this order, over the registered frame `pages`.

-- name: page_problems
-- A page is checked as a whole before any item is read (the CASE stops at the first failing test).
SELECT endpoint, course_id, page_index, url, NULL AS position,
    CASE
        WHEN endpoint NOT IN ('courses', 'enrollments', 'sections') THEN 'unknown endpoint ' || endpoint
        WHEN status IN (401, 403) AND endpoint <> 'courses' THEN  -- the token may not read this course's roster
            CASE WHEN NOT coalesce(json_valid(payload), false) OR json_type(payload) <> 'OBJECT'
                     THEN 'status ' || status || ' without Canvas''s permission body'
                 WHEN (payload->>'status') IS DISTINCT FROM 'unauthorized'
                     THEN 'status ' || status || ' without Canvas''s permission body' END
        ELSE json_list_problem(status, payload)  -- providers/pages.sql
    END AS problem
FROM pages;

-- name: items
CREATE OR REPLACE TEMP TABLE items AS
SELECT endpoint, CAST(course_id AS VARCHAR) AS page_course_id, page_index, url,
       unnest(list) AS item, generate_subscripts(list, 1) - 1 AS position
FROM (SELECT *, CAST(payload AS JSON[]) AS list FROM pages WHERE status = 200);

-- name: item_problems
SELECT endpoint, page_course_id AS course_id, page_index, url, position,
    CASE
        WHEN NOT coalesce(json_type(item, '$.id') IN ('UBIGINT', 'BIGINT', 'VARCHAR'), false) THEN 'has no id'
        WHEN endpoint <> 'enrollments' THEN NULL
        WHEN NOT coalesce(json_type(item, '$.user_id') IN ('UBIGINT', 'BIGINT', 'VARCHAR'), false)
            THEN 'is an enrollment without user_id'
        WHEN json_type(item, '$.type') IS DISTINCT FROM 'VARCHAR' THEN 'is an enrollment without a type'
        WHEN json_type(item, '$.enrollment_state') IS DISTINCT FROM 'VARCHAR'
            THEN 'is an enrollment without an enrollment_state'
    END AS problem
FROM items;

-- name: tables
CREATE OR REPLACE TEMP TABLE courses AS
SELECT item->>'id' AS canvas_id,
       coalesce(item->>'sis_course_id', 'canvas-course:' || (item->>'id')) AS course_id,
       item->>'name' AS course_name,
       CASE WHEN item->>'workflow_state' IS NOT NULL THEN item->>'workflow_state' = 'available' END AS is_active
FROM items WHERE endpoint = 'courses'
-- a course on two numbered pages (the listing shifted while paged): keep the copy read last
QUALIFY row_number() OVER (PARTITION BY item->>'id' ORDER BY page_index DESC, position DESC) = 1;

CREATE OR REPLACE TEMP TABLE listings AS
SELECT CAST(course_id AS VARCHAR) AS canvas_id, bool_or(status IN (401, 403)) AS refused
FROM pages WHERE endpoint = 'enrollments' GROUP BY ALL;

CREATE OR REPLACE TEMP TABLE sections AS
SELECT DISTINCT item->>'id' AS section_id, item->>'sis_section_id' AS sis_section_id
FROM items WHERE endpoint = 'sections';

CREATE OR REPLACE TEMP TABLE enrolled AS
SELECT DISTINCT page_course_id AS canvas_id,
       coalesce(item->>'sis_user_id', item->'user'->>'sis_user_id', 'canvas-user:' || (item->>'user_id')) AS student_id,
       item->>'course_section_id' AS section_id, item->>'sis_section_id' AS sis_section_id
FROM items
WHERE endpoint = 'enrollments' AND item->>'type' = 'StudentEnrollment' AND item->>'enrollment_state' = 'active';

CREATE OR REPLACE TEMP TABLE rosters AS
WITH counts AS (SELECT canvas_id, count(DISTINCT student_id) AS students FROM enrolled GROUP BY ALL)
SELECT c.canvas_id, c.course_id, c.course_name, c.is_active,
       CASE WHEN coalesce(l.refused, true) THEN 'not_exposed'
            WHEN coalesce(n.students, 0) = 0 THEN 'empty' ELSE 'exposed' END AS roster_status,
       CASE WHEN NOT coalesce(l.refused, true) THEN coalesce(n.students, 0) END AS student_count
FROM courses c LEFT JOIN listings l USING (canvas_id) LEFT JOIN counts n USING (canvas_id);

-- name: rosters
SELECT course_id, course_name, is_active, roster_status, CAST(student_count AS BIGINT) AS student_count,
       CAST(NULL AS TIMESTAMPTZ) AS updated_at
FROM rosters ORDER BY course_id;

-- name: course_edges
SELECT DISTINCT r.course_id, e.student_id
FROM enrolled e JOIN rosters r USING (canvas_id) WHERE r.roster_status = 'exposed'
ORDER BY ALL;

-- name: class_edges
SELECT DISTINCT coalesce(e.sis_section_id, s.sis_section_id, 'canvas-section:' || e.section_id) AS class_id,
       r.course_id, e.student_id
FROM enrolled e JOIN rosters r USING (canvas_id) LEFT JOIN sections s USING (section_id)
WHERE r.roster_status = 'exposed' AND e.section_id IS NOT NULL
ORDER BY ALL;
