-- Canvas grade pages -> LMS grades, assignments and student emails (lms_pipeline.providers.canvas.grades runs these,
-- in this order, over the registered frame `pages`).

-- name: page_problems
-- Roster listings may share the page store: they are accepted and ignored. A page is checked as a whole before any
-- item is read (the CASE stops at the first failing test).
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
        ELSE json_list_problem(status, payload)  -- providers/pages.sql
    END AS problem
FROM pages;

-- name: items
CREATE OR REPLACE TEMP TABLE items AS
SELECT endpoint, CAST(course_id AS VARCHAR) AS page_course_id, page_index, url,
       unnest(list) AS item, generate_subscripts(list, 1) - 1 AS position
FROM (
    SELECT *, CAST(payload AS JSON[]) AS list FROM pages
    WHERE status = 200 AND endpoint IN ('courses', 'assignments', 'grading_standards', 'submissions')
);

-- name: item_problems
WITH listed AS (  -- the assignments each course's pages list
    SELECT DISTINCT page_course_id, item->>'id' AS assignment_id FROM items WHERE endpoint = 'assignments'
)
SELECT i.endpoint, i.page_course_id AS course_id, i.page_index, i.url, i.position,
    CASE
        WHEN NOT coalesce(json_type(i.item, '$.id') IN ('UBIGINT', 'BIGINT', 'VARCHAR'), false) THEN 'has no id'
        WHEN i.endpoint = 'assignments' AND coalesce(json_type(i.item, '$.points_possible') NOT IN ('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL'),
                                                     false)
            THEN 'is an assignment whose points_possible is not a number'
        WHEN i.endpoint = 'assignments' AND coalesce(json_type(i.item, '$.grading_type') NOT IN ('VARCHAR', 'NULL'),
                                                     false)
            THEN 'is an assignment whose grading_type is not text'
        WHEN i.endpoint = 'grading_standards' AND json_type(i.item, '$.grading_scheme') IS DISTINCT FROM 'ARRAY'
            THEN 'is a grading standard without a grading_scheme list'
        WHEN i.endpoint <> 'submissions' THEN NULL
        WHEN NOT coalesce(json_type(i.item, '$.assignment_id') IN ('UBIGINT', 'BIGINT', 'VARCHAR'), false)
            THEN 'is a submission without assignment_id'
        WHEN NOT coalesce(json_type(i.item, '$.user_id') IN ('UBIGINT', 'BIGINT', 'VARCHAR'), false) THEN 'is a submission without user_id'
        WHEN coalesce(json_type(i.item, '$.score') NOT IN ('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL'), false)
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
LEFT JOIN listed l ON l.page_course_id = i.page_course_id AND l.assignment_id = i.item->>'assignment_id';

-- name: tables
-- An item on two pages (a listing shifted while paged) counts once: the copy read last.
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

-- name: grades
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
ORDER BY 1, 2, 3;

-- name: contents
SELECT DISTINCT course_id, content_id, name FROM assignments ORDER BY ALL;

-- name: students
SELECT student_id, min(email) AS email FROM submissions WHERE email IS NOT NULL GROUP BY student_id ORDER BY 1;
