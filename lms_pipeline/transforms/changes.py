"""Day-over-day enrollment change sets from two stored roster snapshots, inside the warehouse.

Rules (each one prevents a false drop or add that peers are known to publish):
- Only courses whose roster is *known* on a day (``exposed`` or ``empty``) take part. A course ``not_exposed`` on
  either day yields no adds and no drops: "the provider did not tell us" is not "everyone left".
- A course present yesterday and absent today (the scan was complete, or the fetch would have failed) drops its
  students with reason ``course_removed``; a course newly listed adds its students with reason ``course_added``.
- A drop from a course that went inactive since yesterday carries reason ``course_deactivated``.
- Without a previous snapshot the day is a baseline: no change rows, ``is_baseline`` true in the change-set row.

The diff runs where the snapshots are stored (``changes.sql``): ``diff_partition`` leaves the day's change rows in
a temp table and returns the counts the mass-drop guard needs; ``write_changes`` stores them with ``INSERT ...
SELECT`` once the guard let them through, in the same transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import duckdb

from lms_pipeline import statements

SQL = statements.load(Path(__file__).with_suffix(".sql"))


@dataclass(frozen=True)
class ChangeSummary:
    """One row of ``enrollment_change_sets``, before the guard decides."""

    connection_id: str
    snapshot_date: date
    previous_snapshot_date: date | None
    is_baseline: bool
    courses_compared: int
    courses_not_exposed: int
    previous_edges: int
    current_edges: int
    added: int
    dropped: int
    drop_share: float

    def as_row(self, *, max_drop_share: float, guard: str) -> dict:
        return {**asdict(self), "max_drop_share": max_drop_share, "guard": guard}


def previous_day(conn: duckdb.DuckDBPyConnection, connection_id: str, snapshot_date: date) -> date | None:
    """The day of the last published change set before ``snapshot_date`` (None: this day is a baseline)."""
    (found,) = statements.run(conn, SQL["previous_day"], _params(connection_id, snapshot_date, None)).fetchone()
    return found


def diff_partition(
    conn: duckdb.DuckDBPyConnection, connection_id: str, snapshot_date: date, previous_date: date | None
) -> ChangeSummary:
    """Compute the day's change rows into the temp table ``day_changes`` and return their summary."""
    params = _params(connection_id, snapshot_date, previous_date)
    statements.run(conn, SQL["baseline_changes" if previous_date is None else "day_changes"], params)
    cursor = statements.run(conn, SQL["summary"], params)
    counts = dict(zip([d[0] for d in cursor.description], map(int, cursor.fetchone()), strict=True))
    return ChangeSummary(
        connection_id=connection_id,
        snapshot_date=snapshot_date,
        previous_snapshot_date=previous_date,
        is_baseline=previous_date is None,
        **counts,
        drop_share=counts["dropped"] / counts["previous_edges"] if counts["previous_edges"] else 0.0,
    )


def reason_counts(conn: duckdb.DuckDBPyConnection) -> dict[str, dict[str, int]]:
    """``{"added": {reason: n}, "dropped": {reason: n}}`` of the change rows ``diff_partition`` computed."""
    out: dict[str, dict[str, int]] = {"added": {}, "dropped": {}}
    for change_type, reason, count in conn.execute(SQL["reasons"]).fetchall():
        out[change_type][reason] = int(count)
    return out


def write_changes(
    conn: duckdb.DuckDBPyConnection, connection_id: str, snapshot_date: date, previous_date: date | None
) -> None:
    """Replace the day's ``enrollment_changes`` with the rows ``diff_partition`` computed (caller's transaction)."""
    params = _params(connection_id, snapshot_date, previous_date)
    statements.run(conn, SQL["delete_changes"], params)
    statements.run(conn, SQL["write_changes"], params)


def _params(connection_id: str, snapshot_date: date, previous_date: date | None) -> dict[str, object]:
    return {"connection_id": connection_id, "snapshot_date": snapshot_date, "previous_date": previous_date}
