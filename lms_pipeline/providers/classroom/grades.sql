-- Google Classroom grade pages -> LMS grades and contents (lms_pipeline.providers.classroom.grades runs these, in
-- this order, over the registered frames `pages` and `directory`).

-- name: courses
-- Courses by the id the client asked with (every page names it), so a scan given course ids needs no courses page.
CREATE OR REPLACE TEMP TABLE course_ids AS
WITH asked AS (
    SELECT DISTINCT course_id AS classroom_id FROM pages WHERE course_id IS NOT NULL
), sis AS (  -- domain aliases ('d:'); project aliases ('p:') name no SIS record
    SELECT classroom_id, min(substr(item->>'alias', 3)) AS sis_course_id
    FROM items WHERE endpoint = 'aliases' AND starts_with(item->>'alias', 'd:') GROUP BY classroom_id
)
SELECT classroom_id, coalesce(sis_course_id, 'classroom-course:' || classroom_id) AS course_id
FROM asked LEFT JOIN sis USING (classroom_id);

-- name: work
CREATE OR REPLACE TEMP TABLE work AS
WITH listed AS (
    SELECT classroom_id, item->>'id' AS work_id, item->>'title' AS name,
        nullif(regexp_extract(coalesce(item->>'description', ''), '(^|\s)lms-content:(\S+)', 2), '') AS tagged,
        coalesce(TRY_CAST(item->>'maxPoints' AS DOUBLE), 0) AS max_points
    FROM items WHERE endpoint = 'courseWork'
    QUALIFY row_number() OVER (PARTITION BY classroom_id, item->>'id' ORDER BY page_index DESC) = 1
)
SELECT c.course_id, l.classroom_id, l.work_id, coalesce(l.tagged, 'classroom-coursework:' || l.work_id) AS content_id,
    l.name, l.max_points
FROM listed l JOIN course_ids c USING (classroom_id);

-- name: grades
WITH submissions AS (
    SELECT classroom_id, item->>'courseWorkId' AS work_id, item->>'userId' AS user_id, item->>'state' AS state,
        item->>'assignedGrade' AS assigned, item->>'draftGrade' AS draft,
        TRY_CAST(item->>'updateTime' AS TIMESTAMPTZ) AS updated_at
    FROM items WHERE endpoint = 'studentSubmissions'
    QUALIFY row_number() OVER (PARTITION BY classroom_id, item->>'courseWorkId', item->>'userId'
                               ORDER BY TRY_CAST(item->>'updateTime' AS TIMESTAMPTZ) DESC NULLS LAST,
                                        page_index DESC) = 1
), users AS (  -- a user's profile is the same in every course
    SELECT item->>'userId' AS user_id, min(item->'$.profile'->>'emailAddress') AS email
    FROM items WHERE endpoint = 'students' GROUP BY ALL
)
SELECT c.course_id, coalesce(w.content_id, 'classroom-coursework:' || s.work_id) AS content_id,
    coalesce(d.student_id, 'classroom-user:' || s.user_id) AS student_id,
    coalesce(s.assigned, '') AS raw_grade,  -- a draft is not a grade of record
    coalesce(w.max_points, 0) AS points_possible, s.draft AS draft_grade, s.state,
    CASE WHEN s.state = 'RETURNED' AND s.assigned IS NOT NULL THEN s.updated_at END AS graded_at,
    s.user_id AS classroom_user_id, d.student_id IS NOT NULL AS identity_matched
FROM submissions s JOIN course_ids c USING (classroom_id)
LEFT JOIN work w USING (classroom_id, work_id)
LEFT JOIN users u USING (user_id)
LEFT JOIN directory d ON lower(u.email) = d.email  -- empty with identity="provider"
ORDER BY 1, 2, 3;

-- name: contents
SELECT course_id, content_id, name FROM work ORDER BY ALL;
