"""The request budget in real Dagster runs: a Canvas connection read four requests at a time stores exactly what
one read one at a time stores, and a course listing failing mid-scan fails the run with nothing stored."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from lms_pipeline.config import load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import partition_key
from lms_pipeline.providers.canvas.simulator import CanvasSimulatorApp
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread
from lms_pipeline_tests.conftest import failure_message

DAY1, DAY2 = date(2026, 9, 1), date(2026, 9, 2)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
# Two connections to one world (same world_id and seed): one read a request at a time, one four at a time.
BUDGETS = {"canvas-serial": 1, "canvas-wide": 4}
SPEC = {"seed": 12, "world_id": "budget-school", "n_courses": 20, "mean_roster_size": 25, "n_students": 300,
        "roster_exposure": "mixed", "classes": "rosters", "progress": False, "start_date": DAY1}  # fmt: skip


@dataclass
class Served:
    app: CanvasSimulatorApp
    job: dg.JobDefinition
    instance: dg.DagsterInstance
    db: Path

    def run(self, cid: str, day: date) -> dg.ExecuteInProcessResult:
        return self.job.execute_in_process(partition_key=partition_key(cid, day), instance=self.instance,
                                           raise_on_error=False, run_config=QUIET)  # fmt: skip

    def frame(self, sql: str, *params: object) -> pd.DataFrame:
        with duckdb.connect(str(self.db), read_only=True) as conn:
            return conn.execute(sql, list(params)).df()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("budget")
    worlds = [World(WorldSpec(cid, **SPEC)) for cid in BUDGETS]  # type: ignore[arg-type]
    tokens = {cid: f"canvas-token-{cid}-s3cret" for cid in BUDGETS}
    app = CanvasSimulatorApp(worlds, tokens, bucket_capacity=None)
    with pytest.MonkeyPatch.context() as env, serve_in_thread(app, latency_ms=5) as base_url:
        connections = []
        for i, (cid, budget) in enumerate(BUDGETS.items()):
            env.setenv(f"TEST_BUDGET_TOKEN_{i}", tokens[cid])
            connections.append({
                "id": cid, "provider": "canvas", "base_url": f"{base_url}/canvas/{cid}",
                "token_env": f"TEST_BUDGET_TOKEN_{i}",
                "options": {"simulated_clock": True, "max_concurrent_requests": budget, "page_size": 10,
                            "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05}},
            })  # fmt: skip
        config = tmp / "connections.yaml"
        config.write_text(yaml.safe_dump({"start_date": DAY1.isoformat(), "warehouse": str(tmp / "w.duckdb"),
                                          "connections": connections}))  # fmt: skip
        job = build_defs(load_settings(config), str(config)).resolve_job_def(ROSTER_JOB)
        with dg.instance_for_test() as instance:
            yield Served(app, job, instance, tmp / "w.duckdb")


def test_a_connection_read_four_requests_at_a_time_stores_what_one_read_one_at_a_time_stores(served: Served) -> None:
    for cid in BUDGETS:
        result = served.run(cid, DAY1)
        assert result.success, failure_message(result)
    tables = {
        "course_rosters": "course_id, roster_status, student_count",
        "course_student_edges": "course_id, student_id",
        "class_student_edges": "class_id, course_id, student_id",
        "raw_course_pages": "endpoint, course_id, page_index, status_code, payload",
    }
    for table, columns in tables.items():
        stored = {cid: served.frame(f"SELECT {columns} FROM lms.{table} WHERE connection_id = ? AND snapshot_date = ? "
                                    f"ORDER BY ALL", cid, DAY1) for cid in BUDGETS}  # fmt: skip
        serial, wide = stored.values()
        assert len(serial) > 0, table
        pd.testing.assert_frame_equal(serial, wide, obj=table)
    requests = served.frame("SELECT connection_id, requests FROM lms.sync_log WHERE snapshot_date = ?", DAY1)
    assert requests["requests"].nunique() == 1, "the same requests at either budget"


def test_a_course_listing_failing_mid_scan_fails_the_run_and_stores_nothing_for_the_day(served: Served) -> None:
    cid = "canvas-wide"
    if not served.frame("SELECT 1 FROM lms.sync_log WHERE connection_id = ? AND snapshot_date = ?", cid, DAY1).size:
        assert served.run(cid, DAY1).success
    before = served.frame("SELECT count(*) AS n FROM lms.raw_course_pages WHERE connection_id = ?", cid)["n"][0]
    served.app.inject_fault(cid, status=404, endpoint="sections", course_id=5)
    result = served.run(cid, DAY2)
    assert not result.success
    message = failure_message(result)
    assert "nothing was stored" in message and f"connection {cid!r}" in message and "/courses/5/sections" in message
    for table in ("raw_course_pages", "course_rosters", "course_student_edges", "sync_log"):
        day2 = served.frame(f"SELECT count(*) AS n FROM lms.{table} WHERE connection_id = ? AND snapshot_date = ?",
                            cid, DAY2)["n"][0]  # fmt: skip
        assert day2 == 0, f"{table} holds rows of the failed day"
    after = served.frame("SELECT count(*) AS n FROM lms.raw_course_pages WHERE connection_id = ?", cid)["n"][0]
    assert after == before, "the earlier day is untouched"
