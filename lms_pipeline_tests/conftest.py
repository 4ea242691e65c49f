"""One fixture world for the pipeline tests: the seeded simulator, served over real HTTP on 127.0.0.1.

``Pipeline`` writes a connections file pointing at the served simulator (``simulated_clock: true`` so the
partition date drives the simulator's clock), runs real Dagster jobs against a temporary DuckDB file, and reads
the results back.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from lms_pipeline.config import load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import partition_key
from lms_pipeline.providers.unified.simulator import SimulatorApp
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread

warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

START = date(2026, 9, 1)

# Three provider behaviours, small enough for fast tests, busy enough that 7 days hold every kind of change.
WORLDS = [
    WorldSpec("conn-all", seed=1, start_date=START, n_courses=40, roster_fields="both", remove_prob=0.02,
              deactivate_prob=0.03, rate_limit_every=6, retry_after_seconds=0),
    WorldSpec("conn-mixed", seed=2, start_date=START, n_courses=40, roster_exposure="mixed",
              exposure_flip_prob=0.15, roster_fields="students", classes="rosters", rate_limit_every=5),
    WorldSpec("conn-legacy", seed=3, start_date=START, n_courses=30, roster_fields="student_ids",
              classes="no_rosters", missing_timestamps_share=0.3),
]  # fmt: skip


# Tests that run Dagster jobs, real processes or big worlds: `make test` (CI) runs them, `make test-fast` does not.
SLOW_MODULES = ("test_pipeline_", "test_parallel_backfill", "test_run_killed", "test_warehouse_crash",
                "test_warehouse_concurrency", "test_secrets_sweep", "test_writeback_crash", "test_writeback_pipeline",
                "test_hostile_limits", "test_oracle_unified_sdk", "test_fetch_concurrency")  # fmt: skip
SLOW_FIXTURES = {"pipeline", "seven_days"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        if module.startswith(SLOW_MODULES) or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@dataclass
class Pipeline:
    tmp: Path
    base_url: str
    app: SimulatorApp
    worlds: dict[str, World]
    tokens: dict[str, str]
    instance: dg.DagsterInstance
    options: dict[str, dict] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.tmp / "warehouse.duckdb"

    @property
    def config_file(self) -> Path:
        return self.tmp / "connections.yaml"

    def write_config(self) -> Path:
        connections = [
            {
                "id": cid,
                "provider": "unified",
                "base_url": self.base_url,
                "token_env": f"TEST_TOKEN_{i}",
                # Full scans daily unless a test says otherwise: these worlds remove courses and flip roster
                # exposure, which incremental polls cannot see (test_pipeline_incremental covers those).
                "options": {"simulated_clock": True, "page_size": 10, "full_scan_every_days": 1,
                            "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
                            **self.options.get(cid, {})},
            }
            for i, cid in enumerate(self.worlds)
        ]  # fmt: skip
        self.config_file.write_text(
            yaml.safe_dump({"start_date": START.isoformat(), "warehouse": str(self.db), "connections": connections})
        )
        return self.config_file

    def defs(self) -> dg.Definitions:
        return build_defs(load_settings(self.write_config()), config_file=str(self.config_file))

    def run(self, connection_id: str, day: date, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
        job = self.defs().resolve_job_def(ROSTER_JOB)
        return job.execute_in_process(
            partition_key=partition_key(connection_id, day),
            instance=self.instance,
            run_config=run_config or {},
            raise_on_error=False,
        )

    def run_days(self, days: int, connections: list[str] | None = None) -> None:
        for offset in range(days):
            for cid in connections or list(self.worlds):
                result = self.run(cid, START + timedelta(days=offset))
                assert result.success, failure_message(result)

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with duckdb.connect(str(self.db), read_only=True) as conn:
            return conn.execute(sql, params or []).df()

    def rows(self, sql: str, params: list | None = None) -> set[tuple]:
        with duckdb.connect(str(self.db), read_only=True) as conn:
            return set(conn.execute(sql, params or []).fetchall())


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """The failing step's error text, as an operator reads it in the UI."""
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            messages.append(f"{event.step_key}: {data.error.message if data.error else ''}")
            if data.user_failure_data and data.user_failure_data.description:
                messages.append(data.user_failure_data.description)
    return "\n".join(messages)


@contextmanager
def make_pipeline(
    tmp: Path,
    monkeypatch: pytest.MonkeyPatch,
    specs: list[WorldSpec] | None = None,
    options: dict[str, dict] | None = None,
) -> Iterator[Pipeline]:
    worlds = {spec.connection_id: World(spec) for spec in specs or WORLDS}
    tokens = {cid: f"secret-token-{cid}-0123456789" for cid in worlds}
    for i, cid in enumerate(worlds):
        monkeypatch.setenv(f"TEST_TOKEN_{i}", tokens[cid])
    app = SimulatorApp(worlds.values(), tokens)
    with serve_in_thread(app, host="127.0.0.1", port=0) as base_url, dg.instance_for_test() as instance:
        yield Pipeline(tmp, base_url, app, worlds, tokens, instance, options or {})


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with make_pipeline(tmp_path, monkeypatch) as pipe:
        yield pipe


@pytest.fixture(scope="session")
def seven_days(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Seven days of the three fixture connections, materialized once per session (tests only read it)."""
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        make_pipeline(tmp_path_factory.mktemp("seven_days"), monkeypatch) as pipe,
    ):
        pipe.run_days(7)
        yield pipe
