"""``make demo``: materialize 7 days of every configured connection, then show what an analyst gets.

Runs go through the persistent Dagster instance under data/dagster_home, so they are visible in ``make ui``
afterwards. The embedded simulator serves the connections over HTTP on 127.0.0.1, and the demo checks every
stored snapshot against the simulator's ground truth.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import yaml

from lms_pipeline.config import REPO_ROOT

os.environ.setdefault("DAGSTER_HOME", str(REPO_ROOT / "data" / "dagster_home"))

import dagster as dg  # noqa: E402  (DAGSTER_HOME must be set first)
import duckdb  # noqa: E402

from lms_pipeline.config import load_settings  # noqa: E402
from lms_pipeline.definitions import ROSTER_JOB, build_defs  # noqa: E402
from lms_pipeline.partitions import partition_key  # noqa: E402
from lms_pipeline.simulator.systems import embedded_sis, embedded_worlds  # noqa: E402
from lms_pipeline.warehouse import published_path  # noqa: E402

DAYS = 8  # a week of daily syncs, then the weekly full scan (it catches the week's removed courses)
# The console shows warnings only; every event is still stored in the instance and visible in `make ui`.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
EXAMPLE_QUERY = """SELECT snapshot_date, course_id, student_id, reason
FROM lms.enrollment_changes
WHERE connection_id = 'district-canvas' AND change_type = 'dropped'
ORDER BY snapshot_date DESC, course_id LIMIT 5"""


ROSTER_QUERY = """SELECT course_id, lms_student_id, sis_student_id, first_seen, days_open
FROM lms.roster_discrepancies
WHERE status = 'missing_in_lms' AND snapshot_date = (SELECT max(snapshot_date) FROM lms.roster_discrepancies)
ORDER BY days_open DESC, course_id LIMIT 5"""


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
        _print(
            conn,
            "Grade reconciliation with the SIS: rows per status and day (planted disagreements of every kind)",
            """
            PIVOT (SELECT snapshot_date, connection_id, status FROM lms.grade_discrepancies)
            ON status IN ('match', 'score_mismatch', 'missing_in_sis', 'missing_in_lms', 'unmapped_student',
                          'unmapped_assignment', 'unparseable')
            USING count(*) ORDER BY snapshot_date""",
        )
        _print(
            conn,
            "Roster reconciliation with the SIS (the roster of record): rows per status and day",
            """
            PIVOT (SELECT snapshot_date, connection_id, status FROM lms.roster_discrepancies)
            ON status IN ('missing_in_lms', 'missing_in_sis', 'section_mismatch', 'unmapped_student',
                          'unmapped_course', 'lms_roster_not_exposed')
            USING count(*) ORDER BY snapshot_date""",
        )
        _print(conn, "Example query: students the SIS enrols who are still missing from the LMS", ROSTER_QUERY)
        _print(conn, "Example query: latest drops in district-canvas", EXAMPLE_QUERY)
        mismatches = (_verify(conn, settings, days) + _verify_grades(conn, settings, days)
                      + _verify_rosters(conn, settings, days))  # fmt: skip
    print(
        f"Open it yourself: .venv/bin/python -c \"import duckdb; print(duckdb.connect('{db}', read_only=True)"
        ".sql('SELECT * FROM lms.enrollment_changes LIMIT 5'))\""
    )
    if mismatches:
        print(f"MISMATCH against simulator truth: {mismatches}", file=sys.stderr)
        return 1
    if not _write_back(settings, job.name, days[-1]):
        return 1
    print(
        f"Every stored snapshot equals the simulator's truth ({len(days) * len(settings.connections)} checked; "
        "courses removed since the last full scan are carried forward on incremental days), and every day's grade "
        "discrepancies and roster discrepancies (with their first-seen days) equal the disagreements the SIS simulator "
        "planted."
    )
    return 0


GRADE_ASSETS = [dg.AssetKey(k) for k in ("raw_grade_pages", "lms_grades", "grade_discrepancies", "grade_sync_log")]


def _write_back(settings, job_name: str, day) -> bool:
    """Show the opt-in write-back on the last day: a dry run, the real run, and a re-run that writes nothing.

    It runs with a copy of the connections file with write_back switched on (the shipped file keeps it off).
    """
    reconciled = [c for c in settings.connections if c.grades]
    if not reconciled:
        return True
    source = Path(os.environ.get("LMS_PIPELINE_CONFIG") or REPO_ROOT / "data" / "connections.yaml")
    raw = yaml.safe_load(source.read_text())
    print(f"== Write-back to the SIS on {day} (write_back is off in data/connections.yaml; switched on here)")
    rounds = (
        ("dry run", {"enabled": True, "dry_run": True}),
        ("write", {"enabled": True}),
        ("re-run", {"enabled": True}),
    )
    with tempfile.TemporaryDirectory() as tmp, dg.DagsterInstance.get() as instance:
        for label, write_back in rounds:
            for sis in raw["sis"]:
                sis["write_back"] = write_back
            path = Path(tmp) / "connections.yaml"
            path.write_text(yaml.safe_dump(raw))
            job = build_defs(load_settings(path), str(path)).resolve_job_def(job_name)
            for conn in reconciled:
                done = _sync_round(job, instance, settings.warehouse_path(), conn.id, day)
                if done is None:
                    return False
                line, writes = done
                print(f"  {label:8} {conn.id}: {line}")
                if label != "write" and writes:
                    print(f"{label} for {conn.id} sent {writes} write(s); it must send none", file=sys.stderr)
                    return False
    print("  (PUT created/updated: every write was journaled as an intent before it was sent and its outcome after;")
    print("   skipped_sis_newer: the SIS grade changed after the LMS grade, so it is kept; see lms.grade_sync_log)\n")
    return True


def _sync_round(job, instance, db: Path, connection_id: str, day) -> tuple[str, int] | None:
    """One grade run with write-back: what differed before it and what it did, and how many writes it sent (their
    intents in the journal); None when it failed."""
    result = job.execute_in_process(partition_key=partition_key(connection_id, day), instance=instance,
                                    asset_selection=GRADE_ASSETS, raise_on_error=False, run_config=QUIET)  # fmt: skip
    if not result.success:
        print(f"write-back run for {connection_id} failed; see `make ui` (run {result.run_id})", file=sys.stderr)
        return None
    with duckdb.connect(str(db), read_only=True) as live:
        ops = live.execute(
            "SELECT coalesce(method, '-') AS method, outcome, count(*) AS n FROM lms.grade_sync_log "
            "WHERE run_id = ? AND phase = 'outcome' GROUP BY ALL ORDER BY ALL", [result.run_id]).df()  # fmt: skip
        [(writes,)] = live.execute(
            "SELECT count(*) FROM lms.grade_sync_log WHERE run_id = ? AND phase = 'intent'", [result.run_id]
        ).fetchall()
        left = live.execute(
            "SELECT status, count(*) AS n FROM lms.grade_discrepancies WHERE connection_id = ? AND snapshot_date = ? "
            "AND status IN ('missing_in_sis', 'score_mismatch') GROUP BY ALL ORDER BY ALL", [connection_id, day]
        ).df()  # fmt: skip
    summary = ", ".join(f"{r.method} {r.outcome}: {r.n}" for r in ops.itertuples()) or "no operation"
    before = ", ".join(f"{r.status}: {r.n}" for r in left.itertuples()) or "none"
    return f"differing before this run ({before}) -> {summary}", writes


def _verify_grades(conn: duckdb.DuckDBPyConnection, settings, days) -> list[str]:
    """Compare each day's grade_discrepancies with the statuses the SIS simulator planted."""
    bad = []
    for c in settings.connections:
        sis = settings.sis_of(c.id)
        if sis is None or not sis.embedded:
            continue
        world = embedded_sis(settings).worlds[sis.id]
        students = pd.read_csv(sis.path("student_map"), comment="#", dtype=str)
        items = pd.read_csv(sis.path("assignment_map"), comment="#", dtype=str)
        student_map = dict(zip(students["lms_user_id"], students["sis_user_id"], strict=True))
        item_map = {(r.lms_course_id, r.lms_content_id): r.sis_line_item_id for r in items.itertuples()}
        for day in days:
            rows = conn.execute(
                "SELECT row_key, course_id, lms_student_id, content_id, sis_result_id, status "
                "FROM lms.grade_discrepancies WHERE connection_id = ? AND snapshot_date = ?", [c.id, day]
            ).fetchall()  # fmt: skip
            got = {("lms", a, b, k) if key.startswith("lms|") else ("sis", r): s for key, a, b, k, r, s in rows}
            if got != world.expected_statuses(day, student_map, item_map):
                bad.append(f"grades {partition_key(c.id, day)}")
    return bad


def _verify_rosters(conn: duckdb.DuckDBPyConnection, settings, days) -> list[str]:
    """Compare each day's roster_discrepancies (status and first-seen day) with what the SIS simulator planted."""
    bad = []
    for c in settings.connections:
        sis = settings.roster_sis_of(c.id)
        if sis is None or not sis.embedded:
            continue
        world = embedded_sis(settings).worlds[sis.id]
        students = pd.read_csv(sis.path("student_map"), comment="#", dtype=str)
        students = students[students["lms_connection_id"] == c.id]
        student_map = dict(zip(students["lms_user_id"], students["sis_user_id"], strict=True))
        for day in days:
            rows = conn.execute("SELECT row_key, status, first_seen FROM lms.roster_discrepancies "
                                "WHERE connection_id = ? AND snapshot_date = ?", [c.id, day]).fetchall()  # fmt: skip
            got = {tuple(key.split("|", 1)): (status, first) for key, status, first in rows}
            if got != world.rosters.expected(day, student_map):
                bad.append(f"rosters {partition_key(c.id, day)}")
    return bad


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
