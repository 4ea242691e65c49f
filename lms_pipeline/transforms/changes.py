"""Day-over-day enrollment change sets from two roster snapshots, in DuckDB SQL.

Rules (each one prevents a false drop or add that peers are known to publish):
- Only courses whose roster is *known* on a day (``exposed`` or ``empty``) take part. A course ``not_exposed`` on
  either day yields no adds and no drops: "the provider did not tell us" is not "everyone left".
- A course present yesterday and absent today (the scan was complete, or the fetch would have failed) drops its
  students with reason ``course_removed``; a course newly listed adds its students with reason ``course_added``.
- A drop from a course that went inactive since yesterday carries reason ``course_deactivated``.
- Without a previous snapshot the day is a baseline: no change rows, ``is_baseline`` true in the change-set row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

import duckdb
import pandas as pd

CHANGE_COLUMNS = [
    "connection_id", "snapshot_date", "previous_snapshot_date", "course_id", "student_id", "change_type", "reason",
]  # fmt: skip

_EMPTY_ROSTERS = pd.DataFrame(
    {
        "course_id": pd.Series(dtype=str),
        "roster_status": pd.Series(dtype=str),
        "is_active": pd.Series(dtype=bool),
    }
)
_EMPTY_EDGES = pd.DataFrame({"course_id": pd.Series(dtype=str), "student_id": pd.Series(dtype=str)})

_CHANGES_SQL = """
WITH courses AS (
    SELECT coalesce(c.course_id, p.course_id) AS course_id,
           p.roster_status AS prev_status, c.roster_status AS cur_status,
           p.is_active AS prev_active, c.is_active AS cur_active,
           p.roster_status IN ('exposed', 'empty') AS prev_known,
           c.roster_status IN ('exposed', 'empty') AS cur_known
    FROM prev_rosters p FULL OUTER JOIN cur_rosters c ON p.course_id = c.course_id
),
added AS (
    SELECT e.course_id, e.student_id, 'added' AS change_type,
           CASE WHEN k.prev_status IS NULL THEN 'course_added' ELSE 'enrolled' END AS reason
    FROM (SELECT course_id, student_id FROM cur_edges
          EXCEPT SELECT course_id, student_id FROM prev_edges) e
    JOIN courses k USING (course_id)
    WHERE k.cur_known AND (k.prev_known OR k.prev_status IS NULL)
),
dropped AS (
    SELECT e.course_id, e.student_id, 'dropped' AS change_type,
           CASE WHEN k.cur_status IS NULL THEN 'course_removed'
                WHEN k.prev_active AND NOT k.cur_active THEN 'course_deactivated'
                ELSE 'unenrolled' END AS reason
    FROM (SELECT course_id, student_id FROM prev_edges
          EXCEPT SELECT course_id, student_id FROM cur_edges) e
    JOIN courses k USING (course_id)
    WHERE k.prev_known AND (k.cur_known OR k.cur_status IS NULL)
)
SELECT * FROM added UNION ALL SELECT * FROM dropped ORDER BY course_id, student_id, change_type
"""


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


def diff_snapshots(
    connection_id: str,
    snapshot_date: date,
    cur_rosters: pd.DataFrame,
    cur_edges: pd.DataFrame,
    previous_snapshot_date: date | None = None,
    prev_rosters: pd.DataFrame | None = None,
    prev_edges: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, ChangeSummary]:
    """Change rows for ``snapshot_date`` against the previous snapshot (None: a baseline)."""
    baseline = previous_snapshot_date is None
    prev_rosters = _EMPTY_ROSTERS if baseline or prev_rosters is None else prev_rosters
    prev_edges = _EMPTY_EDGES if baseline or prev_edges is None else prev_edges
    with duckdb.connect() as conn:
        for name, frame in [
            ("prev_rosters", prev_rosters[["course_id", "roster_status", "is_active"]]),
            ("cur_rosters", cur_rosters[["course_id", "roster_status", "is_active"]]),
            ("prev_edges", prev_edges[["course_id", "student_id"]]),
            ("cur_edges", cur_edges[["course_id", "student_id"]]),
        ]:
            conn.register(name, frame)
        changes = _empty_changes() if baseline else conn.execute(_CHANGES_SQL).df()
        compared, not_exposed = conn.execute(
            """
            SELECT count(*) FILTER (WHERE c.roster_status IN ('exposed', 'empty')
                                      AND p.roster_status IN ('exposed', 'empty')),
                   count(*) FILTER (WHERE c.roster_status = 'not_exposed' OR p.roster_status = 'not_exposed')
            FROM cur_rosters c FULL OUTER JOIN prev_rosters p ON c.course_id = p.course_id
            """
        ).fetchone()
    changes.insert(0, "connection_id", connection_id)
    changes.insert(1, "snapshot_date", pd.Timestamp(snapshot_date))
    changes.insert(2, "previous_snapshot_date", pd.Timestamp(previous_snapshot_date) if not baseline else pd.NaT)
    added = int((changes["change_type"] == "added").sum())
    dropped = int((changes["change_type"] == "dropped").sum())
    summary = ChangeSummary(
        connection_id=connection_id,
        snapshot_date=snapshot_date,
        previous_snapshot_date=previous_snapshot_date,
        is_baseline=baseline,
        courses_compared=int(compared),
        courses_not_exposed=int(not_exposed),
        previous_edges=len(prev_edges),
        current_edges=len(cur_edges),
        added=added,
        dropped=dropped,
        drop_share=dropped / len(prev_edges) if len(prev_edges) else 0.0,
    )
    return changes[CHANGE_COLUMNS], summary


def _empty_changes() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=str) for c in ["course_id", "student_id", "change_type", "reason"]})
