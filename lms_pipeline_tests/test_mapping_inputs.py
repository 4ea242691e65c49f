"""The mapping checks of one connection's reconciliation (grade_inputs.mapping_inputs), on their own: SIS ids must
exist (the SIS is listed in full), rows for LMS users or contents not seen today are stale (set aside and counted,
never an error), and other connections' rows are not this connection's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lms_pipeline.config import SisConfig
from lms_pipeline.grade_inputs import GradeInputError, mapping_inputs

SCHEMES = "schemes:\n  tens: {cutoffs: [[A, 90], [F, 0]], precision: 0, rounding: floor}\ncourses: {}\n"


def sis(tmp_path: Path, students: str, assignments: str) -> SisConfig:
    (tmp_path / "s.csv").write_text("lms_connection_id,lms_user_id,sis_user_id\n" + students)
    (tmp_path / "a.csv").write_text("lms_connection_id,lms_course_id,lms_content_id,sis_line_item_id\n" + assignments)
    (tmp_path / "g.yaml").write_text(SCHEMES)
    return SisConfig(id="s1", provider="oneroster", client_id_env="X_ID", client_secret_env="X_SECRET",
                     student_map=str(tmp_path / "s.csv"), assignment_map=str(tmp_path / "a.csv"),
                     grading_schemes=str(tmp_path / "g.yaml"))  # fmt: skip


SIS_DATA = {"users": pd.DataFrame({"sourced_id": ["usr-1", "usr-2", "usr-3"]}),
            "lineItems": pd.DataFrame({"sourced_id": ["li-1", "li-2", "li-3"]})}  # fmt: skip
STUDENTS = pd.DataFrame({"student_id": ["stu-1"]})
GRADES = pd.DataFrame({"student_id": ["stu-2"], "course_id": ["crs-1"], "content_id": ["ct-2"]})
CONTENTS = pd.DataFrame({"course_id": ["crs-1"], "content_id": ["ct-1"]})


def test_rows_of_users_and_contents_seen_today_are_kept_and_the_others_set_aside(tmp_path: Path) -> None:
    config = sis(tmp_path, "c1,stu-1,usr-1\nc1,stu-2,usr-2\nc1,stu-gone,usr-3\nc2,stu-9,usr-1\n",
                 "c1,crs-1,ct-1,li-1\nc1,crs-1,ct-2,li-2\nc1,crs-old,ct-9,li-3\n")  # fmt: skip
    students, assignments, _, _, stale = mapping_inputs(config, "c1", SIS_DATA, STUDENTS, GRADES, CONTENTS)
    assert sorted(students["lms_user_id"]) == ["stu-1", "stu-2"], "a student seen on a roster or with a grade"
    assert sorted(assignments["lms_content_id"]) == ["ct-1", "ct-2"], "a content listed or graded"
    assert stale == 2, "stu-gone and crs-old/ct-9; c2's row is another connection's, not stale"


def test_a_sis_id_the_sis_does_not_have_is_refused_with_file_and_line(tmp_path: Path) -> None:
    config = sis(tmp_path, "c1,stu-1,usr-1\nc1,stu-2,usr-typo\n", "c1,crs-1,ct-1,li-1\n")
    with pytest.raises(GradeInputError, match=r"s\.csv.*line 3: SIS s1 user 'usr-typo'"):
        mapping_inputs(config, "c1", SIS_DATA, STUDENTS, GRADES, CONTENTS)


def test_a_line_item_the_sis_does_not_have_is_refused_even_on_a_live_row(tmp_path: Path) -> None:
    config = sis(tmp_path, "c1,stu-1,usr-1\n", "c1,crs-1,ct-1,li-typo\n")
    with pytest.raises(GradeInputError, match=r"a\.csv.*line 2: SIS s1 line item 'li-typo'"):
        mapping_inputs(config, "c1", SIS_DATA, STUDENTS, GRADES, CONTENTS)
