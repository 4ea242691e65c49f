"""Contents and learner progress end to end: activity is labelled against the roster and never becomes one."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from lms_pipeline.simulator import WorldSpec
from lms_pipeline_tests.conftest import START, Pipeline, failure_message, make_pipeline

DAYS = [START + timedelta(days=i) for i in range(7)]


def stored_progress(pipe: Pipeline, cid: str, day: date) -> dict[tuple[str, str, str], tuple[bool, int, str]]:
    frame = pipe.query(
        "SELECT course_id, student_id, content_id, is_completed, progress_percentage, enrollment_state "
        "FROM lms.student_progress WHERE connection_id = ? AND snapshot_date = ?",
        [cid, day],
    )
    return {(c, s, k): (bool(done), int(p), state) for c, s, k, done, p, state in frame.itertuples(index=False)}


@pytest.mark.parametrize("cid", ["conn-all", "conn-mixed", "conn-legacy"])
def test_every_day_progress_and_its_enrollment_state_equal_the_truth(seven_days: Pipeline, cid: str) -> None:
    world = seven_days.worlds[cid]
    for day in DAYS:
        assert stored_progress(seven_days, cid, day) == world.true_progress(day), f"{cid} {day}"
        contents = seven_days.rows(
            "SELECT course_id, content_id, is_active FROM lms.course_contents WHERE connection_id = ? "
            "AND snapshot_date = ?",
            [cid, day],
        )
        assert contents == {(k["course_ids"][0], k["id"], k["is_active"]) for k in world.contents(day)}


def test_a_student_who_drops_keeps_their_activity_as_not_enrolled_and_never_returns_to_the_roster(
    seven_days: Pipeline,
) -> None:
    world, found = seven_days.worlds["conn-all"], 0
    for prev_day, day in zip(DAYS, DAYS[1:], strict=False):
        dropped = seven_days.rows(
            "SELECT course_id, student_id FROM lms.enrollment_changes WHERE connection_id = 'conn-all' "
            "AND snapshot_date = ? AND change_type = 'dropped' AND reason = 'unenrolled'",
            [day],
        )
        before, after = stored_progress(seven_days, "conn-all", prev_day), stored_progress(seven_days, "conn-all", day)
        for key, (done, progress, state) in before.items():
            if key[:2] not in dropped or state != "enrolled":
                continue
            found += 1
            assert after[key] == (done, progress, "not_enrolled"), "kept, frozen, marked not_enrolled"
            assert key[:2] not in world.true_course_edges(day)
    assert found >= 5, "the fixture world should drop students who had activity"
    # no activity ever makes an edge: every edge is on the true roster, every guest is absent from both tables
    for day in DAYS:
        edges = seven_days.rows(
            "SELECT course_id, student_id FROM lms.course_student_edges WHERE connection_id = 'conn-all' "
            "AND snapshot_date = ?",
            [day],
        )
        assert edges == world.true_course_edges(day)
    guests = seven_days.rows("SELECT DISTINCT student_id FROM lms.student_progress WHERE student_id LIKE 'gst-%'")
    assert guests, "the fixture world should have learners who never were on a roster"
    assert (
        seven_days.rows(
            "SELECT student_id FROM lms.course_student_edges WHERE student_id LIKE 'gst-%' UNION ALL "
            "SELECT student_id FROM lms.enrollment_changes WHERE student_id LIKE 'gst-%'"
        )
        == set()
    )
    assert {s for (s,) in guests} <= {
        s for (s, state) in seven_days.rows("SELECT student_id, enrollment_state FROM lms.student_progress")
        if state != "enrolled"
    }  # fmt: skip


def test_activity_in_a_course_whose_roster_is_not_exposed_is_roster_not_exposed(seven_days: Pipeline) -> None:
    rows = seven_days.rows(
        "SELECT DISTINCT p.enrollment_state FROM lms.student_progress p JOIN lms.course_rosters r "
        "USING (connection_id, snapshot_date, course_id) WHERE r.roster_status = 'not_exposed'"
    )
    assert rows == {("roster_not_exposed",)}
    summary = seven_days.query(
        "SELECT s.enrolled_students, s.completed_share, s.learners_with_activity FROM lms.course_progress_summary s "
        "WHERE s.roster_status = 'not_exposed'"
    )
    assert len(summary) and summary["enrolled_students"].isna().all() and summary["completed_share"].isna().all()
    assert (summary["learners_with_activity"] > 0).any()


def test_a_day_costs_one_request_per_course_and_endpoint_plus_further_pages(tmp_path, monkeypatch) -> None:
    spec = WorldSpec("conn-cost", seed=6, start_date=START, n_courses=30, mean_roster_size=40)
    options = {"conn-cost": {"max_concurrent_requests": 3, "progress_page_size": 20}}
    with make_pipeline(tmp_path, monkeypatch, [spec], options) as pipe:
        pipe.run_days(2)
        pipe.app.reset_log()
        day = START + timedelta(days=2)
        result = pipe.run("conn-cost", day)
        assert result.success, failure_message(result)
        log = [e for e in pipe.app.request_log if e["endpoint"] in ("content", "activity") and e["status"] == 200]
        pages = pipe.query("SELECT endpoint, course_id, item_count FROM lms.raw_progress_pages WHERE snapshot_date = ?",
                           [day])  # fmt: skip
    courses = len(pipe.worlds["conn-cost"].roster_status(day))
    assert all("course_id" in e["params"] and "student_id" not in e["params"] for e in log), "never per student"
    further_pages = len(pages) - pages.groupby(["endpoint", "course_id"]).ngroups
    assert further_pages > 0, "some courses should need a second activity page (progress_page_size 20)"
    assert len(log) == 2 * courses + further_pages == len(pages)


def test_an_integration_without_progress_answers_501_and_the_run_still_succeeds(tmp_path, monkeypatch) -> None:
    spec = WorldSpec("conn-none", seed=7, start_date=START, n_courses=15, progress=False)
    with make_pipeline(tmp_path, monkeypatch, [spec]) as pipe:
        result = pipe.run("conn-none", START)
        assert result.success, failure_message(result)
        meta = result.asset_materializations_for_node("raw_progress_pages")[0].metadata
        assert "content: not supported by the integration (HTTP 501)" in meta["skipped"].value
        assert meta["http_requests"].value == 2, "one probe per endpoint, then nothing"
        assert pipe.rows("SELECT count(*) FROM lms.student_progress") == {(0,)}
        summary = pipe.query("SELECT learners_with_activity, active_contents FROM lms.course_progress_summary")
        assert len(summary) == 15 and (summary == 0).all().all()


def test_on_the_demo_world_every_day_of_progress_equals_the_truth(tmp_path, monkeypatch) -> None:
    """The connections `make demo` reads progress from, with their configured options (short retry waits), for the
    first 4 of the demo's days; `make demo` itself checks all 8 against the truth and fails otherwise."""
    from lms_pipeline.config import load_settings
    from lms_pipeline.simulator.systems import world_spec

    settings = load_settings()
    conns = [c for c in settings.connections if c.world.progress]
    assert {c.id for c in conns} == {"moodle-highschool", "legacy-blackboard", "corp-learnupon"}
    specs = [world_spec(settings, c) for c in conns]
    options = {c.id: c.options.model_dump(exclude={"simulated_clock", "retry"}) for c in conns}
    with make_pipeline(tmp_path, monkeypatch, specs, options) as pipe:
        pipe.run_days(4)
        for c in conns:
            for day in DAYS[:4]:
                assert stored_progress(pipe, c.id, day) == pipe.worlds[c.id].true_progress(day), f"{c.id} {day}"
        states = pipe.rows("SELECT DISTINCT connection_id, enrollment_state FROM lms.student_progress")
    assert ("corp-learnupon", "roster_not_exposed") in states and ("moodle-highschool", "not_enrolled") in states
