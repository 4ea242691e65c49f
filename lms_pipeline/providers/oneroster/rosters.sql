-- OneRoster roster pages -> course rosters and course/class-student edges, as of the variable `day`
-- (lms_pipeline.providers.oneroster.rosters runs these, in this order, over the registered frame `pages`).

-- name: page_problems
-- A page is checked as a whole before any item is read (the CASE stops at the first failing test).
SELECT endpoint, course_id, page_index, url, NULL AS position,
    CASE
        WHEN endpoint NOT IN ('courses', 'classes', 'academicSessions', 'enrollments')
            THEN 'unknown endpoint ' || endpoint
        WHEN status = 403 AND endpoint = 'enrollments' THEN NULL  -- this class's roster is not shared with us
        ELSE json_list_problem(status, payload)  -- providers/pages.sql
    END AS problem
FROM pages;

-- name: items
CREATE OR REPLACE TEMP TABLE items AS
SELECT endpoint, course_id AS page_course_id, page_index, url,
       unnest(list) AS item, generate_subscripts(list, 1) - 1 AS position
FROM (SELECT *, CAST(payload AS JSON[]) AS list FROM pages WHERE status = 200);

-- name: macros
-- A OneRoster date is YYYY-MM-DD and nothing more; NULL for anything else (DuckDB's cast alone accepts more).
CREATE MACRO iso_date(t) AS CASE WHEN regexp_full_match(t, '\d{4}-\d{2}-\d{2}') THEN TRY_CAST(t AS DATE) END;

-- name: item_problems
SELECT endpoint, page_course_id AS course_id, page_index, url, position,
    CASE
        WHEN json_type(item, '$.sourcedId') IS DISTINCT FROM 'VARCHAR' THEN 'has no sourcedId'
        WHEN json_type(item, '$.status') IS DISTINCT FROM 'VARCHAR' THEN 'has no status'
        WHEN endpoint = 'classes' AND json_type(item, '$.course.sourcedId') IS DISTINCT FROM 'VARCHAR'
            THEN 'is a class without course.sourcedId'
        WHEN endpoint = 'classes' AND coalesce(json_array_length(item, '$.terms'), 0) = 0
            THEN 'is a class without terms (OneRoster 1.2 requires at least one academicSession)'
        WHEN endpoint = 'classes' AND list_bool_or(list_transform(json_type(item, '$.terms[*].sourcedId'),
                                                                  lambda t: t IS DISTINCT FROM 'VARCHAR'))
            THEN 'is a class with a term without sourcedId'
        WHEN endpoint = 'courses' AND coalesce(json_type(item, '$.schoolYear'), 'NULL') <> 'NULL'
                                  AND json_type(item, '$.schoolYear.sourcedId') IS DISTINCT FROM 'VARCHAR'
            THEN 'is a course whose schoolYear has no sourcedId'
        WHEN endpoint = 'academicSessions' AND iso_date(item->>'startDate') IS NULL
            THEN 'is an academic session without a startDate (YYYY-MM-DD)'
        WHEN endpoint = 'academicSessions' AND iso_date(item->>'endDate') IS NULL
            THEN 'is an academic session without an endDate (YYYY-MM-DD)'
        WHEN endpoint <> 'enrollments' THEN NULL
        WHEN json_type(item, '$.user.sourcedId') IS DISTINCT FROM 'VARCHAR'
            THEN 'is an enrollment without user.sourcedId'
        WHEN json_type(item, '$.class.sourcedId') IS DISTINCT FROM 'VARCHAR'
            THEN 'is an enrollment without class.sourcedId'
        WHEN json_type(item, '$.role') IS DISTINCT FROM 'VARCHAR' THEN 'is an enrollment without a role'
        WHEN (item->>'beginDate') IS NOT NULL AND iso_date(item->>'beginDate') IS NULL
            THEN 'is an enrollment whose beginDate ' || (item->>'beginDate') || ' is not a date (YYYY-MM-DD)'
        WHEN (item->>'endDate') IS NOT NULL AND iso_date(item->>'endDate') IS NULL
            THEN 'is an enrollment whose endDate ' || (item->>'endDate') || ' is not a date (YYYY-MM-DD)'
    END AS problem
FROM items;

-- name: reference_problems
-- The sessions classes and courses name must be listed: a class whose terms are unknown has no known activity.
WITH listed AS (SELECT DISTINCT item->>'sourcedId' AS session_id FROM items WHERE endpoint = 'academicSessions'),
named AS (
    SELECT endpoint, page_course_id, page_index, url, position,
           unnest(json_extract_string(item, '$.terms[*].sourcedId')) AS session_id
    FROM items WHERE endpoint = 'classes'
    UNION ALL
    SELECT endpoint, page_course_id, page_index, url, position, item->'schoolYear'->>'sourcedId'
    FROM items WHERE endpoint = 'courses' AND (item->'schoolYear'->>'sourcedId') IS NOT NULL  -- -> binds looser
)
SELECT n.endpoint, n.page_course_id AS course_id, n.page_index, n.url, n.position,
       'names academicSession ' || n.session_id || ', which the academicSessions listing does not hold' AS problem
FROM named n ANTI JOIN listed l USING (session_id);

-- name: tables
CREATE OR REPLACE TEMP TABLE sessions AS
SELECT item->>'sourcedId' AS session_id, iso_date(item->>'startDate') AS starts, iso_date(item->>'endDate') AS ends
FROM items WHERE endpoint = 'academicSessions'
QUALIFY row_number() OVER (PARTITION BY item->>'sourcedId' ORDER BY page_index DESC, position DESC) = 1;

CREATE OR REPLACE TEMP TABLE courses AS
SELECT item->>'sourcedId' AS course_id, item->>'title' AS course_name, lower(item->>'status') = 'active' AS live,
       item->'schoolYear'->>'sourcedId' AS school_year, TRY_CAST(item->>'dateLastModified' AS TIMESTAMPTZ) AS updated_at
FROM items WHERE endpoint = 'courses'
-- a course on two pages (the listing shifted while paged): keep the copy read last
QUALIFY row_number() OVER (PARTITION BY item->>'sourcedId' ORDER BY page_index DESC, position DESC) = 1;

CREATE OR REPLACE TEMP TABLE classes AS
SELECT item->>'sourcedId' AS class_id, item->'course'->>'sourcedId' AS course_id,
       lower(item->>'status') = 'active' AS live, json_extract_string(item, '$.terms[*].sourcedId') AS term_ids
FROM items WHERE endpoint = 'classes'
QUALIFY row_number() OVER (PARTITION BY item->>'sourcedId' ORDER BY page_index DESC, position DESC) = 1;

-- Courses with a class that runs today: active, and today in one of its terms (startDate included, endDate not).
CREATE OR REPLACE TEMP TABLE running AS
SELECT DISTINCT t.course_id
FROM (SELECT course_id, live, unnest(term_ids) AS session_id FROM classes) t JOIN sessions s USING (session_id)
WHERE t.live AND s.starts <= getvariable('day') AND getvariable('day') < s.ends;

-- One row per class whose enrollments were asked (the class is the filter's class.sourcedId=...).
CREATE OR REPLACE TEMP TABLE listings AS
SELECT class_id, bool_or(status = 403) AS refused
FROM (SELECT regexp_extract(json_extract_string(params, '$.filter'), 'class\.sourcedId\s*=\s*''([^'']*)''', 1)
             AS class_id, status
      FROM pages WHERE endpoint = 'enrollments')
WHERE class_id <> '' GROUP BY ALL;

-- Enrolled today: an active student enrollment whose optional beginDate (included) .. endDate (excluded) holds today.
CREATE OR REPLACE TEMP TABLE enrolled AS
SELECT DISTINCT coalesce(c.course_id, i.page_course_id) AS course_id, i.item->'class'->>'sourcedId' AS class_id,
       i.item->'user'->>'sourcedId' AS student_id
FROM items i LEFT JOIN classes c ON c.class_id = (i.item->'class'->>'sourcedId')  -- -> binds looser than =
WHERE i.endpoint = 'enrollments' AND lower(i.item->>'role') = 'student' AND lower(i.item->>'status') = 'active'
  AND coalesce(iso_date(i.item->>'beginDate') <= getvariable('day'), true)
  AND coalesce(getvariable('day') < iso_date(i.item->>'endDate'), true);

CREATE OR REPLACE TEMP TABLE rosters AS
WITH sections AS (
    SELECT k.course_id, bool_or(coalesce(l.refused, true)) AS unknown  -- refused, or never asked
    FROM classes k LEFT JOIN listings l USING (class_id) GROUP BY ALL
), counts AS (SELECT course_id, count(DISTINCT student_id) AS students FROM enrolled GROUP BY ALL)
SELECT c.course_id, c.course_name, c.updated_at,
       c.live AND r.course_id IS NOT NULL
           AND (c.school_year IS NULL OR (y.starts <= getvariable('day') AND getvariable('day') < y.ends))
           AS is_active,
       CASE WHEN coalesce(s.unknown, false) THEN 'not_exposed'
            WHEN coalesce(n.students, 0) = 0 THEN 'empty' ELSE 'exposed' END AS roster_status,
       CASE WHEN NOT coalesce(s.unknown, false) THEN coalesce(n.students, 0) END AS student_count
FROM courses c LEFT JOIN sections s USING (course_id) LEFT JOIN counts n USING (course_id)
     LEFT JOIN running r USING (course_id) LEFT JOIN sessions y ON y.session_id = c.school_year;

-- name: rosters
SELECT course_id, course_name, is_active, roster_status, CAST(student_count AS BIGINT) AS student_count, updated_at
FROM rosters ORDER BY course_id;

-- name: course_edges
SELECT DISTINCT e.course_id, e.student_id
FROM enrolled e JOIN rosters r USING (course_id) WHERE r.roster_status = 'exposed'
ORDER BY ALL;

-- name: class_edges
SELECT DISTINCT e.class_id, e.course_id, e.student_id
FROM enrolled e JOIN rosters r USING (course_id) WHERE r.roster_status = 'exposed'
ORDER BY ALL;
