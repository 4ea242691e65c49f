"""What an operator scans in the Checks tab: every published table's contract and the change-set and grade rules,
one result per partition, passing on good data and failing (with the reason) when the rule is broken.

Rules are broken the way they would be in production: a provider answering 5xx, a mapping that matches nothing, a
frame the pandera model refuses; or, where the pipeline itself never produces the fault (duplicate edges, change
sets that do not add up), by corrupting the stored rows the check reads, which is what the check is there to catch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import duckdb
import pytest
import yaml

from lms_pipeline import check_rules, checks
from lms_pipeline.config import load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import partition_key
from lms_pipeline.warehouse import Warehouse
from lms_pipeline_tests.conftest import START, Pipeline, failure_message, make_pipeline
from lms_pipeline_tests.test_pipeline_grades import DAYS as GRADE_DAYS
from lms_pipeline_tests.test_pipeline_grades import GradesPipeline

DAY2, DAY3 = START + timedelta(days=1), START + timedelta(days=2)


def evaluations(instance: dg.DagsterInstance, run_id: str | None = None) -> dict[tuple[str, str, str], object]:
    """(asset, check, partition) -> the latest AssetCheckEvaluation in the instance (of one run, if given)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records if \
        run_id else instance.get_event_records(dg.EventRecordsFilter(dg.DagsterEventType.ASSET_CHECK_EVALUATION),
                                               limit=100_000, ascending=True)  # fmt: skip
    out = {}
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        out[(evaluation.asset_key.to_user_string(), evaluation.check_name, evaluation.partition)] = evaluation
    return out


@pytest.fixture(scope="module")
def three_days(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        make_pipeline(tmp_path_factory.mktemp("checks"), monkeypatch) as pipe,
    ):
        pipe.run_days(3)
        yield pipe


def test_every_check_of_every_partition_passes_on_good_data(three_days: Pipeline) -> None:
    found = evaluations(three_days.instance)
    defs = three_days.defs()
    job_checks = {
        (key.asset_key.to_user_string(), key.name)
        for key in defs.resolve_job_def(ROSTER_JOB).asset_layer.asset_graph.asset_check_keys
        if not key.name.startswith("fresh_")
    }
    expected_tables = {name for names in checks.STEP_TABLES.values() for name in names}
    assert {asset for asset, name in job_checks if name == check_rules.CONTRACT} == expected_tables
    for offset in range(3):
        for cid in three_days.worlds:
            key = partition_key(cid, START + timedelta(days=offset))
            for asset, name in job_checks - {("enrollment_changes", "no_mass_drop")}:
                evaluation = found.get((asset, name, key))
                assert evaluation is not None, f"{asset}:{name} has no result for {key}"
                assert evaluation.passed, f"{asset}:{name} failed for {key}: {evaluation.description}"
    arithmetic = found[("enrollment_change_sets", "change_set_arithmetic", partition_key("conn-all", DAY3))]
    assert arithmetic.metadata["courses_compared"].value > 0, "the arithmetic was checked on real courses"


def corrupted(pipe: Pipeline, sql: str, params: list) -> Warehouse:
    with duckdb.connect(str(pipe.db)) as conn:
        conn.execute(sql, params)
    return Warehouse(pipe.db)


def test_a_duplicate_edge_fails_unique_edges_and_the_contract(pipeline: Pipeline) -> None:
    pipeline.run_days(1, ["conn-all"])
    store = Warehouse(pipeline.db)
    assert check_rules.unique_edges(store, "course_student_edges", "conn-all", START).passed
    store = corrupted(pipeline, "INSERT INTO lms.course_student_edges SELECT * FROM lms.course_student_edges "
                      "WHERE snapshot_date = ? ORDER BY course_id, student_id LIMIT 1", [START])  # fmt: skip
    outcome = check_rules.unique_edges(store, "course_student_edges", "conn-all", START)
    assert not outcome.passed and outcome.metadata["duplicate_edges"] == 1
    assert outcome.metadata["course_ids_with_duplicates"] == ["crs-00001"]
    contract = check_rules.contract(store, "course_student_edges", "conn-all", START)
    assert not contract.passed and "duplicate key in 2 row(s)" in contract.description


def test_change_sets_that_do_not_add_up_or_drop_unexposed_rosters_fail(pipeline: Pipeline) -> None:
    pipeline.run_days(2, ["conn-all"])
    store = Warehouse(pipeline.db)
    assert check_rules.change_set_arithmetic(store, "conn-all", DAY2).passed
    assert check_rules.no_drops_when_not_exposed(store, "conn-all", DAY2).passed
    drops = pipeline.query("SELECT course_id FROM lms.enrollment_changes WHERE snapshot_date = ? "
                           "AND change_type = 'dropped' ORDER BY course_id", [DAY2])["course_id"]  # fmt: skip
    assert len(drops), "the fixture world drops someone on day 2"
    course = drops.iloc[0]
    store = corrupted(pipeline, "DELETE FROM lms.enrollment_changes WHERE snapshot_date = ? AND course_id = ? "
                      "AND change_type = 'dropped'", [DAY2, course])  # fmt: skip
    outcome = check_rules.change_set_arithmetic(store, "conn-all", DAY2)
    assert not outcome.passed and course in outcome.metadata["courses"]
    assert "the change-set row says" in outcome.description
    corrupted(pipeline, "UPDATE lms.course_rosters SET roster_status = 'not_exposed', student_count = NULL "
              "WHERE snapshot_date = ? AND course_id IN (SELECT course_id FROM lms.enrollment_changes "
              "WHERE snapshot_date = ? AND change_type = 'dropped')", [DAY2, DAY2])  # fmt: skip
    outcome = check_rules.no_drops_when_not_exposed(store, "conn-all", DAY2)
    assert not outcome.passed and outcome.metadata["drops_from_unexposed_rosters"] > 0


def test_a_provider_answering_5xx_and_hiding_rosters_is_a_warning_not_a_stop(pipeline: Pipeline) -> None:
    pipeline.options["conn-all"] = {"retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.02,
                                              "max_attempts": 5}}  # fmt: skip
    pipeline.run_days(1, ["conn-all"])
    pipeline.app.inject_fault("conn-all", status=503, times=3)
    result = pipeline.run("conn-all", DAY2)
    assert result.success, failure_message(result)
    found = evaluations(pipeline.instance, result.run_id)
    health = found[("sync_log", "sync_health", partition_key("conn-all", DAY2))]
    assert not health.passed and health.severity == dg.AssetCheckSeverity.WARN
    assert health.metadata["server_errors"].value == 3
    assert "got a 5xx, above max_server_error_share" in health.description
    store = corrupted(pipeline, "UPDATE lms.course_rosters SET roster_status = 'not_exposed', student_count = NULL "
                      "WHERE snapshot_date = ? AND course_id <= 'crs-00020'", [DAY2])  # fmt: skip
    exposure = check_rules.exposure_share(store, "conn-all", DAY2, max_fall=0.1)
    assert not exposure.passed and exposure.metadata["previous_exposed_share"] == 1.0


def test_a_refused_frame_shows_as_a_failed_contract_check_of_its_table(pipeline: Pipeline) -> None:
    pipeline.run_days(1, ["conn-all"])
    activity = {
        "id": "act-x",
        "course_id": "crs-00001",
        "student_id": "stu-00001",
        "content_id": "cnt-00001",
        "is_completed": False,
        "progress_percentage": 150,
        "updated_at": "2026-09-02T01:00:00Z",
    }
    pipeline.app.inject_fault("conn-all", status=200, body=json.dumps([activity]), endpoint="activity", times=1)
    result = pipeline.run("conn-all", DAY2)
    assert not result.success and "progress_percentage" in failure_message(result)
    evaluation = evaluations(pipeline.instance)[("student_progress", "contract", partition_key("conn-all", DAY2))]
    assert not evaluation.passed
    assert "refused before the write" in evaluation.description
    assert "column 'progress_percentage'" in evaluation.description


def test_a_grade_match_rate_below_the_threshold_stops_the_write_back(tmp_path) -> None:  # noqa: ANN001
    grades = GradesPipeline(tmp_path)
    grades.write_config(write_back={"enabled": True, "dry_run": True})
    config = yaml.safe_load(grades.config.read_text())
    config["checks"] = {"min_grade_match_rate": 0.999}
    grades.config.write_text(yaml.safe_dump(config))
    day = GRADE_DAYS[0]
    job = build_defs(load_settings(grades.config), str(grades.config)).resolve_job_def(ROSTER_JOB)
    result = job.execute_in_process(partition_key=partition_key("grades-lms", day), instance=grades.instance,
                                    raise_on_error=False)  # fmt: skip
    assert not result.success
    found = evaluations(grades.instance, result.run_id)
    rate = found[("grade_discrepancies", "grade_match_rate", partition_key("grades-lms", day))]
    assert not rate.passed and "below min_grade_match_rate 100%" in rate.description
    assert rate.metadata["compared"].value > 0
    assert grades.query("SELECT count(*) AS n FROM lms.grade_sync_log")["n"].iloc[0] == 0, "no write-back ran"
    assert "grade_sync" not in {e.step_key for e in result.all_events if e.is_step_success}
