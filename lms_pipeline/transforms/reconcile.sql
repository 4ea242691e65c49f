-- The SIS pages as frames, and LMS grades reconciled with them (lms_pipeline.transforms.reconcile runs these over
-- the registered frames; `tolerance` is a bound parameter).

-- name: reconcile
WITH
lms_courses AS (SELECT course_id FROM contents UNION SELECT course_id FROM lms_grades),
lms_people AS (SELECT student_id AS lms_user FROM lms_grades UNION SELECT student_id FROM lms_students),
email_hits AS (
    SELECT s.student_id AS lms_user, count(DISTINCT u.sourced_id) AS n, min(u.sourced_id) AS sis_user
    FROM lms_students s JOIN sis_users u ON lower(trim(s.email)) = lower(trim(u.email)) AND u.status = 'active'
    GROUP BY 1
),
student_match AS (
    SELECT p.lms_user, coalesce(m.sis_user_id, CASE WHEN e.n = 1 THEN e.sis_user END) AS sis_user,
        CASE WHEN m.sis_user_id IS NOT NULL THEN 'mapping_file' WHEN e.n = 1 THEN 'email' END AS student_match,
        CASE WHEN m.sis_user_id IS NOT NULL OR e.n = 1 THEN NULL
             WHEN e.n > 1 THEN 'ambiguous: ' || e.n || ' SIS users have this student''s email'
             WHEN p.lms_user NOT IN (SELECT student_id FROM lms_students) THEN 'no LMS student record (no email)'
             ELSE 'no SIS user has this student''s email' END AS student_problem
    FROM lms_people p
    LEFT JOIN student_map m ON m.lms_user_id = p.lms_user
    LEFT JOIN email_hits e ON e.lms_user = p.lms_user
),
class_hits AS (
    SELECT class_code AS course_id, count(*) AS n, min(sourced_id) AS class_id
    FROM sis_classes WHERE status = 'active' AND class_code IN (SELECT course_id FROM lms_courses) GROUP BY 1
),
lms_items AS (
    SELECT course_id, content_id, max(name) AS name FROM (
        SELECT course_id, content_id, name FROM contents
        UNION ALL SELECT course_id, content_id, NULL FROM lms_grades) GROUP BY 1, 2
),
title_hits AS (
    SELECT i.course_id, i.content_id, count(li.sourced_id) AS n, min(li.sourced_id) AS line_item
    FROM lms_items i
    JOIN class_hits c ON c.course_id = i.course_id AND c.n = 1
    JOIN sis_line_items li ON li.class_id = c.class_id AND li.status = 'active'
                          AND lower(trim(li.title)) = lower(trim(i.name))
    GROUP BY 1, 2
),
item_match AS (
    SELECT i.course_id, i.content_id, coalesce(m.sis_line_item_id, CASE WHEN t.n = 1 THEN t.line_item END) AS line_item,
        CASE WHEN m.sis_line_item_id IS NOT NULL THEN 'mapping_file' WHEN t.n = 1 THEN 'title' END AS item_match,
        CASE WHEN m.sis_line_item_id IS NOT NULL OR t.n = 1 THEN NULL
             WHEN c.course_id IS NULL THEN 'no SIS class has classCode ' || i.course_id
             WHEN c.n > 1 THEN 'ambiguous: ' || c.n || ' SIS classes have classCode ' || i.course_id
             WHEN t.n > 1 THEN 'ambiguous: ' || t.n || ' line items have this title'
             ELSE 'no line item of class ' || c.class_id || ' is titled like this content' END AS item_problem
    FROM lms_items i
    LEFT JOIN assignment_map m ON m.lms_course_id = i.course_id AND m.lms_content_id = i.content_id
    LEFT JOIN title_hits t ON t.course_id = i.course_id AND t.content_id = i.content_id
    LEFT JOIN class_hits c ON c.course_id = i.course_id
),
sis AS (
    SELECT r.sourced_id AS sis_result_id, r.student_id AS sis_user, r.line_item_id AS line_item,
        r.score_status AS sis_score_status, r.score AS sis_score, r.text_score AS sis_text_score,
        r.date_last_modified AS sis_modified_at, r.late = 'true' AS sis_late,
        li.result_value_max AS sis_result_max, coalesce(li.letter_scale, false) AS letter_scale,
        CASE WHEN r.score_status = 'exempt' THEN 'excused'
             WHEN li.letter_scale AND nullif(trim(r.text_score), '') IS NOT NULL THEN 'graded'
             WHEN NOT li.letter_scale AND r.score IS NOT NULL THEN 'graded' ELSE 'no_value' END AS sis_state,
        CASE WHEN NOT li.letter_scale AND li.result_value_max > 0
             THEN CAST(r.score AS DECIMAL(18, 6)) * 100 / CAST(li.result_value_max AS DECIMAL(18, 6)) END AS sis_percent
    FROM sis_results r
    JOIN sis_line_items li ON li.sourced_id = r.line_item_id
    WHERE r.status = 'active' AND li.class_id IN (SELECT class_id FROM class_hits)
),
lms AS (
    SELECT g.course_id, g.content_id, g.student_id AS lms_student_id, g.raw_grade AS lms_raw_grade,
        g.grade_status AS lms_grade_status, g.percent AS lms_percent, coalesce(g.letter_given, g.letter) AS lms_letter,
        g.graded_at AS lms_graded_at, g.scheme,
        g.grade_status IN ('graded', 'excused', 'incomplete', 'unparseable') AS has_value,
        sm.sis_user, sm.student_match, sm.student_problem, im.line_item, im.item_match, im.item_problem,
        -- the line item's scale comes from the line item, so a missing result still knows it (write-back needs it)
        li.result_value_max AS sis_result_max, coalesce(li.letter_scale, false) AS letter_scale
    FROM lms_grades g
    LEFT JOIN student_match sm ON sm.lms_user = g.student_id
    LEFT JOIN item_match im ON im.course_id = g.course_id AND im.content_id = g.content_id
    LEFT JOIN sis_line_items li ON li.sourced_id = im.line_item
),
joined AS (
    SELECT l.*, s.* EXCLUDE (sis_user, line_item, sis_result_max, letter_scale)
    FROM lms l LEFT JOIN sis s ON s.sis_user = l.sis_user AND s.line_item = l.line_item
),
lms_rows AS (
    SELECT *,
        CASE
            WHEN sis_user IS NULL THEN CASE WHEN has_value THEN 'unmapped_student' END
            WHEN line_item IS NULL THEN CASE WHEN has_value THEN 'unmapped_assignment' END
            WHEN lms_grade_status = 'unparseable' THEN 'unparseable'
            WHEN sis_result_id IS NULL OR sis_state = 'no_value' THEN CASE WHEN has_value THEN 'missing_in_sis' END
            WHEN NOT has_value THEN 'missing_in_lms'
            WHEN lms_grade_status = 'excused' OR sis_state = 'excused'
                THEN CASE WHEN lms_grade_status = 'excused' AND sis_state = 'excused' THEN 'match'
                          ELSE 'score_mismatch' END
            WHEN lms_grade_status = 'incomplete' THEN 'score_mismatch'
            WHEN letter_scale THEN CASE WHEN lms_letter IS NULL THEN 'unmapped_assignment'
                                        WHEN lms_letter = upper(trim(sis_text_score)) THEN 'match'
                                        ELSE 'score_mismatch' END
            WHEN lms_percent IS NULL THEN 'unmapped_assignment'
            WHEN abs(CAST(lms_percent AS DECIMAL(18, 6)) - sis_percent) <= CAST($tolerance AS DECIMAL(18, 6))
                THEN 'match'
            ELSE 'score_mismatch'
        END AS status
    FROM joined
),
reverse_students AS (
    SELECT sis_user, min(lms_user) AS lms_user FROM student_match WHERE sis_user IS NOT NULL GROUP BY 1
),
reverse_items AS (
    SELECT line_item, min(course_id) AS course_id, min(content_id) AS content_id FROM item_match
    WHERE line_item IS NOT NULL GROUP BY 1
),
sis_rows AS (
    SELECT s.*, rs.lms_user, ri.course_id, ri.content_id,
        CASE WHEN rs.sis_user IS NULL THEN 'unmapped_student' WHEN ri.line_item IS NULL THEN 'unmapped_assignment'
             ELSE 'missing_in_lms' END AS status
    FROM sis s
    LEFT JOIN reverse_students rs ON rs.sis_user = s.sis_user
    LEFT JOIN reverse_items ri ON ri.line_item = s.line_item
    WHERE s.sis_state <> 'no_value'
      AND s.sis_result_id NOT IN (SELECT sis_result_id FROM joined WHERE sis_result_id IS NOT NULL)
)
SELECT 'lms|' || course_id || '|' || content_id || '|' || lms_student_id AS row_key, status,
    CASE status
        WHEN 'unmapped_student' THEN student_problem
        WHEN 'unmapped_assignment' THEN coalesce(item_problem, 'letter line item and no grading scheme for the course')
        WHEN 'unparseable' THEN 'LMS grade ' || to_json(lms_raw_grade) || ' is no score, letter or status'
        WHEN 'missing_in_sis' THEN CASE WHEN sis_result_id IS NULL THEN 'no active SIS result'
                                        ELSE 'SIS result has no score' END
        WHEN 'missing_in_lms' THEN 'LMS grade is empty'
        WHEN 'score_mismatch' THEN CASE WHEN letter_scale THEN 'letters differ'
                                        WHEN lms_percent IS NOT NULL AND sis_percent IS NOT NULL
                                        THEN 'percents differ by more than the tolerance'
                                        ELSE 'excused on one side only' END
    END AS detail,
    course_id, content_id, lms_student_id, sis_user AS sis_student_id, line_item AS sis_line_item_id, sis_result_id,
    student_match, item_match, lms_raw_grade, lms_grade_status, lms_percent, lms_letter, lms_graded_at, scheme,
    sis_score_status, sis_score, sis_result_max, sis_text_score, CAST(sis_percent AS DOUBLE) AS sis_percent,
    sis_modified_at, sis_late, letter_scale
FROM lms_rows WHERE status IS NOT NULL
UNION ALL BY NAME
SELECT 'sis|' || sis_result_id AS row_key, status,
    CASE status WHEN 'unmapped_student' THEN 'no LMS user maps to SIS user ' || sis_user
                WHEN 'unmapped_assignment' THEN 'no LMS content maps to line item ' || line_item
                ELSE 'no LMS grade for this SIS result' END AS detail,
    course_id, content_id, lms_user AS lms_student_id, sis_user AS sis_student_id, line_item AS sis_line_item_id,
    sis_result_id, sis_score_status, sis_score, sis_result_max, sis_text_score,
    CAST(sis_percent AS DOUBLE) AS sis_percent, sis_modified_at, sis_late, letter_scale
FROM sis_rows
ORDER BY row_key;

-- Each SIS collection's page items -> a flat frame (one from_json per page, set-based); a record listed twice
-- (a page boundary moved) is kept once.

-- name: sis_users
SELECT DISTINCT ON (sourced_id) * FROM (
    SELECT o.sourcedId AS sourced_id, o.status AS status, o.email AS email, o.identifier AS identifier
    FROM (SELECT unnest(from_json(payload, '[{"sourcedId": "VARCHAR", "status": "VARCHAR", "email": "VARCHAR",
                                              "identifier": "VARCHAR"}]')) AS o
          FROM pages WHERE system = 'sis' AND collection = 'users'))
ORDER BY sourced_id;

-- name: sis_classes
SELECT DISTINCT ON (sourced_id) * FROM (
    SELECT o.sourcedId AS sourced_id, o.status AS status, o.classCode AS class_code, o.title AS title
    FROM (SELECT unnest(from_json(payload, '[{"sourcedId": "VARCHAR", "status": "VARCHAR", "classCode": "VARCHAR",
                                              "title": "VARCHAR"}]')) AS o
          FROM pages WHERE system = 'sis' AND collection = 'classes'))
ORDER BY sourced_id;

-- name: sis_lineitems
SELECT DISTINCT ON (sourced_id) * FROM (
    SELECT o.sourcedId AS sourced_id, o.status AS status, o.title AS title, o.class.sourcedId AS class_id,
           o.resultValueMax AS result_value_max, o.scoreScale IS NOT NULL AS letter_scale
    FROM (SELECT unnest(from_json(payload, '[{"sourcedId": "VARCHAR", "status": "VARCHAR", "title": "VARCHAR",
                                              "class": {"sourcedId": "VARCHAR"}, "resultValueMax": "DOUBLE",
                                              "scoreScale": {"sourcedId": "VARCHAR"}}]')) AS o
          FROM pages WHERE system = 'sis' AND collection = 'lineItems'))
ORDER BY sourced_id;

-- name: sis_results
SELECT DISTINCT ON (sourced_id) * FROM (
    SELECT o.sourcedId AS sourced_id, o.status AS status, o.lineItem.sourcedId AS line_item_id,
           o.student.sourcedId AS student_id, o.scoreStatus AS score_status, o.score AS score,
           o.textScore AS text_score, TRY_CAST(o.dateLastModified AS TIMESTAMPTZ) AS date_last_modified, o.late AS late
    FROM (SELECT unnest(from_json(payload, '[{"sourcedId": "VARCHAR", "status": "VARCHAR",
                                              "lineItem": {"sourcedId": "VARCHAR"}, "student": {"sourcedId": "VARCHAR"},
                                              "scoreStatus": "VARCHAR", "score": "DOUBLE", "textScore": "VARCHAR",
                                              "dateLastModified": "VARCHAR", "late": "VARCHAR"}]')) AS o
          FROM pages WHERE system = 'sis' AND collection = 'results'))
ORDER BY sourced_id;
