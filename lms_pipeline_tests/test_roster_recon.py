"""Roster reconciliation without Dagster: the SIS's rostering read over real HTTP with the project's OneRoster reader,
compared with the LMS world's truth, must give exactly the planted disagreements; the student mapping file is read
as the grade reconciliation reads it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lms_pipeline.config import SisConfig
from lms_pipeline.grade_inputs import STUDENT_MAP_COLUMNS, mapping_inputs, read_mapping


def test_a_mapping_file_with_a_header_and_no_rows_maps_nobody(tmp_path: Path) -> None:
    path = tmp_path / "student_map.csv"
    path.write_text("# nobody needs a mapping row yet\nlms_connection_id,lms_user_id,sis_user_id\n")
    rows = read_mapping(path, STUDENT_MAP_COLUMNS, ("lms_connection_id", "lms_user_id"), "sis_user_id")
    assert rows.empty and set(STUDENT_MAP_COLUMNS) <= set(rows.columns)


def test_an_assignment_map_with_no_rows_maps_no_assignment_and_is_no_error(tmp_path: Path) -> None:
    # A district reconciling rosters may have no assignment to map by hand: a header-only file must read as no rows.
    (tmp_path / "students.csv").write_text("lms_connection_id,lms_user_id,sis_user_id\nc1,stu-1,usr-1\n")
    (tmp_path / "items.csv").write_text("lms_connection_id,lms_course_id,lms_content_id,sis_line_item_id\n")
    (tmp_path / "schemes.yaml").write_text("schemes: {s: {cutoffs: [[P, 50], [F, 0]]}}\n")
    sis = SisConfig(id="s1", provider="oneroster", client_id_env="X", client_secret_env="Y",
                    student_map=str(tmp_path / "students.csv"), assignment_map=str(tmp_path / "items.csv"),
                    grading_schemes=str(tmp_path / "schemes.yaml"))  # fmt: skip
    sis_data = {"users": pd.DataFrame({"sourced_id": ["usr-1"]}), "lineItems": pd.DataFrame({"sourced_id": ["li-1"]})}
    students = pd.DataFrame({"student_id": ["stu-1"], "email": ["a@x"]})
    grades = pd.DataFrame({"student_id": ["stu-1"], "course_id": ["crs-1"], "content_id": ["k1"]})
    contents = pd.DataFrame({"course_id": ["crs-1"], "content_id": ["k1"]})
    student_rows, item_rows, *_ = mapping_inputs(sis, "c1", sis_data, students, grades, contents)
    assert list(student_rows["sis_user_id"]) == ["usr-1"]
    assert item_rows.empty and "sis_line_item_id" in item_rows.columns
