"""``make demo``: materialize 7 days of every configured connection, then show what an analyst gets.

Runs go through the persistent Dagster instance under data/dagster_home, so they are visible in ``make ui``
afterwards. The embedded simulator serves the connections over HTTP on 127.0.0.1, and the demo checks every
stored snapshot against the simulator's ground truth.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

from lms_pipeline.config import REPO_ROOT

os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / "data" / "dagster_home"))

import dagster as dg  # noqa: E402  (DAGSTER_HOME must be set first)
import duckdb  # noqa: E402

from lms_pipeline.config import load_settings  # noqa: E402
from lms_pipeline.definitions import ROSTER_JOB, build_defs  # noqa: E402
from lms_pipeline.partitions import partition_key  # noqa: E402
from lms_pipeline.resources import embedded_worlds  # noqa: E402
from lms_pipeline.warehouse import published_path  # noqa: E402

DAYS = 8  # a week of daily syncs, then the weekly full scan (it catches the week's removed courses)
# The console shows warnings only; every event is still stored in the instance and visible in `make ui`.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
EXAMPLE_QUERY = """SELECT snapshot_date, course_id, student_id, reason
FROM lms.enrollment_changes
WHERE connection_id = 'district-canvas' AND change_type = 'dropped'
ORDER BY snapshot_date DESC, course_id LIMIT 5"""


def main() -> int:
    settings = load_settings()
    defs = build_defs(settings)
    job = defs.resolve_job_def(ROSTER_JOB)
    days = [settings.start_date + timedelta(days=i) for i in range(DAYS)]
    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        for day in days:
            for conn in settings.connections:
                key = partition_key(conn.id, day)
                result = job.execute_in_process(
                    partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET
                )
                if not result.success:
                    print(f"run for {key} failed; see `make ui` (run {result.run_id})", file=sys.stderr)
                    return 1
                print(f"  materialized {key}")
    elapsed = time.monotonic() - started
    db = published_path(settings.warehouse_path())
    with duckdb.connect(str(db), read_only=True) as conn:
        print(f"\n{len(days) * len(settings.connections)} partitions in {elapsed:.1f}s. Analyst copy: {db}\n")
        _print(
            conn,
            "Latest snapshot per connection",
            """
            SELECT r.connection_id, count(*) AS courses,
                   round(avg((r.roster_status <> 'not_exposed')::INT), 3) AS exposed_share,
                   (SELECT count(*) FROM lms.course_student_edges e
                    WHERE e.connection_id = r.connection_id AND e.snapshot_date = r.snapshot_date) AS edges
            FROM lms.course_rosters r
            WHERE r.snapshot_date = (SELECT max(snapshot_date) FROM lms.course_rosters)
            GROUP BY r.connection_id, r.snapshot_date ORDER BY 1""",
        )
        _print(
            conn,
            "Adds / drops per day (baseline = first snapshot, no change rows)",
            """
            SELECT snapshot_date, connection_id, CASE WHEN is_baseline THEN 'baseline' ELSE guard END AS change_set,
                   added, dropped, courses_not_exposed
            FROM lms.enrollment_change_sets ORDER BY snapshot_date, connection_id""",
        )
        _print(
            conn,
            "How each day was read (sync_log)",
            """
            SELECT snapshot_date, connection_id, mode, technique, passes, requests, courses_listed
            FROM lms.sync_log ORDER BY snapshot_date, connection_id""",
        )
        _print(
            conn,
            f"Learner progress on {days[-1]} (activity is labelled against the roster, never added to it)",
            """
            SELECT s.connection_id, count(*) AS courses, sum(s.active_contents) AS contents,
                   (SELECT count(*) FROM lms.student_progress p WHERE p.connection_id = s.connection_id
                    AND p.snapshot_date = s.snapshot_date) AS activities,
                   round(avg(s.average_progress), 1) AS avg_progress, round(avg(s.completed_share), 3) AS completed,
                   sum(s.activities_not_on_roster) AS not_on_roster
            FROM lms.course_progress_summary s
            WHERE s.snapshot_date = (SELECT max(snapshot_date) FROM lms.course_progress_summary)
            GROUP BY s.connection_id, s.snapshot_date ORDER BY 1""",
        )
        _print(conn, "Example query: latest drops in district-canvas", EXAMPLE_QUERY)
        mismatches = _verify(conn, settings, days)
    print(
        f"Open it yourself: .venv/bin/python -c \"import duckdb; print(duckdb.connect('{db}', read_only=True)"
        ".sql('SELECT * FROM lms.enrollment_changes LIMIT 5'))\""
    )
    if mismatches:
        print(f"MISMATCH against simulator truth: {mismatches}", file=sys.stderr)
        return 1
    print(
        f"Every stored snapshot equals the simulator's truth ({len(days) * len(settings.connections)} checked; "
        "courses removed since the last full scan are carried forward on incremental days)."
    )
    return 0


def _print(conn: duckdb.DuckDBPyConnection, title: str, sql: str) -> None:
    print(f"== {title}")
    print(conn.sql(sql).df().to_string(index=False), end="\n\n")


def _verify(conn: duckdb.DuckDBPyConnection, settings, days) -> list[str]:
    """Compare each stored snapshot (edges and learner progress) with the simulator's truth; return the
    partitions that differ.

    Every course the LMS lists must have exactly its true roster. A stored course the LMS no longer lists is
    allowed only on an incremental day, carried forward from a scan after the last full scan: incremental polls
    cannot see deletions (the next full scan removes it).
    """
    bad = []
    for c in settings.connections:
        if not c.embedded:
            continue
        world = embedded_worlds(settings)[c.id]
        for day in days:
            listed = world.roster_status(day)
            stored = conn.execute(
                "SELECT course_id, student_id FROM lms.course_student_edges WHERE connection_id = ? "
                "AND snapshot_date = ?",
                [c.id, day],
            ).fetchall()
            extra = conn.execute(
                """SELECT count(*) FROM lms.course_rosters r JOIN lms.sync_log s USING (connection_id, snapshot_date)
                   WHERE r.connection_id = ? AND r.snapshot_date = ? AND list_position(?, r.course_id) IS NULL
                     AND NOT (s.mode = 'incremental' AND r.fetched_on < r.snapshot_date
                              AND r.fetched_on >= s.last_full_scan_date)""",
                [c.id, day, list(listed)],
            ).fetchone()[0]
            progress = conn.execute(
                "SELECT course_id, student_id, content_id, is_completed, progress_percentage, enrollment_state "
                "FROM lms.student_progress WHERE connection_id = ? AND snapshot_date = ?",
                [c.id, day],
            ).fetchall()
            progress_ok = {(a, b, k): (done, int(p), st) for a, b, k, done, p, st in progress} == world.true_progress(
                day
            )
            if {e for e in stored if e[0] in listed} != world.true_course_edges(day) or extra or not progress_ok:
                bad.append(partition_key(c.id, day))
    return bad


if __name__ == "__main__":
    sys.exit(main())
