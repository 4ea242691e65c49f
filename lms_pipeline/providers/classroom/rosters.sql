-- Google Classroom roster pages -> course rosters and course-student edges (lms_pipeline.providers.classroom.rosters
-- runs these, in this order, over the registered frames `pages` and `directory`).

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
