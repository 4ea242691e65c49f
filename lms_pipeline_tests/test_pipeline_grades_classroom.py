"""Grade reconciliation fed by Google Classroom (courseWork, studentSubmissions; students identified by email through
the directory): every row must get the status the SIS planted, for the grades as Classroom presents them."""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from lms_pipeline.providers.classroom.simulator_world import classroom_submission_grade
from lms_pipeline_tests.conftest import failure_message
from lms_pipeline_tests.test_pipeline_grades import DAYS, GradesPipeline


@pytest.fixture(scope="module")
def classroom_grades(tmp_path_factory: pytest.TempPathFactory) -> GradesPipeline:
    pipeline = GradesPipeline(tmp_path_factory.mktemp("classroom-grades"), provider="google_classroom")
    for day in DAYS:
        result = pipeline.run(day)
        assert result.success, failure_message(result)
    return pipeline


def presented(pipeline: GradesPipeline, day: date) -> dict[tuple[str, str, str], str]:
    """The grades as Classroom shows them: a submission per enrolled learner's graded activity, its assignedGrade
    (points out of 100) or nothing: excused and text grades have no Classroom form, and a draft is not a grade."""
    world = pipeline.sis_world.lms
    enrolled = {(c.id, s) for c in world.roster_view(day) for s in c.enrolled}
    out = {}
    for (course, learner, content), raw in world.true_grades(day).items():
        if raw is None or (course, learner) not in enrolled:
            continue
        grade = classroom_submission_grade(learner, content, raw).get("assignedGrade")
        out[(course, learner, content)] = "" if grade is None else str(grade)
    return out


def test_classroom_grades_reconcile_to_the_planted_truth(classroom_grades: GradesPipeline) -> None:
    seen: Counter = Counter()
    for day in DAYS:
        got = classroom_grades.statuses(day)
        expected = classroom_grades.sis_world.expected_statuses(
            day, classroom_grades.student_rows, classroom_grades.item_rows, presented(classroom_grades, day)
        )
        keys = got.keys() | expected.keys()
        wrong = {k: (got.get(k), expected.get(k)) for k in keys if got.get(k) != expected.get(k)}
        assert not wrong, f"{day}: {len(wrong)} rows differ, e.g. {list(wrong.items())[:5]}"
        seen.update(expected.values())
    # Classroom cannot say "excused" or give a text grade, so the SIS's exempt results show as missing in the LMS.
    assert {"match", "score_mismatch", "missing_in_sis", "missing_in_lms", "unmapped_assignment"} <= set(seen), seen
