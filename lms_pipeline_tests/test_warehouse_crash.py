"""A writer killed with SIGKILL mid-transaction leaves every partition whole, and the next write succeeds."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import date, timedelta

import duckdb
import pandas as pd

from lms_pipeline.warehouse import Warehouse

ROWS = 200_000
DAYS = [date(2026, 9, 1) + timedelta(days=i) for i in range(3)]

# The child rewrites three partitions over and over; every row of one write carries its generation number.
CHILD = f"""
import sys, pandas as pd
from datetime import date, timedelta
from lms_pipeline.warehouse import Warehouse
wh = Warehouse(sys.argv[1])
days = [date(2026, 9, 1) + timedelta(days=i) for i in range(3)]
for generation in range(10_000):
    day = days[generation % 3]
    frame = pd.DataFrame({{"connection_id": "c1", "snapshot_date": pd.Timestamp(day),
                          "course_id": "g" + str(generation), "student_id": [f"s{{i}}" for i in range({ROWS})]}})
    wh.replace_partition({{"course_student_edges": frame}}, "c1", day)
    print(generation, flush=True)
"""


def test_sigkill_mid_write_leaves_partitions_whole_and_the_next_write_works(tmp_path) -> None:
    db = tmp_path / "w.duckdb"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(4):  # let a few writes commit, then kill during the next one
            assert child.stdout.readline(), "the writer died on its own"
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    with duckdb.connect(str(db), read_only=True) as conn:
        parts = conn.execute(
            "SELECT snapshot_date, count(*), count(DISTINCT course_id) FROM lms.course_student_edges GROUP BY 1"
        ).fetchall()
    assert len(parts) == 3
    assert all(rows == ROWS and generations == 1 for _, rows, generations in parts), parts

    wh = Warehouse(db, lock_timeout=10)  # the dead writer's file lock is gone with its process
    frame = pd.DataFrame({"connection_id": "c1", "snapshot_date": pd.Timestamp(DAYS[0]), "course_id": "after",
                          "student_id": ["s1"]})  # fmt: skip
    wh.replace_partition({"course_student_edges": frame}, "c1", DAYS[0])
    assert wh.query("SELECT course_id FROM lms.course_student_edges WHERE snapshot_date = ?", [DAYS[0]])[
        "course_id"
    ].tolist() == ["after"]
