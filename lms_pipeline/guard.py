"""The mass-drop guard: a change set dropping more than ``max_drop_share`` of a connection's edges is held, and
nothing of its day is published until a person accepts it (or a re-run passes).

Why before any write, not as Dagster's blocking asset check: that check runs after the asset is written, and the
change set would already be stored (docs/decisions.md, "The mass-drop guard and whole-day holds"). ``change_set``
diffs the day where its snapshots are stored and writes the change rows, the change-set row and the release of any
hold on the day in one transaction, only when the guard lets them through.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import MissingSnapshotInput
from lms_pipeline.schemas import check_stored, constraint_violation, validate
from lms_pipeline.transforms import changes
from lms_pipeline.transforms.changes import ChangeSummary
from lms_pipeline.warehouse import Warehouse, replace_frames, table

PASSED, ACCEPTED = "passed", "accepted_by_operator"


def outcome(summary: ChangeSummary, threshold: float, accepted: bool) -> str | None:
    """'passed', 'accepted_by_operator' (held, but a person said the drops are real), or None: hold it."""
    if summary.drop_share <= threshold:
        return PASSED
    return ACCEPTED if accepted else None


def hold_reason(connection_id: str, day: date, summary: ChangeSummary, threshold: float) -> str:
    """Why a change set is held, and how to release it, in the words an operator reads on the failed run."""
    return (
        f"mass-drop guard held the change set of {connection_id}|{day}: {summary.dropped} of "
        f"{summary.previous_edges} edges ({summary.drop_share:.1%}) would drop, above max_drop_share "
        f"{threshold:.0%}. Nothing of this day is published (rosters, edges, progress, grades). If the drops "
        "are real, re-run the partition with run config "
        "ops.enrollment_change_set.config.accept_mass_drop: true."
    )


def hold_row(
    connection_id: str, day: date, run_id: str, reason: str, summary: ChangeSummary, threshold: float
) -> pd.DataFrame:
    """The record of a held change set: what keeps the day out of the analysts' copy until it is released."""
    previous = summary.previous_snapshot_date
    return pd.DataFrame([{
        "connection_id": connection_id, "snapshot_date": pd.Timestamp(day), "held_at": pd.Timestamp.now(tz="UTC"),
        "run_id": run_id, "reason": reason, "previous_snapshot_date": pd.Timestamp(previous) if previous else pd.NaT,
        "previous_edges": summary.previous_edges, "dropped": summary.dropped, "drop_share": summary.drop_share,
        "max_drop_share": threshold,
    }])  # fmt: skip


def change_set(
    store: Warehouse, connection_id: str, day: date, threshold: float, accepted: bool
) -> tuple[ChangeSummary, str | None, dict[str, dict[str, int]]]:
    """Diff the day's stored snapshot with the previous published one, where both are stored; when the guard lets
    it through (its outcome is returned: None when held), write the change rows, the change-set row and the release
    of any hold on the day in one transaction, checked before it commits. A held change set writes nothing here.
    Raises ``MissingSnapshotInput`` without the day's rosters, ``SchemaViolation`` on rows breaking the models."""
    try:
        with store.rewrite(connection_id, day) as conn:
            params = {"connection_id": connection_id, "snapshot_date": day}
            if not statements.run(conn, changes.SQL["current_rosters"], params).fetchone()[0]:
                raise MissingSnapshotInput(f"no course_rosters stored for {connection_id}|{day}")
            previous = changes.previous_day(conn, connection_id, day)
            summary = changes.diff_partition(conn, connection_id, day, previous)
            guard = outcome(summary, threshold, accepted)
            reasons = changes.reason_counts(conn)
            if guard is not None:
                changes.write_changes(conn, connection_id, day, previous)
                check_stored(conn, "enrollment_changes", table("enrollment_changes"), connection_id, day)
                row = validate("enrollment_change_sets",
                               pd.DataFrame([summary.as_row(max_drop_share=threshold, guard=guard)]))  # fmt: skip
                # The change set and the release of any hold on the day, together: the day becomes publishable whole.
                replace_frames(conn, {"enrollment_change_sets": row, "change_set_holds": pd.DataFrame()},
                               connection_id, day)  # fmt: skip
    except duckdb.ConstraintException as exc:
        raise constraint_violation(exc) from None
    return summary, guard, reasons
