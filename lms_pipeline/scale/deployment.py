"""A whole scaled deployment on this machine, started and stopped by the project: PostgreSQL, the Dagster daemon on
the PostgreSQL instance, Celery workers (separate processes), the lake. ``make scale-demo`` and the scale tests
drive it; on a cluster the same pieces are separate pods (docs/scale-out.md, Kubernetes).

Every process started here is in a session of its own and is ended by its id (SIGTERM, then SIGKILL after a bounded
wait); nothing else on the machine is touched.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

import yaml

from lms_pipeline.config import REPO_ROOT
from lms_pipeline.scale import celery_app, postgres
from lms_pipeline.scale.definitions import GROUP_JOB, ScaleConfig
from lms_pipeline.scale.groups import group_keys, group_partition_key
from lms_pipeline.scale.instance import write_instance

BIN = Path(sys.executable).parent
PROVIDERS = ("unified", "canvas", "oneroster")


def demo_connections(n: int, start: date) -> dict:
    """A connections file of ``n`` small embedded connections, the providers in turn, each its own seeded world."""
    connections = []
    for i in range(n):
        provider = PROVIDERS[i % len(PROVIDERS)]
        conn = {"id": f"tenant-{i:04d}-{provider}", "provider": provider, "token_env": f"LMS_TOKEN_TENANT_{i:04d}",
                "simulator": {"seed": 1000 + i, "n_courses": 10, "n_students": 120, "progress": False,
                              # Small worlds: one removed course would be a mass drop (the guard holds the day).
                              "remove_prob": 0, "deactivate_prob": 0, "drop_prob": 0.01,
                              # A new course without updated_at is invisible to an incremental poll until the
                              # weekly full scan (by design), which the truth check does not allow for.
                              "missing_timestamps_share": 0}}  # fmt: skip
        if provider == "canvas":
            conn["options"] = {"account_id": "self"}
        elif provider == "oneroster":
            conn["options"] = {"client_id": "lms-pipeline"}
        connections.append(conn)
    return {"start_date": start.isoformat(), "warehouse": "data/scale/unused.duckdb", "connections": connections}


class Deployment:
    """PostgreSQL, the daemon and workers under ``root`` (data, logs, the instance), for ``connections_file``."""

    def __init__(
        self, root: Path, connections_file: Path, n_groups: int, max_concurrent_runs: int = 4, pool_limit: int = 4
    ) -> None:
        self.root = root.resolve()
        self.connections_file = connections_file.resolve()
        self.n_groups = n_groups
        self.max_concurrent_runs = max_concurrent_runs
        self.pool_limit = pool_limit
        self.home = self.root / "dagster_home"
        self.logs = self.root / "logs"
        self.pg_data = self.root / "pg"
        self.daemon: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.scale: ScaleConfig | None = None
        self.env: dict[str, str] = {}

    # -- starting and stopping ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        base = postgres.start(self.pg_data)
        self.scale = ScaleConfig(base, self.root / "lake", self.root / "work", self.n_groups)
        write_instance(self.home, postgres.sqlalchemy_url(postgres.url(base, "dagster")),
                       max_concurrent_runs=self.max_concurrent_runs, pool_limit=self.pool_limit)  # fmt: skip
        self.scale.lake().ensure()
        workspace = self.root / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
            "module_name": "lms_pipeline.scale.definitions", "attribute": "defs",
            "working_directory": str(REPO_ROOT), "location_name": "lms_pipeline_scale"}}]}))  # fmt: skip
        self.env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "LMS_PIPELINE_CONFIG": str(self.connections_file),
            "LMS_SCALE_POSTGRES_URL": base,
            "LMS_SCALE_LAKE": str(self.scale.lake_root),
            "LMS_SCALE_WORK": str(self.scale.work_root),
            "LMS_SCALE_GROUPS": str(self.n_groups),
        }
        self.daemon = self._spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])

    def start_worker(self, name: str) -> subprocess.Popen:
        process = self._spawn(name, celery_app.worker_command(name))
        self.workers[name] = process
        return process

    def stop_worker(self, name: str) -> None:
        _end(self.workers.pop(name))

    def kill_worker(self, name: str) -> None:
        """SIGKILL a worker and its pool processes at once, as when its machine is lost."""
        process = self.workers.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)

    def stop(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)
        if self.daemon is not None:
            _end(self.daemon)
            self.daemon = None
        postgres.stop(self.pg_data)

    def __enter__(self) -> Deployment:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                start_new_session=True)  # fmt: skip

    # -- runs ---------------------------------------------------------------------------------------------------

    def submit(self, day: date, groups: Iterable[str] | None = None, tags: dict[str, str] | None = None) -> list[str]:
        """Queue one run per group for ``day`` (``dagster job backfill``: the daemon launches them), with ``tags``
        (``dagster/max_runtime``: seconds before run monitoring fails the run)."""
        keys = [group_partition_key(g, day) for g in (groups or group_keys(self.n_groups))]
        subprocess.run(
            [str(BIN / "dagster"), "job", "backfill", "-w", str(self.root / "workspace.yaml"), "-j", GROUP_JOB,
             "--partitions", ",".join(keys), "--noprompt", *(["--tags", json.dumps(tags)] if tags else [])],
            env=self.env, cwd=REPO_ROOT, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        return keys

    def wait(self, expected_runs: int, timeout: float) -> dict[str, int]:
        """Wait until ``expected_runs`` runs have finished (or the timeout); returns runs per status."""
        import dagster as dg

        deadline = time.monotonic() + timeout
        with dg.DagsterInstance.from_config(str(self.home)) as instance:
            while True:
                counts: dict[str, int] = {}
                for run in instance.get_runs():
                    counts[run.status.value] = counts.get(run.status.value, 0) + 1
                finished = sum(counts.get(s, 0) for s in ("SUCCESS", "FAILURE", "CANCELED"))
                if finished >= expected_runs or time.monotonic() > deadline:
                    return counts
                if self.daemon is not None and self.daemon.poll() is not None:
                    raise RuntimeError(f"the Dagster daemon exited ({self.daemon.returncode}); see {self.logs}")
                time.sleep(1.0)

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


def _end(process: subprocess.Popen, wait: float = 20.0) -> None:
    """End a process we started and its session's group (a worker's pool children, the daemon's code server), by the
    group's id: SIGTERM, a bounded wait for the leader, then SIGKILL for whatever of the group is left."""
    group = process.pid  # started with start_new_session: its own process group
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue


def days(start: date, n: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(n)]
