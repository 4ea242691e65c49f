"""Grade reconciliation fed by the Canvas REST dialect (assignments, submissions, grading standards) instead of
Unified activities: the same world and SIS must give the same statuses, row for row, as the planted truth."""

from __future__ import annotations

from collections import Counter

import pytest

from lms_pipeline.providers.canvas.simulator_world import GUEST_USER_BASE
from lms_pipeline_tests.conftest import failure_message
from lms_pipeline_tests.test_pipeline_grades import DAYS, GradesPipeline


def canvas_key(key: tuple) -> tuple:
    """Canvas knows guests (learners never on a roster, without an SIS id) only by its own user id."""
    if key[0] == "lms" and key[2].startswith("gst-"):
        return (*key[:2], f"canvas-user:{GUEST_USER_BASE + int(key[2][4:])}", key[3])
    return key


@pytest.fixture(scope="module")
def canvas_grades(tmp_path_factory: pytest.TempPathFactory) -> GradesPipeline:
    pipeline = GradesPipeline(tmp_path_factory.mktemp("canvas-grades"), provider="canvas")
    for day in DAYS:
        result = pipeline.run(day)
        assert result.success, failure_message(result)
    return pipeline


def test_canvas_grades_reconcile_to_the_planted_truth(canvas_grades: GradesPipeline) -> None:
    seen: Counter = Counter()
    for day in DAYS:
        got, expected = canvas_grades.statuses(day), {canvas_key(k): v for k, v in canvas_grades.expected(day).items()}
        keys = got.keys() | expected.keys()
        wrong = {k: (got.get(k), expected.get(k)) for k in keys if got.get(k) != expected.get(k)}
        assert not wrong, f"{day}: {len(wrong)} rows differ, e.g. {list(wrong.items())[:5]}"
        seen.update(expected.values())
    assert len(seen) == 7, seen


def test_canvas_grades_keep_excused_and_ungraded_apart_from_zero(canvas_grades: GradesPipeline) -> None:
    grades = canvas_grades.query("SELECT grade_status, percent FROM lms.lms_grades WHERE snapshot_date = ?", [DAYS[-1]])
    statuses = set(grades["grade_status"])
    assert {"graded", "excused", "ungraded", "unparseable"} <= statuses
    assert grades.loc[grades["grade_status"] != "graded", "percent"].isna().all()
