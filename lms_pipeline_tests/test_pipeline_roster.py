"""The roster mirror end to end: real Dagster runs, real HTTP on 127.0.0.1, a real DuckDB file, vs ground truth."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import pandas as pd
import pytest

from lms_pipeline.simulator import World, WorldSpec
from lms_pipeline_tests.conftest import START, Pipeline, failure_message, make_pipeline

DAYS = [START + timedelta(days=i) for i in range(7)]
KNOWN = {"exposed", "empty"}


def expected_changes(world: World, prev_day: date, day: date) -> set[tuple[str, str, str]]:
    """The true change set, written independently of the SQL: only courses whose roster is known count."""
    before, after = world.roster_status(prev_day), world.roster_status(day)
    old, new = world.true_course_edges(prev_day), world.true_course_edges(day)
    added = {
        (c, s, "added") for c, s in new - old if after[c] in KNOWN and before.get(c, "absent") in KNOWN | {"absent"}
    }
    dropped = {
        (c, s, "dropped") for c, s in old - new if before[c] in KNOWN and after.get(c, "absent") in KNOWN | {"absent"}
    }
    return added | dropped


def stored_changes(pipe: Pipeline, cid: str, day: date) -> set[tuple[str, str, str]]:
    return pipe.rows(
        "SELECT course_id, student_id, change_type FROM lms.enrollment_changes WHERE connection_id = ? "
        "AND snapshot_date = ?",
        [cid, day],
    )


@pytest.mark.parametrize("cid", ["conn-all", "conn-mixed", "conn-legacy"])
def test_every_day_edges_and_changes_equal_simulator_truth(seven_days: Pipeline, cid: str) -> None:
    world = seven_days.worlds[cid]
    for day in DAYS:
        edges = seven_days.rows(
            "SELECT course_id, student_id FROM lms.course_student_edges WHERE connection_id = ? AND snapshot_date = ?",
            [cid, day],
        )
        assert edges == world.true_course_edges(day), f"{cid} {day}"
        statuses = dict(seven_days.rows(
            "SELECT course_id, roster_status FROM lms.course_rosters WHERE connection_id = ? AND snapshot_date = ?",
            [cid, day],
        ))  # fmt: skip
        assert statuses == world.roster_status(day)
        classes = seven_days.rows(
            "SELECT class_id, course_id, student_id FROM lms.class_student_edges WHERE connection_id = ? "
            "AND snapshot_date = ?",
            [cid, day],
        )
        assert classes == world.true_class_edges(day)
    for prev_day, day in zip(DAYS, DAYS[1:], strict=False):
        assert stored_changes(seven_days, cid, day) == expected_changes(world, prev_day, day), f"{cid} {day}"


def test_first_snapshot_is_a_baseline_not_a_flood_of_adds(seven_days: Pipeline) -> None:
    sets = seven_days.query(
        "SELECT connection_id, is_baseline, previous_snapshot_date, added FROM lms.enrollment_change_sets "
        "WHERE snapshot_date = ?",
        [START],
    )
    assert len(sets) == 3 and sets["is_baseline"].all() and sets["previous_snapshot_date"].isna().all()
    assert (sets["added"] == 0).all()
    assert seven_days.rows("SELECT * FROM lms.enrollment_changes WHERE snapshot_date = ?", [START]) == set()
    later = seven_days.query("SELECT is_baseline FROM lms.enrollment_change_sets WHERE snapshot_date > ?", [START])
    assert len(later) == 18 and not later["is_baseline"].any()


def test_course_flipping_to_not_exposed_produces_zero_drops(seven_days: Pipeline) -> None:
    world = seven_days.worlds["conn-mixed"]
    flipped = [
        (course, day)
        for prev_day, day in zip(DAYS, DAYS[1:], strict=False)
        for course, status in world.roster_status(prev_day).items()
        if status == "exposed" and world.roster_status(day).get(course) == "not_exposed"
    ]
    assert flipped, "the fixture world should flip at least one exposed course to not_exposed"
    for course, day in flipped:
        rows = seven_days.rows(
            "SELECT * FROM lms.enrollment_changes WHERE connection_id = 'conn-mixed' AND course_id = ? "
            "AND snapshot_date = ?",
            [course, day],
        )
        assert rows == set(), f"{course} went not_exposed on {day} and must not drop anyone"


def test_removed_and_deactivated_courses_drop_with_their_reason(seven_days: Pipeline) -> None:
    reasons = seven_days.query("SELECT DISTINCT reason FROM lms.enrollment_changes WHERE change_type = 'dropped'")[
        "reason"
    ].tolist()
    assert {"course_removed", "course_deactivated", "unenrolled"} <= set(reasons)
    world = seven_days.worlds["conn-all"]
    for prev_day, day in zip(DAYS, DAYS[1:], strict=False):
        removed = set(world.roster_status(prev_day)) - set(world.roster_status(day))
        for course in removed:
            students = {s for c, s in world.true_course_edges(prev_day) if c == course}
            stored = seven_days.rows(
                "SELECT student_id FROM lms.enrollment_changes WHERE connection_id = 'conn-all' AND course_id = ? "
                "AND snapshot_date = ? AND change_type = 'dropped' AND reason = 'course_removed'",
                [course, day],
            )
            assert {s for (s,) in stored} == students


def test_rerunning_a_partition_leaves_identical_tables(pipeline: Pipeline) -> None:
    pipeline.run_days(2, ["conn-all"])
    derived = ["course_rosters", "course_student_edges", "class_student_edges", "enrollment_changes",
               "enrollment_change_sets"]  # fmt: skip

    def snapshot() -> dict[str, pd.DataFrame]:
        out = {t: pipeline.query(f"SELECT * FROM lms.{t} ORDER BY ALL") for t in derived}
        out["raw"] = pipeline.query(
            "SELECT * EXCLUDE (fetched_at, run_id, attempts) FROM lms.raw_course_pages ORDER BY ALL"
        )
        return out

    before = snapshot()
    for _ in range(2):
        assert pipeline.run("conn-all", START + timedelta(days=1)).success
    after = snapshot()
    for name, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[name], obj=name)


def test_throttling_and_transient_errors_are_survived(pipeline: Pipeline) -> None:
    pipeline.app.inject_fault("conn-all", status=500, endpoint="course", offset=10, times=2)
    pipeline.app.inject_fault("conn-all", status=503, endpoint="course", offset=20, times=1)
    result = pipeline.run("conn-all", START)
    assert result.success, failure_message(result)
    meta = result.asset_materializations_for_node("raw_course_pages")[0].metadata
    assert meta["http_throttled"].value > 0  # the world answers 429 on every 6th request
    assert meta["http_server_errors"].value == 3
    edges = pipeline.rows("SELECT course_id, student_id FROM lms.course_student_edges")
    assert edges == pipeline.worlds["conn-all"].true_course_edges(START)


def test_page_that_keeps_failing_fails_the_partition_and_keeps_stored_data(pipeline: Pipeline) -> None:
    pipeline.run_days(1, ["conn-all"])
    digest = hashlib.sha256(pipeline.db.read_bytes()).hexdigest()
    pipeline.app.inject_fault("conn-all", status=500, endpoint="course", offset=20, times=1000)
    result = pipeline.run("conn-all", START + timedelta(days=1))
    assert not result.success
    message = failure_message(result)
    assert "conn-all" in message and "/lms/conn-all/course" in message and "offset 20" in message
    assert "nothing was stored" in message
    assert hashlib.sha256(pipeline.db.read_bytes()).hexdigest() == digest
    pipeline.app.clear_faults()
    assert pipeline.run("conn-all", START + timedelta(days=1)).success


def test_schema_violation_fails_materialization_naming_table_and_column(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lms_pipeline.providers.unified import rosters

    # A normalizer bug that writes a NULL student (the SQL runs in the warehouse; the table refuses the row).
    edges_sql = rosters.SQL["write_course_edges"]
    broken = edges_sql.replace(
        "unnest(roster) AS student_id", "unnest(list_transform(roster, lambda s: NULL::VARCHAR)) AS student_id", 1
    )
    assert broken != edges_sql
    monkeypatch.setitem(rosters.SQL, "write_course_edges", broken)
    result = pipeline.run("conn-all", START)
    assert not result.success
    message = failure_message(result)
    assert "table course_student_edges" in message and "column 'student_id'" in message
    assert pipeline.rows("SELECT * FROM lms.course_student_edges") == set()


def test_mass_drop_is_held_until_an_operator_accepts_it(tmp_path, monkeypatch) -> None:
    spec = WorldSpec("conn-churn", seed=5, start_date=START, n_courses=20, drop_prob=0.4)
    with make_pipeline(tmp_path, monkeypatch, [spec]) as pipe:
        pipe.run_days(1)
        day2 = START + timedelta(days=1)
        held = pipe.run("conn-churn", day2)
        assert not held.success
        assert "mass-drop guard held" in failure_message(held)
        (check,) = [c for c in held.get_asset_check_evaluations() if c.check_name == "no_mass_drop"]
        assert not check.passed
        assert pipe.rows("SELECT * FROM lms.enrollment_changes WHERE snapshot_date = ?", [day2]) == set()

        accepted = pipe.run(
            "conn-churn", day2, {"ops": {"enrollment_change_set": {"config": {"accept_mass_drop": True}}}}
        )
        assert accepted.success, failure_message(accepted)
        guard = pipe.rows("SELECT guard FROM lms.enrollment_change_sets WHERE snapshot_date = ?", [day2])
        assert guard == {("accepted_by_operator",)}
        assert stored_changes(pipe, "conn-churn", day2) == expected_changes(pipe.worlds["conn-churn"], START, day2)


def test_live_connection_refuses_to_store_today_under_a_past_date(tmp_path, monkeypatch) -> None:
    spec = WorldSpec("conn-live", seed=6, start_date=START, n_courses=5)
    with make_pipeline(tmp_path, monkeypatch, [spec], {"conn-live": {"simulated_clock": False}}) as pipe:
        refused = pipe.run("conn-live", START)
        assert not refused.success
        assert "live LMS" in failure_message(refused) and "allow_past_date_from_live" in failure_message(refused)
        assert not pipe.db.exists() or pipe.rows("SELECT * FROM lms.raw_course_pages") == set()
        allowed = pipe.run(
            "conn-live", START, {"ops": {"raw_course_pages": {"config": {"allow_past_date_from_live": True}}}}
        )
        assert allowed.success, failure_message(allowed)


def test_token_is_never_stored_or_logged(pipeline: Pipeline) -> None:
    result = pipeline.run("conn-all", START)
    assert result.success
    token = pipeline.tokens["conn-all"]
    stored = pipeline.query("SELECT request_params, payload FROM lms.raw_course_pages")
    assert not stored.apply(lambda col: col.str.contains(token, regex=False)).any().any()
    for record in pipeline.instance.all_logs(result.run_id):
        assert token not in str(record)
