"""Alerts: a sensor that posts one Slack-compatible JSON message per failure to a webhook, so a held change set or a
failed sync reaches a person instead of waiting for someone to open the UI.

One message per finished run, of the first kind that applies:

- ``change_set_held``: the mass-drop guard held the day (its run failed too, but the hold is what the operator
  must act on); the message carries the exact release command and the UI action.
- ``run_failed``: the run failed for another reason (the failed step's own words, and how to re-run).
- ``connection_stale``: a connection's freshness check turned from passing (or never run) to failing; one message
  per connection, and none while it stays stale.
- ``check_failed``: a successful run with failed checks (warnings too when ``alerts.include_warnings``).

The webhook URL is a secret (a Slack URL is its own credential): it is read from the environment variable named by
``alerts.webhook_url_env`` at each tick, never stored, logged or put into an error. The cursor (the last run
update seen) moves only past runs whose messages were all delivered, so a webhook that is down delays alerts
instead of losing them.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx

from lms_pipeline.check_rules import freshness_check_name
from lms_pipeline.config import load_settings
from lms_pipeline.operator_options import AlertsOptions
from lms_pipeline.resources import LmsApiResource

ROSTER_JOB = "daily_roster_job"
FRESHNESS_JOB = "connection_freshness_job"
WATCHED_JOBS = (ROSTER_JOB, FRESHNESS_JOB)
RUNS_PER_TICK = 50
ACCEPT = {"ops": {"enrollment_change_set": {"config": {"accept_mass_drop": True}}}}


class AlertDeliveryError(RuntimeError):
    """The webhook did not take a message (the URL is never part of this text)."""


@dataclass(frozen=True)
class Alert:
    kind: str
    run_id: str
    partition: str | None
    title: str
    reason: str
    action: str

    @property
    def key(self) -> str:
        return f"{self.run_id}:{self.kind}:{self.partition}"

    def body(self) -> dict:
        """A Slack incoming-webhook body: ``text`` (the notification) and mrkdwn blocks with the command quoted."""
        where = f" `{self.partition}`" if self.partition else ""
        text = f"[lms-pipeline] {self.kind}{where}: {self.title}"
        return {
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*Reason*\n{self.reason[:2500]}"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*What to do*\n{self.action[:2500]}"}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"run `{self.run_id}`"}]},
            ],
        }


def _dagster_command(config_file: str) -> str:
    """The prefix of a command an operator can paste: the instance and the connections file this daemon uses."""
    env = [f"LMS_PIPELINE_CONFIG={shlex.quote(str(Path(config_file).resolve()))}"]
    if os.environ.get("DAGSTER_HOME"):
        env.insert(0, f"DAGSTER_HOME={shlex.quote(os.environ['DAGSTER_HOME'])}")
    dagster = Path(sys.executable).with_name("dagster")
    return " ".join([*env, shlex.quote(str(dagster) if dagster.exists() else "dagster")])


def release_command(partition: str, config_file: str) -> str:
    """Re-run the held day's change set with the operator's acceptance (no refetch: it diffs the stored snapshot),
    then its exports (the day is published whole by the release)."""
    return (
        f"{_dagster_command(config_file)} asset materialize -m lms_pipeline.definitions "
        f"--select 'enrollment_changes,enrollment_change_sets,daily_exports' --partition {shlex.quote(partition)} "
        f"--config-json {shlex.quote(json.dumps(ACCEPT))}"
    )


def rerun_command(partition: str, config_file: str) -> str:
    return (
        f"{_dagster_command(config_file)} job execute -m lms_pipeline.definitions -j {ROSTER_JOB} "
        f"--tags {shlex.quote(json.dumps({'dagster/partition': partition}))}"
    )


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return [r.event_log_entry.dagster_event.event_specific_data for r in records]


def _step_failures(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    out = []
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data
        user = data.user_failure_data.description if data.user_failure_data else None
        out.append(f"{event.step_key}: {user or (data.error.message.strip() if data.error else 'failed')}")
    return out


def _newly_stale(instance: dg.DagsterInstance, evaluation: dg.AssetCheckEvaluation, run_id: str) -> bool:
    """A freshness check alerts when it turns stale, not at every hourly run while it stays so."""
    history = instance.event_log_storage.get_asset_check_execution_history(evaluation.asset_check_key, limit=20)
    earlier = [r for r in history if r.run_id != run_id and r.event is not None and r.event.timestamp is not None]
    current = next((r for r in history if r.run_id == run_id), None)
    if current is not None and current.event is not None:
        earlier = [r for r in earlier if r.event.timestamp < current.event.timestamp]
    if not earlier:
        return True
    previous = earlier[0].event.dagster_event
    data = previous.event_specific_data if previous else None
    return bool(data is None or getattr(data, "passed", True))


def alerts_for_run(
    instance: dg.DagsterInstance, run: dg.DagsterRun, options: AlertsOptions, config_file: str
) -> list[Alert]:
    """What one finished run of the daily or freshness job should tell a person (see the module docstring)."""
    partition = run.tags.get("dagster/partition")
    failed = [e for e in _check_evaluations(instance, run.run_id) if not e.passed]
    held = [e for e in failed if e.check_name == "no_mass_drop"]
    if held:
        failures = [f for f in _step_failures(instance, run.run_id) if f.startswith("enrollment_change_set")]
        reason = failures[0].split(": ", 1)[1] if failures else "the mass-drop guard held the change set"
        action = (
            "Look at the drops first (change_set_holds.reason; the day's course_student_edges against the previous "
            "day's). If they are real (a term ended), release the day from the repository root:\n"
            f"```{release_command(partition, config_file)}```\n"
            f"or in the UI: Assets > enrollment_changes > Materialize selected, partition `{partition}`, with the "
            "launchpad config `ops.enrollment_change_set.config.accept_mass_drop: true`. If they are not real (a "
            "provider outage), leave the day held and re-run the partition once the provider answers correctly."
        )
        return [Alert("change_set_held", run.run_id, partition, "the mass-drop guard held the day: nothing of it "
                      "is published until an operator releases it", reason, action)]  # fmt: skip
    shown = [e for e in failed if e.severity == dg.AssetCheckSeverity.ERROR or options.include_warnings]
    checks_text = "\n".join(f"- {e.asset_key.to_user_string()}:{e.check_name} ({e.severity.value}): "
                            f"{e.description or 'failed'}" for e in shown)  # fmt: skip
    if run.status == dg.DagsterRunStatus.FAILURE:
        failures = _step_failures(instance, run.run_id) or ["the run failed before any step (see its logs)"]
        reason = "\n".join(failures) + (f"\nFailed checks:\n{checks_text}" if checks_text else "")
        action = (
            "Read the failed step in the UI (Runs > this run); the operators' guide says what each failure means "
            "(docs/operators.md, 'When a run fails'). Nothing of the failed step was stored. Once the cause is "
            "fixed, re-run the partition from the repository root:\n"
            f"```{rerun_command(partition, config_file)}```\n"
            "or in the UI: Runs > this run > Re-execute > From failure."
            if partition
            else "Read the failed step in the UI (Runs > this run), fix the cause and re-execute the run."
        )
        return [Alert("run_failed", run.run_id, partition, f"{run.job_name} failed", reason, action)]
    alerts = []
    stale = [e for e in shown if e.check_name.startswith("fresh_")]
    for evaluation in stale:
        if not _newly_stale(instance, evaluation, run.run_id):
            continue
        connection = next((c for c in _connection_ids(config_file)
                           if freshness_check_name(c) == evaluation.check_name), evaluation.check_name)  # fmt: skip
        missing = evaluation.metadata.get("due_day")
        due = missing.value if missing is not None else "yesterday"
        action = (
            f"Find the run of partition `{connection}|{due}` in the UI (Runs, filter by the partition tag): a failed "
            "or held run says why; no run means the schedule is off or the daemon is down (Overview > Schedules). "
            f"To run the day now, from the repository root:\n```{rerun_command(f'{connection}|{due}', config_file)}```"
        )
        alerts.append(Alert("connection_stale", run.run_id, f"{connection}|{due}",
                            f"connection {connection!r} is stale", evaluation.description or "", action))  # fmt: skip
    others = [e for e in shown if not e.check_name.startswith("fresh_")]
    if others:
        action = (
            f"Open the asset's Checks tab in the UI (Assets > <asset> > Checks, partition `{partition}`) for the "
            "check's metadata. ERROR checks mean a rule the published data promises is broken: re-run the partition "
            f"once the cause is fixed:\n```{rerun_command(partition, config_file)}```\nWARN checks (sync health, "
            "exposure share) are published as they are: look at the provider."
            if partition
            else "Open the asset's Checks tab in the UI for the check's metadata."
        )
        title = f"{len(others)} check(s) failed"
        alerts.append(Alert("check_failed", run.run_id, partition, title, checks_text, action))
    return alerts


def _connection_ids(config_file: str) -> list[str]:
    return load_settings(config_file).connection_ids


def post(url: str, alert: Alert, timeout: float) -> None:
    """POST one message; raise AlertDeliveryError naming the answer, never the URL."""
    try:
        response = httpx.post(url, json=alert.body(), timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise AlertDeliveryError(f"the alerts webhook did not answer ({type(exc).__name__})") from None
    if response.status_code >= 300:
        raise AlertDeliveryError(f"the alerts webhook answered HTTP {response.status_code}")


@dataclass
class Cursor:
    """The last run update handled, the runs handled at that very timestamp, and the messages of a run only partly
    delivered (so a retry sends only the rest)."""

    after: float
    done: list[str]
    sent: list[str]

    @classmethod
    def parse(cls, text: str | None, lookback_hours: int) -> Cursor:
        if text:
            raw = json.loads(text)
            return cls(raw["after"], raw.get("done", []), raw.get("sent", []))
        start = datetime.now(UTC) - timedelta(hours=lookback_hours)
        return cls(start.timestamp(), [], [])

    def dump(self) -> str:
        return json.dumps({"after": self.after, "done": self.done[-200:], "sent": self.sent[-200:]})


def evaluate(
    instance: dg.DagsterInstance, cursor_text: str | None, options: AlertsOptions, config_file: str, url: str
) -> tuple[int, str, str | None]:
    """Send the alerts of runs finished since the cursor: (messages sent, new cursor, delivery error or None)."""
    cursor = Cursor.parse(cursor_text, options.lookback_hours)
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
            updated_after=datetime.fromtimestamp(cursor.after, UTC) - timedelta(seconds=1),
        ),
        order_by="update_timestamp",
        ascending=True,
        limit=RUNS_PER_TICK,
    )
    sent = 0
    for record in records:
        run, stamp = record.dagster_run, record.update_timestamp.timestamp()
        if stamp < cursor.after or (stamp == cursor.after and run.run_id in cursor.done):
            continue
        if run.job_name in WATCHED_JOBS:
            for alert in alerts_for_run(instance, run, options, config_file):
                if alert.key in cursor.sent:
                    continue
                try:
                    post(url, alert, options.timeout_seconds)
                except AlertDeliveryError as exc:
                    return sent, cursor.dump(), str(exc)
                cursor.sent.append(alert.key)
                sent += 1
        cursor.done = [*cursor.done, run.run_id] if stamp == cursor.after else [run.run_id]
        cursor.after, cursor.sent = stamp, []
    return sent, cursor.dump(), None


def build_alert_sensor() -> dg.SensorDefinition:
    @dg.sensor(
        name="lms_alerts",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts one Slack-compatible message per failed run, held change set, failed check or newly "
        "stale connection to the webhook whose URL is in the variable named by alerts.webhook_url_env.",
    )
    def lms_alerts(context: dg.SensorEvaluationContext, lms: LmsApiResource):  # noqa: ANN202
        options = lms.settings().alerts
        url = os.environ.get(options.webhook_url_env, "").strip()
        if not url:
            return dg.SkipReason(f"no alerts: the environment variable {options.webhook_url_env} is not set")
        if not url.startswith(("https://", "http://")):
            return dg.SkipReason(f"no alerts: {options.webhook_url_env} does not hold an http(s) URL")
        sent, cursor, error = evaluate(context.instance, context.cursor, options, lms.config_path, url)
        context.update_cursor(cursor)
        if error:
            context.log.warning(f"{error}; {sent} message(s) sent, the rest is retried at the next tick")
            return dg.SkipReason(error)
        return dg.SkipReason(f"{sent} alert(s) sent")

    return lms_alerts
