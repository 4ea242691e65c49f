"""Partition writes: atomic, idempotent, by column name, and never touching other partitions."""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd
import pytest

from lms_pipeline.warehouse import Warehouse, WarehouseError, published_path

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)


def edges(day: date, *students: str, connection: str = "c1") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "connection_id": connection,
            "snapshot_date": pd.Timestamp(day),
            "course_id": "a",
            "student_id": list(students),
        }
    )


def stored(wh: Warehouse) -> list[tuple]:
    return sorted(map(tuple, wh.query("SELECT * FROM lms.course_student_edges").to_numpy().tolist()))


def test_replacing_a_partition_is_idempotent_and_leaves_others_alone(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_partition({"course_student_edges": edges(D1, "s1", "s2")}, "c1", D1)
    wh.replace_partition({"course_student_edges": edges(D1, "s9", connection="c2")}, "c2", D1)
    wh.replace_partition({"course_student_edges": edges(D2, "s1")}, "c1", D2)
    first = stored(wh)
    for _ in range(2):
        wh.replace_partition({"course_student_edges": edges(D2, "s1")}, "c1", D2)
    assert stored(wh) == first and len(first) == 4


def test_a_failed_write_rolls_back_and_keeps_the_previous_rows(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_partition({"course_student_edges": edges(D1, "s1")}, "c1", D1)
    before = stored(wh)
    broken = edges(D1, "s2").assign(student_id=None)  # NOT NULL violation after the DELETE ran
    with pytest.raises(duckdb.ConstraintException):
        wh.replace_partition({"course_student_edges": broken}, "c1", D1)
    assert stored(wh) == before


def test_several_tables_commit_together_or_not_at_all(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_partition({"course_student_edges": edges(D1, "s1")}, "c1", D1)
    bad_rosters = pd.DataFrame({"connection_id": ["c1"], "snapshot_date": [pd.Timestamp(D1)], "course_id": ["a"],
                                "roster_status": [None]})  # fmt: skip
    with pytest.raises(duckdb.ConstraintException):
        wh.replace_partition({"course_student_edges": edges(D1, "s2"), "course_rosters": bad_rosters}, "c1", D1)
    assert stored(wh) == [("c1", pd.Timestamp(D1), "a", "s1")]


def test_columns_are_matched_by_name_not_position(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_partition({"course_student_edges": edges(D1, "s1")[["student_id", "course_id", "snapshot_date",
                                                                     "connection_id"]]}, "c1", D1)  # fmt: skip
    assert stored(wh) == [("c1", pd.Timestamp(D1), "a", "s1")]


def test_rows_of_another_partition_are_refused(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    with pytest.raises(WarehouseError, match="do not belong to partition c1|2026-09-02"):
        wh.replace_partition({"course_student_edges": edges(D1, "s1")}, "c1", D2)


def test_published_copy_is_readable_while_the_live_file_takes_writes(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_partition({"course_student_edges": edges(D1, "s1")}, "c1", D1)
    copy = wh.publish()
    assert copy == published_path(wh.path)
    with duckdb.connect(str(copy), read_only=True) as analyst:
        wh.replace_partition({"course_student_edges": edges(D2, "s2")}, "c1", D2)  # not blocked by the reader
        assert analyst.execute("SELECT count(*) FROM lms.course_student_edges").fetchone()[0] == 1
        wh.publish()  # swapped in under the open reader
    with duckdb.connect(str(copy), read_only=True) as analyst:
        assert analyst.execute("SELECT count(*) FROM lms.course_student_edges").fetchone()[0] == 2


def test_a_publish_cleans_up_staging_files_left_by_killed_publishers(tmp_path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    store.replace_partition({"course_student_edges": edges(D1, "s1", "s2", "s3")}, "c1", D1)
    left = tmp_path / f".{published_path(store.path).name}.999999.tmp"
    left.write_bytes(b"half a database")
    store.publish()
    assert not left.exists()
    assert [p.name for p in tmp_path.glob(".*.tmp")] == []
    with duckdb.connect(str(published_path(store.path)), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM lms.course_student_edges").fetchone()[0] == 3
