"""Alerts reach a person: real runs fail, hold, warn and go stale; the sensor posts exactly one message per failure
to a webhook receiver on 127.0.0.1, the hold's message carries a release command that works as pasted, and a
webhook that is down delays messages instead of losing them."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from lms_pipeline.alerts import FRESHNESS_JOB
from lms_pipeline.check_rules import freshness_check_name
from lms_pipeline.simulator import WorldSpec
from lms_pipeline_tests.conftest import START, Pipeline, failure_message, make_pipeline

REPO = Path(__file__).resolve().parent.parent
DAY2, DAY3 = START + timedelta(days=1), START + timedelta(days=2)
WEBHOOK_ENV = "LMS_ALERT_WEBHOOK_URL"
SECRET_PATH = "/services/T000/B000/secret-webhook-token"


class Receiver:
    """A Slack-like incoming webhook on 127.0.0.1: stores each JSON body; answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                if receiver.status == 200:
                    receiver.bodies.append(body)
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{SECRET_PATH}"

    def texts(self) -> list[str]:
        return [json.dumps(body) for body in self.bodies]


@contextmanager
def receiving() -> Iterator[Receiver]:
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


def tick(pipe: Pipeline, cursor: str | None) -> tuple[str | None, str]:
    """One evaluation of the alert sensor, as the daemon runs it: (new cursor, its skip message)."""
    defs = pipe.defs()
    sensor = defs.resolve_sensor_def("lms_alerts")
    with dg.build_sensor_context(instance=pipe.instance, cursor=cursor, definitions=defs,
                                 resources={"lms": defs.resources["lms"]}) as context:  # fmt: skip
        result = sensor.evaluate_tick(context)
    return result.cursor, result.skip_message or ""


def kinds(receiver: Receiver) -> list[str]:
    return sorted(re.match(r"\[lms-pipeline\] (\w+)", body["text"]).group(1) for body in receiver.bodies)


@pytest.fixture
def failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    """Two connections: one whose second day is a mass drop, one whose provider fails and then struggles."""
    specs = [
        WorldSpec("conn-churn", seed=5, start_date=START, n_courses=20, drop_prob=0.4),
        WorldSpec("conn-calm", seed=8, start_date=START, n_courses=15),
    ]
    retry = {"base_delay_seconds": 0.01, "max_delay_seconds": 0.02, "max_attempts": 4}
    with make_pipeline(tmp_path, monkeypatch, specs, options={"conn-calm": {"retry": retry}}) as pipe:
        yield pipe


def test_each_failure_kind_reaches_the_webhook_exactly_once_with_what_to_do(
    failing: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = failing
    pipe.write_config()
    config = pipe.config_file.read_text() + "alerts:\n  include_warnings: true\n"
    pipe.config_file.write_text(config)
    monkeypatch.setattr(Pipeline, "write_config", lambda self: self.config_file)
    pipe.run_days(1)
    held = pipe.run("conn-churn", DAY2)
    assert not held.success and "mass-drop guard held" in failure_message(held)
    pipe.app.inject_fault("conn-calm", status=500, times=1000)
    broken = pipe.run("conn-calm", DAY2)
    assert not broken.success
    pipe.app.clear_faults()
    pipe.app.inject_fault("conn-calm", status=503, times=3)  # retried: the day succeeds with a sync_health warning
    warned = pipe.run("conn-calm", DAY3)
    assert warned.success, failure_message(warned)
    stale_check = dg.AssetCheckKey(dg.AssetKey("enrollment_change_sets"), freshness_check_name("conn-calm"))
    job = pipe.defs().resolve_job_def(FRESHNESS_JOB).get_subset(asset_check_selection={stale_check})
    freshness = job.execute_in_process(instance=pipe.instance)
    assert freshness.success  # a stale connection is a failed check, not a failed run

    with receiving() as receiver:
        monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
        cursor, message = tick(pipe, None)
        assert kinds(receiver) == ["change_set_held", "check_failed", "connection_stale", "run_failed"], message
        by_kind = {re.match(r"\[lms-pipeline\] (\w+)", b["text"]).group(1): json.dumps(b) for b in receiver.bodies}
        assert "conn-churn|2026-09-02" in by_kind["change_set_held"]
        assert "conn-calm|2026-09-02" in by_kind["run_failed"] and "HTTP 500" in by_kind["run_failed"]
        assert "sync_log:sync_health (WARN)" in by_kind["check_failed"]
        assert "conn-calm" in by_kind["connection_stale"] and "stale" in by_kind["connection_stale"]
        assert not any(SECRET_PATH in text for text in receiver.texts()), "the webhook URL is never echoed"

        cursor, _ = tick(pipe, cursor)
        assert len(receiver.bodies) == 4, "a second tick sends nothing new"
        assert job.execute_in_process(instance=pipe.instance).success  # the next hourly freshness run
        cursor, _ = tick(pipe, cursor)
        assert len(receiver.bodies) == 4, "a connection that stays stale is not announced again"

    # The release instruction works as pasted: it releases the hold and publishes the day.
    (held_body,) = [b for b in receiver.bodies if b["text"].startswith("[lms-pipeline] change_set_held")]
    command = re.search(r"```(.+?)```", held_body["blocks"][2]["text"]["text"], re.S).group(1)
    env = {"PATH": str(REPO / ".venv" / "bin"), "HOME": str(pipe.tmp), "DAGSTER_HOME": pipe.instance.root_directory}
    done = subprocess.run(["/bin/bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert pipe.rows("SELECT guard FROM lms.enrollment_change_sets WHERE connection_id = 'conn-churn' "
                     "AND snapshot_date = ?", [DAY2]) == {("accepted_by_operator",)}  # fmt: skip
    assert pipe.rows("SELECT count(*) FROM lms.change_set_holds") == {(0,)}


def test_a_webhook_that_is_down_delays_alerts_instead_of_losing_them(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.options["conn-all"] = {"retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.02,
                                              "max_attempts": 2}}  # fmt: skip
    pipeline.app.inject_fault("conn-all", status=500, times=1000)
    assert not pipeline.run("conn-all", START).success
    with receiving() as receiver:
        monkeypatch.setenv(WEBHOOK_ENV, receiver.url)
        receiver.status = 503
        cursor, message = tick(pipeline, None)
        assert receiver.bodies == [] and "answered HTTP 503" in message and SECRET_PATH not in message
        receiver.status = 200
        cursor, _ = tick(pipeline, cursor)
        assert kinds(receiver) == ["run_failed"]
        tick(pipeline, cursor)
        assert kinds(receiver) == ["run_failed"]


def test_without_a_webhook_the_sensor_says_why_and_keeps_its_place(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)
    cursor, message = tick(pipeline, None)
    assert cursor is None and f"{WEBHOOK_ENV} is not set" in message
