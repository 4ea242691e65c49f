"""``make scale-demo``: 200 simulated connections x 3 days through the daemon, on PostgreSQL, Celery workers and the
lake; every connection-day checked against the simulator's truth; throughput with 1 worker, then with 3.

Day 1 runs with one worker, days 2 and 3 with three (the two more started between), so both figures come from the
same run on the same machine. Everything is started under data/scale/ (emptied first) and stopped at the end.
``SCALE_DEMO_CONNECTIONS``, ``SCALE_DEMO_GROUPS`` and ``SCALE_DEMO_TIMEOUT`` (seconds per phase) change the size.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import yaml

from lms_pipeline.config import REPO_ROOT, load_settings
from lms_pipeline.scale import postgres
from lms_pipeline.scale.deployment import Deployment, days, demo_connections
from lms_pipeline.scale.groups import members, partitions_per_year

START = date(2026, 9, 1)
LOCK_ERRORS = re.compile(r"Could not set lock|database is locked|LockError|lock timeout", re.IGNORECASE)


def verify(deployment: Deployment, config_file: Path, checked_days: list[date]) -> list[str]:
    """Every connection-day in the lake's newest snapshot against the simulator's truth (the same oracle as
    ``make demo``); returns the connection-days that differ."""
    import duckdb

    from lms_pipeline.demo import _verify

    settings = load_settings(config_file)
    analysts = deployment.root / "analysts.duckdb"
    snapshot = deployment.scale.lake().analysts_db(analysts, "lms")
    with duckdb.connect(str(analysts), read_only=True) as conn:
        bad = _verify(conn, settings, checked_days)
        [(stored,)] = conn.execute(
            "SELECT count(*) FROM (SELECT DISTINCT connection_id, snapshot_date FROM lms.enrollment_change_sets)"
        ).fetchall()
    expected = len(settings.connections) * len(checked_days)
    if stored != expected:
        bad.append(f"{stored} connection-days stored of {expected}")
    print(f"  lake snapshot {snapshot}: {stored} connection-days published, {expected - len(bad)} equal the truth")
    return bad


def main() -> int:
    n_connections = int(os.environ.get("SCALE_DEMO_CONNECTIONS") or 200)
    n_groups = int(os.environ.get("SCALE_DEMO_GROUPS") or 10)
    timeout = float(os.environ.get("SCALE_DEMO_TIMEOUT") or 3600)
    root = REPO_ROOT / "data" / "scale"
    postgres.stop(root / "pg")  # a previous demo's server, if it was interrupted
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    config_file = root / "connections.yaml"
    config_file.write_text(yaml.safe_dump(demo_connections(n_connections, START), sort_keys=False))
    sizes = [len(m) for m in members(load_settings(config_file).connection_ids, n_groups).values()]
    print(f"{n_connections} connections in {n_groups} groups ({min(sizes)}-{max(sizes)} each); partitions kept a "
          f"year: {partitions_per_year(n_connections, n_groups):,} grouped, "
          f"{partitions_per_year(n_connections, None):,} by connection")  # fmt: skip
    day1, *later = days(START, 3)
    started = time.monotonic()
    with Deployment(root, config_file, n_groups) as deployment:
        print(f"PostgreSQL, the daemon and 1 worker started under {root}")
        deployment.start_worker("w1")
        t0 = time.monotonic()
        deployment.submit(day1)
        counts = deployment.wait(n_groups, timeout)
        one = n_connections / (time.monotonic() - t0) * 60
        print(f"  day {day1} with 1 worker: {one:.1f} connection-days/minute; runs {counts}")
        deployment.start_worker("w2")
        deployment.start_worker("w3")
        t1 = time.monotonic()
        for day in later:
            deployment.submit(day)
        counts = deployment.wait(n_groups * 3, timeout)
        three = n_connections * len(later) / (time.monotonic() - t1) * 60
        print(f"  days {later[0]}..{later[-1]} with 3 workers: {three:.1f} connection-days/minute; runs {counts}")
        bad = verify(deployment, config_file, [day1, *later])
        locks = sorted({m.group(0) for m in LOCK_ERRORS.finditer(deployment.log_text())})
    print(f"Throughput ratio 3 workers / 1 worker: {three / one:.2f} (2 cores shared; the ideal is bounded by cores)")
    print(f"Everything stopped; {time.monotonic() - started:.0f}s in all.")
    failed = counts.get("FAILURE", 0) + counts.get("CANCELED", 0)
    if bad or locks or failed or counts.get("SUCCESS", 0) != n_groups * 3:
        print(f"FAILED: {failed} run(s) failed; lock errors: {locks or 'none'}; differing: {bad[:10]}", file=sys.stderr)
        return 1
    print("Every connection-day equals the simulator's truth; no lock error in any log.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
