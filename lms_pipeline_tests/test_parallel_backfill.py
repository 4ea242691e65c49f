"""14 days x 3 connections backfilled through Dagster's own machinery, several run processes writing at once.

How the backfill is launched, and why (checked on dagster 1.13.27):

- ``dagster-daemon run`` with the ``QueuedRunCoordinator`` (max 4 runs at once) and the default run launcher: each
  run is its own process, started by the code server the daemon spawns. ``dequeue_use_threads`` matters: without
  it the coordinator launches one run at a time and waits until that run has imported the code (~5 s on 2 cores),
  which is as long as a small run lasts, so runs never overlapped.
- The backfill is a *job* backfill of ``daily_roster_job`` (one run per ``connection|date`` key), submitted with the
  ``launchPartitionBackfill`` GraphQL mutation (the UI's), through the ``dagster-graphql`` CLI so no webserver is
  needed. ``dagster job backfill`` does the same for multi-partition keys but cannot pass run config, and run config
  is needed for the in-process executor: with the default multiprocess executor every step is another process
  (``dagster job execute``: 35 s per run here instead of 9 s), which would make 42 runs take over 10 minutes on 2 cores.
- Not an asset backfill (``assetSelection`` + ``partitionNames``): it follows the assets' previous-day
  dependencies, launching each day's assets in up to 3 runs, one backfill-daemon tick (30 s) apart. Measured: 2
  connections x 4 days took 24 runs and 5.6 minutes, so 14 days would take well over 10.

A job backfill ignores those dependencies, so days could run in any order; the instance limits runs to one per
connection (as ``data/dagster_home/dagster.yaml`` does), so a connection's days run in queue order, one at a time,
while the three connections run in parallel: every (connection, day) equals the simulator's truth, and every
change set compares with the day before. The polled connection removes no courses and exposes every roster (an
incremental poll cannot see removals or exposure flips until the next full scan, see docs/decisions.md).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from lms_pipeline.config import load_settings
from lms_pipeline.simulator import World
from lms_pipeline.simulator.systems import world_spec
from lms_pipeline_tests.dagster_processes import (
    BIN,
    DagsterSandbox,
    Started,
    process_groups,
    query,
    stored_edges,
)
from lms_pipeline_tests.test_pipeline_roster import expected_changes

START = date(2026, 9, 1)
DAYS = [START + timedelta(days=i) for i in range(14)]
RETRY = {"base_delay_seconds": 0.2, "max_delay_seconds": 1}
GENTLE = {"drop_prob": 0.005, "deactivate_prob": 0.005}
# Reading contents and activities course by course is half of a run's time: only conn-mixed has them; the others
# answer 501 for those endpoints, which the pipeline records as unsupported (their progress assets still write).
NO_PROGRESS = {**GENTLE, "progress": False}
CONNECTIONS = [
    # Incremental updated_gte polls between weekly full scans, keyset paging.
    {"id": "conn-poll", "provider": "unified", "token_env": "LMS_TEST_TOKEN_POLL", "options": {"retry": RETRY},
     "simulator": {"seed": 101, "n_courses": 60, "missing_timestamps_share": 0, "remove_prob": 0, **NO_PROGRESS}},
    # Flipping exposure, class rosters, 429s, contents and learner progress: full scans daily.
    {"id": "conn-mixed", "provider": "unified", "token_env": "LMS_TEST_TOKEN_MIXED",
     "options": {"page_size": 20, "full_scan_every_days": 1, "retry": RETRY},
     "simulator": {"seed": 202, "n_courses": 45, "roster_exposure": "mixed", "exposure_flip_prob": 0.02,
                   "roster_fields": "students", "classes": "rosters", "rate_limit_every": 9, **GENTLE}},
    # Timestamps missing: full scans in repeated passes, detected by the pipeline.
    {"id": "conn-legacy", "provider": "unified", "token_env": "LMS_TEST_TOKEN_LEGACY",
     "options": {"page_size": 10, "retry": RETRY},
     "simulator": {"seed": 303, "n_courses": 30, "roster_fields": "student_ids", "classes": "no_rosters",
                   "missing_timestamps_share": 0.3, **NO_PROGRESS}},
]  # fmt: skip
PARTITIONS = [f"{c['id']}|{day}" for c in CONNECTIONS for day in DAYS]
MAX_CONCURRENT_RUNS = 4
INSTANCE = {
    "run_coordinator": {
        "module": "dagster.core.run_coordinator",
        "class": "QueuedRunCoordinator",
        "config": {
            "max_concurrent_runs": MAX_CONCURRENT_RUNS,
            "dequeue_interval_seconds": 1,
            "dequeue_use_threads": True,
            "dequeue_num_workers": MAX_CONCURRENT_RUNS,
            # As in data/dagster_home/dagster.yaml: one run at a time per connection, so a connection's days run in
            # the order the backfill queued them and every change set compares with the day before.
            "tag_concurrency_limits": [
                {"key": "dagster/partition/connection", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
            ],
        },
    }
}
LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}
"""
LOCK_ERROR = "Could not set lock"
TERMINAL = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass
class Analyst:
    """Opens the published copy read-only again and again during the backfill, as a BI tool would."""

    path: Path
    stop: threading.Event = field(default_factory=threading.Event)
    counts: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def run(self, max_opens: int = 20_000, max_seconds: float = 900) -> None:
        deadline = time.monotonic() + max_seconds
        for _ in range(max_opens):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            if self.path.exists():  # absent until the first change set is published
                try:
                    with duckdb.connect(str(self.path), read_only=True) as conn:
                        self.counts.append(conn.execute("SELECT count(*) FROM lms.course_student_edges").fetchone()[0])
                except Exception as exc:  # any failure to open or read is what an analyst would see
                    self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.1)


def launch_backfill(groups, sandbox: DagsterSandbox) -> str:
    params = {
        "selector": {
            "partitionSetName": "daily_roster_job_partition_set",
            "repositorySelector": {"repositoryName": "__repository__", "repositoryLocationName": "lms_pipeline"},
        },
        "partitionNames": PARTITIONS,
        "runConfigData": {"execution": {"config": {"in_process": {}}}},
        "tags": [{"key": "test", "value": "parallel_backfill"}],
    }
    answer = sandbox.root / "backfill.json"
    submit = groups.run(
        "submit",
        [str(BIN / "dagster-graphql"), "-w", str(sandbox.workspace), "-t", LAUNCH_BACKFILL,
         "-v", json.dumps({"params": params}), "-o", str(answer)],
        timeout=180,
    )  # fmt: skip
    assert submit.proc.returncode == 0 and answer.exists(), submit.tail()
    result = json.loads(answer.read_text())["data"]["launchPartitionBackfill"]
    assert result["__typename"] == "LaunchBackfillSuccess", result
    return result["backfillId"]


def wait_for_runs(
    instance: dg.DagsterInstance, backfill_id: str, daemon: Started, timeout: float
) -> list[dg.RunRecord]:
    """All the backfill's runs once each is finished; fails early if the daemon dies."""
    deadline = time.monotonic() + timeout
    records: list[dg.RunRecord] = []
    for _ in range(int(timeout / 2) + 1):
        records = instance.get_run_records(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        if len(records) == len(PARTITIONS) and all(r.dagster_run.status in TERMINAL for r in records):
            return records
        assert daemon.proc.poll() is None, f"the daemon exited:\n{daemon.tail()}"
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    done = sum(r.dagster_run.status in TERMINAL for r in records)
    raise AssertionError(f"after {timeout:.0f}s {done} of {len(PARTITIONS)} runs finished:\n{daemon.tail()}")


def failure_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    messages = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is not None and event.is_step_failure and event.step_failure_data.error:
            messages.append(f"{event.step_key}: {event.step_failure_data.error.message.strip()}")
        elif event is not None and event.is_run_failure:
            messages.append(entry.message)
    return messages


def max_overlap(records: list[dg.RunRecord]) -> int:
    """The most runs in progress at one moment, from the start and end times in run storage."""
    edges = sorted(
        [(r.start_time, 1) for r in records if r.start_time and r.end_time]
        + [(r.end_time, -1) for r in records if r.start_time and r.end_time]
    )  # at a tie an end sorts first: runs that merely touch do not count as overlapping
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def lock_errors(instance: dg.DagsterInstance, records: list[dg.RunRecord], home: Path) -> list[str]:
    """DuckDB lock conflicts in the event log (what the UI shows) and in captured stdout/stderr."""
    found = [
        f"{r.dagster_run.tags.get('dagster/partition')}: {entry.message[:200]}"
        for r in records
        for entry in instance.all_logs(r.dagster_run.run_id)
        if LOCK_ERROR in (entry.message or "") or LOCK_ERROR in str(entry.dagster_event or "")
    ]
    logs = [p for p in (home / "storage").rglob("*") if p.is_file() and p.suffix in {".out", ".err"}]
    found += [str(p) for p in logs if LOCK_ERROR in p.read_text(errors="replace")]
    return found


@pytest.mark.timeout(1200)
def test_backfill_of_42_partitions_with_parallel_runs_matches_truth_and_never_blocks_the_analyst(
    tmp_path: Path,
) -> None:
    sandbox = DagsterSandbox(tmp_path, START, CONNECTIONS, INSTANCE)
    analyst = Analyst(sandbox.published)
    reader = threading.Thread(target=analyst.run, name="analyst", daemon=True)
    started = time.monotonic()
    with process_groups(sandbox) as groups, dg.DagsterInstance.from_config(str(sandbox.home)) as instance:
        try:
            reader.start()
            daemon = groups.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(sandbox.workspace)])
            backfill_id = launch_backfill(groups, sandbox)
            records = wait_for_runs(instance, backfill_id, daemon, timeout=900)
        finally:
            analyst.stop.set()
            reader.join(timeout=30)
        elapsed = time.monotonic() - started

        failed = {
            r.dagster_run.tags.get("dagster/partition"): failure_messages(instance, r.dagster_run.run_id)
            for r in records
            if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS
        }
        assert not failed, f"{len(failed)} of {len(records)} runs did not succeed: {json.dumps(failed, indent=1)}"
        assert sorted(r.dagster_run.tags.get("dagster/partition") for r in records) == sorted(PARTITIONS)
        assert not lock_errors(instance, records, sandbox.home)
        overlap = max_overlap(records)
        assert overlap > 1, "the runs never overlapped: the test did not exercise concurrent writers"

    wrong = [
        f"{conn['id']}|{day}"
        for conn in CONNECTIONS
        for day in DAYS
        if stored_edges(sandbox.db, conn["id"], day) != sandbox.true_edges(conn["id"], day)
    ]
    assert not wrong, f"course_student_edges differ from the truth for {wrong}"
    # With one run per connection at a time, every change set compares with the day before and equals the truth.
    settings = load_settings(sandbox.config_file)
    bad_sets = []
    for conn in CONNECTIONS:
        world = World(world_spec(settings, settings.connection(conn["id"])))
        for prev, day in zip(DAYS, DAYS[1:], strict=False):
            key = [conn["id"], day]
            compared = query(sandbox.db, "SELECT previous_snapshot_date FROM lms.enrollment_change_sets "
                             "WHERE connection_id = ? AND snapshot_date = ?", key)  # fmt: skip
            stored = set(query(sandbox.db, "SELECT course_id, student_id, change_type FROM lms.enrollment_changes "
                               "WHERE connection_id = ? AND snapshot_date = ?", key))  # fmt: skip
            if compared != [(prev,)] or stored != expected_changes(world, prev, day):
                bad_sets.append(f"{conn['id']}|{day} (compared with {compared})")
    assert not bad_sets, f"change sets not against the previous day or not the true difference: {bad_sets}"
    assert not analyst.failures, analyst.failures[:5]
    assert len(set(analyst.counts)) > 1, "the analyst never saw a new publish while the backfill ran"
    final = query(sandbox.published, "SELECT count(*) FROM lms.course_student_edges")[0][0]
    assert max(analyst.counts) <= final
    modes = query(sandbox.db, "SELECT mode, count(*) FROM lms.sync_log GROUP BY 1 ORDER BY 1")
    print(f"{len(records)} runs in {elapsed:.0f}s, at most {overlap} at once; syncs by mode {modes}; "
          f"analyst opened the published copy {len(analyst.counts)} times")  # fmt: skip
