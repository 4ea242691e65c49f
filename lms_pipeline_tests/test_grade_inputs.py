"""The analyst-edited grade inputs: a bad mapping or scheme file is refused with the file, the line and the
problem, before anything is written (the pipeline test checks that nothing stored changes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lms_pipeline.grade_inputs import (
    STUDENT_MAP_COLUMNS,
    GradeInputError,
    check_known,
    course_schemes,
    load_schemes,
    read_mapping,
)

KEY = ("lms_connection_id", "lms_user_id")


def mapping(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "student_map.csv"
    path.write_text(text)
    return path


def read(path: Path):  # noqa: ANN201
    return read_mapping(path, STUDENT_MAP_COLUMNS, KEY, "sis_user_id")


def test_rows_keep_their_line_numbers_past_comments_and_blank_lines(tmp_path: Path) -> None:
    path = mapping(tmp_path, "# who maps where\nlms_connection_id,lms_user_id,sis_user_id\n\nc1,stu-1,usr-1\n"
                             "# a note\nc1, stu-2 ,usr-2\n")  # fmt: skip
    frame = read(path)
    assert frame[["lms_user_id", "line"]].values.tolist() == [["stu-1", 4], ["stu-2", 6]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lms_connection_id,lms_user_id\nc1,stu-1\n",
         "line 1: missing column(s) sis_user_id (expected lms_connection_id, lms_user_id, sis_user_id)"),
        ("lms_connection_id,lms_user_id,sis_user_id\nc1,stu-1,usr-1\nc1,,usr-2\n",
         "line 3: empty value in column lms_user_id"),
        ("lms_connection_id,lms_user_id,sis_user_id\nc1,stu-1,usr-1\nc2,stu-1,usr-1\nc1,stu-1,usr-3\n",
         "line 4: duplicate key (lms_connection_id='c1', lms_user_id='stu-1') first given on line 2"),
        ("lms_connection_id,lms_user_id,sis_user_id\nc1,stu-1,usr-1\nc1,stu-2,usr-1\n",
         "line 3: duplicate sis_user_id (lms_connection_id='c1', sis_user_id='usr-1') first given on line 2"),
    ],
)  # fmt: skip
def test_a_bad_mapping_file_names_its_line_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = mapping(tmp_path, text)
    with pytest.raises(GradeInputError) as caught:
        read(path)
    assert str(caught.value) == f"{path}, {message}"


def test_a_missing_mapping_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(GradeInputError, match="student_map.csv: mapping file not found"):
        read(tmp_path / "student_map.csv")


def test_ids_the_other_system_does_not_have_are_refused(tmp_path: Path) -> None:
    path = mapping(tmp_path, "lms_connection_id,lms_user_id,sis_user_id\nc1,stu-1,usr-1\nc1,stu-2,usr-x\n")
    with pytest.raises(GradeInputError, match=r"line 3: SIS s1 user 'usr-x' \(sis_user_id\) does not exist"):
        check_known(read(path), path, "sis_user_id", {"usr-1", "usr-2"}, "SIS s1 user")


SCHEMES = """
schemes:
  tens: {cutoffs: [[A, 90], [B, 80], [F, 0]], precision: 0, rounding: floor}
courses:
  c1: {"*": tens, crs-2: tens}
"""


def test_schemes_are_assigned_per_connection_and_course_without_a_universal_default(tmp_path: Path) -> None:
    path = tmp_path / "schemes.yaml"
    path.write_text(SCHEMES)
    schemes, courses = load_schemes(path, "c1")
    assert schemes["tens"].rounding == "floor" and courses == {"*": "tens", "crs-2": "tens"}
    assert load_schemes(path, "c2")[1] == {}  # another connection gets no scheme at all
    frame = course_schemes(["crs-1", "crs-2"], {"crs-2": "tens"})
    assert frame["scheme"].tolist() == [None, "tens"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("schemes:\n  bad: {cutoffs: [[A, 80], [B, 90], [F, 0]]}\n", "scheme 'bad': .*cutoffs must strictly decrease"),
        ("schemes:\n  bad: {cutoffs: [[A, 90], [B, 80]]}\n", "scheme 'bad': .*lowest cutoff must be 0"),
        ("schemes:\n  ok: {cutoffs: [[A, 0]]}\ncourses:\n  c1: {crs-1: nope}\n", r"unknown scheme\(s\) \['nope'\]"),
        ("schemes: {}\n", "field 'schemes'"),
    ],
)  # fmt: skip
def test_a_bad_scheme_file_is_refused_with_its_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "schemes.yaml"
    path.write_text(text)
    with pytest.raises(GradeInputError, match=message):
        load_schemes(path, "c1")
