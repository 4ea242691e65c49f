"""Grade reconciliation with the LMS grades read through LTI Assignment and Grade Services (line items, results)
and NRPS (who an LTI user is): every row must get the status the SIS planted, for the grades as AGS presents them."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from lms_pipeline.providers.lti_ags.simulator_world import lti_user_id, platform_grade, result_score
from lms_pipeline_tests.conftest import failure_message
from lms_pipeline_tests.test_pipeline_grades import DAYS, GradesPipeline


@pytest.fixture(scope="module")
def lti_grades(tmp_path_factory: pytest.TempPathFactory) -> GradesPipeline:
    pipeline = GradesPipeline(tmp_path_factory.mktemp("lti-grades"), grade_source="lti_ags")
    for day in DAYS:
        result = pipeline.run(day)
        assert result.success, failure_message(result)
    return pipeline


def presented(pipeline: GradesPipeline, day: date) -> dict[tuple[str, str, str], str]:
    """The grades as AGS shows them: ungraded learners omitted, excused or text grades listed without a score (so
    ungraded, never 0), numbers as the platform holds them (its planted zeros included)."""
    out = {}
    for (course, learner, content), raw in pipeline.sis_world.lms.true_grades(day).items():
        if raw is None or raw.strip() == "":
            continue
        grade = platform_grade(learner, content, raw)
        out[(course, learner, content)] = grade if result_score(grade) is not None else ""
    return out


def lti_key(key: tuple) -> tuple:
    """NRPS ties no student id to a guest (a learner never on a roster): the pipeline keeps the LTI user."""
    if key[0] == "lms" and key[2].startswith("gst-"):
        return (*key[:2], f"lti-user:{lti_user_id(key[2])}", key[3])
    return key


def test_lti_ags_grades_reconcile_to_the_planted_truth(lti_grades: GradesPipeline) -> None:
    seen: Counter = Counter()
    for day in DAYS:
        got = lti_grades.statuses(day)
        expected = lti_grades.sis_world.expected_statuses(
            day, lti_grades.student_rows, lti_grades.item_rows, presented(lti_grades, day)
        )
        expected = {lti_key(k): v for k, v in expected.items()}
        keys = got.keys() | expected.keys()
        wrong = {k: (got.get(k), expected.get(k)) for k in keys if got.get(k) != expected.get(k)}
        assert not wrong, f"{day}: {len(wrong)} rows differ, e.g. {list(wrong.items())[:5]}"
        seen.update(expected.values())
    assert {"match", "score_mismatch", "missing_in_sis", "missing_in_lms", "unmapped_student",
            "unmapped_assignment"} <= set(seen), seen  # fmt: skip
