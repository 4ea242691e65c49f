"""Steps on Celery workers (separate processes) through the daemon, on the PostgreSQL instance: a worker process
SIGKILLed in the middle of a connection-day loses nothing; its step is given back to the queue and run again
(``task_acks_late`` + ``task_reject_on_worker_lost``), and every connection-day then equals the simulator's truth."""

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

pytestmark = pytest.mark.slow


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


def test_a_worker_process_killed_mid_step_loses_no_connection_day():
    pytest.importorskip("dagster_celery", reason="the scale extra is not installed")
    root = Path(tempfile.mkdtemp(prefix="lms-scale-"))  # short: PostgreSQL's socket lives under it
    try:
        config_file = demo_config(root, 6)
        with Deployment(root / "deployment", config_file, n_groups=1) as deployment:
            workers = [deployment.start_worker(name) for name in ("w1", "w2")]
            deployment.submit(START)
            victim = _busy_step_pid(deployment.scale.work_root, timeout=180)
            worker_pids = {p.pid for w in workers for p in [psutil.Process(w.pid), *psutil.Process(w.pid).children()]}
            assert victim in worker_pids, "the killed process is one of our workers'"
            os.kill(victim, signal.SIGKILL)
            counts = deployment.wait(1, timeout=300)
            assert counts == {"SUCCESS": 1}, deployment.log_text()[-3000:]
            assert "WorkerLostError" in deployment.log_text() or "exited prematurely" in deployment.log_text()

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
