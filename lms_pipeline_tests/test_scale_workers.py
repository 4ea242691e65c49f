"""Steps on Celery workers (separate processes) through the daemon, on the PostgreSQL instance: a worker process
SIGKILLed in the middle of a connection-day loses nothing; its step is given back to the queue and run again
(``task_acks_late`` + ``task_reject_on_worker_lost``), and every connection-day then equals the simulator's truth.
A provider's pool holds across workers: with a limit of 1, two steps of one provider never overlap.

Over a minute on 2 busy cores, so ``make test`` skips it and ``make test-scale`` runs it."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import duckdb
import psutil
import pytest

from lms_pipeline.config import load_settings
from lms_pipeline.demo import _verify
from lms_pipeline.scale.deployment import Deployment
from lms_pipeline.scale.lake import LIVE
from lms_pipeline_tests.scale_support import START, demo_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("LMS_SCALE_LONG_TESTS"), reason="over a minute: `make test-scale` runs it"),
]


def _step_spans(home: Path) -> dict[str, list[tuple[float, float]]]:
    """Provider op -> (first start, success) of each of its steps, from the PostgreSQL instance's event log."""
    import dagster as dg

    starts: dict[str, float] = {}
    spans: dict[str, list[tuple[float, float]]] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        for entry in instance.all_logs(run.run_id):
            event, key = entry.dagster_event, entry.step_key or ""
            if event is None or ".sync_" not in key:
                continue
            if event.event_type_value == "STEP_START":
                starts.setdefault(key, entry.timestamp)
            elif event.event_type_value == "STEP_SUCCESS":
                op = key.split(".", 1)[1].split("[", 1)[0]
                spans.setdefault(op, []).append((starts[key], entry.timestamp))
    return spans


def _busy_step_pid(work_root: Path, timeout: float) -> int:
    """The pid of a worker process in the middle of a connection-day (its working folder is named host-pid)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in work_root.glob("*-*") if work_root.is_dir() else ():
            pid = folder.name.rsplit("-", 1)[-1]
            if folder.is_dir() and pid.isdigit() and (folder / "warehouse.duckdb").exists():
                return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"no step started within {timeout}s")


def test_a_worker_process_killed_mid_step_loses_no_connection_day_and_a_provider_pool_holds_across_workers():
    pytest.importorskip("dagster_celery", reason="the scale extra is not installed")
    root = Path(tempfile.mkdtemp(prefix="lms-scale-"))  # short: PostgreSQL's socket lives under it
    try:
        config_file = demo_config(root, 6)
        with Deployment(root / "deployment", config_file, n_groups=1, pool_limit=1) as deployment:
            workers = [deployment.start_worker(name) for name in ("w1", "w2")]
            deployment.submit(START)
            victim = _busy_step_pid(deployment.scale.work_root, timeout=180)
            worker_pids = {p.pid for w in workers for p in [psutil.Process(w.pid), *psutil.Process(w.pid).children()]}
            assert victim in worker_pids, "the killed process is one of our workers'"
            os.kill(victim, signal.SIGKILL)
            counts = deployment.wait(1, timeout=300)
            assert counts == {"SUCCESS": 1}, deployment.log_text()[-3000:]
            assert "WorkerLostError" in deployment.log_text() or "exited prematurely" in deployment.log_text()

            spans = _step_spans(deployment.home)
            assert sorted(spans) == ["sync_canvas", "sync_oneroster", "sync_unified"]
            for op, intervals in spans.items():
                (first, second) = sorted(intervals)  # two connections per provider
                assert first[1] <= second[0], f"{op}: two steps at once under a pool of 1: {first}, {second}"

            analysts = deployment.root / "analysts.duckdb"
            deployment.scale.lake().analysts_db(analysts, "lms")
            with duckdb.connect(str(analysts), read_only=True) as conn:
                assert _verify(conn, load_settings(config_file), [START]) == []
                assert conn.execute("SELECT count(*) FROM lms.enrollment_change_sets").fetchone()[0] == 6
            # One current file per table and connection-day: the killed attempt left nothing in the catalog.
            live = deployment.scale.lake().files(LIVE)
            assert all(len(paths) == len({p.parent for p in paths}) for paths in live.values())
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_whole_worker_lost_fails_its_run_cleanly_and_a_re_run_completes_every_connection_day():
    """The worker and its pool process SIGKILLed at once (a lost machine): the SQL broker does not give its message
    back, so the run would wait forever; run monitoring fails it at its max runtime, and a re-run completes it."""
    pytest.importorskip("dagster_celery", reason="the scale extra is not installed")
    root = Path(tempfile.mkdtemp(prefix="lms-scale-"))
    try:
        config_file = demo_config(root, 3)
        with Deployment(root / "deployment", config_file, n_groups=1) as deployment:
            deployment.start_worker("w1")
            deployment.submit(START, tags={"dagster/max_runtime": "90"})
            _busy_step_pid(deployment.scale.work_root, timeout=180)
            deployment.kill_worker("w1")
            first = deployment.wait(1, timeout=300)
            assert first.get("SUCCESS", 0) == 0 and first.get("FAILURE", 0) + first.get("CANCELED", 0) == 1, first

            deployment.start_worker("w2")
            deployment.submit(START)
            second = deployment.wait(2, timeout=300)
            assert second.get("SUCCESS") == 1, (second, deployment.log_text()[-3000:])
            analysts = deployment.root / "analysts.duckdb"
            deployment.scale.lake().analysts_db(analysts, "lms")
            with duckdb.connect(str(analysts), read_only=True) as conn:
                assert _verify(conn, load_settings(config_file), [START]) == []
                assert conn.execute("SELECT count(*) FROM lms.enrollment_change_sets").fetchone()[0] == 3
    finally:
        shutil.rmtree(root, ignore_errors=True)
