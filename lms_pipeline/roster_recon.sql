-- The SIS's rostering pages as frames, and the SIS rosters (the roster of record) compared with the LMS's
-- (lms_pipeline.roster_recon runs these over registered frames; `day` is a bound parameter).

-- name: sis_classes
SELECT DISTINCT ON (class_id) * FROM (
    SELECT o.sourcedId AS class_id, o.status AS status, o.classCode AS class_code, o.course.sourcedId AS sis_course_id
    FROM (SELECT unnest(from_json(payload, '[{"sourcedId": "VARCHAR", "status": "VARCHAR", "classCode": "VARCHAR",
                                              "course": {"sourcedId": "VARCHAR"}}]')) AS o
          FROM pages WHERE endpoint = 'classes'))
ORDER BY class_id;

-- name: sis_courses
SELECT DISTINCT ON (sis_course_id) * FROM (
    SELECT o.sourcedId AS sis_course_id, o.status AS status, o.courseCode AS course_code
    FROM (SELECT unnest(from_json(payload, '[{"sourcedId": "VARCHAR", "status": "VARCHAR",
                                              "courseCode": "VARCHAR"}]')) AS o
          FROM pages WHERE endpoint = 'courses'))
ORDER BY sis_course_id;

-- name: sis_users
SELECT DISTINCT ON (sourced_id) * FROM (
    SELECT o.sourcedId AS sourced_id, o.status AS status, o.email AS email
    FROM (SELECT unnest(from_json(payload, '[{"sourcedId": "VARCHAR", "status": "VARCHAR", "email": "VARCHAR"}]')) AS o
          FROM pages WHERE endpoint = 'users'))
ORDER BY sourced_id;

-- name: discrepancies
-- Course mapping (the grade reconciliation's rule, extended to sections): an active SIS class maps to the LMS course
-- whose id is its classCode when exactly one active class has that classCode; otherwise, when its SIS course's
-- courseCode is an LMS course id (one active SIS course with that code), it is a section of that course and its
-- classCode names the LMS section. Student mapping: the mapping file, else the one active SIS user with one of the
-- LMS student's emails (case-insensitive); an SIS user is matched back only when exactly one LMS user maps to it.
WITH
lms_ids AS (SELECT course_id FROM lms_rosters),
active_classes AS (SELECT * FROM sis_classes WHERE status = 'active'),
code_hits AS (SELECT class_code, count(*) AS n FROM active_classes GROUP BY 1),
course_hits AS (SELECT course_code, count(*) AS n FROM sis_courses WHERE status = 'active' GROUP BY 1),
class_map AS (
    SELECT k.class_id, k.class_code, co.course_code,
        CASE WHEN k.class_code IN (SELECT course_id FROM lms_ids) AND h.n = 1 THEN k.class_code
             WHEN k.class_code NOT IN (SELECT course_id FROM lms_ids) AND ch.n = 1
                  AND co.course_code IN (SELECT course_id FROM lms_ids) THEN co.course_code END AS course_id,
        CASE WHEN k.class_code NOT IN (SELECT course_id FROM lms_ids) AND ch.n = 1
                  AND co.course_code IN (SELECT course_id FROM lms_ids) THEN k.class_code END AS section_id,
        CASE WHEN k.class_code IN (SELECT course_id FROM lms_ids) AND h.n > 1
                 THEN 'ambiguous: ' || h.n || ' active SIS classes have classCode ' || k.class_code
             WHEN co.course_code IN (SELECT course_id FROM lms_ids) AND ch.n > 1
                 THEN 'ambiguous: ' || ch.n || ' active SIS courses have courseCode ' || co.course_code
             ELSE 'no LMS course has classCode ' || coalesce(k.class_code, '(none)') || ' or courseCode '
                  || coalesce(co.course_code, '(none)') END AS class_problem
    FROM active_classes k
    LEFT JOIN code_hits h USING (class_code)
    LEFT JOIN sis_courses co ON co.sis_course_id = k.sis_course_id AND co.status = 'active'
    LEFT JOIN course_hits ch ON ch.course_code = co.course_code
),
seats AS (SELECT m.*, e.student_id AS sis_user FROM sis_class_edges e JOIN class_map m USING (class_id)),
sis_members AS (
    SELECT course_id, sis_user, string_agg(DISTINCT class_id, ',' ORDER BY class_id) AS sis_class_ids,
           string_agg(DISTINCT section_id, ',' ORDER BY section_id) AS sis_sections
    FROM seats WHERE course_id IS NOT NULL GROUP BY ALL
),
lms_people AS (SELECT student_id FROM lms_edges UNION SELECT student_id FROM lms_students),
email_hits AS (
    SELECT s.student_id, count(DISTINCT u.sourced_id) AS n, min(u.sourced_id) AS sis_user
    FROM lms_students s JOIN sis_users u ON lower(trim(s.email)) = lower(trim(u.email)) AND u.status = 'active'
    GROUP BY 1
),
student_match AS (
    SELECT p.student_id, coalesce(m.sis_user_id, CASE WHEN e.n = 1 THEN e.sis_user END) AS sis_user,
        CASE WHEN m.sis_user_id IS NOT NULL THEN 'mapping_file' WHEN e.n = 1 THEN 'email' END AS student_match,
        CASE WHEN e.n > 1 THEN 'ambiguous: ' || e.n || ' SIS users have this student''s email'
             WHEN p.student_id NOT IN (SELECT student_id FROM lms_students) THEN 'no LMS student record (no email)'
             ELSE 'no SIS user has this student''s email and no mapping-file row names it' END AS student_problem
    FROM lms_people p
    LEFT JOIN student_map m ON m.lms_user_id = p.student_id
    LEFT JOIN email_hits e ON e.student_id = p.student_id
),
reverse AS (
    SELECT sis_user, CASE WHEN count(*) = 1 THEN min(student_id) END AS lms_user,
           CASE WHEN count(*) = 1 THEN min(student_match) END AS student_match, count(*) AS n
    FROM student_match WHERE sis_user IS NOT NULL GROUP BY 1
),
lms_sections AS (
    SELECT course_id, student_id, string_agg(DISTINCT class_id, ',' ORDER BY class_id) AS lms_sections
    FROM lms_class_edges GROUP BY ALL
),
mapped_courses AS (SELECT DISTINCT course_id FROM class_map WHERE course_id IS NOT NULL),
sis_side AS (
    SELECT m.course_id, m.sis_class_ids, m.sis_user AS sis_student_id, r.lms_user AS lms_student_id,
        r.student_match, s.lms_sections, m.sis_sections,
        CASE WHEN c.roster_status = 'not_exposed' THEN 'lms_roster_not_exposed'
             WHEN r.lms_user IS NULL THEN 'unmapped_student'
             WHEN e.student_id IS NULL THEN 'missing_in_lms'
             WHEN m.sis_sections IS NOT NULL AND s.lms_sections IS NOT NULL AND m.sis_sections <> s.lms_sections
                 THEN 'section_mismatch' END AS status,
        CASE WHEN c.roster_status = 'not_exposed'
                 THEN 'the LMS does not expose this course''s roster today: unknown, not missing'
             WHEN r.n > 1 THEN 'ambiguous: ' || r.n || ' LMS users map to SIS user ' || m.sis_user
             WHEN r.lms_user IS NULL THEN 'no LMS user maps to SIS user ' || m.sis_user
                  || ' (no mapping-file row, no LMS student with its email)'
             WHEN e.student_id IS NULL THEN 'the SIS enrols the student (class ' || m.sis_class_ids
                  || '), the LMS course does not'
             ELSE 'SIS section(s) ' || m.sis_sections || ', LMS section(s) ' || s.lms_sections END AS detail
    FROM sis_members m
    JOIN lms_rosters c USING (course_id)
    LEFT JOIN reverse r ON r.sis_user = m.sis_user
    LEFT JOIN lms_edges e ON e.course_id = m.course_id AND e.student_id = r.lms_user
    LEFT JOIN lms_sections s ON s.course_id = m.course_id AND s.student_id = r.lms_user
),
lms_side AS (
    SELECT e.course_id, e.student_id AS lms_student_id, sm.sis_user AS sis_student_id, sm.student_match,
        s.lms_sections,
        CASE WHEN mc.course_id IS NULL THEN 'unmapped_course'
             WHEN sm.sis_user IS NULL THEN 'unmapped_student'
             WHEN m.sis_user IS NULL THEN 'missing_in_sis' END AS status,
        CASE WHEN mc.course_id IS NULL THEN 'no active SIS class has classCode ' || e.course_id
                  || ' and no active SIS course has courseCode ' || e.course_id
             WHEN sm.sis_user IS NULL THEN sm.student_problem
             ELSE 'the LMS course enrols the student; no active SIS enrollment of ' || sm.sis_user
                  || ' in its classes' END AS detail
    FROM lms_edges e
    LEFT JOIN mapped_courses mc USING (course_id)
    LEFT JOIN student_match sm ON sm.student_id = e.student_id
    LEFT JOIN sis_members m ON m.course_id = e.course_id AND m.sis_user = sm.sis_user
    LEFT JOIN lms_sections s ON s.course_id = e.course_id AND s.student_id = e.student_id
),
unmapped_classes AS (
    SELECT s.class_id, s.sis_user AS sis_student_id, r.lms_user AS lms_student_id, r.student_match, s.class_problem
    FROM seats s LEFT JOIN reverse r USING (sis_user) WHERE s.course_id IS NULL
),
found AS (
    SELECT course_id || '|' || coalesce(lms_student_id, 'sis-user:' || sis_student_id) AS row_key, status, detail,
        course_id, sis_class_ids, lms_student_id, sis_student_id, student_match, lms_sections, sis_sections
    FROM sis_side WHERE status IS NOT NULL
    UNION ALL BY NAME
    SELECT course_id || '|' || lms_student_id AS row_key, status, detail, course_id, lms_student_id, sis_student_id,
        student_match, lms_sections
    FROM lms_side WHERE status IS NOT NULL
    UNION ALL BY NAME
    SELECT 'sis-class:' || class_id || '|' || coalesce(lms_student_id, 'sis-user:' || sis_student_id) AS row_key,
        'unmapped_course' AS status, class_problem AS detail, class_id AS sis_class_ids, lms_student_id,
        sis_student_id, student_match
    FROM unmapped_classes
)
-- Since when: yesterday's row with the same key and status carries its first_seen on; otherwise it starts today.
SELECT f.*, CASE WHEN p.status = f.status THEN p.first_seen ELSE CAST($day AS DATE) END AS first_seen,
    CAST(date_diff('day', CASE WHEN p.status = f.status THEN p.first_seen ELSE CAST($day AS DATE) END,
                   CAST($day AS DATE)) + 1 AS BIGINT) AS days_open
FROM found f LEFT JOIN previous p USING (row_key)
ORDER BY row_key
