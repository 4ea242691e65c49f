-- Content and activity pages + the day's roster snapshot -> contents, learner progress and the per-course summary
-- (lms_pipeline.transforms.progress runs these, in this order, over the registered frames `pages`, `rosters`, `edges`).

-- The items of the day's pages, parsed once per endpoint: what the checks and every output read.
-- name: contents_items
CREATE OR REPLACE TEMP TABLE contents AS
SELECT connection_id, CAST(snapshot_date AS DATE) AS snapshot_date, course_id AS filter_course, page_index,
       page_offset, unnest(from_json(payload, '[{"id": "VARCHAR", "name": "VARCHAR", "course_ids": ["VARCHAR"], "course_id": "VARCHAR", "is_active": "BOOLEAN", "duration_minutes": "DOUBLE", "updated_at": "VARCHAR"}]')) AS o
FROM pages WHERE endpoint = 'content';

-- name: activities_items
CREATE OR REPLACE TEMP TABLE activities AS
SELECT connection_id, CAST(snapshot_date AS DATE) AS snapshot_date, course_id AS filter_course, page_index,
       page_offset, unnest(from_json(payload, '[{"id": "VARCHAR", "course_id": "VARCHAR", "student_id": "VARCHAR", "content_id": "VARCHAR", "is_completed": "BOOLEAN", "progress_percentage": "DOUBLE", "started_at": "VARCHAR", "completed_at": "VARCHAR", "updated_at": "VARCHAR"}]')) AS o
FROM pages WHERE endpoint = 'activity';

-- name: contents
-- The newest version of each record: a course's listing may return one twice if it changed while paged.
CREATE TEMP TABLE course_contents AS
SELECT connection_id, snapshot_date, filter_course AS course_id, o.id AS content_id, o.name,
       o.is_active, CAST(o.duration_minutes AS INTEGER) AS duration_minutes,
       TRY_CAST(o.updated_at AS TIMESTAMPTZ) AS updated_at
FROM contents
QUALIFY row_number() OVER (PARTITION BY connection_id, snapshot_date, filter_course, o.id
                           ORDER BY TRY_CAST(o.updated_at AS TIMESTAMPTZ) DESC NULLS LAST, page_index DESC) = 1;
FROM course_contents;

-- name: progress
CREATE TEMP TABLE progress AS
WITH latest AS (
    SELECT connection_id, snapshot_date, coalesce(o.course_id, filter_course) AS course_id,
           o.student_id, o.content_id, o.is_completed, o.progress_percentage,
           TRY_CAST(o.started_at AS TIMESTAMPTZ) AS started_at, TRY_CAST(o.completed_at AS TIMESTAMPTZ) AS completed_at,
           TRY_CAST(o.updated_at AS TIMESTAMPTZ) AS updated_at
    FROM activities
    QUALIFY row_number() OVER (PARTITION BY connection_id, snapshot_date, course_id, o.student_id, o.content_id
                               ORDER BY TRY_CAST(o.updated_at AS TIMESTAMPTZ) DESC NULLS LAST, page_index DESC) = 1
)
SELECT a.*,
    CASE WHEN r.roster_status IS NULL OR r.roster_status = 'not_exposed' THEN 'roster_not_exposed'
         WHEN e.student_id IS NOT NULL THEN 'enrolled'
         ELSE 'not_enrolled' END AS enrollment_state
FROM latest a
LEFT JOIN rosters r ON r.course_id = a.course_id
LEFT JOIN edges e ON e.course_id = a.course_id AND e.student_id = a.student_id;
FROM progress;

-- name: summary
WITH activity AS (
    SELECT course_id,
           count(DISTINCT student_id) AS learners_with_activity,
           count(DISTINCT student_id) FILTER (enrollment_state = 'enrolled') AS enrolled_with_activity,
           count(*) FILTER (enrollment_state = 'enrolled' AND is_completed) AS enrolled_completed,
           avg(progress_percentage) FILTER (enrollment_state <> 'not_enrolled') AS average_progress,
           count(*) FILTER (enrollment_state = 'not_enrolled') AS activities_not_on_roster
    FROM progress GROUP BY course_id
), content AS (
    SELECT course_id, count(*) FILTER (is_active IS DISTINCT FROM false) AS active_contents
    FROM course_contents GROUP BY course_id
)
SELECT r.connection_id, r.snapshot_date, r.course_id, r.roster_status,
    CASE WHEN r.roster_status <> 'not_exposed' THEN r.student_count END AS enrolled_students,
    coalesce(a.learners_with_activity, 0) AS learners_with_activity,
    CASE WHEN r.roster_status <> 'not_exposed' THEN coalesce(a.enrolled_with_activity, 0) END
        AS enrolled_with_activity,
    coalesce(c.active_contents, 0) AS active_contents,
    CASE WHEN r.roster_status <> 'not_exposed' AND r.student_count * coalesce(c.active_contents, 0) > 0
         THEN least(1.0, coalesce(a.enrolled_completed, 0) / (r.student_count * c.active_contents)) END
        AS completed_share,
    a.average_progress,
    coalesce(a.activities_not_on_roster, 0) AS activities_not_on_roster
FROM rosters r
LEFT JOIN activity a USING (course_id)
LEFT JOIN content c USING (course_id)
ORDER BY r.course_id;

-- name: problems
SELECT 'content' AS endpoint, filter_course, page_offset, coalesce(o.id, '?') AS item,
       'id is missing or not a string' AS problem
FROM contents WHERE o.id IS NULL
UNION ALL
SELECT 'activity', filter_course, page_offset, coalesce(o.id, '?'),
       CASE WHEN o.student_id IS NULL THEN 'student_id is missing or not a string'
            WHEN o.content_id IS NULL THEN 'content_id is missing or not a string'
            ELSE 'course_id ' || o.course_id || ' differs from the course asked for' END
FROM activities
WHERE o.student_id IS NULL OR o.content_id IS NULL OR o.course_id <> filter_course
ORDER BY ALL;
