-- A day's stored roster snapshot, whatever provider it came from (lms_pipeline.transforms.snapshot runs these with
-- bound parameters).

-- name: base_sync
-- The latest earlier day with a sync and a built snapshot: what an incremental poll builds on, and how many of its
-- courses have no updated_at (a poll cannot see their changes).
WITH base AS (
    SELECT s.snapshot_date, s.high_water, s.last_full_scan_date FROM lms.sync_log s
    WHERE s.connection_id = $connection_id AND s.snapshot_date < $snapshot_date::DATE AND EXISTS (
        SELECT 1 FROM lms.course_rosters r
        WHERE r.connection_id = s.connection_id AND r.snapshot_date = s.snapshot_date)
    ORDER BY s.snapshot_date DESC LIMIT 1
)
SELECT base.*, (SELECT count(*) FROM lms.course_rosters r WHERE r.connection_id = $connection_id
                AND r.snapshot_date = base.snapshot_date AND r.updated_at IS NULL) AS stampless
FROM base;

-- name: snapshot_metadata
-- What operators see on the materialization, counted where the rows are.
WITH rosters AS (
    SELECT roster_status, is_active, fetched_on FROM lms.course_rosters
    WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE
),
edges AS (
    SELECT course_id, student_id FROM lms.course_student_edges
    WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE
),
class_edges AS (
    SELECT class_id FROM lms.class_student_edges
    WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE
)
SELECT
    (SELECT count(*) FROM rosters) AS courses,
    (SELECT count(*) FROM rosters WHERE fetched_on < $snapshot_date::DATE) AS courses_carried_forward,
    (SELECT count(*) FROM rosters WHERE roster_status = 'exposed') AS courses_exposed,
    (SELECT count(*) FROM rosters WHERE roster_status = 'empty') AS courses_empty,
    (SELECT count(*) FROM rosters WHERE roster_status = 'not_exposed') AS courses_not_exposed,
    (SELECT count(*) FROM rosters WHERE is_active = false) AS courses_inactive,
    (SELECT count(*) FROM edges) AS edges,
    (SELECT count(DISTINCT student_id) FROM edges) AS distinct_students,
    (SELECT count(DISTINCT course_id) FROM edges) AS courses_with_students,
    (SELECT count(*) FROM class_edges) AS class_edges,
    (SELECT count(DISTINCT class_id) FROM class_edges) AS classes;
