"""The write-back rules alone (lms_pipeline.writeback): what to write, whose result it is, whether to write, and
what the journal says about past writes. Bodies are checked against the spec's Result schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from lms_pipeline.writeback_rules import (
    Candidate,
    PastWrite,
    candidates,
    decide,
    desired_fields,
    identity_problem,
    is_own_write,
    minted_result_id,
    past_writes,
)
from lms_pipeline_tests.test_sis_oneroster import conforms

NOW = datetime(2026, 9, 11, 12, 0, tzinfo=UTC)
GRADED = NOW - timedelta(days=1)
BASE = "http://127.0.0.1:9/ims/oneroster"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def ref(field: str, sourced_id: str) -> dict:
    kind, path = {"lineItem": ("lineItem", "gradebook/v1p2/lineItems"), "student": ("user", "rostering/v1p2/users"),
                  "class": ("class", "rostering/v1p2/classes"),
                  "scoreScale": ("scoreScale", "gradebook/v1p2/scoreScales")}[field]  # fmt: skip
    return {"href": f"{BASE}/{path}/{sourced_id}", "sourcedId": sourced_id, "type": kind}


def candidate(**changes: object) -> Candidate:
    fields = {"row_key": "lms|crs-1|cnt-1|stu-1", "lms_student_id": "stu-1", "sis_student_id": "usr-1",
              "sis_line_item_id": "li-1", "sis_result_id": "res-1",
              "desired": {"scoreStatus": "fully graded", "score": 17.0}, "graded_at": GRADED}  # fmt: skip
    return Candidate(**{**fields, **changes})


def sis_result(**changes: object) -> dict:
    result = {"sourcedId": "res-1", "status": "active", "dateLastModified": "2026-09-09T08:00:00Z",
              "lineItem": {"sourcedId": "li-1", "type": "lineItem"}, "student": {"sourcedId": "usr-1", "type": "user"},
              "class": {"sourcedId": "cl-1", "type": "class"}, "scoreStatus": "fully graded", "score": 12.0,
              "scoreDate": "2026-09-09", "comment": "see me", "late": "true", "missing": "false"}  # fmt: skip
    return {**result, **changes}


def own(**changes: object) -> PastWrite:
    fields = {"operation_id": "op-1", "run_id": "run-1", "row_key": "lms|crs-1|cnt-1|stu-1", "lms_student_id": "stu-1",
              "sis_student_id": "usr-1", "sis_line_item_id": "li-1", "sis_result_id": "res-1",
              "values": {"scoreStatus": "fully graded", "score": 15.0}, "attempted_at": GRADED + timedelta(hours=2),
              "state": "landed"}  # fmt: skip
    return PastWrite(**{**fields, **changes})


def discrepancy(**changes: object) -> dict:
    row = {"row_key": "lms|crs-1|cnt-1|stu-1", "lms_student_id": "stu-1", "sis_student_id": "usr-1",
           "sis_line_item_id": "li-1", "sis_result_id": None, "lms_grade_status": "graded", "letter_scale": False,
           "lms_letter": "B", "lms_percent": 84.5, "sis_result_max": 20.0,
           "lms_graded_at": pd.Timestamp(GRADED)}  # fmt: skip
    return {**row, **changes}


@pytest.mark.parametrize(
    ("changes", "desired"),
    [
        ({}, {"scoreStatus": "fully graded", "score": 16.9}),
        ({"letter_scale": True}, {"scoreStatus": "fully graded", "textScore": "B"}),
        ({"lms_grade_status": "excused"}, {"scoreStatus": "exempt"}),
    ],
)
def test_the_lms_grade_is_written_on_the_line_items_own_scale(changes: dict, desired: dict) -> None:
    assert desired_fields(discrepancy(**changes)) == desired


def test_a_row_whose_value_cannot_be_written_is_refused_with_the_reason() -> None:
    [refused, fine] = candidates([discrepancy(sis_result_max=None), discrepancy(row_key="lms|x")])
    assert "resultValueMax None" in refused.problem and isinstance(fine, Candidate)
    [no_letter] = candidates([discrepancy(letter_scale=True, lms_letter=None)])
    assert "no grading scheme" in no_letter.problem


def test_a_minted_result_id_is_stable_per_pair_and_differs_between_pairs() -> None:
    minted = minted_result_id("sis-a", "li-1", "usr-1")
    assert minted == minted_result_id("sis-a", "li-1", "usr-1")
    others = {minted_result_id("sis-b", "li-1", "usr-1"), minted_result_id("sis-a", "li-2", "usr-1"),
              minted_result_id("sis-a", "li-1", "usr-2"), minted_result_id("sis-a", "li-1usr", "-1")}  # fmt: skip
    assert minted not in others and len(others) == 4


@pytest.mark.parametrize(
    ("result", "asked_id", "problem"),
    [
        (sis_result(), "res-1", None),
        (sis_result(student={"sourcedId": "usr-2"}), "res-1", "belongs to student 'usr-2', not 'usr-1'"),
        (sis_result(lineItem={"sourcedId": "li-9"}), None, "is for line item 'li-9', not 'li-1'"),
        (sis_result(sourcedId="res-2"), "res-1", "GET /results/res-1 answered result 'res-2'"),
        (sis_result(student="usr-1"), None, "belongs to student None"),
    ],
)
def test_identity_is_proven_only_by_the_results_own_references(result: dict, asked_id, problem) -> None:  # noqa: ANN001
    got = identity_problem(result, "li-1", "usr-1", asked_id)
    assert got == problem if problem is None else problem in got


def test_a_missing_result_is_created_at_the_minted_id_with_a_body_valid_against_the_spec() -> None:
    decision = decide(None, candidate(sis_result_id=None), new_id="lmsp-x", own=None, now=NOW, ref=ref)
    assert decision.outcome is None and decision.creates and decision.result_id == "lmsp-x"
    assert conforms({"result": decision.body}, "SingleResult") == []
    assert decision.body["scoreDate"] == "2026-09-11" and decision.body["score"] == 17.0


def test_a_replacement_keeps_the_results_other_fields_drops_unknown_ones_and_is_valid() -> None:
    current = sis_result(vendorField="x", dateLastModified="2026-09-09T08:00:00Z")
    decision = decide(current, candidate(), new_id="lmsp-x", own=None, now=NOW, ref=ref)
    assert decision.outcome is None and not decision.creates and decision.result_id == "res-1"
    body = decision.body
    assert (body["comment"], body["late"], body["missing"], body["score"]) == ("see me", "true", "false", 17.0)
    assert "vendorField" not in body and conforms({"result": body}, "SingleResult") == []


def test_a_result_already_holding_the_value_is_current_whoever_wrote_it() -> None:
    current = sis_result(score=17.0, dateLastModified="2026-09-11T00:00:00Z")  # newer than the LMS grade, same value
    assert decide(current, candidate(), new_id="x", own=None, now=NOW, ref=ref).outcome == "already_current"


def test_a_registrars_newer_change_is_kept_but_a_tobedeleted_result_is_not_protected() -> None:
    newer = sis_result(dateLastModified="2026-09-10T20:00:00Z")
    assert decide(newer, candidate(), new_id="x", own=None, now=NOW, ref=ref).outcome == "skipped_sis_newer"
    deleted = sis_result(status="tobedeleted", dateLastModified="2026-09-10T20:00:00Z")
    revived = decide(deleted, candidate(), new_id="x", own=None, now=NOW, ref=ref)
    assert revived.outcome is None and revived.body["status"] == "active"


def test_the_pipelines_own_newer_write_is_not_mistaken_for_the_registrars() -> None:
    ours = sis_result(
        score=15.0, dateLastModified=(GRADED + timedelta(hours=2, seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    decision = decide(ours, candidate(), new_id="x", own=own(), now=NOW, ref=ref)
    assert decision.outcome is None and "this pipeline's write" in decision.detail
    # The same value written by someone long before the pipeline's write, or another value: the registrar's.
    assert not is_own_write(sis_result(score=15.0, dateLastModified="2026-09-09T08:00:00Z"), own())
    registrar = sis_result(score=14.0, dateLastModified=stamp(GRADED + timedelta(hours=3)))
    assert decide(registrar, candidate(), new_id="x", own=own(), now=NOW, ref=ref).outcome == "skipped_sis_newer"
    assert not is_own_write(ours, own(state="not_landed"))


def journal_rows(*rows: dict) -> pd.DataFrame:
    base = {"dry_run": False, "row_key": "k", "lms_student_id": "stu-1", "sis_student_id": "usr-1",
            "sis_line_item_id": "li-1", "sis_result_id": "res-1", "score_status_written": "fully graded",
            "score_written": 15.0, "text_score_written": None, "http_status": None, "run_id": "run-1"}  # fmt: skip
    return pd.DataFrame([{**base, **row} for row in rows])


@pytest.mark.parametrize(
    ("outcomes", "state"),
    [
        ([("updated", 201)], "landed"),
        ([], "unanswered"),
        ([("failed", None)], "unanswered"),  # the connection failed: only the SIS knows
        ([("failed", 422)], "earlier"),  # refused by the SIS: the earlier write is what it holds
        ([("failed", None), ("confirmed", None)], "landed"),
        ([("failed", None), ("not_applied", None)], "earlier"),
        ([("conflict", 409)], "earlier"),
    ],
)
def test_the_journal_tells_which_past_write_may_be_in_the_sis(outcomes: list, state: str) -> None:
    at = pd.Timestamp(GRADED)
    rows = [{"operation_id": "op-0", "phase": "intent", "outcome": "pending", "attempted_at": at - timedelta(days=1),
             "score_written": 11.0},
            {"operation_id": "op-0", "phase": "outcome", "outcome": "created", "http_status": 201,
             "attempted_at": at - timedelta(days=1)},
            {"operation_id": "op-1", "phase": "intent", "outcome": "pending", "attempted_at": at}]  # fmt: skip
    rows += [{"operation_id": "op-1", "phase": "outcome", "outcome": o, "http_status": h,
              "attempted_at": at + timedelta(seconds=n + 1)} for n, (o, h) in enumerate(outcomes)]  # fmt: skip
    rows.append({"operation_id": "op-dry", "phase": "intent", "outcome": "pending", "attempted_at": at,
                 "dry_run": True, "sis_line_item_id": "li-2"})  # fmt: skip
    past = past_writes(journal_rows(*rows))
    assert list(past) == [("li-1", "usr-1")]
    latest = past[("li-1", "usr-1")]
    if state == "earlier":
        assert (latest.operation_id, latest.state, latest.values["score"]) == ("op-0", "landed", 11.0)
    else:
        assert (latest.operation_id, latest.state, latest.values["score"]) == ("op-1", state, 15.0)
