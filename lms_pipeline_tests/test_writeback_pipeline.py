"""The opt-in grade write-back in real Dagster runs against the embedded OneRoster SIS over HTTP on 127.0.0.1.

Each test reconciles one day, then switches write-back on and runs the ``grade_sync`` step against a SIS that
behaves as the OneRoster 1.2 gradebook spec says (docs/providers.md §9.1) or with one vendor deviation switched on:
a SIS that ignores ``filter``, one that changed a result's owner since the reconciliation, one that drops the
connection mid-loop. What a user must be able to trust: no grade lands on another student's result, every write
the SIS received is in ``grade_sync_log``, and a re-run writes nothing twice and blames nothing on the SIS.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from lms_pipeline.config import load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import partition_key
from lms_pipeline.simulator.systems import embedded_sis
from lms_pipeline_tests.conftest import failure_message
from lms_pipeline_tests.test_pipeline_grades import CONN, QUIET, SIS, START, GradesPipeline
from lms_pipeline_tests.test_sis_oneroster import conforms

DAY = START + timedelta(days=10)
WRITABLE = ("missing_in_sis", "score_mismatch")


class WriteBack:
    """One connection reconciled on DAY against its own embedded SIS, with write-back switched on."""

    def __init__(self, tmp: Path) -> None:
        self.pipeline = GradesPipeline(tmp)
        reconciled = self.pipeline.run(DAY)
        assert reconciled.success, failure_message(reconciled)
        self.app = embedded_sis(load_settings(self.pipeline.config))
        self.world = self.pipeline.sis_world
        self.pipeline.write_config({"enabled": True})

    def sync(self) -> dg.ExecuteInProcessResult:
        """Run the write-back step alone, on the stored discrepancies (as a re-execution in the UI does)."""
        job = build_defs(load_settings(self.pipeline.config), str(self.pipeline.config)).resolve_job_def(ROSTER_JOB)
        return job.execute_in_process(partition_key=partition_key(CONN, DAY), instance=self.pipeline.instance,
                                      raise_on_error=False, run_config=QUIET,
                                      asset_selection=[dg.AssetKey("grade_sync_log")])  # fmt: skip

    def candidates(self) -> pd.DataFrame:
        return self.pipeline.query(
            "SELECT * FROM lms.grade_discrepancies WHERE snapshot_date = ? AND status IN ? "
            "AND lms_grade_status IN ('graded', 'excused')", [DAY, list(WRITABLE)])  # fmt: skip

    def log(self, run_id: str | None = None) -> pd.DataFrame:
        log = self.pipeline.query("SELECT * FROM lms.grade_sync_log ORDER BY attempted_at")
        return log if run_id is None else log[log["run_id"] == run_id]

    def results(self) -> dict[str, dict]:
        return {r["sourcedId"]: r for r in self.world.results(DAY)}

    def puts(self, since: int = 0) -> list[dict]:
        return [e for e in self.app.request_log[since:] if e["method"] == "PUT"]


def outcomes(log: pd.DataFrame) -> pd.DataFrame:
    return log[log["phase"] == "outcome"]


def pair(result: dict) -> tuple[str, str]:
    return result["lineItem"]["sourcedId"], result["student"]["sourcedId"]


@pytest.fixture(scope="module")
def spec_sync(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A write-back against a SIS that follows the spec, every body and answer recorded, then the step run again
    on the same (now stale) discrepancies."""
    wb = WriteBack(tmp_path_factory.mktemp("spec-sync"))
    wb.app.record_bodies = True
    before, todo, start = wb.results(), wb.candidates(), len(wb.app.request_log)
    first = wb.sync()
    middle = len(wb.app.request_log)
    second = wb.sync()
    log = wb.app.request_log
    return {"wb": wb, "before": before, "todo": todo, "runs": (first, second), "first": log[start:middle],
            "second": log[middle:]}  # fmt: skip


def test_write_back_creates_by_put_at_an_id_minted_from_the_pair_and_updates_by_put(spec_sync: dict) -> None:
    wb, todo, (first, _) = spec_sync["wb"], spec_sync["todo"], spec_sync["runs"]
    assert first.success, failure_message(first)
    # OneRoster 1.2 has no POST /results (§9.1): a result is created with PUT /results/{caller's id}.
    assert not [e for e in spec_sync["first"] if e["method"] == "POST" and "/gradebook/" in e["path"]]
    log = outcomes(wb.log(first.run_id))
    assert not log["outcome"].isin(["failed", "identity_unproven"]).any(), log["detail"].dropna().tolist()[:5]
    created, updated = log[log["outcome"] == "created"], log[log["outcome"] == "updated"]
    assert len(created) and len(updated)
    # The spec's success answer to a PUT is 201 with no body, on create and update alike.
    assert set(created["http_status"]) == set(updated["http_status"]) == {201}
    from lms_pipeline.writeback_rules import minted_result_id

    for row in created.itertuples():
        assert row.sis_result_id == minted_result_id(SIS, row.sis_line_item_id, row.sis_student_id)
    # A missing_in_sis row whose pair has a tobedeleted result is written over that result, not duplicated.
    after = wb.results()
    pairs = [pair(r) for r in after.values()]
    assert len(pairs) == len(set(pairs)), "a (line item, student) pair got a second result"
    revived = [r for r in updated.itertuples() if spec_sync["before"][r.sis_result_id]["status"] == "tobedeleted"]
    assert revived and all(after[r.sis_result_id]["status"] == "active" for r in revived)
    # Every candidate ends with exactly one outcome.
    assert sorted(log["row_key"]) == sorted(todo["row_key"])


def test_every_write_is_journaled_as_an_intent_before_and_an_outcome_after(spec_sync: dict) -> None:
    wb, (first, _) = spec_sync["wb"], spec_sync["runs"]
    log = wb.log(first.run_id)
    intents, done = log[log["phase"] == "intent"], outcomes(log)
    assert set(intents["outcome"]) == {"pending"} and (intents["method"] == "PUT").all()
    answered = done[done["method"] == "PUT"]
    assert sorted(intents["operation_id"]) == sorted(answered["operation_id"])
    written = [e["path"].rsplit("/", 1)[1] for e in spec_sync["first"] if e["method"] == "PUT"]
    assert set(written) == set(intents["sis_result_id"])
    merged = intents.merge(answered, on="operation_id", suffixes=("_intent", "_outcome"))
    assert (merged["attempted_at_intent"] <= merged["attempted_at_outcome"]).all()


def test_a_rerun_on_the_same_discrepancies_writes_nothing_and_blames_nothing_on_the_sis(spec_sync: dict) -> None:
    wb, (first, second) = spec_sync["wb"], spec_sync["runs"]
    assert second.success, failure_message(second)
    assert not [e for e in spec_sync["second"] if e["method"] == "PUT"]
    written = set(outcomes(wb.log(first.run_id)).query("outcome in ['created', 'updated']")["row_key"])
    again = outcomes(wb.log(second.run_id)).set_index("row_key")["outcome"]
    # The pipeline's own writes are newer than the LMS grades: they are current, not the registrar's changes.
    assert set(again[list(written)]) == {"already_current"}


def test_every_body_sent_and_every_gradebook_answer_conforms_to_the_spec(spec_sync: dict) -> None:
    exchanges = [e for e in spec_sync["first"] + spec_sync["second"] if "/ims/oneroster/gradebook/" in e["path"]]
    assert {e["method"] for e in exchanges} == {"GET", "PUT"}
    answers = {"results": ("ResultSet", "SingleResult"), "lineItems": ("LineItemSet", "SingleLineItem")}
    problems = []
    for e in exchanges:
        if e["method"] == "PUT" and e["status"] != 429:  # a throttled request is answered before its body is read
            problems += [f"PUT body {e['path']}: {p}" for p in conforms(e["request_body"], "SingleResult")]
        if e["status"] == 201:
            problems += [] if e["response_body"] is None else [f"{e['path']}: 201 with a body"]
        elif e["status"] == 200:
            collection, _, one = e["path"].split("/v1p2/", 1)[1].partition("/")
            problems += [f"{e['path']}: {p}" for p in conforms(e["response_body"], answers[collection][bool(one)])]
        else:
            problems += [f"{e['path']} {e['status']}: {p}" for p in conforms(e["response_body"], "imsx_StatusInfo")]
    assert not problems, problems[:10]
    statuses = {e["status"] for e in exchanges}
    assert {200, 201} <= statuses and 429 in statuses  # lookups, writes, and the throttle's imsx answers were seen


def test_write_back_never_writes_to_another_students_result(tmp_path: Path) -> None:
    """The spec leaves ``filter`` to the vendor: a SIS that ignores it answers a lookup with every result."""
    wb = WriteBack(tmp_path)
    wb.world.switch(ignores_filter=True)
    before, todo, start = wb.results(), wb.candidates(), len(wb.app.request_log)
    result = wb.sync()
    allowed = set(zip(todo["sis_line_item_id"], todo["sis_student_id"], strict=True))
    targets = {e["path"].rsplit("/", 1)[1] for e in wb.puts(start)}
    strangers = sorted(
        (rid, pair(before[rid])) for rid in targets if rid in before and pair(before[rid]) not in allowed
    )
    assert not strangers, f"{len(strangers)} PUTs went to results of students it had no grade for: {strangers[:3]}"
    changed = [r for rid, r in wb.results().items() if before.get(rid) != r]
    assert changed and all(pair(r) in allowed for r in changed)
    assert result.success, failure_message(result)
    log = outcomes(wb.log(result.run_id))
    # A lookup by listing says why its answer was trusted: only the results of the pair were considered.
    created = log[log["outcome"] == "created"]
    assert len(created) and created["detail"].str.contains("ignored the filter").all(), created["detail"].tolist()[:3]


def test_write_back_does_not_write_when_it_cannot_prove_whose_result_it_is(tmp_path: Path) -> None:
    wb = WriteBack(tmp_path)
    todo = wb.candidates()
    mismatch = todo[todo["status"] == "score_mismatch"].iloc[0]
    missing = todo[todo["status"] == "missing_in_sis"].iloc[0]
    # Since the reconciliation, the SIS gave the mismatched result's sourcedId to another student...
    rekeyed = wb.results()[mismatch["sis_result_id"]]
    stranger = next(u["sourcedId"] for u in wb.world.users(DAY) if u["sourcedId"] != mismatch["sis_student_id"])
    wb.world.write({**rekeyed, "student": {"sourcedId": stranger, "type": "user"}})
    # ...and the missing pair got two results: which one is the grade of record cannot be told.
    twins = [{**rekeyed, "sourcedId": f"twin-{n}", "lineItem": {"sourcedId": missing["sis_line_item_id"],
              "type": "lineItem"}, "student": {"sourcedId": missing["sis_student_id"], "type": "user"},
              "status": "tobedeleted"} for n in (1, 2)]  # fmt: skip
    for twin in twins:
        wb.world.write(twin)
    before, start = wb.results(), len(wb.app.request_log)
    result = wb.sync()
    touched = {e["path"].rsplit("/", 1)[1] for e in wb.puts(start)}
    assert not touched & {mismatch["sis_result_id"], "twin-1", "twin-2"}
    after = wb.results()
    assert all(after[rid] == before[rid] for rid in (mismatch["sis_result_id"], "twin-1", "twin-2"))
    log = outcomes(wb.log(result.run_id)).set_index("row_key")
    assert log.loc[mismatch["row_key"], "outcome"] == "identity_unproven"
    assert stranger in log.loc[mismatch["row_key"], "detail"]
    assert log.loc[missing["row_key"], "outcome"] == "identity_unproven"
    assert "twin-1" in log.loc[missing["row_key"], "detail"] and "twin-2" in log.loc[missing["row_key"], "detail"]
    assert result.success, failure_message(result)  # unproven is a refusal, not a failure


def test_a_sis_that_drops_the_connection_mid_loop_fails_the_step_naming_it_and_loses_no_write(tmp_path: Path) -> None:
    wb = WriteBack(tmp_path)
    wb.world.switch(drop_after_writes=5, drops=1)
    start = len(wb.app.request_log)
    broken = wb.sync()
    assert not broken.success
    message = failure_message(broken)
    assert f"SIS '{SIS}'" in message and "1 grade write(s) failed" in message, message
    log = wb.log(broken.run_id)
    received = [e["path"].rsplit("/", 1)[1] for e in wb.puts(start)]
    assert len(received) > 6  # the loop went on after the dropped write
    assert set(received) <= set(log.loc[log["phase"] == "intent", "sis_result_id"])
    failed = outcomes(log)[outcomes(log)["outcome"] == "failed"]
    assert len(failed) == 1 and f"SIS '{SIS}'" in failed["detail"].iloc[0]
    assert "connection" in failed["detail"].iloc[0].lower()
    dropped = failed["sis_result_id"].iloc[0]

    wb.world.switch()  # the SIS is back to normal
    middle = len(wb.app.request_log)
    rerun = wb.sync()
    assert rerun.success, failure_message(rerun)
    assert not wb.puts(middle), "the re-run wrote again what the SIS already held"
    again = outcomes(wb.log(rerun.run_id))
    # The dropped write had landed (only its answer was lost): the re-run confirms the pipeline's own write.
    confirmed = again[again["outcome"] == "confirmed"]
    assert list(confirmed["sis_result_id"]) == [dropped]
    assert confirmed["operation_id"].iloc[0] == failed["operation_id"].iloc[0]
    ours = set(log.loc[log["phase"] == "intent", "row_key"])
    assert not again[again["row_key"].isin(ours) & (again["outcome"] == "skipped_sis_newer")].size
