"""``make bench``: per-course scans against the embedded simulator with added latency, as time / latency bound.

A per-course scan is latency-bound: its time is the number of request rounds it must wait through. With a budget of
``B`` requests in flight and ``L`` seconds per answer, no client can do better than the **latency bound**

    bound = L x (S + max(ceil(C / B), P))

where ``S`` is the scan's sequential requests (course listing pages, an OAuth token, the probe course of the
progress scan: each waits for the one before), ``C`` the requests of the per-course listings that may run side by
side, and ``P`` the longest single listing among them (its pages follow one another's next links). The bench
prints the measured wall time of each fetch over that bound; 1.00x would be a client that never waits on itself.

Each scan is read at the default budget (``options.max_concurrent_requests``) at 20 ms and 50 ms of added latency
per request, three times, and the median is reported. Throttling is off (Canvas's bucket, every app's rate limit):
this measures latency, and ``lms_pipeline_tests/test_fetch_concurrency.py`` tests the backoff. The simulator runs
in a child process, as a provider is another machine: in this one it would take the client's CPU and GIL.

Each line reads ``fetch <scan> <n> courses, budget <B>, latency <L> ms: <t> s vs bound <b> s = <r>x``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from lms_pipeline.providers.canvas.client import CanvasClient
from lms_pipeline.providers.classroom.client import ClassroomClient
from lms_pipeline.providers.http import FetchStats, RetrySettings
from lms_pipeline.providers.oneroster.rostering import OneRosterRosterReader
from lms_pipeline.providers.options import CommonOptions
from lms_pipeline.providers.unified.client import UnifiedLmsClient
from lms_pipeline.providers.unified.progress import PARAMS, scan_per_course

DAY = date(2026, 9, 1)
TOKEN = "bench-token-0123456789"
CLIENT_ID = "bench-client"
LATENCIES_MS = (20, 50)
REPEATS = 3
GOAL = 1.5
RETRY = RetrySettings(max_attempts=3, base_delay=0.05, max_delay=1.0, timeout=30.0)


@dataclass(frozen=True)
class Fetch:
    """One scan as the bench counts it: its time and its requests split as the bound needs them."""

    seconds: float
    sequential: int  # S
    side_by_side: int  # C
    longest: int  # P

    def bound(self, budget: int, latency: float) -> float:
        return latency * (self.sequential + max(math.ceil(self.side_by_side / budget), self.longest))


def world_spec(connection_id: str, courses: int) -> dict:
    return {"connection_id": connection_id, "seed": 17, "start_date": DAY, "n_courses": courses,
            "mean_roster_size": 25, "n_students": 4000, "classes": "rosters", "roster_exposure": "all",
            "contents_per_course": 4}  # fmt: skip


def serve(courses: int, latency_ms: float, ready: multiprocessing.Queue) -> None:
    """The child process: every dialect's app behind one router, answering ``latency_ms`` late."""
    from lms_pipeline.providers.canvas.simulator import CanvasSimulatorApp
    from lms_pipeline.providers.classroom.simulator import ClassroomSimulatorApp
    from lms_pipeline.providers.oneroster.simulator import OneRosterRosteringApp
    from lms_pipeline.providers.unified.simulator import SimulatorApp
    from lms_pipeline.simulator import World, WorldSpec
    from lms_pipeline.simulator.server import Router, serve_in_thread

    worlds = {p: World(WorldSpec(**world_spec(f"bench-{p}", courses)))
              for p in ("lms", "canvas", "classroom", "oneroster")}  # fmt: skip
    tokens = {w.spec.connection_id: TOKEN for w in worlds.values()}
    router = Router({
        "lms": SimulatorApp([worlds["lms"]], tokens, clock=lambda: DAY),
        "canvas": CanvasSimulatorApp([worlds["canvas"]], tokens, clock=lambda: DAY, bucket_capacity=None),
        "classroom": ClassroomSimulatorApp([worlds["classroom"]], tokens, clock=lambda: DAY),
        "oneroster": OneRosterRosteringApp([worlds["oneroster"]], {"bench-oneroster": (CLIENT_ID, TOKEN)},
                                           clock=lambda: DAY),
    })  # fmt: skip
    with serve_in_thread(router, latency_ms=latency_ms) as base_url:
        ready.put(base_url)
        ready.get()  # until the parent says stop (it puts None)


def _split(pages: list[dict], stats: FetchStats) -> tuple[int, int, int]:
    """(S, C, P) of a dialect scan: its requests, its per-course pages, its longest per-course listing."""
    listings = Counter((p["endpoint"], p["course_id"], json.dumps(p.get("params", {}).get("filter")))
                       for p in pages if p.get("course_id") is not None)  # fmt: skip
    side_by_side = sum(listings.values())
    return stats.requests - side_by_side, side_by_side, max(listings.values(), default=0)


Scan = Callable[[str, int, list[str]], tuple[list[dict], FetchStats]]


def canvas(base_url: str, budget: int, _: list[str]) -> tuple[list[dict], FetchStats]:
    with CanvasClient("bench-canvas", f"{base_url}/canvas/bench-canvas", TOKEN, simulated_date=DAY, retry=RETRY,
                      max_concurrent_requests=budget) as client:  # fmt: skip
        return client.roster_pages(), client.stats


def classroom(base_url: str, budget: int, _: list[str]) -> tuple[list[dict], FetchStats]:
    with ClassroomClient("bench-classroom", f"{base_url}/classroom/bench-classroom", TOKEN, as_of=DAY, retry=RETRY,
                         max_concurrent_requests=budget) as client:  # fmt: skip
        return client.scan_rosters(), client.stats


def oneroster(base_url: str, budget: int, _: list[str]) -> tuple[list[dict], FetchStats]:
    with OneRosterRosterReader("bench-oneroster", f"{base_url}/oneroster/bench-oneroster", CLIENT_ID, TOKEN,
                               simulated_date=DAY, retry=RETRY, max_concurrent_requests=budget) as reader:  # fmt: skip
        return reader.roster_pages(), reader.stats


def progress(base_url: str, budget: int, courses: list[str]) -> tuple[list[dict], FetchStats]:
    """The Unified API's contents and activities of ``courses`` (the pipeline reads them from the day's roster);
    the first course is read alone (the 501 probe)."""
    scan = scan_per_course(lambda: UnifiedLmsClient("bench-lms", base_url, TOKEN, retry=RETRY,
                                                    headers={"X-Simulated-Date": DAY.isoformat()},
                                                    max_concurrent_requests=budget), courses, PARAMS)  # fmt: skip
    probe = courses[0]
    pages = [{"endpoint": p.endpoint, "course_id": None if course == probe else course} for course, p in scan.pages]
    return pages, scan.stats


SCANS: dict[str, Scan] = {
    "progress contents+activities": progress,
    "canvas enrollments+sections": canvas,
    "oneroster class enrollments": oneroster,
    "classroom students+aliases": classroom,
}


def measure(scan: Scan, base_url: str, budget: int, courses: list[str]) -> Fetch:
    started = time.perf_counter()
    pages, stats = scan(base_url, budget, courses)
    seconds = time.perf_counter() - started
    if stats.retries:
        raise SystemExit(f"{stats.retries} retries: the bench measures latency, so nothing may throttle or fail")
    return Fetch(seconds, *_split(pages, stats))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fetch_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--courses", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--budget", type=int, default=CommonOptions().max_concurrent_requests)
    args = parser.parse_args()
    from lms_pipeline.simulator import World, WorldSpec

    courses = sorted(c["id"] for c in World(WorldSpec(**world_spec("bench-lms", args.courses))).courses(DAY))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing of this one's state
    worst = 0.0
    for latency_ms in LATENCIES_MS:
        ready: multiprocessing.Queue = context.Queue()
        server = context.Process(target=serve, args=(args.courses, latency_ms, ready), daemon=True)
        server.start()
        try:
            base_url = ready.get(timeout=120)
            for name, scan in SCANS.items():
                measure(scan, base_url, args.budget, courses)  # warms the app's caches of the day, not timed
                runs = [measure(scan, base_url, args.budget, courses) for _ in range(args.repeats)]
                seconds = statistics.median(r.seconds for r in runs)
                bound = runs[0].bound(args.budget, latency_ms / 1000)
                worst = max(worst, seconds / bound)
                print(f"fetch {name} {args.courses} courses, budget {args.budget}, latency {latency_ms} ms: "
                      f"{seconds:.2f} s vs bound {bound:.2f} s = {seconds / bound:.2f}x", flush=True)  # fmt: skip
        finally:
            ready.put(None)
            server.join(timeout=10)
            if server.is_alive():
                server.terminate()
    verdict = "within" if worst <= GOAL else "OVER"
    print(f"worst ratio {worst:.2f}x: {verdict} the {GOAL}x goal")
    return 0 if worst <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
