"""Partition writes: atomic, idempotent, by column name, and never touching other partitions."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
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


def change_set(connection: str, day: date) -> pd.DataFrame:
    """A passed change set: what makes a day publishable."""
    return pd.DataFrame(
        [
            {
                "connection_id": connection,
                "snapshot_date": pd.Timestamp(day),
                "is_baseline": True,
                "courses_compared": 0,
                "courses_not_exposed": 0,
                "previous_edges": 0,
                "current_edges": 1,
                "added": 0,
                "dropped": 0,
                "drop_share": 0.0,
                "max_drop_share": 0.2,
                "guard": "passed",
            }
        ]
    )


def hold(connection: str, day: date) -> pd.DataFrame:
    return pd.DataFrame([{"connection_id": connection, "snapshot_date": pd.Timestamp(day), "run_id": "r",
                          "held_at": pd.Timestamp.now(tz="UTC"), "reason": "mass drop", "previous_edges": 3,
                          "dropped": 3, "drop_share": 1.0, "max_drop_share": 0.2}])  # fmt: skip


def write_day(wh: Warehouse, day: date, *students: str, connection: str = "c1") -> None:
    wh.replace_partition({"course_student_edges": edges(day, *students, connection=connection),
                          "enrollment_change_sets": change_set(connection, day)}, connection, day)  # fmt: skip


def analyst_edges(path, day: date | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as analyst:
        where = f"WHERE snapshot_date = DATE '{day}'" if day else ""
        return sorted(analyst.execute(f"SELECT * FROM lms.course_student_edges {where}").fetchall())


def test_published_copy_is_readable_while_the_live_file_takes_writes(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    write_day(wh, D1, "s1")
    copy = wh.publish_partition("c1", D1).analysts_db
    assert copy == published_path(wh.path)
    with duckdb.connect(str(copy), read_only=True) as analyst:
        write_day(wh, D2, "s2")  # not blocked by the reader
        assert analyst.execute("SELECT count(*) FROM lms.course_student_edges").fetchone()[0] == 1
        wh.publish_partition("c1", D2)  # published under the open reader, which sees the new day whole
        assert analyst.execute("SELECT count(*) FROM lms.course_student_edges").fetchone()[0] == 2


def test_publishing_a_partition_replaces_only_that_partition(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    write_day(wh, D1, "s1", "s2")
    write_day(wh, D1, "t1", connection="c2")
    wh.publish_partition("c1", D1)
    wh.publish_partition("c2", D1)
    write_day(wh, D1, "s3")  # re-run of c1|D1, not yet published
    assert [row[3] for row in analyst_edges(published_path(wh.path))] == ["s1", "s2", "t1"]
    wh.publish_partition("c1", D1)
    assert [row[3] for row in analyst_edges(published_path(wh.path))] == ["s3", "t1"]


def test_a_held_day_is_published_in_no_table_until_released(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    write_day(wh, D1, "s1", "s2", "s3")
    wh.publish_partition("c1", D1)
    # Day 2's rosters are written, then the guard holds its change set: no change set, a hold instead.
    wh.replace_partition({"course_student_edges": edges(D2), "change_set_holds": hold("c1", D2)}, "c1", D2)
    result = wh.publish_partition("c1", D2)
    assert not result.published and "held: mass drop" in result.reason
    assert set(result.tables) == {"change_set_holds", "grade_sync_log"}  # the journals, ungated
    assert analyst_edges(published_path(wh.path), D2) == []
    with duckdb.connect(str(published_path(wh.path)), read_only=True) as analyst:
        assert analyst.execute("SELECT reason FROM lms.change_set_holds").fetchall() == [("mass drop",)]
    # Released: the change set is written and the hold removed in one transaction.
    wh.replace_partition({"course_student_edges": edges(D2, "s1"), "enrollment_change_sets": change_set("c1", D2),
                          "change_set_holds": pd.DataFrame()}, "c1", D2)  # fmt: skip
    assert wh.publish_partition("c1", D2).published
    assert [row[3] for row in analyst_edges(published_path(wh.path), D2)] == ["s1"]
    with duckdb.connect(str(published_path(wh.path)), read_only=True) as analyst:
        assert analyst.execute("SELECT count(*) FROM lms.change_set_holds").fetchone() == (0,)


def test_a_re_run_held_day_keeps_its_last_published_version(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    write_day(wh, D1, "s1", "s2")
    wh.publish_partition("c1", D1)
    wh.replace_partition({"course_student_edges": edges(D1), "change_set_holds": hold("c1", D1)}, "c1", D1)
    wh.publish_partition("c1", D1)
    assert [row[3] for row in analyst_edges(published_path(wh.path))] == ["s1", "s2"]


def test_a_day_without_its_change_set_is_not_published(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.replace_partition({"course_student_edges": edges(D1, "s1")}, "c1", D1)
    result = wh.publish_partition("c1", D1)
    assert not result.published and "change set is not published yet" in result.reason
    assert analyst_edges(published_path(wh.path)) == []


def test_a_publish_cleans_up_what_a_killed_publisher_left(tmp_path) -> None:
    store = Warehouse(tmp_path / "w.duckdb")
    write_day(store, D1, "s1", "s2", "s3")
    store.publish_partition("c1", D1)
    left = tmp_path / "w_published" / "staging" / "c1.2026-09-01.999999"
    left.mkdir(parents=True)
    (left / "course_student_edges.parquet").write_bytes(b"half a parquet file")
    store.publish_partition("c1", D1)
    assert not left.exists()
    assert list((tmp_path / "w_published" / "staging").iterdir()) == []
    assert len(analyst_edges(published_path(store.path))) == 3


def test_a_day_is_swapped_whole_and_old_versions_do_not_pile_up(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    for students in (["s1"], ["s1", "s2"], ["s3"], ["s4"]):
        write_day(wh, D1, *students)
        wh.publish_partition("c1", D1, ["course_student_edges"] if students != ["s1"] else None)
    assert [row[3] for row in analyst_edges(published_path(wh.path))] == ["s4"]
    with duckdb.connect(str(published_path(wh.path)), read_only=True) as analyst:  # carried over, not lost
        assert analyst.execute("SELECT count(*) FROM lms.enrollment_change_sets").fetchone() == (1,)
    versions = list((tmp_path / "w_published" / "versions" / "c1" / D1.isoformat()).iterdir())
    assert len(versions) == 2, "the current version and the one it replaced"


def test_publish_all_rebuilds_a_lost_analysts_copy(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    write_day(wh, D1, "s1")
    write_day(wh, D2, "s2", "s3")
    wh.replace_partition(
        {"course_student_edges": edges(D1, "held", connection="c2"), "change_set_holds": hold("c2", D1)}, "c2", D1
    )
    assert wh.publish_all() == 2
    assert [row[3] for row in analyst_edges(published_path(wh.path))] == ["s1", "s2", "s3"]


def test_a_warehouse_file_named_like_its_schema_is_refused_with_the_fix(tmp_path) -> None:
    with pytest.raises(WarehouseError, match="equals the schema.*Name the file otherwise"):
        Warehouse(tmp_path / "lms.duckdb")


def sync_row(day: date, run_id: str) -> pd.DataFrame:
    return pd.DataFrame([{"connection_id": "c1", "snapshot_date": pd.Timestamp(day), "mode": "full",
                          "mode_reason": "test", "technique": "t", "passes": 1, "catch_up_rounds": 0,
                          "catch_up_converged": True, "last_full_scan_date": pd.Timestamp(day), "courses_listed": 1,
                          "classes_listed": 0, "requests": 1, "pages": 1, "retries": 0, "throttled": 0,
                          "server_errors": 0, "duration_seconds": 0.1, "run_id": run_id}])  # fmt: skip


def test_staged_fetch_becomes_stored_only_with_its_snapshot(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    wh.stage({"sync_log": sync_row(D1, "first")}, "c1", D1)
    assert wh.read_partition("sync_log", "c1", D1).empty, "staged is not stored"
    wh.replace_partition({"course_student_edges": edges(D1, "s1")}, "c1", D1, promote=["sync_log"])
    assert wh.read_partition("sync_log", "c1", D1)["run_id"].tolist() == ["first"]
    assert wh.read_staged("sync_log", "c1", D1).empty
    # A second fetch whose snapshot is never written (its normalization failed) changes nothing stored.
    wh.stage({"sync_log": sync_row(D1, "failed")}, "c1", D1)
    assert wh.read_partition("sync_log", "c1", D1)["run_id"].tolist() == ["first"]
    assert wh.read_staged("sync_log", "c1", D1)["run_id"].tolist() == ["failed"]
    with pytest.raises(KeyError, match="not staged"):
        wh.stage({"course_student_edges": edges(D1, "s2")}, "c1", D1)


def test_an_analyst_holding_the_live_file_is_named_at_once(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb", foreign_lock_wait=0.5)
    write_day(wh, D1, "s1")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(wh.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        with pytest.raises(WarehouseError, match="held open by a process outside the pipeline.*published copy"):
            write_day(wh, D2, "s2")
        assert time.monotonic() - started < 30
    finally:
        holder.kill()
        holder.wait(timeout=30)


HOLDER = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])  # an analyst's read-write session on the live file
print("holding", flush=True)
time.sleep(120)
"""


def test_when_duckdb_already_aborted_the_transaction_the_original_error_is_reported(tmp_path) -> None:
    """A disk full aborts DuckDB's transaction itself; the ROLLBACK that follows must not replace the cause."""

    class DiskFullOnInsert:
        def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
            self._conn = conn

        def execute(self, sql: str, *args):  # noqa: ANN202
            if sql.startswith("INSERT"):
                self._conn.execute("ROLLBACK")  # what DuckDB does to a transaction on a fatal I/O error
                raise duckdb.IOException('Could not write file "w.duckdb.wal": No space left on device')
            return self._conn.execute(sql, *args)

        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(self._conn, name)

    @contextmanager
    def connect():  # noqa: ANN202
        with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
            yield DiskFullOnInsert(conn)

    wh = Warehouse(tmp_path / "w.duckdb", connect=connect)
    with pytest.raises(duckdb.IOException, match="No space left on device") as caught:
        wh.replace_partition({"course_student_edges": edges(D1, "s1")}, "c1", D1)
    assert any("rollback also failed" in note for note in caught.value.__notes__)


def test_a_rewrite_commits_its_sql_writes_and_the_promotion_together_or_neither(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    write_day(wh, D1, "s1")
    wh.stage({"sync_log": sync_row(D1, "fetch")}, "c1", D1)
    before = stored(wh)
    with pytest.raises(RuntimeError, match="refused"), wh.rewrite("c1", D1, promote=["sync_log"]) as conn:
        conn.execute("DELETE FROM lms.course_student_edges WHERE connection_id = 'c1'")
        raise RuntimeError("normalization refused")
    assert stored(wh) == before and wh.read_partition("sync_log", "c1", D1).empty
    assert wh.read_staged("sync_log", "c1", D1)["run_id"].tolist() == ["fetch"], "the failed attempt stays staged"
    with wh.rewrite("c1", D1, promote=["sync_log"]) as conn:
        conn.execute("INSERT INTO lms.course_student_edges SELECT connection_id, snapshot_date, course_id, 's9' "
                     "FROM lms.course_student_edges WHERE connection_id = 'c1'")  # fmt: skip
    assert sorted(row[3] for row in stored(wh)) == ["s1", "s9"]
    assert wh.read_partition("sync_log", "c1", D1)["run_id"].tolist() == ["fetch"]
    assert wh.read_staged("sync_log", "c1", D1).empty


def test_a_rewrite_is_held_to_the_warehouse_work_memory(tmp_path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb", work_memory="256MB")
    with wh.rewrite("c1", D1) as conn:
        assert conn.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "244.1 MiB"
    with pytest.raises(WarehouseError, match="work_memory '1 gigabyte'"):
        Warehouse(tmp_path / "w.duckdb", work_memory="1 gigabyte")
