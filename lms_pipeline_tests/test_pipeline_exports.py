"""The daily exports a registrar's office gets: per day and connection, the change set and the grade issues as CSV
and Parquet (grade issues also per course), equal to what analysts see; a held day is exported only once released."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pandas as pd

from lms_pipeline.simulator import WorldSpec
from lms_pipeline.warehouse import published_path
from lms_pipeline_tests.conftest import START, failure_message, make_pipeline
from lms_pipeline_tests.test_pipeline_grades import CONN, GradesPipeline
from lms_pipeline_tests.test_pipeline_grades import DAYS as GRADE_DAYS

DAY2 = START + timedelta(days=1)
ACCEPT = {"ops": {"enrollment_change_set": {"config": {"accept_mass_drop": True}}}}


def published(db, name: str, connection_id: str, day) -> pd.DataFrame:  # noqa: ANN001
    with duckdb.connect(str(published_path(db)), read_only=True) as conn:
        return conn.execute(f"SELECT * FROM lms.{name} WHERE connection_id = ? AND snapshot_date = ? ORDER BY ALL",
                            [connection_id, day]).df()  # fmt: skip


def test_a_days_change_set_and_grade_issues_are_exported_as_csv_and_parquet_per_connection_and_course(tmp_path) -> None:  # noqa: ANN001
    grades = GradesPipeline(tmp_path)
    days = GRADE_DAYS[:2]
    for day in days:
        result = grades.run(day)
        assert result.success, failure_message(result)
    folder = tmp_path / "exports" / days[1].isoformat() / CONN
    assert sorted(p.name for p in folder.iterdir()) == [
        "enrollment_changes.csv", "enrollment_changes.parquet", "grade_discrepancies.csv",
        "grade_discrepancies.parquet", "grade_discrepancies_by_course"]  # fmt: skip
    for name in ("enrollment_changes", "grade_discrepancies"):
        seen = published(grades.db, name, CONN, days[1])
        assert len(seen), f"{name} has rows on {days[1]}"
        with duckdb.connect() as conn:
            from_parquet = conn.execute(
                "SELECT * FROM read_parquet(?) ORDER BY ALL", [str(folder / f"{name}.parquet")]
            ).df()
        assert from_parquet.equals(seen), f"{name}.parquet holds what analysts see"
        from_csv = pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False)
        assert sorted(from_csv["row_key" if name == "grade_discrepancies" else "student_id"]) == sorted(
            seen["row_key" if name == "grade_discrepancies" else "student_id"])  # fmt: skip
    issues = published(grades.db, "grade_discrepancies", CONN, days[1])
    per_course = {p.stem: pd.read_csv(p, dtype=str) for p in (folder / "grade_discrepancies_by_course").iterdir()}
    assert set(per_course) == set(issues["course_id"].dropna())
    assert all(set(frame["course_id"]) == {course} for course, frame in per_course.items())
    assert sum(len(f) for f in per_course.values()) == issues["course_id"].notna().sum()


def test_a_held_day_is_exported_only_once_released(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    specs = [WorldSpec("conn-churn", seed=5, start_date=START, n_courses=20, drop_prob=0.4)]
    with make_pipeline(tmp_path, monkeypatch, specs) as pipe:
        pipe.run_days(1)
        exports = tmp_path / "exports"
        first = exports / START.isoformat() / "conn-churn"
        assert sorted(p.name for p in first.iterdir()) == ["enrollment_changes.csv", "enrollment_changes.parquet"]
        assert pd.read_csv(first / "enrollment_changes.csv").empty, "a baseline day exports a header-only file"
        assert not pipe.run("conn-churn", DAY2).success
        assert not (exports / DAY2.isoformat()).exists(), "nothing of a held day leaves the warehouse"
        released = pipe.run("conn-churn", DAY2, ACCEPT)
        assert released.success, failure_message(released)
        changes = pd.read_csv(exports / DAY2.isoformat() / "conn-churn" / "enrollment_changes.csv")
        assert len(changes) == len(published(pipe.db, "enrollment_changes", "conn-churn", DAY2)) > 0
        assert set(changes["change_type"]) == {"added", "dropped"}
