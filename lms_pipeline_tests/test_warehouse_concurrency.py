"""Several writer processes on one DuckDB file queue on the lock instead of failing, and readers never block them:
an analyst keeps one session open on the published copy throughout and sees every published day whole."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import duckdb

from lms_pipeline.warehouse import Warehouse

WRITER = """
import sys, pandas as pd
from datetime import date, timedelta
from lms_pipeline.warehouse import Warehouse
wh, conn = Warehouse(sys.argv[1], lock_timeout=120), sys.argv[2]
for i in range(5):
    day = date(2026, 9, 1) + timedelta(days=i)
    frame = pd.DataFrame({"connection_id": conn, "snapshot_date": pd.Timestamp(day), "course_id": "a",
                          "student_id": [f"s{n}" for n in range(50_000)]})
    change_set = pd.DataFrame([{"connection_id": conn, "snapshot_date": pd.Timestamp(day), "is_baseline": i == 0,
                                "courses_compared": 1, "courses_not_exposed": 0, "previous_edges": 50_000,
                                "current_edges": 50_000, "added": 0, "dropped": 0, "drop_share": 0.0,
                                "max_drop_share": 0.2, "guard": "passed"}])
    wh.replace_partition({"course_student_edges": frame, "enrollment_change_sets": change_set}, conn, day)
    wh.publish_partition(conn, day)
"""


def test_parallel_writers_all_succeed_while_an_analyst_keeps_the_published_copy_open(tmp_path) -> None:
    db = tmp_path / "w.duckdb"
    seed = Warehouse(db)
    seed.replace_partition({}, "c0", date(2026, 9, 1))
    analyst = duckdb.connect(str(seed.publish_partition("c0", date(2026, 9, 1)).analysts_db), read_only=True)
    try:
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"c{i}"], stderr=subprocess.PIPE, text=True)
            for i in range(4)
        ]
        for proc in writers:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
        # The analyst's session stayed open throughout and now sees every day, each whole.
        days = analyst.execute(
            "SELECT connection_id, snapshot_date, count(*) FROM lms.course_student_edges GROUP BY ALL"
        ).fetchall()
        assert len(days) == 20 and all(n == 50_000 for _, _, n in days)
    finally:
        analyst.close()
    counts = Warehouse(db).query(
        "SELECT connection_id, snapshot_date, count(*) AS n FROM lms.course_student_edges GROUP BY ALL"
    )
    assert len(counts) == 20 and (counts["n"] == 50_000).all()
