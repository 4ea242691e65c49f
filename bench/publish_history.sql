-- A year of demo-size history for bench/publish_history.py, one connection at a time ($conn, $courses a day,
-- $roster students each, days $first..$last): rosters, edges, passed change sets and raw pages of student ids.
INSERT INTO lms.course_rosters BY NAME
SELECT $conn AS connection_id, d.day AS snapshot_date, printf('crs-%05d', c.i) AS course_id, 'Course' AS course_name,
       true AS is_active, 'exposed' AS roster_status, 'student_ids' AS roster_source, $roster AS student_count,
       d.day::TIMESTAMPTZ AS updated_at, d.day AS fetched_on
FROM (SELECT range::DATE AS day FROM range($first::DATE, $last::DATE + 1, INTERVAL 1 DAY)) d, range($courses) c(i);
INSERT INTO lms.course_student_edges BY NAME
SELECT $conn AS connection_id, d.day AS snapshot_date, printf('crs-%05d', c.i) AS course_id,
       printf('stu-%06d', (c.i * 131 + s.j * 7 + (epoch(d.day)::BIGINT // 86400) * (s.j = 0)::INT) % 20000) AS student_id
FROM (SELECT range::DATE AS day FROM range($first::DATE, $last::DATE + 1, INTERVAL 1 DAY)) d, range($courses) c(i),
     range($roster) s(j);
INSERT INTO lms.enrollment_change_sets BY NAME
SELECT $conn AS connection_id, d.day AS snapshot_date, d.day - 1 AS previous_snapshot_date, false AS is_baseline,
       $courses AS courses_compared, 0 AS courses_not_exposed, $courses * $roster AS previous_edges,
       $courses * $roster AS current_edges, $courses AS added, $courses AS dropped, 0.04 AS drop_share,
       0.2 AS max_drop_share, 'passed' AS guard
FROM (SELECT range::DATE AS day FROM range($first::DATE, $last::DATE + 1, INTERVAL 1 DAY)) d;
INSERT INTO lms.raw_course_pages BY NAME
SELECT $conn AS connection_id, d.day AS snapshot_date, 'course' AS endpoint, p.k AS page_index, p.k * 100 AS page_offset,
       '{}' AS request_params, d.day::TIMESTAMPTZ AS fetched_at, 200 AS status_code, 1 AS attempts, 100 AS item_count,
       (SELECT '[' || string_agg(printf('{"id":"crs-%05d","student_ids":[%s]}', p.k * 100 + i,
               (SELECT string_agg(printf('"stu-%06d"', (i * 131 + j * 7) % 20000), ',') FROM range($roster) r(j))), ',')
        || ']' FROM range(least(100, $courses - p.k * 100)) q(i)) AS payload
FROM (SELECT range::DATE AS day FROM range($first::DATE, $last::DATE + 1, INTERVAL 1 DAY)) d,
     range(($courses + 99) // 100) p(k);
