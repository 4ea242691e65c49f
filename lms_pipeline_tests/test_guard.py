"""The mass-drop guard on its own (lms_pipeline/guard.py): what it lets through, what it holds, and that a held
change set writes nothing while a passed or accepted one is written whole, with any hold on its day released."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from lms_pipeline import guard
from lms_pipeline.providers.base import MissingSnapshotInput
from lms_pipeline.transforms.changes import ChangeSummary
from lms_pipeline.warehouse import Warehouse

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)


def store_day(store: Warehouse, day: date, *pairs: str) -> None:
    """One exposed course per course id named in ``pairs`` ("course:student"), stored as the day's snapshot."""
    part = {"connection_id": "c1", "snapshot_date": pd.Timestamp(day)}
    edges = pd.DataFrame([p.split(":") for p in pairs], columns=["course_id", "student_id"])
    rosters = pd.DataFrame({"course_id": sorted({"a", "b", *edges["course_id"]}), "roster_status": "exposed",
                            "is_active": True})  # fmt: skip
    store.replace_partition({"course_rosters": rosters.assign(**part, fetched_on=pd.Timestamp(day)),
                             "course_student_edges": edges.assign(**part)}, "c1", day)  # fmt: skip


def summary(dropped: int, previous_edges: int) -> ChangeSummary:
    return ChangeSummary("c1", D2, D1, False, 2, 0, previous_edges, previous_edges - dropped, 0, dropped,
                         dropped / previous_edges)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Warehouse:
    store = Warehouse(tmp_path / "w.duckdb")
    store_day(store, D1, "a:s1", "a:s2", "a:s3", "b:s4")
    assert guard.change_set(store, "c1", D1, 0.5, accepted=False)[1] == guard.PASSED  # the baseline
    return store


def stored(store: Warehouse, name: str, day: date) -> pd.DataFrame:
    return store.query(f"SELECT * FROM lms.{name} WHERE snapshot_date = ? ORDER BY ALL", [day])


def test_a_drop_share_at_the_threshold_passes_and_above_it_is_held_unless_accepted() -> None:
    assert guard.outcome(summary(dropped=2, previous_edges=4), 0.5, accepted=False) == guard.PASSED
    assert guard.outcome(summary(dropped=3, previous_edges=4), 0.5, accepted=False) is None
    assert guard.outcome(summary(dropped=3, previous_edges=4), 0.5, accepted=True) == guard.ACCEPTED


def test_the_hold_reason_says_what_would_drop_and_how_to_release_it() -> None:
    reason = guard.hold_reason("c1", D2, summary(dropped=3, previous_edges=4), 0.5)
    assert "c1|2026-09-02" in reason and "3 of 4 edges (75.0%)" in reason
    assert "accept_mass_drop: true" in reason and "Nothing of this day is published" in reason


def test_a_held_change_set_writes_nothing(store: Warehouse) -> None:
    store_day(store, D2, "b:s4")  # 3 of 4 edges would drop
    result, outcome, _ = guard.change_set(store, "c1", D2, 0.5, accepted=False)
    assert outcome is None and result.dropped == 3
    assert stored(store, "enrollment_changes", D2).empty
    assert stored(store, "enrollment_change_sets", D2).empty


def test_an_accepted_change_set_is_written_whole_and_releases_the_days_hold(store: Warehouse) -> None:
    store_day(store, D2, "b:s4")
    held = guard.hold_row("c1", D2, "run-1", "held", summary(dropped=3, previous_edges=4), 0.5)
    store.replace_partition({"change_set_holds": held}, "c1", D2)
    _, outcome, _ = guard.change_set(store, "c1", D2, 0.5, accepted=True)
    assert outcome == guard.ACCEPTED
    drops = stored(store, "enrollment_changes", D2)
    assert set(zip(drops["student_id"], drops["change_type"], strict=True)) == {
        ("s1", "dropped"), ("s2", "dropped"), ("s3", "dropped")}  # fmt: skip
    (row,) = stored(store, "enrollment_change_sets", D2).to_dict("records")
    assert row["guard"] == guard.ACCEPTED and row["dropped"] == 3 and row["previous_edges"] == 4
    assert stored(store, "change_set_holds", D2).empty, "the day is publishable once its change set is written"


def test_a_day_without_a_stored_snapshot_is_refused(store: Warehouse) -> None:
    with pytest.raises(MissingSnapshotInput, match="no course_rosters stored for c1\\|2026-09-02"):
        guard.change_set(store, "c1", D2, 0.5, accepted=False)
