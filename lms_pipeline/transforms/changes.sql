-- Day-over-day enrollment changes between two stored snapshots of a connection, inside the warehouse
-- (lms_pipeline.transforms.changes runs these in the change set's transaction); every value is a bound parameter.

-- name: previous_day
-- The previous *published* change set: a held one has no row, so the next day compares with the last published.
SELECT max(snapshot_date) FROM lms.enrollment_change_sets
WHERE connection_id = $connection_id AND snapshot_date < $snapshot_date::DATE;

-- name: current_rosters
SELECT count(*) FROM lms.course_rosters WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE;

-- name: day_changes
-- Only courses whose roster is known on a day (exposed or empty) take part: "the provider did not tell us" is not
-- "everyone left". One full outer join of the two days' edges finds every moved edge (edges are unique per day, so
-- it is the two EXCEPTs in one pass), then each is judged by its course on both days.
CREATE OR REPLACE TEMP TABLE day_changes AS
WITH prev_rosters AS (
    SELECT course_id, roster_status, is_active FROM lms.course_rosters
    WHERE connection_id = $connection_id AND snapshot_date = $previous_date::DATE
),
cur_rosters AS (
    SELECT course_id, roster_status, is_active FROM lms.course_rosters
    WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE
),
courses AS (
    SELECT coalesce(c.course_id, p.course_id) AS course_id,
        p.roster_status AS prev_status, c.roster_status AS cur_status,
        p.is_active AS prev_active, c.is_active AS cur_active,
        p.roster_status IN ('exposed', 'empty') AS prev_known,
        c.roster_status IN ('exposed', 'empty') AS cur_known
    FROM prev_rosters p FULL OUTER JOIN cur_rosters c ON p.course_id = c.course_id
),
prev_edges AS (
    SELECT course_id, student_id FROM lms.course_student_edges
    WHERE connection_id = $connection_id AND snapshot_date = $previous_date::DATE
),
cur_edges AS (
    SELECT course_id, student_id FROM lms.course_student_edges
    WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE
),
moved AS (
    SELECT coalesce(c.course_id, p.course_id) AS course_id, coalesce(c.student_id, p.student_id) AS student_id,
        CASE WHEN p.student_id IS NULL THEN 'added' ELSE 'dropped' END AS change_type
    FROM prev_edges p FULL OUTER JOIN cur_edges c ON p.course_id = c.course_id AND p.student_id = c.student_id
    WHERE p.student_id IS NULL OR c.student_id IS NULL
)
SELECT m.course_id, m.student_id, m.change_type,
    CASE
        WHEN m.change_type = 'added' AND k.prev_status IS NULL THEN 'course_added'
        WHEN m.change_type = 'added' THEN 'enrolled'
        -- a course present yesterday and absent today: the scan was complete, or the fetch would have failed
        WHEN k.cur_status IS NULL THEN 'course_removed'
        WHEN k.prev_active AND NOT k.cur_active THEN 'course_deactivated'
        ELSE 'unenrolled'
    END AS reason
FROM moved m JOIN courses k ON m.course_id = k.course_id
WHERE CASE WHEN m.change_type = 'added' THEN k.cur_known AND (k.prev_known OR k.prev_status IS NULL)
           ELSE k.prev_known AND (k.cur_known OR k.cur_status IS NULL) END;

-- name: baseline_changes
-- A connection's first day: nothing to compare with, so no change rows by design.
CREATE OR REPLACE TEMP TABLE day_changes (course_id VARCHAR, student_id VARCHAR, change_type VARCHAR, reason VARCHAR);

-- name: summary
WITH prev_rosters AS (
    SELECT course_id, roster_status FROM lms.course_rosters
    WHERE connection_id = $connection_id AND snapshot_date = $previous_date::DATE
),
cur_rosters AS (
    SELECT course_id, roster_status FROM lms.course_rosters
    WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE
),
courses AS (
    SELECT count(*) FILTER (WHERE c.roster_status IN ('exposed', 'empty')
                              AND p.roster_status IN ('exposed', 'empty')) AS compared,
        count(*) FILTER (WHERE c.roster_status = 'not_exposed' OR p.roster_status = 'not_exposed') AS not_exposed
    FROM cur_rosters c FULL OUTER JOIN prev_rosters p ON c.course_id = p.course_id
)
SELECT compared AS courses_compared, not_exposed AS courses_not_exposed,
    (SELECT count(*) FROM lms.course_student_edges
        WHERE connection_id = $connection_id AND snapshot_date = $previous_date::DATE) AS previous_edges,
    (SELECT count(*) FROM lms.course_student_edges
        WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE) AS current_edges,
    (SELECT count(*) FROM day_changes WHERE change_type = 'added') AS added,
    (SELECT count(*) FROM day_changes WHERE change_type = 'dropped') AS dropped
FROM courses;

-- name: reasons
SELECT change_type, reason, count(*) FROM day_changes GROUP BY ALL ORDER BY ALL;

-- name: delete_changes
DELETE FROM lms.enrollment_changes WHERE connection_id = $connection_id AND snapshot_date = $snapshot_date::DATE;

-- name: write_changes
INSERT INTO lms.enrollment_changes BY NAME
SELECT $connection_id AS connection_id, $snapshot_date::DATE AS snapshot_date,
    $previous_date::DATE AS previous_snapshot_date, course_id, student_id, change_type, reason
FROM day_changes;
