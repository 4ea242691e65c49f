"""Several writer processes on one DuckDB file queue on the lock instead of failing, and readers never block them."""

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
    wh.replace_partition({"course_student_edges": frame}, conn, day)
    wh.publish()
"""


def test_parallel_writers_all_succeed_while_an_analyst_keeps_the_published_copy_open(tmp_path) -> None:
    db = tmp_path / "w.duckdb"
    seed = Warehouse(db)
    seed.replace_partition({}, "c0", date(2026, 9, 1))
    analyst = duckdb.connect(str(seed.publish()), read_only=True)
    try:
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"c{i}"], stderr=subprocess.PIPE, text=True)
            for i in range(4)
        ]
        for proc in writers:
            _, err = proc.communicate(timeout=240)
            assert proc.returncode == 0, err
        assert analyst.execute("SELECT count(*) FROM lms.course_student_edges").fetchone()[0] == 0
    finally:
        analyst.close()
    counts = Warehouse(db).query(
        "SELECT connection_id, snapshot_date, count(*) AS n FROM lms.course_student_edges GROUP BY ALL"
    )
    assert len(counts) == 20 and (counts["n"] == 50_000).all()
