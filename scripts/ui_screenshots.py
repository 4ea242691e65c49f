"""Screenshots of what an operator sees in the Dagster UI: the Checks tab with passing and failing checks, a stale
connection, a held day's failed guard, and a metadata plot over partitions.

It builds a small world of its own (nothing of data/ is touched): three embedded connections whose worlds start
three days ago, ``fresh-school`` run up to yesterday, ``stale-school`` run on the first day only (stale: freshness
deadline 00:00 UTC, so it is stale whatever the hour), ``churn-school`` held by the mass-drop guard on its second
day; then the freshness checks. It starts ``dagster dev`` on 127.0.0.1 against that instance, drives Debian's
headless chromium over the DevTools protocol (the ``websockets`` client the webserver already installs) and writes
PNGs to ``screenshots/`` (gitignored). Everything it starts is stopped at the end.

    .venv/bin/python scripts/ui_screenshots.py            # or: make screenshots
    apt-get install -y chromium                            # once, if chromium is missing

Takes about 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parent.parent
TODAY = datetime.now(UTC).date()
FIRST = TODAY - timedelta(days=3)
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1600,1000"]  # fmt: skip
# What each screenshot shows: (file, UI path, text to wait for, buttons to click first, heading to scroll to).
SHOTS = [
    # enrollment_change_sets: the per-connection freshness checks (one stale, one held, one fresh) next to the
    # change-set checks of the newest partition, all passing.
    ("checks_freshness.png", "/assets/enrollment_change_sets?view=checks", "fresh_stale_school", (), None),
    ("stale_connection.png", "/assets/enrollment_change_sets?view=checks&checkDetail=fresh_stale_school",
     "last_complete_day", (), None),
    # enrollment_changes: the guard's history, the held day among the passes.
    ("held_day.png", "/assets/enrollment_changes?view=checks&checkDetail=no_mass_drop", "no_mass_drop", (), None),
    # course_rosters: contract passed, exposure_share a failed warning (max_exposure_fall 1% in this world).
    ("checks_warning.png", "/assets/course_rosters?view=checks&checkDetail=exposure_share", "exposure_share", (), None),
    # numeric metadata per partition: adds, drops and drop share; requests, retries, 429s and seconds.
    ("plot_changes.png", "/assets/enrollment_changes", "Metadata", ("Plots",), "Metadata"),
    ("plot_sync.png", "/assets/sync_log", "Metadata", ("Plots",), "http_requests"),
]  # fmt: skip


def world_config(work: Path) -> Path:
    def connection(cid: str, seed: int, **world: object) -> dict:
        return {"id": cid, "provider": "unified", "token_env": f"SHOT_TOKEN_{seed}",
                "options": {"page_size": 20, "full_scan_every_days": 1, "retry": {"base_delay_seconds": 0.05}},
                "simulator": {"seed": seed, "start_date": FIRST.isoformat(), "n_courses": 30, **world}}  # fmt: skip

    config = {
        "start_date": FIRST.isoformat(),
        "warehouse": str(work / "warehouse.duckdb"),
        "freshness": {"deadline_hour_utc": 0},
        "checks": {"max_exposure_fall": 0.01},
        "connections": [
            connection("fresh-school", 1, roster_exposure="mixed", exposure_flip_prob=0.3, rate_limit_every=5),
            connection("stale-school", 2),
            connection("churn-school", 3, drop_prob=0.5),
        ],
    }
    path = work / "connections.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def materialize(config: Path) -> None:
    """The runs the screenshots show, in the instance of DAGSTER_HOME."""
    import dagster as dg

    from lms_pipeline.alerts import FRESHNESS_JOB, ROSTER_JOB
    from lms_pipeline.config import load_settings
    from lms_pipeline.definitions import build_defs
    from lms_pipeline.partitions import partition_key

    defs = build_defs(load_settings(config), str(config))
    job = defs.resolve_job_def(ROSTER_JOB)
    instance = dg.DagsterInstance.get()
    # The held day first, so the checks' latest results are the fresh connection's newest day.
    plan = [("churn-school", 0), ("churn-school", 1), ("stale-school", 0)] + [("fresh-school", n) for n in range(3)]
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    for cid, offset in plan:
        result = job.execute_in_process(partition_key=partition_key(cid, FIRST + timedelta(days=offset)),
                                        instance=instance, raise_on_error=False, run_config=quiet)  # fmt: skip
        print(f"  {cid} {FIRST + timedelta(days=offset)}: {'ok' if result.success else 'failed (expected: held)'}")
    defs.resolve_job_def(FRESHNESS_JOB).execute_in_process(instance=instance, run_config=quiet)


@contextmanager
def started(command: list[str], env: dict, log: Path) -> Iterator[subprocess.Popen]:
    """A child in its own process group, stopped (the group, by its id) on the way out."""
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)  # dagster dev shuts its children down on an interrupt
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=20)
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left
            process.wait(timeout=10)


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f}s")


class Browser:
    """One page of headless chromium, driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=10) as answer:
            page = next(t for t in json.load(answer) if t["type"] == "page")
        self.socket = connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, legacy=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: object) -> dict:
        ident = next(self.ids)
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def wait_for_text(self, text: str, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.evaluate(f"document.body && document.body.innerText.includes({json.dumps(text)})"):
                return
            time.sleep(1)
        raise TimeoutError(f"the page never showed {text!r}")

    def click(self, label: str) -> bool:
        return bool(self.evaluate(
            "(() => { const b = [...document.querySelectorAll('button')].find(e => e.innerText.trim() === "
            f"{json.dumps(label)}); if (b) {{ b.click(); return true; }} return false; }})()"
        ))  # fmt: skip

    def shot(self, url: str, text: str, clicks: tuple[str, ...], heading: str | None, target: Path) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for_text(text)
        time.sleep(2)
        self.click("Skip")  # the webserver's first-visit "Join the Dagster community" dialog
        for label in clicks:
            if not self.click(label):
                raise RuntimeError(f"{url}: no button {label!r}")
        if heading:  # the plots sit in the Metadata section, below the fold: scroll a heading to the top
            time.sleep(2)
            self.evaluate("(() => { const h = [...document.querySelectorAll('div, span')].find(e => "
                          f"e.childElementCount === 0 && e.innerText.trim() === {json.dumps(heading)}); "
                          "if (h) h.scrollIntoView(); })()")  # fmt: skip
        time.sleep(4)  # charts and lazy panels settle
        data = self.call("Page.captureScreenshot", format="png")["data"]
        target.write_bytes(base64.b64decode(data))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "screenshots")
    parser.add_argument("--port", type=int, default=3111)
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    (work / "dagster_home").mkdir(parents=True)
    (work / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = world_config(work)
    env = {**os.environ, "DAGSTER_HOME": str(work / "dagster_home"), "LMS_PIPELINE_CONFIG": str(config)}
    os.environ.update({"DAGSTER_HOME": env["DAGSTER_HOME"], "LMS_PIPELINE_CONFIG": str(config)})
    print(f"materializing a small world (start {FIRST}) in {work}")
    materialize(config)
    dagster = Path(sys.executable).with_name("dagster")
    server = [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(args.port)]
    base = f"http://127.0.0.1:{args.port}"
    with started(server, env, work / "dagster_dev.log"):
        wait_for(f"{base}/server_info", 240)
        profile = work / "chrome"
        browser_command = [chromium, *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}",
                           "about:blank"]  # fmt: skip
        with started(browser_command, env, work / "chromium.log"):
            browser = Browser(profile)
            for name, path, text, clicks, heading in SHOTS:
                browser.shot(base + path, text, clicks, heading, args.out / name)
                print(f"  wrote {args.out / name}")
            browser.socket.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
