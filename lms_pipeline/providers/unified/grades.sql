-- A Unified connection's grades and student emails from its stored activity and student pages
-- (lms_pipeline.providers.unified.grades runs these over the registered frame `pages`).

-- name: activity_grades
WITH items AS (
    SELECT course_id AS filter_course, page_index,
           unnest(from_json(payload, '[{"course_id": "VARCHAR", "student_id": "VARCHAR", "content_id": "VARCHAR",
                                        "assigned_grade": "VARCHAR", "updated_at": "VARCHAR"}]')) AS o
    FROM pages WHERE endpoint = 'activity'
)
SELECT coalesce(o.course_id, filter_course) AS course_id, o.content_id AS content_id,
       o.student_id AS student_id, o.assigned_grade AS raw_grade, CAST(NULL AS DOUBLE) AS points_possible,
       TRY_CAST(o.updated_at AS TIMESTAMPTZ) AS graded_at
FROM items
-- the newest version of each activity first; one without the grade field carries no grade (yet)
QUALIFY row_number() OVER (PARTITION BY course_id, o.content_id, o.student_id
                           ORDER BY TRY_CAST(o.updated_at AS TIMESTAMPTZ) DESC NULLS LAST, page_index DESC) = 1
    AND o.assigned_grade IS NOT NULL
ORDER BY 1, 2, 3;

-- name: student_emails
SELECT DISTINCT s.id AS student_id, e.email AS email FROM (
    SELECT unnest(from_json(payload, '[{"id": "VARCHAR", "emails": [{"email": "VARCHAR"}]}]')) AS s
    FROM pages WHERE endpoint = 'student')
CROSS JOIN unnest(coalesce(s.emails, [])) AS u(e)
WHERE e.email IS NOT NULL ORDER BY 1, 2;
