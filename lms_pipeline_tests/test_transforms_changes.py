"""Snapshot diffs: the rules that keep false drops and adds out of the change set."""

from __future__ import annotations

from datetime import date

import pandas as pd

from lms_pipeline.transforms.changes import diff_snapshots

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)


def rosters(**courses: tuple[str, bool]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"course_id": c, "roster_status": s, "is_active": a} for c, (s, a) in courses.items()],
        columns=["course_id", "roster_status", "is_active"],
    )


def edges(*pairs: str) -> pd.DataFrame:
    return pd.DataFrame([p.split(":") for p in pairs], columns=["course_id", "student_id"])


def changes(prev_r, prev_e, cur_r, cur_e) -> set[tuple[str, str, str, str]]:
    out, _ = diff_snapshots("c1", D2, cur_r, cur_e, D1, prev_r, prev_e)
    return set(map(tuple, out[["course_id", "student_id", "change_type", "reason"]].to_numpy()))


def test_not_exposed_on_either_day_yields_no_adds_and_no_drops() -> None:
    assert changes(rosters(a=("exposed", True)), edges("a:s1", "a:s2"),
                   rosters(a=("not_exposed", True)), edges()) == set()  # fmt: skip
    assert changes(rosters(a=("not_exposed", True)), edges(),
                   rosters(a=("exposed", True)), edges("a:s1")) == set()  # fmt: skip


def test_roster_changes_are_enrolled_and_unenrolled() -> None:
    got = changes(
        rosters(a=("exposed", True)),
        edges("a:s1", "a:s2"),
        rosters(a=("exposed", True)),
        edges("a:s2", "a:s3"),
    )
    assert got == {("a", "s1", "dropped", "unenrolled"), ("a", "s3", "added", "enrolled")}


def test_removed_course_drops_everyone_with_reason_course_removed() -> None:
    got = changes(rosters(a=("exposed", True), b=("exposed", True)), edges("a:s1", "b:s2"),
                  rosters(b=("exposed", True)), edges("b:s2"))  # fmt: skip
    assert got == {("a", "s1", "dropped", "course_removed")}


def test_deactivated_course_drops_carry_reason_course_deactivated() -> None:
    got = changes(rosters(a=("exposed", True)), edges("a:s1"), rosters(a=("empty", False)), edges())
    assert got == {("a", "s1", "dropped", "course_deactivated")}


def test_new_course_adds_with_reason_course_added_and_a_new_unexposed_course_adds_nothing() -> None:
    got = changes(rosters(), edges(), rosters(n=("exposed", True), m=("not_exposed", True)), edges("n:s1"))
    assert got == {("n", "s1", "added", "course_added")}


def test_baseline_has_no_change_rows_and_says_so() -> None:
    out, summary = diff_snapshots("c1", D1, rosters(a=("exposed", True)), edges("a:s1"))
    assert out.empty and summary.is_baseline and summary.previous_snapshot_date is None
    assert summary.current_edges == 1 and summary.drop_share == 0.0


def test_drop_share_is_drops_over_previous_edges() -> None:
    _, summary = diff_snapshots("c1", D2, rosters(a=("exposed", True)), edges("a:s1"), D1,
                                rosters(a=("exposed", True)), edges("a:s1", "a:s2", "a:s3", "a:s4"))  # fmt: skip
    assert summary.dropped == 3 and summary.drop_share == 0.75 and summary.courses_compared == 1
