"""One connection's day on any worker: the single-machine pipeline, unchanged, run on a working warehouse that is
filled from the lake and emptied back into it.

A worker holds no state between steps. Before a step it loads the connection's live rows from the lake into a fresh
DuckDB file of its own (what the day's run reads of earlier days: the previous snapshot, high-water marks, journals),
runs the ordinary roster job for that (connection, day) in this process, and commits the day's rows of every table
to the lake in one transaction (``Lake.replace_partition``), the published layer only if ``published.gate`` lets
the day be shown. So any worker, on any machine, can take any connection's next day, and a step killed anywhere
before its commit leaves the lake as it was; re-running it redoes the day whole.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg

from lms_pipeline import published
from lms_pipeline.config import DUCKDB_ENV, load_settings
from lms_pipeline.partitions import partition_key
from lms_pipeline.scale.lake import Commit, Lake
from lms_pipeline.warehouse import SCHEMA, TABLES, Warehouse

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class ConnectionDayError(RuntimeError):
    """A connection's day failed on a worker; the lake keeps the day as it was."""


@dataclass(frozen=True)
class DayResult:
    connection_id: str
    snapshot_date: date
    commit: Commit
    hydrated_rows: int
    worker: str


def working_folder(work_root: Path) -> Path:
    """This process's working folder: one per worker process, emptied before each step."""
    return work_root / f"{socket.gethostname()}-{os.getpid()}"


@contextmanager
def _warehouse_env(path: Path) -> Iterator[None]:
    """The ordinary pipeline finds its warehouse through LMS_PIPELINE_DUCKDB (``Settings.warehouse_path``)."""
    previous = os.environ.get(DUCKDB_ENV)
    os.environ[DUCKDB_ENV] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(DUCKDB_ENV, None)
        else:
            os.environ[DUCKDB_ENV] = previous


@functools.lru_cache(maxsize=4)
def _roster_job(config_file: str, warehouse: str) -> dg.JobDefinition:
    """The single-machine job, built once per worker process and working warehouse (imports and definitions cost
    about 2 s; a step then costs the pipeline's own work)."""
    from lms_pipeline.definitions import ROSTER_JOB, build_defs

    with _warehouse_env(Path(warehouse)):
        return build_defs(load_settings(config_file), config_file).resolve_job_def(ROSTER_JOB)


def sync_connection_day(config_file: str, lake: Lake, work_root: Path, connection_id: str, day: date) -> DayResult:
    """Run one (connection, day) of the ordinary pipeline against the lake; see the module docstring."""
    folder = working_folder(work_root)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path = folder / "warehouse.duckdb"
    warehouse = Warehouse(path)
    with warehouse.session() as conn:
        hydrated = lake.hydrate(conn, SCHEMA, TABLES, connection_id)
    with _warehouse_env(path):
        job = _roster_job(config_file, str(path))
        result = job.execute_in_process(partition_key=partition_key(connection_id, day),
                                        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                                        run_config=QUIET)  # fmt: skip
    # Committed whether the run succeeded or not: the pipeline leaves its warehouse consistent after a failed step
    # (every write is one transaction), so the lake then holds what the single-machine live file would (a held
    # day's change_set_holds row; the day's earlier tables), and the gate keeps a held or failed day unpublished.
    with warehouse.session() as conn:
        blocked = published.gate(conn, SCHEMA, connection_id, day)
        shown = list(TABLES) if blocked is None else [t for t in TABLES if t in published.UNGATED]
        commit = lake.replace_partition(conn, SCHEMA, list(TABLES), connection_id, day, publish=shown)
    if not result.success:
        failures = [
            f"{e.step_key}: {e.step_failure_data.error.message.strip() if e.step_failure_data.error else 'failed'}"
            for e in result.all_events
            if e.is_step_failure
        ]
        raise ConnectionDayError(
            f"connection {connection_id!r} day {day}: the pipeline failed ({'; '.join(failures) or 'see the run'}); "
            f"the lake holds what it stored (snapshot {commit.snapshot_id}), the day is not published"
        )
    shutil.rmtree(folder, ignore_errors=True)
    return DayResult(connection_id, day, commit, hydrated, folder.name)
