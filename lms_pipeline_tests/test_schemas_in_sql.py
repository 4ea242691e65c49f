"""The pandera models run as SQL over a stored partition: the same checks and the same message as on a frame."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from lms_pipeline.schemas import MODELS, SchemaViolation, check_stored, constraint_violation, validate
from lms_pipeline.warehouse import Warehouse, table

D1 = date(2026, 9, 1)


def roster(course: str, status: str = "exposed", count: int | None = 1, connection: str = "c1") -> dict:
    return {"connection_id": connection, "snapshot_date": pd.Timestamp(D1), "course_id": course, "course_name": None,
            "is_active": True, "roster_status": status, "roster_source": "student_ids", "student_count": count,
            "created_at": None, "updated_at": None, "fetched_on": pd.Timestamp(D1)}  # fmt: skip


def stored_message(tmp_path: Path, name: str, rows: pd.DataFrame, connection: str = "c1") -> str:
    store = Warehouse(tmp_path / "w.duckdb")
    store.replace_partition({name: rows}, connection, D1)
    with store.session() as conn, pytest.raises(SchemaViolation) as err:
        check_stored(conn, name, table(name), connection, D1)
    return str(err.value)


def frame_message(name: str, rows: pd.DataFrame) -> str:
    with pytest.raises(SchemaViolation) as err:
        validate(name, rows)
    return str(err.value)


def test_a_stored_partition_fails_with_the_message_the_frame_check_gives(tmp_path: Path) -> None:
    rows = pd.DataFrame([roster("a", "bogus"), roster("b", count=-1), roster("b"), roster("c", "weird")])
    message = stored_message(tmp_path, "course_rosters", rows)
    assert message == frame_message("course_rosters", rows)
    assert "columns (connection_id, snapshot_date, course_id): duplicate key in 2 row(s)" in message
    assert "column 'roster_status': check isin(['exposed', 'empty', 'not_exposed']) failed for 2 row(s)" in message
    assert "column 'student_count': check greater_than_or_equal_to(0) failed for 1 row(s), e.g. -1" in message


def test_duplicate_edges_are_refused_by_their_unique_key(tmp_path: Path) -> None:
    edges = pd.DataFrame({"connection_id": "c1", "snapshot_date": pd.Timestamp(D1), "course_id": ["a", "a", "a"],
                          "student_id": ["s1", "s1", "s2"]})  # fmt: skip
    message = stored_message(tmp_path, "course_student_edges", edges)
    assert message == frame_message("course_student_edges", edges)
    assert "columns (connection_id, snapshot_date, course_id, student_id): duplicate key in 2 row(s)" in message


def test_a_dataframe_check_runs_through_its_sql_twin(tmp_path: Path) -> None:
    rows = pd.DataFrame([roster("a", "not_exposed", count=3), roster("b")])
    message = stored_message(tmp_path, "course_rosters", rows)
    assert "column '(table)': check count_null_iff_not_exposed failed for 1 row(s), e.g. {" in message
    assert "'course_id': 'a'" in message


def test_only_the_checked_partition_counts(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    store.replace_partition({"course_rosters": pd.DataFrame([roster("a", "bogus", connection="c2")])}, "c2", D1)
    store.replace_partition({"course_rosters": pd.DataFrame([roster("a")])}, "c1", D1)
    with store.session() as conn:
        check_stored(conn, "course_rosters", table("course_rosters"), "c1", D1)  # c2's bad row is c2's business


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_has_a_sql_form_and_a_valid_partition_passes(tmp_path: Path, name: str) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    with store.session() as conn:
        check_stored(conn, name, table(name), "c1", D1)  # an empty partition: every generated query runs


def test_a_not_null_refused_by_the_table_is_named_like_a_schema_violation(tmp_path: Path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    with store.session() as conn, pytest.raises(duckdb.ConstraintException) as err:
        conn.execute("INSERT INTO lms.course_student_edges VALUES ('c1', DATE '2026-09-01', 'a', NULL)")
    assert str(constraint_violation(err.value)) == (
        "table course_student_edges: schema validation failed\n  column 'student_id': check not_nullable failed "
        "(the table's NOT NULL constraint refused the write)"
    )
