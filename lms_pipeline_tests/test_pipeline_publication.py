"""What analysts see is whole: a held day is in no published table until it is released, and a fetch whose
normalization fails changes nothing stored (pages, sync_log, the high-water mark the next poll starts from)."""

from __future__ import annotations

import json
from datetime import timedelta

import duckdb

from lms_pipeline.simulator import WorldSpec
from lms_pipeline.warehouse import published_path
from lms_pipeline_tests.conftest import START, Pipeline, failure_message, make_pipeline

DAY2, DAY3 = START + timedelta(days=1), START + timedelta(days=2)
ACCEPT = {"ops": {"enrollment_change_set": {"config": {"accept_mass_drop": True}}}}
# Every table a roster run and its progress write for a (connection, day).
DAY_TABLES = ("raw_course_pages", "sync_log", "course_rosters", "course_student_edges", "class_student_edges",
              "enrollment_changes", "enrollment_change_sets", "raw_progress_pages", "course_contents",
              "student_progress", "course_progress_summary")  # fmt: skip


def published_days(pipe: Pipeline, connection_id: str) -> dict[str, set]:
    """The days of each table the analysts' copy holds for a connection."""
    with duckdb.connect(str(published_path(pipe.db)), read_only=True) as analyst:
        return {
            name: {row[0] for row in analyst.execute(
                f"SELECT DISTINCT snapshot_date FROM lms.{name} WHERE connection_id = ?", [connection_id]
            ).fetchall()}
            for name in DAY_TABLES
        }  # fmt: skip


def test_a_held_day_is_in_no_published_table_until_an_operator_releases_it(tmp_path, monkeypatch) -> None:
    specs = [
        WorldSpec("conn-churn", seed=5, start_date=START, n_courses=20, drop_prob=0.4),
        WorldSpec("conn-calm", seed=8, start_date=START, n_courses=15),
    ]
    with make_pipeline(tmp_path, monkeypatch, specs) as pipe:
        pipe.run_days(1)
        held = pipe.run("conn-churn", DAY2)
        assert not held.success and "mass-drop guard held" in failure_message(held)
        calm = pipe.run("conn-calm", DAY2)  # another connection's run publishes while the hold stands
        assert calm.success, failure_message(calm)

        assert all(DAY2 not in days for days in published_days(pipe, "conn-churn").values()), (
            "a held day must be absent from every analysts' table, rosters and edges included"
        )
        calm_days = published_days(pipe, "conn-calm")
        assert all(DAY2 in calm_days[name] for name in ("course_rosters", "course_student_edges", "sync_log",
                                                         "student_progress")), "other connections publish"  # fmt: skip
        with duckdb.connect(str(published_path(pipe.db)), read_only=True) as analyst:
            holds = analyst.execute("SELECT connection_id, snapshot_date, reason FROM lms.change_set_holds").fetchall()
        assert [(c, d) for c, d, _ in holds] == [("conn-churn", DAY2)]
        assert "accept_mass_drop" in holds[0][2], "the hold says how to release it"

        released = pipe.run("conn-churn", DAY2, ACCEPT)
        assert released.success, failure_message(released)
        days = published_days(pipe, "conn-churn")
        assert all(DAY2 in days[name] for name in ("course_rosters", "course_student_edges", "enrollment_changes",
                                                    "student_progress", "sync_log"))  # fmt: skip
        with duckdb.connect(str(published_path(pipe.db)), read_only=True) as analyst:
            assert analyst.execute("SELECT count(*) FROM lms.change_set_holds").fetchone() == (0,)
            published_edges = set(analyst.execute(
                "SELECT course_id, student_id FROM lms.course_student_edges WHERE connection_id = 'conn-churn' "
                "AND snapshot_date = ?", [DAY2]).fetchall())  # fmt: skip
        assert published_edges == pipe.worlds["conn-churn"].true_course_edges(DAY2)


def stored_runs(pipe: Pipeline, name: str, day) -> set:  # noqa: ANN001
    return pipe.rows(f"SELECT DISTINCT run_id FROM lms.{name} WHERE connection_id = 'conn-all' AND snapshot_date = ?",
                     [day])  # fmt: skip


def test_a_fetch_whose_normalization_fails_changes_nothing_stored(pipeline: Pipeline) -> None:
    pipeline.run_days(2, ["conn-all"])
    good_run = stored_runs(pipeline, "sync_log", DAY2)
    snapshot = pipeline.query(
        "SELECT * FROM lms.course_student_edges WHERE snapshot_date = ? ORDER BY ALL", [DAY2]
    ).to_json()
    # The provider now serves a page the client accepts but the normalizer refuses.
    item = {"id": "crs-99999", "name": "Broken", "updated_at": "2026-09-02T01:00:00Z", "student_ids": "stu-00001"}
    pipeline.app.inject_fault("conn-all", status=200, body=json.dumps([item]), endpoint="course", offset=0,
                              times=1000)  # fmt: skip
    failed = pipeline.run("conn-all", DAY2)
    assert not failed.success and "normalization refused" in failure_message(failed)
    pipeline.app.clear_faults()

    assert stored_runs(pipeline, "sync_log", DAY2) == good_run, "sync_log (and its high-water mark) unchanged"
    assert stored_runs(pipeline, "raw_course_pages", DAY2) == good_run, "the day's raw pages still rebuild it"
    assert (
        pipeline.query("SELECT * FROM lms.course_student_edges WHERE snapshot_date = ? ORDER BY ALL", [DAY2]).to_json()
        == snapshot
    )
    assert pipeline.rows("SELECT DISTINCT run_id FROM lms_staging.sync_log") == {(failed.run_id,)}, (
        "the failed attempt is kept, apart"
    )
    nxt = pipeline.run("conn-all", DAY3)
    assert nxt.success, failure_message(nxt)
    assert pipeline.rows(
        "SELECT course_id, student_id FROM lms.course_student_edges WHERE connection_id = 'conn-all' "
        "AND snapshot_date = ?", [DAY3]
    ) == pipeline.worlds["conn-all"].true_course_edges(DAY3)  # fmt: skip
