-- The asset checks' queries over the stored tables (lms_pipeline.check_rules runs them, values bound by name).
-- A roster is known when it is exposed or empty; not_exposed and failed rosters are unknown.

-- name: course_edges_per_student
-- One edge per (course, student): the edges, the duplicates and the courses holding them.
SELECT count(*) AS edges, count(*) - count(DISTINCT (course_id, student_id)) AS duplicates,
       list(DISTINCT course_id ORDER BY course_id) FILTER (WHERE n > 1) AS groups
FROM (SELECT *, count(*) OVER (PARTITION BY course_id, student_id) AS n FROM lms.course_student_edges
      WHERE connection_id = $connection_id AND snapshot_date = $day);

-- name: class_edges_per_student
SELECT count(*) AS edges, count(*) - count(DISTINCT (class_id, student_id)) AS duplicates,
       list(DISTINCT class_id ORDER BY class_id) FILTER (WHERE n > 1) AS groups
FROM (SELECT *, count(*) OVER (PARTITION BY class_id, student_id) AS n FROM lms.class_student_edges
      WHERE connection_id = $connection_id AND snapshot_date = $day);

-- name: drops_from_unexposed_rosters
SELECT count(*) AS drops,
       count(*) FILTER (WHERE c.roster_status = 'not_exposed' OR p.roster_status = 'not_exposed') AS bad,
       list(DISTINCT x.course_id ORDER BY x.course_id)
           FILTER (WHERE c.roster_status = 'not_exposed' OR p.roster_status = 'not_exposed') AS courses
FROM lms.enrollment_changes x
LEFT JOIN lms.course_rosters c ON c.connection_id = x.connection_id
     AND c.snapshot_date = x.snapshot_date AND c.course_id = x.course_id
LEFT JOIN lms.course_rosters p ON p.connection_id = x.connection_id
     AND p.snapshot_date = x.previous_snapshot_date AND p.course_id = x.course_id
WHERE x.connection_id = $connection_id AND x.snapshot_date = $day AND x.change_type = 'dropped';

-- name: change_set_arithmetic
-- Per compared course (roster known, or the course absent, on each day): previous + added - dropped vs current.
WITH rosters AS (
    SELECT coalesce(c.course_id, p.course_id) AS course_id
    FROM (SELECT * FROM lms.course_rosters WHERE connection_id = $connection_id AND snapshot_date = $day) c
    FULL JOIN (SELECT * FROM lms.course_rosters WHERE connection_id = $connection_id AND snapshot_date = $previous) p
        USING (course_id)
    WHERE (c.roster_status IN ('exposed', 'empty') OR c.roster_status IS NULL)
      AND (p.roster_status IN ('exposed', 'empty') OR p.roster_status IS NULL)
),
cur AS (SELECT course_id, count(*) AS n FROM lms.course_student_edges
        WHERE connection_id = $connection_id AND snapshot_date = $day GROUP BY ALL),
prev AS (SELECT course_id, count(*) AS n FROM lms.course_student_edges
         WHERE connection_id = $connection_id AND snapshot_date = $previous GROUP BY ALL),
changes AS (SELECT course_id, count(*) FILTER (WHERE change_type = 'added') AS added,
                   count(*) FILTER (WHERE change_type = 'dropped') AS dropped
            FROM lms.enrollment_changes WHERE connection_id = $connection_id AND snapshot_date = $day GROUP BY ALL),
per_course AS (
    SELECT r.course_id, coalesce(prev.n, 0) + coalesce(added, 0) - coalesce(dropped, 0) AS expected,
           coalesce(cur.n, 0) AS current
    FROM rosters r LEFT JOIN cur USING (course_id) LEFT JOIN prev USING (course_id)
    LEFT JOIN changes USING (course_id)
)
SELECT (SELECT count(*) FROM per_course) AS compared,
       (SELECT list(course_id ORDER BY course_id) FROM per_course WHERE expected <> current) AS off,
       (SELECT coalesce(sum(added), 0) FROM changes) AS added,
       (SELECT coalesce(sum(dropped), 0) FROM changes) AS dropped,
       (SELECT coalesce(sum(n), 0) FROM cur) AS current_edges;

-- name: exposure_shares
-- The known share of the day and of the stored day before it.
SELECT snapshot_date, count(*) FILTER (WHERE roster_status IN ('exposed', 'empty')) / count(*) AS share,
       count(*) AS n
FROM lms.course_rosters WHERE connection_id = $connection_id AND snapshot_date <= $day
  AND snapshot_date >= coalesce((SELECT max(snapshot_date) FROM lms.course_rosters
                                 WHERE connection_id = $connection_id AND snapshot_date < $day), $day)
GROUP BY ALL ORDER BY snapshot_date;

-- name: grade_match_counts
SELECT count(*) FILTER (WHERE status = 'match') AS matched,
       count(*) FILTER (WHERE status IN ('match', 'score_mismatch')) AS compared
FROM lms.grade_discrepancies WHERE connection_id = $connection_id AND snapshot_date = $day;

-- name: old_missing_in_lms
SELECT row_key, days_open FROM lms.roster_discrepancies
WHERE connection_id = $connection_id AND snapshot_date = $day AND status = 'missing_in_lms' AND days_open >= $days
ORDER BY days_open DESC, row_key;

-- name: last_complete_day
SELECT max(snapshot_date) AS d FROM lms.enrollment_change_sets WHERE connection_id = $connection_id;
