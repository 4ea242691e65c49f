"""Malformed pages through the whole pipeline: a clear error naming connection, endpoint and offset; the previous
snapshot and the published change sets stay exactly as they were; a re-run after the provider recovers succeeds."""

from __future__ import annotations

import json

import pytest

from lms_pipeline_tests.conftest import START, Pipeline, failure_message

DAY2 = START.replace(day=START.day + 1)
ITEM = {"id": "crs-99999", "name": "Broken", "updated_at": "2026-09-02T01:00:00Z"}

CASES = [
    ("<html>upstream proxy error</html>", "with a body that is not JSON"),
    (json.dumps({"data": [ITEM]}), "with a JSON dict, not the promised array"),
    (json.dumps([{**ITEM, "student_ids": "stu-00001"}]), "item 'crs-99999': student_ids is VARCHAR, not a list"),
    (json.dumps([{**ITEM, "student_ids": ["stu-00001", 7]}]), "item 'crs-99999': student_ids holds a non-string"),
    (json.dumps([{**ITEM, "student_ids": []}, {**ITEM, "student_ids": ["stu-00001"]}]),
     "item 'crs-99999': the same id appears 2 times on one page"),
]  # fmt: skip


def published_state(pipe: Pipeline) -> list:
    return [
        pipe.query(f"SELECT * FROM lms.{name} ORDER BY ALL").to_json()
        for name in ("course_rosters", "course_student_edges", "enrollment_changes", "enrollment_change_sets")
    ]


@pytest.mark.parametrize(("body", "problem"), CASES, ids=["not-json", "object", "ids-string", "ids-int", "dup"])
def test_a_malformed_page_fails_the_run_by_name_and_keeps_the_previous_snapshot(
    pipeline: Pipeline, body: str, problem: str
) -> None:
    pipeline.run_days(1, ["conn-all"])
    before = published_state(pipeline)
    # A persistent fault: the provider serves this page broken on every request, whatever the technique.
    pipeline.app.inject_fault("conn-all", status=200, body=body, endpoint="course", offset=0, times=1000)
    result = pipeline.run("conn-all", DAY2)
    message = failure_message(result)
    assert not result.success
    assert "connection 'conn-all'" in message and "/lms/conn-all/course" in message and "offset 0" in message
    assert problem in message
    assert published_state(pipeline) == before, "nothing published for the failed day, nothing earlier touched"
    assert pipeline.rows("SELECT count(*) FROM lms.enrollment_change_sets WHERE snapshot_date = ?", [DAY2]) == {(0,)}
    pipeline.app.clear_faults()
    rerun = pipeline.run("conn-all", DAY2)
    assert rerun.success, failure_message(rerun)
    assert pipeline.rows(
        "SELECT course_id, student_id FROM lms.course_student_edges WHERE connection_id = 'conn-all' "
        "AND snapshot_date = ?",
        [DAY2],
    ) == pipeline.worlds["conn-all"].true_course_edges(DAY2)
