"""A real ``dagster`` process killed with SIGKILL in the middle of the grade write-back: every write the SIS received
is in ``grade_sync_log``, and the re-run writes nothing twice and blames none of the pipeline's writes on the SIS.

The SIS simulator runs in this test process (the connections file gives its base_url), so its gradebook outlives
the killed run, as a real SIS would. The LMS side is reconciled in-process first; then the ``grade_sync`` step runs
as the ``dagster asset materialize`` CLI (in-process executor: the CLI process is the writer). The SIS kills that
process group at the moment it receives the KILL_AT-th write, before applying it: the write then lands while its
sender is dead, so its answer is never read, the worst case for a journal.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import yaml

from lms_pipeline.config import load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import partition_key
from lms_pipeline.providers.oneroster.sis_simulator import SisSimulatorApp
from lms_pipeline.providers.oneroster.sis_world import SisWorld
from lms_pipeline.simulator.server import Router, serve_in_thread
from lms_pipeline.simulator.systems import embedded_worlds, sis_world
from lms_pipeline_tests.conftest import failure_message
from lms_pipeline_tests.dagster_processes import (
    BIN,
    MODULE,
    DagsterSandbox,
    Started,
    marked_processes,
    process_groups,
    query,
    wait_for,
)
from lms_pipeline_tests.test_pipeline_grades import QUIET, SCHEMES

CONN, SIS = "crash-lms", "crash-sis"
START, DAY = date(2026, 9, 1), date(2026, 9, 11)
KILL_AT = 16
CLIENT_ID, SECRET = "crash-client", "crash-secret-not-logged"
IN_PROCESS = '{"execution": {"config": {"in_process": {}}}}'


@dataclass
class CrashSandbox(DagsterSandbox):
    """The sandbox, plus the SIS credentials the run needs (the parent's env is never passed through whole)."""

    def env(self) -> dict[str, str]:
        return {**super().env(), "CRASH_SIS_ID": CLIENT_ID, "CRASH_SIS_SECRET": SECRET}


def write_maps(sandbox: DagsterSandbox, world: SisWorld) -> None:
    """The analyst's mapping rows: what the SIS world knows under another email or title."""
    students = "".join(f"{CONN},{lms},{sis}\n" for lms, sis in sorted(world.other_email_students().items()))
    items = "".join(f"{CONN},{c},{k},{li}\n" for (c, k), li in sorted(world.renamed_line_items(DAY).items()))
    (sandbox.root / "student_map.csv").write_text("lms_connection_id,lms_user_id,sis_user_id\n" + students)
    (sandbox.root / "assignment_map.csv").write_text(
        "lms_connection_id,lms_course_id,lms_content_id,sis_line_item_id\n" + items
    )


def write_config(sandbox: DagsterSandbox, sis_url: str, write_back: bool) -> None:
    (sandbox.root / "schemes.yaml").write_text(yaml.safe_dump({**SCHEMES, "courses": {CONN: SCHEMES["courses"]
                                                                                      ["grades-lms"]}}))  # fmt: skip
    sis = {"id": SIS, "provider": "oneroster", "base_url": sis_url, "client_id_env": "CRASH_SIS_ID",
           "client_secret_env": "CRASH_SIS_SECRET", "student_map": str(sandbox.root / "student_map.csv"),
           "assignment_map": str(sandbox.root / "assignment_map.csv"),
           "grading_schemes": str(sandbox.root / "schemes.yaml"), "write_back": {"enabled": write_back},
           "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05}}  # fmt: skip
    sandbox.config_file.write_text(yaml.safe_dump({
        "start_date": START.isoformat(), "warehouse": str(sandbox.db), "sis": [sis],
        "connections": sandbox.connections}))  # fmt: skip


def run_in_process(
    sandbox: DagsterSandbox, instance: dg.DagsterInstance, assets: list[str] | None
) -> dg.ExecuteInProcessResult:
    job = build_defs(load_settings(sandbox.config_file), str(sandbox.config_file)).resolve_job_def(ROSTER_JOB)
    selection = [dg.AssetKey(a) for a in assets] if assets else None
    return job.execute_in_process(partition_key=partition_key(CONN, DAY), instance=instance, raise_on_error=False,
                                  run_config=QUIET, asset_selection=selection)  # fmt: skip


class Killer:
    """The SIS's write hook: SIGKILLs the writing process group when the KILL_AT-th write arrives."""

    def __init__(self) -> None:
        self.run: Started | None = None
        self.groups = None
        self.received: list[str] = []  # the result id of every write request, in order
        self.killed = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, world: SisWorld, sourced_id: str | None, body: object) -> None:
        result = body.get("result") if isinstance(body, dict) else None
        with self._lock:
            self.received.append(sourced_id or (result or {}).get("sourcedId"))
            due = self.run is not None and len(self.received) == KILL_AT
        if due:
            self.groups.kill(self.run)  # SIGKILL and reap: the sender is gone before this write is applied
            self.killed.set()


@pytest.mark.timeout(600)
def test_a_write_back_killed_mid_loop_journals_every_write_and_the_rerun_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRASH_SIS_ID", CLIENT_ID)
    monkeypatch.setenv("CRASH_SIS_SECRET", SECRET)
    sandbox = CrashSandbox(tmp_path, START, [{
        "id": CONN, "provider": "unified", "token_env": "CRASH_LMS_TOKEN",
        "options": {"page_size": 50, "fetch_classes": False, "full_scan_every_days": 1,
                    "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05}},
        "simulator": {"seed": 7, "n_courses": 25, "n_students": 500, "remove_prob": 0.0},
        "grades": {"sis": SIS, "source": "native"}}])  # fmt: skip
    router, killer = Router({}), Killer()
    with serve_in_thread(router) as base_url:
        write_config(sandbox, f"{base_url}/sis/{SIS}", write_back=False)
        settings = load_settings(sandbox.config_file)
        world = sis_world(settings, settings.sis[0], embedded_worlds(settings)[CONN])
        write_maps(sandbox, world)
        app = SisSimulatorApp([world], {SIS: (CLIENT_ID, SECRET)}, clock=lambda: DAY, before_write=killer)
        router.apps["sis"] = app
        instance = dg.DagsterInstance.ephemeral()
        reconciled = run_in_process(sandbox, instance, None)
        assert reconciled.success, failure_message(reconciled)
        [(candidates,)] = query(
            sandbox.db,
            "SELECT count(*) FROM lms.grade_discrepancies WHERE status IN "
            "('missing_in_sis', 'score_mismatch') AND lms_grade_status IN ('graded', 'excused')",
        )
        assert candidates > 2 * KILL_AT

        write_config(sandbox, f"{base_url}/sis/{SIS}", write_back=True)
        with process_groups(sandbox) as groups:
            killer.groups = groups
            killer.run = groups.start("grade-sync", [
                str(BIN / "dagster"), "asset", "materialize", "-m", MODULE, "--select", "grade_sync_log",
                "--partition", partition_key(CONN, DAY), "--config-json", IN_PROCESS])  # fmt: skip
            # Generous: a `dagster` process starting on a loaded 2-core machine (CI runs other suites beside it).
            wait_for(lambda: killer.killed.is_set() or killer.run.proc.poll() is not None, 420, "the kill")
            assert killer.killed.is_set(), f"the run ended before its {KILL_AT}th write:\n{killer.run.tail()}"
            assert wait_for(lambda: not marked_processes(sandbox.marker), 15, "the killed run's processes to exit")
        killer.run = None
        received = list(killer.received)
        assert len(received) == KILL_AT

        # Every write the SIS received is in the journal, the one in flight as an intent without an outcome.
        journaled = {rid for (rid,) in query(sandbox.db, "SELECT sis_result_id FROM lms.grade_sync_log")}
        missing = set(received) - journaled
        assert not missing, f"{len(missing)} of {KILL_AT} writes the SIS received are not in grade_sync_log"
        intents = dict(query(sandbox.db, "SELECT sis_result_id, operation_id FROM lms.grade_sync_log "
                                         "WHERE phase = 'intent'"))  # fmt: skip
        assert set(received) <= set(intents)
        answered = {op for (op,) in query(sandbox.db, "SELECT operation_id FROM lms.grade_sync_log "
                                                      "WHERE phase = 'outcome'")}  # fmt: skip
        unanswered = {rid for rid, op in intents.items() if op not in answered}
        assert received[-1] in unanswered  # killed before its answer: only the SIS knows it landed

        rerun = run_in_process(sandbox, instance, ["grade_sync_log"])
        assert rerun.success, failure_message(rerun)
        again = killer.received[KILL_AT:]
        assert not set(again) & set(received), "the re-run wrote again what the SIS already held"
        assert len(again) == len(set(again))
        rows = query(sandbox.db, "SELECT sis_result_id, outcome, operation_id FROM lms.grade_sync_log "
                                 "WHERE run_id = ? AND phase = 'outcome'", [rerun.run_id])  # fmt: skip
        outcome_of = {rid: outcome for rid, outcome, _ in rows if rid in received}
        # The pipeline's own writes are not the registrar's: a write whose answer was read is current, one whose
        # answer was lost is confirmed (closing its intent); none is skipped as newer in the SIS.
        assert outcome_of == {rid: "confirmed" if rid in unanswered else "already_current" for rid in received}
        closed = {op: outcome for _, outcome, op in rows if op in intents.values()}
        # Intents journaled for writes never sent (the rest of the killed batch) are closed as not applied.
        assert closed == {intents[rid]: "confirmed" if rid in received else "not_applied" for rid in unanswered}
        assert {o for _, o, _ in rows} <= {
            "already_current",
            "confirmed",
            "not_applied",
            "created",
            "updated",
            "skipped_sis_newer",
        }
