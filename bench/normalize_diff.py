"""``make bench``: normalize + diff of two generated days of Unified course pages, at 1.5M and 10M edges a day.

Every contender reads the same stored pages (``lms.raw_course_pages`` of a warehouse file, the bodies as a provider
sent them) from its own fresh copy of that file, in a fresh subprocess, so its time and peak RSS are its own:

- project: the real code path of the roster assets (``unified_snapshot`` for each day, then ``change_set`` for each:
  parse, contract checks, dedupe, rosters and edges written and validated in the warehouse, the diff with its rules,
  the change rows written and validated), on a ``Warehouse`` over the copy;
- plain DuckDB SQL, the anchor: ``from_json`` + ``unnest`` of both days' pages into an edges table, then ``EXCEPT``
  both ways into a changes table, in the same file, with DuckDB's defaults; no contract check, no dedupe, no rule;
- per-row Python: the pages read back, ``json.loads``, loops and set differences.

The machine is shared and noisy, so times are medians and the contenders take turns; the ratio to the anchor, timed
in the same run, is the figure that survives a slow machine. Each contender's counts are checked against the
others' (edges per day; changes of the project against the per-row reference) so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "out"
CONNECTION = "bench"
DAY1, DAY2 = date(2026, 9, 1), date(2026, 9, 2)
SIZES = {"1.5M": 50_000, "10M": 333_334}  # courses of 30 students a day
ROSTER = 30
LAYOUT = "v2"  # bump when the stored pages' layout changes, so cached files are rebuilt

ANCHOR_SQL = [
    """CREATE TABLE anchor_edges AS
       SELECT snapshot_date, o.id AS course_id,
              unnest(list_distinct(list_concat(coalesce(o.student_ids, []),
                                               coalesce(list_transform(o.students, lambda s: s.id), [])))) AS student_id
       FROM (SELECT snapshot_date,
                    unnest(from_json(payload, '[{"id": "VARCHAR", "student_ids": ["VARCHAR"],
                                                 "students": [{"id": "VARCHAR"}]}]')) AS o
             FROM lms.raw_course_pages)""",
    """CREATE TABLE anchor_changes AS
       (SELECT course_id, student_id, 'added' AS change_type FROM anchor_edges WHERE snapshot_date = $day2
        EXCEPT SELECT course_id, student_id, 'added' FROM anchor_edges WHERE snapshot_date = $day1)
       UNION ALL
       (SELECT course_id, student_id, 'dropped' FROM anchor_edges WHERE snapshot_date = $day1
        EXCEPT SELECT course_id, student_id, 'dropped' FROM anchor_edges WHERE snapshot_date = $day2)""",
]


def generate(path: Path, courses: int, roster: int = ROSTER, page_size: int = 100, seed: int = 7) -> None:
    """Two consecutive days of course pages, both roster fields on every course: day 2 drops ~2% of edges, adds
    ~0.3 students per course, and 1% of courses stop exposing their roster. Stored as bodies, 2,000 pages at a time."""
    from lms_pipeline.warehouse import Warehouse

    rng = np.random.default_rng(seed)
    students = rng.integers(0, courses * roster // 4, size=(courses, roster))
    store = Warehouse(path)
    for day in (DAY1, DAY2):
        items: list[str] = []
        for c in range(courses):
            ids = [f"stu-{s:07d}" for s in students[c]]
            if day == DAY2:
                keep = rng.random(roster) > 0.02
                ids = [s for s, k in zip(ids, keep, strict=True) if k] + [
                    f"new-{c}-{i}" for i in range(rng.poisson(0.3))
                ]
            item = (
                f'{{"id": "crs-{c:06d}", "name": "Course {c}", "is_active": true, "updated_at": "2026-09-01T08:00:00Z"'
            )
            if not (day == DAY2 and c % 100 == 0):  # roster not exposed today
                item += (', "student_ids": [' + ", ".join(f'"{s}"' for s in ids) + '], "students": ['
                         + ", ".join(f'{{"id": "{s}", "name": "Student {s[4:]}"}}' for s in ids) + "]")  # fmt: skip
            items.append(item + "}")
        bodies = ["[" + ", ".join(items[i : i + page_size]) + "]" for i in range(0, len(items), page_size)]
        for start in range(0, len(bodies), 2000):
            chunk = bodies[start : start + 2000]
            store.append("raw_course_pages", pd.DataFrame({
                "connection_id": CONNECTION, "snapshot_date": pd.Timestamp(day), "endpoint": "course",
                "page_index": range(start, start + len(chunk)),
                "page_offset": [i * page_size for i in range(start, start + len(chunk))],
                "request_params": "{}", "fetched_at": pd.Timestamp(day, tz="UTC"), "status_code": 200, "attempts": 1,
                "item_count": [min(page_size, courses - i * page_size) for i in range(start, start + len(chunk))],
                "payload": chunk, "run_id": "bench",
            }))  # fmt: skip
    with store.session() as conn:
        conn.execute("CHECKPOINT")


def run_project(path: Path) -> dict:
    from lms_pipeline.config import Settings
    from lms_pipeline.guard import change_set
    from lms_pipeline.providers import registry
    from lms_pipeline.roster_days import build_snapshot
    from lms_pipeline.warehouse import Warehouse

    store = Warehouse(path)
    conn = Settings.model_validate({"start_date": DAY1, "connections": [
        {"id": CONNECTION, "provider": "unified", "token_env": "BENCH_TOKEN"}]}).connection(CONNECTION)  # fmt: skip
    source = registry.provider(conn.provider).rosters
    started = time.perf_counter()
    edges = [build_snapshot(store, conn, day, source)[2]["edges"] for day in (DAY1, DAY2)]
    change_set(store, CONNECTION, DAY1, 1.0, False)  # the baseline: the diff compares with a published day
    summary, _, _ = change_set(store, CONNECTION, DAY2, 1.0, False)
    return {"seconds": time.perf_counter() - started, "edges": edges, "added": summary.added,
            "dropped": summary.dropped}  # fmt: skip


def run_anchor(path: Path) -> dict:
    import duckdb

    with duckdb.connect(str(path)) as conn:
        started = time.perf_counter()
        for sql in ANCHOR_SQL:
            conn.execute(sql, {"day1": DAY1, "day2": DAY2} if "$day" in sql else {})
        conn.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
        edges = [conn.execute("SELECT count(*) FROM anchor_edges WHERE snapshot_date = ?", [d]).fetchone()[0]
                 for d in (DAY1, DAY2)]  # fmt: skip
        added, dropped = conn.execute(
            "SELECT count(*) FILTER (WHERE change_type = 'added'), "
            "count(*) FILTER (WHERE change_type = 'dropped') FROM anchor_changes"
        ).fetchone()
    return {"seconds": seconds, "edges": edges, "added": added, "dropped": dropped}


def run_reference(path: Path) -> dict:
    """What a per-row implementation does: parse every item, loop over every edge, diff Python sets."""
    import duckdb

    started = time.perf_counter()
    snapshots = []
    with duckdb.connect(str(path), read_only=True) as conn:
        for day in (DAY1, DAY2):
            rosters, edges = {}, set()
            for (payload,) in conn.execute("SELECT payload FROM lms.raw_course_pages WHERE snapshot_date = ? "
                                           "ORDER BY page_index", [day]).fetchall():  # fmt: skip
                for item in json.loads(payload):
                    ids, refs = item.get("student_ids"), item.get("students")
                    if ids is None and refs is None:
                        rosters[item["id"]] = None
                        continue
                    roster = set(ids or []) | {r["id"] for r in refs or []}
                    rosters[item["id"]] = roster
                    edges.update((item["id"], s) for s in roster)
            snapshots.append((rosters, edges))
    (r1, e1), (r2, e2) = snapshots
    known = {c for c in r1 if r1[c] is not None and r2.get(c) is not None}
    added = [e for e in e2 - e1 if e[0] in known]
    dropped = [e for e in e1 - e2 if e[0] in known]
    return {"seconds": time.perf_counter() - started, "edges": [len(e1), len(e2)], "added": len(added),
            "dropped": len(dropped)}  # fmt: skip


CONTENDERS = {"project": run_project, "anchor": run_anchor, "reference": run_reference}


def child(kind: str, path: Path) -> None:
    result = CONTENDERS[kind](path)
    result["peak_mb"] = peak_rss_mb()
    print(json.dumps(result))


def peak_rss_mb() -> float:
    """This process's own peak RSS. ``ru_maxrss`` would not do: Linux carries it over ``exec``, so a child would
    report the parent's peak (the generator's, gigabytes) whenever that is higher."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, pages: Path, timeout: float) -> dict:
    """One run of ``kind`` in a fresh process on a fresh copy of the pages."""
    work = OUT / f"work_{kind}.duckdb"
    for leftover in OUT.glob("work_*"):
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    shutil.copyfile(pages, work)
    try:
        out = subprocess.run([sys.executable, "-m", "bench.normalize_diff", "--child", kind, "--data", str(work)],
                             check=True, capture_output=True, text=True, timeout=timeout)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"{kind} failed:\n{exc.stderr[-3000:]}") from None
    finally:
        for leftover in OUT.glob("work_*"):
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_size(label: str, repeats: dict[str, int], timeout: float) -> None:
    courses = SIZES[label]
    pages = OUT / f"pages_{LAYOUT}_{courses}x{ROSTER}.duckdb"
    if not pages.exists():
        started = time.perf_counter()
        partial = pages.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        generate(partial, courses)
        os.replace(partial, pages)
        print(f"generated {courses:,} courses x {ROSTER} students, 2 days, in {time.perf_counter() - started:.0f} s")
    runs: dict[str, list[dict]] = {kind: [] for kind in CONTENDERS}
    for turn in range(max(repeats.values())):  # take turns, so a busier minute does not hit one contender only
        for kind in CONTENDERS:
            if turn < repeats[kind]:
                runs[kind].append(measure(kind, pages, timeout))
    first = {kind: r[0] for kind, r in runs.items()}
    for kind, r in runs.items():
        assert all(x["edges"] == first["project"]["edges"] for x in r), f"{kind} edges differ: {r[0]['edges']}"
    for key in ("added", "dropped"):
        assert first["project"][key] == first["reference"][key], f"{key}: project and per-row Python disagree"
    med = {kind: statistics.median(x["seconds"] for x in r) for kind, r in runs.items()}
    peak = {kind: max(x["peak_mb"] for x in r) / 1024 for kind, r in runs.items()}
    edges = first["project"]["edges"]
    print(f"{label} edges/day ({edges[0]:,} and {edges[1]:,}); medians of "
          + ", ".join(f"{len(r)} {kind}" for kind, r in runs.items()) + " run(s); every run: "
          + "; ".join(f"{kind} " + " ".join(f"{x['seconds']:.1f}" for x in r) for kind, r in runs.items()))  # fmt: skip
    print(
        f"normalize + diff {label} edges/day: project {med['project']:.1f} s vs plain DuckDB SQL "
        f"{med['anchor']:.1f} s = {med['project'] / med['anchor']:.2f}x, peak RSS {peak['project']:.2f} GiB "
        f"(plain SQL {peak['anchor']:.2f} GiB); per-row Python {med['reference']:.1f} s = "
        f"{med['reference'] / med['project']:.2f}x the project's time, peak RSS {peak['reference']:.2f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=sorted(CONTENDERS))
    parser.add_argument("--data", type=Path)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="runs of the project and the anchor per size")
    parser.add_argument("--reference-repeats-10m", type=int, default=1,
                        help="runs of the per-row reference at 10M (2 minutes each)")  # fmt: skip
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data)
        return
    OUT.mkdir(exist_ok=True)
    started = time.perf_counter()
    for label in args.sizes:
        reference = args.reference_repeats_10m if label == "10M" else args.repeats
        bench_size(label, {"project": args.repeats, "anchor": args.repeats, "reference": reference}, timeout=900)
        print(f"({label} done at {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
