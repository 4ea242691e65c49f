"""What the Dagster UI shows an operator: loadable definitions, described assets with column schemas."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from lms_pipeline.definitions import ROSTER_JOB, defs

REPO = Path(__file__).resolve().parent.parent
TABLES = ["raw_course_pages", "sync_log", "course_rosters", "course_student_edges", "class_student_edges",
          "enrollment_changes", "enrollment_change_sets", "raw_progress_pages", "course_contents", "student_progress",
          "course_progress_summary", "raw_grade_pages", "lms_grades", "grade_discrepancies",
          "grade_sync_log", "raw_sis_roster_pages", "roster_discrepancies"]  # fmt: skip


@pytest.mark.slow  # a Dagster process: ~15 s
def test_workspace_validates_from_the_cli() -> None:
    dagster = Path(sys.executable).with_name("dagster")
    env = {**os.environ, "DAGSTER_HOME": str(REPO / "data" / "dagster_home")}
    out = subprocess.run([str(dagster), "definitions", "validate", "-w", "workspace.yaml"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_table_is_an_asset_with_a_description_and_column_schema() -> None:
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    assert set(TABLES) == set(specs) - {"daily_exports"}, "every asset but the exports' files is a table"
    for name in TABLES:
        assert specs[name].description, f"{name} has no description"
        schema = specs[name].metadata["dagster/column_schema"]
        assert {c.name for c in schema.columns} >= {"connection_id", "snapshot_date"}
        assert all(c.description for c in schema.columns), f"{name} has an undocumented column"


def test_daily_schedule_runs_every_connection_and_the_guard_is_blocking() -> None:
    schedule = defs.resolve_schedule_def(f"{ROSTER_JOB}_schedule")
    assert schedule.cron_schedule == "30 5 * * *"
    (change_set,) = [
        a for a in defs.resolve_asset_graph().assets_defs if "no_mass_drop" in {k.name for k in a.check_keys}
    ]
    (spec,) = change_set.check_specs
    assert spec.blocking and spec.asset_key == dg.AssetKey("enrollment_changes")
    job = defs.resolve_job_def(ROSTER_JOB)
    assert isinstance(job.partitions_def, dg.MultiPartitionsDefinition)


def test_a_change_set_depends_on_the_previous_day_of_its_connection_so_backfills_run_in_order() -> None:
    assets_def = defs.resolve_assets_def("enrollment_changes")
    key = dg.AssetKey("enrollment_changes")
    mapping, partitions = assets_def.get_partition_mapping(key), assets_def.partitions_def
    day3 = partitions.subset_with_partition_keys(["district-canvas|2026-09-03"])
    first = partitions.subset_with_partition_keys(["district-canvas|2026-09-01"])
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(day3, partitions, partitions)
    assert list(upstream.partitions_subset.get_partition_keys()) == ["district-canvas|2026-09-02"]
    none = mapping.get_upstream_mapped_partitions_result_for_partitions(first, partitions, partitions)
    assert list(none.partitions_subset.get_partition_keys()) == []


def test_a_run_is_one_process_unless_its_run_config_asks_for_a_process_per_step() -> None:
    job = defs.resolve_job_def(ROSTER_JOB)
    (default,) = dg.validate_run_config(job, {})["execution"].values()
    assert list(default) == ["in_process"]
    (chosen,) = dg.validate_run_config(job, {"execution": {"config": {"multiprocess": {}}}})["execution"].values()
    assert list(chosen) == ["multiprocess"]
