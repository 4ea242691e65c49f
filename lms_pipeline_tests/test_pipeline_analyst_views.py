"""The analysts' views answer the daily questions from published days only, and agree with the simulators' truth:
who is enrolled now, what changed last, a student's history (which replays to today's roster), roster coverage
per day, and the grade issues still open with the day each opened."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta

import duckdb
import pytest

from lms_pipeline.warehouse import published_path
from lms_pipeline_tests.conftest import START, Pipeline, make_pipeline
from lms_pipeline_tests.test_pipeline_grades import DAYS as GRADE_DAYS
from lms_pipeline_tests.test_pipeline_grades import GradesPipeline

LAST = START + timedelta(days=2)


def analyst(db) -> duckdb.DuckDBPyConnection:  # noqa: ANN001
    return duckdb.connect(str(published_path(db)), read_only=True)


@pytest.fixture(scope="module")
def three_days(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        make_pipeline(tmp_path_factory.mktemp("views"), monkeypatch) as pipe,
    ):
        pipe.run_days(3, ["conn-all", "conn-mixed"])
        yield pipe


def test_current_roster_is_each_connections_newest_published_snapshot(three_days: Pipeline) -> None:
    with analyst(three_days.db) as conn:
        for cid in ("conn-all", "conn-mixed"):
            rows = conn.execute("SELECT course_id, student_id, as_of, course_name FROM lms.current_roster "
                                "WHERE connection_id = ?", [cid]).fetchall()  # fmt: skip
            assert {(c, s) for c, s, _, _ in rows} == three_days.worlds[cid].true_course_edges(LAST)
            assert {d for _, _, d, _ in rows} == {LAST} and all(name for *_, name in rows)


def test_latest_changes_are_the_newest_change_set(three_days: Pipeline) -> None:
    with analyst(three_days.db) as conn:
        latest = set(conn.execute("SELECT connection_id, course_id, student_id, change_type, reason "
                                  "FROM lms.latest_changes").fetchall())  # fmt: skip
    stored = three_days.rows("SELECT connection_id, course_id, student_id, change_type, reason "
                             "FROM lms.enrollment_changes WHERE snapshot_date = ?", [LAST])  # fmt: skip
    assert latest == stored and latest, "the last day's adds and drops, nothing older"


def test_a_students_history_replays_to_todays_roster(three_days: Pipeline) -> None:
    with analyst(three_days.db) as conn:
        events = conn.execute("SELECT connection_id, student_id, course_id, event FROM lms.student_enrollment_history "
                              "ORDER BY snapshot_date").fetchall()  # fmt: skip
        current = set(conn.execute("SELECT connection_id, student_id, course_id FROM lms.current_roster").fetchall())
    enrolled: dict[tuple, bool] = defaultdict(bool)
    for cid, student, course, event in events:
        enrolled[(cid, student, course)] = event in ("baseline", "added", "roster_exposed")
    assert {key for key, is_in in enrolled.items() if is_in} == current
    kinds = {event for _, _, _, event in events}
    assert {"baseline", "added", "dropped", "roster_exposed", "roster_hidden"} <= kinds, "conn-mixed flips exposure"


def test_course_roster_coverage_counts_each_day(three_days: Pipeline) -> None:
    with analyst(three_days.db) as conn:
        rows = conn.execute("SELECT snapshot_date, courses, exposed, empty, not_exposed, coverage, edges "
                            "FROM lms.course_roster_coverage WHERE connection_id = 'conn-mixed' "
                            "ORDER BY snapshot_date").fetchall()  # fmt: skip
    assert [r[0] for r in rows] == [START + timedelta(days=n) for n in range(3)]
    for day, courses, exposed, empty, not_exposed, coverage, edges in rows:
        stored = three_days.query("SELECT roster_status, count(*) AS n FROM lms.course_rosters WHERE "
                                  "connection_id = 'conn-mixed' AND snapshot_date = ? GROUP BY ALL", [day])  # fmt: skip
        counts = dict(zip(stored["roster_status"], stored["n"], strict=True))
        assert (exposed, empty, not_exposed) == tuple(counts.get(s, 0) for s in ("exposed", "empty", "not_exposed"))
        assert courses == exposed + empty + not_exposed and 0 < not_exposed < courses
        assert coverage == round((exposed + empty) / courses, 4)
        assert edges == len(three_days.worlds["conn-mixed"].true_course_edges(day))


def test_open_grade_issues_are_the_newest_non_matches_with_the_day_they_opened(tmp_path) -> None:  # noqa: ANN001
    grades = GradesPipeline(tmp_path)
    for day in GRADE_DAYS:
        assert grades.run(day).success
    with analyst(grades.db) as conn:
        open_rows = conn.execute("SELECT row_key, as_of, open_since, days_open, status FROM lms.grade_issues_open"
                                 ).fetchall()  # fmt: skip
    history = grades.query("SELECT row_key, snapshot_date, status FROM lms.grade_discrepancies ORDER BY snapshot_date")
    last = GRADE_DAYS[-1]
    expected_open = set(history.loc[(history["snapshot_date"].dt.date == last) & (history["status"] != "match"),
                                    "row_key"])  # fmt: skip
    assert {r[0] for r in open_rows} == expected_open and expected_open
    for row_key, as_of, since, days_open, status in open_rows:
        days = history[history["row_key"] == row_key]
        streak = []
        for day, day_status in zip(days["snapshot_date"].dt.date, days["status"], strict=True):
            streak = [] if day_status == "match" else [*streak, day]
        assert as_of == last and status != "match"
        assert since == streak[0] and days_open == (last - since).days + 1
