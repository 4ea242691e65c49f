"""Real Dagster processes (CLI runs, the daemon) against a throwaway DAGSTER_HOME, stopped whatever happens.

The two slow tests start process trees (run workers, code servers, the daemon) that must see only temporary files
and the loopback simulator, and must all be gone when the test ends, even after a failed assertion. Every child
carries a marker variable in its environment, so a survivor is found by reading /proc, not by guessing names.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import yaml

from lms_pipeline.config import CONFIG_ENV, DUCKDB_ENV, load_settings
from lms_pipeline.simulator import World
from lms_pipeline.simulator.systems import world_spec
from lms_pipeline.warehouse import published_path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MODULE = "lms_pipeline.definitions"
MARKER_ENV = "LMS_PIPELINE_TEST_PROCESS"
T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll until ``predicate`` returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / max(interval, 1e-4)) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class DagsterSandbox:
    """A DAGSTER_HOME, a connections file and a DuckDB warehouse under one temporary directory."""

    root: Path
    start_date: date
    connections: list[dict[str, Any]]
    instance_settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        # Telemetry off: nothing but 127.0.0.1 may be contacted.
        (self.home / "dagster.yaml").write_text(
            yaml.safe_dump({"telemetry": {"enabled": False}, **self.instance_settings})
        )
        self.config_file.write_text(
            yaml.safe_dump(
                {"start_date": self.start_date.isoformat(), "warehouse": str(self.db), "connections": self.connections}
            )
        )
        (self.root / "workspace.yaml").write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "python_module": {
                                "module_name": MODULE,
                                "attribute": "defs",
                                "working_directory": str(REPO),
                                "location_name": "lms_pipeline",
                            }
                        }
                    ]
                }
            )
        )

    @property
    def home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def config_file(self) -> Path:
        return self.root / "connections.yaml"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace.yaml"

    @property
    def db(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def published(self) -> Path:
        return published_path(self.db)

    @property
    def marker(self) -> str:
        return str(self.root)

    def env(self) -> dict[str, str]:
        """The parent's environment without anything naming another instance, warehouse or token."""
        token_vars = {c["token_env"] for c in self.connections}
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in token_vars and k not in {"DAGSTER_HOME", CONFIG_ENV, DUCKDB_ENV, MARKER_ENV}
        }
        env.update(
            {
                "DAGSTER_HOME": str(self.home),
                CONFIG_ENV: str(self.config_file),
                DUCKDB_ENV: str(self.db),
                "PYTHONUNBUFFERED": "1",  # run logs reach the log file as they happen
                MARKER_ENV: self.marker,
            }
        )
        return env

    def true_edges(self, connection_id: str, day: date) -> set[tuple[str, str]]:
        """What course_student_edges must hold for (connection, day): the simulator's ground truth."""
        settings = load_settings(self.config_file)
        return World(world_spec(settings, settings.connection(connection_id))).true_course_edges(day)


@dataclass
class Started:
    name: str
    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


class ProcessGroups:
    """Starts commands each in a new session (so their whole tree is one process group) and stops them all."""

    def __init__(self, sandbox: DagsterSandbox) -> None:
        self.sandbox = sandbox
        self.started: list[Started] = []

    def start(self, name: str, args: list[str]) -> Started:
        log = self.sandbox.root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                args,
                cwd=REPO,
                env=self.sandbox.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = Started(name, proc, log)
        self.started.append(started)
        return started

    def run(self, name: str, args: list[str], timeout: float) -> Started:
        """Start a command and wait for it (bounded); its group is killed if it overruns."""
        started = self.start(name, args)
        try:
            started.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(started)
            raise AssertionError(f"{name} did not finish within {timeout:.0f}s:\n{started.tail()}") from None
        return started

    @staticmethod
    def signal_group(started: Started, sig: signal.Signals) -> None:
        with suppress(ProcessLookupError):
            os.killpg(started.proc.pid, sig)

    def kill(self, started: Started) -> None:
        self.signal_group(started, signal.SIGKILL)
        started.proc.wait(timeout=30)

    def stop_all(self, grace: float = 10.0) -> None:
        """SIGTERM every group (the daemon and code servers shut down cleanly), SIGKILL what is left, then kill any
        marked process that escaped its group. Raises if something still runs."""
        for started in self.started:
            if started.proc.poll() is None:
                self.signal_group(started, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for started in self.started:
            with suppress(subprocess.TimeoutExpired):
                started.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            self.signal_group(started, signal.SIGKILL)  # children outlive a leader that exited on SIGTERM
            started.proc.wait(timeout=30)
        for pid in marked_processes(self.sandbox.marker):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        survivors = wait_for_none(lambda: marked_processes(self.sandbox.marker), timeout=15)
        assert not survivors, f"processes still running after the test: {survivors}"


def wait_for_none(probe: Callable[[], list[int]], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    found = probe()
    for _ in range(int(timeout / 0.2) + 1):
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
        found = probe()
    return found


@contextmanager
def process_groups(sandbox: DagsterSandbox) -> Iterator[ProcessGroups]:
    groups = ProcessGroups(sandbox)
    try:
        yield groups
    finally:
        groups.stop_all()


def marked_processes(marker: str) -> list[int]:
    """Live processes (not zombies) whose environment carries this sandbox's marker."""
    needle = f"{MARKER_ENV}={marker}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if needle in Path(f"/proc/{entry}/environ").read_bytes() and _state(entry) != "Z":
                found.append(int(entry))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _state(pid: str) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def lock_holders(path: Path) -> set[int]:
    """Pids holding a flock/fcntl lock on ``path`` (read from /proc/locks, so the lock itself is never touched)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return set()
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        parts = line.split()
        if "->" in parts:  # a waiter, not a holder
            continue
        if len(parts) >= 6 and parts[5] == device:
            holders.add(int(parts[4]))
    return holders


def query(db: Path, sql: str, params: list | None = None) -> list[tuple]:
    """Read the warehouse read-only, closing the connection at once (an open one would block writers)."""
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def partition_digest(db: Path, table: str, connection_id: str, day: date, columns: str = "*") -> tuple[int, str]:
    """(row count, order-independent checksum) of one (connection, day) partition of a table."""
    rows = query(
        db,
        f"SELECT {columns} FROM lms.{table} WHERE connection_id = ? AND snapshot_date = ?",
        [connection_id, day],
    )
    digest = hashlib.sha256()
    for row in sorted(repr(r) for r in rows):
        digest.update(row.encode())
    return len(rows), digest.hexdigest()


def stored_edges(db: Path, connection_id: str, day: date) -> set[tuple[str, str]]:
    return set(
        query(
            db,
            "SELECT course_id, student_id FROM lms.course_student_edges WHERE connection_id = ? AND snapshot_date = ?",
            [connection_id, day],
        )
    )
