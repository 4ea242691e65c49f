"""The scaled deployment's Dagster side on PostgreSQL: a grouped partition's run is stored in the PostgreSQL instance
(runs, events, materializations), its connection-days land in the lake equal to the simulator's truth, and the next
day of a connection reads the previous one back from the lake (its change set is not a baseline)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import psycopg2
import pytest

from lms_pipeline.config import load_settings
from lms_pipeline.demo import _verify
from lms_pipeline.scale import postgres
from lms_pipeline.scale.definitions import GROUP_ASSET, GROUP_JOB, ScaleConfig, build_scale_defs
from lms_pipeline.scale.instance import write_instance
from lms_pipeline_tests import scale_support
from lms_pipeline_tests.scale_support import START, demo_config

own_postgres = scale_support.own_postgres
pytestmark = pytest.mark.slow


def test_a_group_run_on_the_postgres_instance_lands_every_connection_day_in_the_lake_equal_to_the_truth(
    own_postgres, tmp_path: Path
):
    config_file = demo_config(tmp_path, 3)  # one connection of each provider: each its own op and pool
    settings = load_settings(config_file)
    scale = ScaleConfig(own_postgres, tmp_path / "lake", tmp_path / "work", n_groups=1)
    scale.lake().ensure()
    home = tmp_path / "home"
    write_instance(home, postgres.sqlalchemy_url(postgres.url(own_postgres, "dagster")))
    job = build_scale_defs(settings, str(config_file), scale, executor=dg.in_process_executor).resolve_job_def(
        GROUP_JOB
    )
    days = [START, START + timedelta(days=1)]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for day in days:
            result = job.execute_in_process(partition_key=f"g000|{day}", instance=instance, raise_on_error=False)
            assert result.success, [e.message for e in result.all_events if e.is_failure]
        materialized = instance.get_materialized_partitions(dg.AssetKey(GROUP_ASSET))
        record = instance.get_latest_materialization_event(dg.AssetKey(GROUP_ASSET))
    assert materialized == {f"g000|{day}" for day in days}
    assert record.asset_materialization.metadata["connections"].value == 3

    # The runs and their events are rows of the PostgreSQL database, not of files under DAGSTER_HOME.
    with psycopg2.connect(postgres.url(own_postgres, "dagster")) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs")
        assert [r[0] for r in cur.fetchall()] == ["SUCCESS", "SUCCESS"]
        cur.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert cur.fetchone()[0] == 2
    assert not list(home.glob("**/*.db")), "no SQLite storage beside dagster.yaml"

    analysts = tmp_path / "analysts.duckdb"
    scale.lake().analysts_db(analysts, "lms")
    with duckdb.connect(str(analysts), read_only=True) as conn:
        assert _verify(conn, settings, days) == []
        baselines = conn.execute(
            "SELECT snapshot_date, count(*) FILTER (WHERE is_baseline) FROM lms.enrollment_change_sets GROUP BY 1 "
            "ORDER BY 1"
        ).fetchall()
    assert baselines == [(days[0], 3), (days[1], 0)]  # day 2 compared with day 1, read back from the lake
