"""``make bench``: normalize + diff of a generated 1.5M-edge day, no network.

Each measurement runs in a fresh subprocess so its peak RSS is its own. The machine is noisy, so the figures
are medians, and the speed is also given as a ratio against a plain per-row Python reference (json.loads, loops,
set difference) timed in the same run: the ratio survives a slow machine better than edges/s does.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "out"
DAY1, DAY2 = date(2026, 9, 1), date(2026, 9, 2)


def generate(courses: int, roster: int, page_size: int = 100, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Two consecutive days of raw pages: day 2 drops ~2% of edges, adds ~1%, and 1% of courses go dark."""
    rng = np.random.default_rng(seed)
    students = rng.integers(0, courses * roster // 4, size=(courses, roster))
    days = {}
    for day in (DAY1, DAY2):
        items = []
        for c in range(courses):
            ids = [f"stu-{s:07d}" for s in students[c]]
            if day == DAY2:
                keep = rng.random(roster) > 0.02
                ids = [s for s, k in zip(ids, keep, strict=True) if k] + [
                    f"new-{c}-{i}" for i in range(rng.poisson(0.3))
                ]
            item = {"id": f"crs-{c:06d}", "name": f"Course {c}", "is_active": True,
                    "updated_at": "2026-09-01T08:00:00Z", "student_ids": ids,
                    "students": [{"id": s, "name": s} for s in ids]}  # fmt: skip
            if day == DAY2 and c % 100 == 0:
                del item["student_ids"], item["students"]  # roster not exposed today
            items.append(item)
        pages = [items[i : i + page_size] for i in range(0, len(items), page_size)]
        days[day.isoformat()] = pd.DataFrame(
            {
                "connection_id": "bench",
                "snapshot_date": pd.Timestamp(day),
                "endpoint": "course",
                "page_index": list(range(len(pages))),
                "page_offset": [i * page_size for i in range(len(pages))],
                "payload": [json.dumps(p) for p in pages],
            }
        )
    return days


def run_pipeline(days: dict[str, pd.DataFrame]) -> int:
    from lms_pipeline.transforms.changes import diff_snapshots
    from lms_pipeline.transforms.rosters import normalize_pages

    prev = normalize_pages(days[DAY1.isoformat()])
    cur = normalize_pages(days[DAY2.isoformat()])
    changes, _ = diff_snapshots("bench", DAY2, cur.course_rosters, cur.course_student_edges, DAY1,
                                prev.course_rosters, prev.course_student_edges)  # fmt: skip
    return len(prev.course_student_edges) + len(cur.course_student_edges) + 0 * len(changes)


def run_reference(days: dict[str, pd.DataFrame]) -> int:
    """What a per-row implementation does: parse every item, loop over every edge, diff Python sets."""
    snapshots = []
    for frame in days.values():
        rosters, edges = {}, set()
        for payload in frame["payload"]:
            for item in json.loads(payload):
                ids = item.get("student_ids")
                refs = item.get("students")
                if ids is None and refs is None:
                    rosters[item["id"]] = None
                    continue
                roster = set(ids or []) | {r["id"] for r in refs or []}
                rosters[item["id"]] = roster
                edges.update((item["id"], s) for s in roster)
        snapshots.append((rosters, edges))
    (r1, e1), (r2, e2) = snapshots
    known = {c for c in r1 if r1[c] is not None and r2.get(c) is not None}
    changes = [e for e in e2 - e1 if e[0] in known] + [e for e in e1 - e2 if e[0] in known]
    return len(e1) + len(e2) + 0 * len(changes)


def child(kind: str, data: Path) -> None:
    days = pickle.loads(data.read_bytes())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    edges = (run_pipeline if kind == "pipeline" else run_reference)(days)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "edges": edges, "peak_mb": peak / 1024, "input_mb": base / 1024}))


def measure(kind: str, data: Path, repeats: int) -> list[dict]:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-m", "bench.normalize_diff", "--child", kind, "--data", str(data)],
            check=True, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", choices=["pipeline", "reference"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--courses", type=int, default=50_000)
    parser.add_argument("--roster", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    OUT.mkdir(exist_ok=True)
    data = OUT / f"pages_{args.courses}x{args.roster}.pkl"
    if not data.exists():
        t0 = time.perf_counter()
        data.write_bytes(pickle.dumps(generate(args.courses, args.roster)))
        print(f"generated {args.courses} courses x {args.roster} students/day in {time.perf_counter() - t0:.1f}s")
    pipeline = measure("pipeline", data, args.repeats)
    reference = measure("reference", data, max(3, args.repeats // 2))
    med = {k: statistics.median(r["seconds"] for r in runs) for k, runs in (("p", pipeline), ("r", reference))}
    edges = pipeline[0]["edges"]
    peak = statistics.median(r["peak_mb"] for r in pipeline)
    peak_ref = statistics.median(r["peak_mb"] for r in reference)
    inputs = statistics.median(r["input_mb"] for r in pipeline)
    print(f"edges normalized (two days of {edges // 2:,}): {edges:,}")
    print(f"normalize + diff, median of {len(pipeline)}: {med['p']:.2f}s = {edges / med['p']:,.0f} edges/s")
    print(f"per-row Python reference, median of {len(reference)}: {med['r']:.2f}s = {edges / med['r']:,.0f} edges/s")
    print(f"speed ratio (reference time / pipeline time): {med['r'] / med['p']:.2f}x")
    print(f"peak RSS: pipeline {peak:,.0f} MB, reference {peak_ref:,.0f} MB (input pages loaded: {inputs:,.0f} MB)")


if __name__ == "__main__":
    main()
