"""A one-partition run from the shell, as an operator types it: `dagster asset materialize` of one small demo
partition, in one process (the default) and with the multiprocess executor (a process per step), medians of 3.

Each run gets a fresh DAGSTER_HOME and warehouse, so it measures a cold run: Python start, imports, the
definitions, the embedded simulator, the three roster steps.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTITION = "corp-learnupon|2026-09-01"
MULTIPROCESS = '{"execution": {"config": {"multiprocess": {}}}}'


def run_once(config: str | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "DAGSTER_HOME": tmp, "LMS_PIPELINE_DUCKDB": str(Path(tmp) / "w.duckdb")}
        command = [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
                   "lms_pipeline.definitions", "--select", "group:roster", "--partition", PARTITION]  # fmt: skip
        if config:
            command += ["--config-json", config]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - started
        if done.returncode != 0 or "RUN_SUCCESS" not in done.stderr + done.stdout:
            raise RuntimeError(f"the shell run failed:\n{done.stderr[-2000:]}")
        return elapsed


def main(repeats: int = 3) -> None:
    one = statistics.median(run_once(None) for _ in range(repeats))
    multi = statistics.median(run_once(MULTIPROCESS) for _ in range(repeats))
    print(f"shell run of one partition ({PARTITION}, roster group): one process {one:.1f} s, a process per step "
          f"{multi:.1f} s = {multi / one:.2f}x (medians of {repeats}, cold: imports and a fresh instance each)")


if __name__ == "__main__":
    main()
