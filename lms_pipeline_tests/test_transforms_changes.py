"""Snapshot diffs inside the warehouse: the rules that keep false drops and adds out of the change set."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from lms_pipeline.transforms import changes as diff
from lms_pipeline.transforms.changes import ChangeSummary
from lms_pipeline.warehouse import Warehouse

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)


def rosters(**courses: tuple[str, bool]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"course_id": c, "roster_status": s, "is_active": a} for c, (s, a) in courses.items()],
        columns=["course_id", "roster_status", "is_active"],
    )


def edges(*pairs: str) -> pd.DataFrame:
    return pd.DataFrame([p.split(":") for p in pairs], columns=["course_id", "student_id"])


@pytest.fixture
def store(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "w.duckdb")


def diff_snapshots(
    store: Warehouse,
    day: date,
    cur_r: pd.DataFrame,
    cur_e: pd.DataFrame,
    previous: date | None = None,
    prev_r: pd.DataFrame | None = None,
    prev_e: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, ChangeSummary]:
    """Store the snapshots, diff them where they are stored and write the change rows, as the asset does."""
    for when, r, e in [(previous, prev_r, prev_e), (day, cur_r, cur_e)]:
        if when is not None:
            part = {"connection_id": "c1", "snapshot_date": pd.Timestamp(when)}
            store.replace_partition({"course_rosters": r.assign(**part, fetched_on=pd.Timestamp(when)),
                                     "course_student_edges": e.assign(**part)}, "c1", when)  # fmt: skip
    with store.rewrite("c1", day) as conn:
        summary = diff.diff_partition(conn, "c1", day, previous)
        diff.write_changes(conn, "c1", day, previous)
    return store.query("SELECT * FROM lms.enrollment_changes WHERE snapshot_date = ? ORDER BY ALL", [day]), summary


def changes(store: Warehouse, prev_r, prev_e, cur_r, cur_e) -> set[tuple[str, str, str, str]]:
    out, _ = diff_snapshots(store, D2, cur_r, cur_e, D1, prev_r, prev_e)
    return set(map(tuple, out[["course_id", "student_id", "change_type", "reason"]].to_numpy()))


def test_not_exposed_on_either_day_yields_no_adds_and_no_drops(store: Warehouse) -> None:
    assert changes(store, rosters(a=("exposed", True)), edges("a:s1", "a:s2"),
                   rosters(a=("not_exposed", True)), edges()) == set()  # fmt: skip
    assert changes(store, rosters(a=("not_exposed", True)), edges(),
                   rosters(a=("exposed", True)), edges("a:s1")) == set()  # fmt: skip


def test_roster_changes_are_enrolled_and_unenrolled(store: Warehouse) -> None:
    got = changes(
        store,
        rosters(a=("exposed", True)),
        edges("a:s1", "a:s2"),
        rosters(a=("exposed", True)),
        edges("a:s2", "a:s3"),
    )
    assert got == {("a", "s1", "dropped", "unenrolled"), ("a", "s3", "added", "enrolled")}


def test_removed_course_drops_everyone_with_reason_course_removed(store: Warehouse) -> None:
    got = changes(store, rosters(a=("exposed", True), b=("exposed", True)), edges("a:s1", "b:s2"),
                  rosters(b=("exposed", True)), edges("b:s2"))  # fmt: skip
    assert got == {("a", "s1", "dropped", "course_removed")}


def test_deactivated_course_drops_carry_reason_course_deactivated(store: Warehouse) -> None:
    got = changes(store, rosters(a=("exposed", True)), edges("a:s1"), rosters(a=("empty", False)), edges())
    assert got == {("a", "s1", "dropped", "course_deactivated")}


def test_new_course_adds_with_reason_course_added_and_a_new_unexposed_course_adds_nothing(store: Warehouse) -> None:
    got = changes(store, rosters(), edges(), rosters(n=("exposed", True), m=("not_exposed", True)), edges("n:s1"))
    assert got == {("n", "s1", "added", "course_added")}


def test_baseline_has_no_change_rows_and_says_so(store: Warehouse) -> None:
    out, summary = diff_snapshots(store, D1, rosters(a=("exposed", True)), edges("a:s1"))
    assert out.empty and summary.is_baseline and summary.previous_snapshot_date is None
    assert summary.current_edges == 1 and summary.drop_share == 0.0


def test_drop_share_is_drops_over_previous_edges(store: Warehouse) -> None:
    _, summary = diff_snapshots(store, D2, rosters(a=("exposed", True)), edges("a:s1"), D1,
                                rosters(a=("exposed", True)), edges("a:s1", "a:s2", "a:s3", "a:s4"))  # fmt: skip
    assert summary.dropped == 3 and summary.drop_share == 0.75 and summary.courses_compared == 1


def test_the_previous_day_is_the_last_published_change_set_not_the_day_before(store: Warehouse) -> None:
    published = pd.DataFrame([{"connection_id": "c1", "snapshot_date": pd.Timestamp(D1), "is_baseline": True,
                               "courses_compared": 0, "courses_not_exposed": 0, "previous_edges": 0,
                               "current_edges": 1, "added": 0, "dropped": 0, "drop_share": 0.0,
                               "max_drop_share": 0.5, "guard": "passed"}])  # fmt: skip
    store.replace_partition({"enrollment_change_sets": published}, "c1", D1)
    with store.session() as conn:  # D2 was held (no change-set row): D3 compares with D1
        assert diff.previous_day(conn, "c1", date(2026, 9, 3)) == D1
        assert diff.previous_day(conn, "c1", D1) is None


def test_reason_counts_are_those_of_the_change_rows(store: Warehouse) -> None:
    diff_snapshots(store, D2, rosters(b=("exposed", True), n=("exposed", True)), edges("b:s3", "n:s1"), D1,
                   rosters(a=("exposed", True), b=("exposed", True)), edges("a:s1", "b:s2"))  # fmt: skip
    with store.rewrite("c1", D2) as conn:
        diff.diff_partition(conn, "c1", D2, D1)
        assert diff.reason_counts(conn) == {"added": {"course_added": 1, "enrolled": 1},
                                            "dropped": {"course_removed": 1, "unenrolled": 1}}  # fmt: skip
