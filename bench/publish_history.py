"""Publishing costs O(the partition), not O(history): one day published with 1 day of history, then with 365.

The history is the demo's 7 connections at their sizes (about 3,300 courses and 82,000 edges a day), filled with
set-based SQL straight into the live warehouse (rosters, edges, change sets, sync_log and raw pages of student ids),
so filling a year takes a minute, not a year of runs. Each figure is the median of several publishes of the same day
(each publish writes a new version of the day and swaps it in, as a run does).
"""

from __future__ import annotations

import shutil
import statistics
import time
from datetime import date, timedelta
from pathlib import Path

from lms_pipeline.warehouse import Warehouse

START = date(2025, 9, 1)
# (connection, courses) of data/connections.yaml's demo; 25 students a course, as the demo's worlds.
CONNECTIONS = [
    ("district-canvas", 3000), ("moodle-highschool", 60), ("legacy-blackboard", 50), ("corp-learnupon", 30),
    ("canvas-rest", 40), ("google-classroom", 30), ("oneroster-district", 40),
]  # fmt: skip
ROSTER = 25
PUBLISHED = "district-canvas"

FILL = (Path(__file__).with_suffix(".sql")).read_text()


def fill(store: Warehouse, first: date, last: date) -> None:
    with store.session() as conn:
        conn.execute("SET enable_progress_bar = false")
        for connection_id, courses in CONNECTIONS:
            params = {"conn": connection_id, "first": first, "last": last, "courses": courses, "roster": ROSTER}
            for statement in filter(str.strip, FILL.split(";\n")):
                conn.execute(statement, {k: v for k, v in params.items() if f"${k}" in statement})


def time_publish(store: Warehouse, day: date, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = store.publish_partition(PUBLISHED, day)
        times.append(time.perf_counter() - started)
        assert result.published, result.reason
    return statistics.median(times)


def run(out: Path, days: int = 365, repeats: int = 5) -> dict[str, float]:
    """Publish times (median seconds) of the last day with 1 day of history and with ``days`` days."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    store = Warehouse(out / "history.duckdb")
    last = START + timedelta(days=days - 1)
    fill(store, last, last)
    one_day = time_publish(store, last, repeats)
    started = time.perf_counter()
    fill(store, START, last - timedelta(days=1))
    filled = time.perf_counter() - started
    rows = store.query("SELECT count(*) AS n FROM lms.course_student_edges")["n"].iloc[0]
    full = time_publish(store, last, repeats)
    return {"one_day": one_day, "full": full, "days": days, "fill_seconds": filled, "edges": int(rows)}


def report(figures: dict[str, float]) -> str:
    ratio = figures["full"] / figures["one_day"]
    return (
        f"publish one day of {PUBLISHED} ({CONNECTIONS[0][1] * ROSTER:,} edges): {figures['one_day']:.3f} s with 1 "
        f"day of history, {figures['full']:.3f} s with {figures['days']} days x {len(CONNECTIONS)} connections "
        f"({figures['edges']:,} edges kept): publish {figures['days']}-day / 1-day = {ratio:.2f}x "
        f"(median of 5; history filled in {figures['fill_seconds']:.0f} s)"
    )


if __name__ == "__main__":
    print(report(run(Path(__file__).resolve().parent / "out" / "publish")))
