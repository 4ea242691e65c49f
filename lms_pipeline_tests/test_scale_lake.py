"""One lake, many writers (issue 18): writer processes replacing partitions at once, each partition exact, every
table of a day swapped in one commit, analysts reading a snapshot that writers never change, a writer killed before
its commit changing nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import date
from pathlib import Path

import duckdb
import pytest

from lms_pipeline.scale.lake import LIVE, PUBLISHED, Lake
from lms_pipeline_tests import scale_support
from lms_pipeline_tests.scale_support import SCHEMA, working_warehouse

# The shared fixtures, used here by name.
postgres_base, database = scale_support.postgres_base, scale_support.database
pytestmark = pytest.mark.slow

TABLES = ["course_student_edges", "enrollment_change_sets"]
DAY = date(2026, 9, 1)


def _write_day(conn: duckdb.DuckDBPyConnection, connection_id: str, day: date, version: int, students: int) -> None:
    """A day of ``students`` edges whose student ids carry ``version``, and its change-set row."""
    for name in TABLES:
        conn.execute(f"DELETE FROM {SCHEMA}.{name} WHERE connection_id = ? AND snapshot_date = ?", [connection_id, day])
    conn.execute(
        f"INSERT INTO {SCHEMA}.course_student_edges SELECT ?, ?, 'course-' || (i % 3), 'v' || ? || '-s' || i "
        "FROM range(?) t(i)",
        [connection_id, day, version, students],
    )
    conn.execute(
        f"INSERT INTO {SCHEMA}.enrollment_change_sets VALUES (?, ?, NULL, true, 3, 0, 0, ?, ?, 0, 0.0, 0.2, 'passed')",
        [connection_id, day, students, students],
    )


def _analyst_edges(db: Path, connection_id: str) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(
            "SELECT student_id FROM lms.course_student_edges WHERE connection_id = ?", [connection_id]
        ).fetchall()
    return {r[0] for r in rows}


def _writer(catalog: str, root: str, worker: int, rounds: int) -> None:
    lake = Lake(catalog, root, writer=f"writer-{worker}")
    conn = working_warehouse(TABLES)
    for version in range(rounds):
        for k in range(5):
            connection_id = f"conn-{worker}-{k}"
            _write_day(conn, connection_id, DAY, version, 500 + k)
            lake.replace_partition(conn, SCHEMA, TABLES, connection_id, DAY, publish=TABLES)


def test_four_writer_processes_replace_partitions_at_once_and_every_partition_is_exact(database, tmp_path):
    lake = Lake(database, tmp_path / "lake")
    lake.ensure()
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_writer, args=(database, str(tmp_path / "lake"), w, 3)) for w in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=240)
    assert [w.exitcode for w in writers] == [0, 0, 0, 0]
    analysts = tmp_path / "analysts.duckdb"
    lake.analysts_db(analysts, SCHEMA)
    for w in range(4):
        for k in range(5):
            expected = {f"v2-s{i}" for i in range(500 + k)}
            assert _analyst_edges(analysts, f"conn-{w}-{k}") == expected
    # 4 writers x 5 partitions x 3 rounds: every commit a snapshot, one current file per table and partition.
    assert lake.current_snapshot() == 60
    assert sum(len(v) for v in lake.files(LIVE).values()) == 4 * 5 * len(TABLES)


def test_an_analyst_keeps_the_snapshot_they_opened_while_a_writer_replaces_the_day(database, tmp_path):
    lake = Lake(database, tmp_path / "lake")
    lake.ensure()
    conn = working_warehouse(TABLES)
    _write_day(conn, "conn-a", DAY, 1, 10)
    lake.replace_partition(conn, SCHEMA, TABLES, "conn-a", DAY, publish=TABLES)
    before = tmp_path / "before.duckdb"
    pinned = lake.analysts_db(before, SCHEMA)

    _write_day(conn, "conn-a", DAY, 2, 4)
    lake.replace_partition(conn, SCHEMA, TABLES, "conn-a", DAY, publish=TABLES)
    after = tmp_path / "after.duckdb"
    lake.analysts_db(after, SCHEMA)

    assert _analyst_edges(before, "conn-a") == {f"v1-s{i}" for i in range(10)}
    assert _analyst_edges(after, "conn-a") == {f"v2-s{i}" for i in range(4)}
    # Every table of the day moved in the same commit: the change-set row matches the edges in both snapshots.
    for db, edges in ((before, 10), (after, 4)):
        with duckdb.connect(str(db), read_only=True) as a:
            assert a.execute("SELECT current_edges FROM lms.enrollment_change_sets").fetchall() == [(edges,)]
    assert lake.files(PUBLISHED, pinned)["course_student_edges"] != lake.files(PUBLISHED)["course_student_edges"]
    # The connection's own view, whatever the partitions' grouping: its day, last commit, published, rows.
    assert lake.connection_days("conn-a") == [(DAY, 2, True, 5)]


def test_a_held_day_keeps_its_published_files_while_its_live_rows_move(database, tmp_path):
    lake = Lake(database, tmp_path / "lake")
    lake.ensure()
    conn = working_warehouse(TABLES)
    _write_day(conn, "conn-a", DAY, 1, 10)
    lake.replace_partition(conn, SCHEMA, TABLES, "conn-a", DAY, publish=TABLES)
    _write_day(conn, "conn-a", DAY, 2, 1)
    commit = lake.replace_partition(conn, SCHEMA, TABLES, "conn-a", DAY, publish=())
    assert commit.published == ()
    lake.analysts_db(tmp_path / "a.duckdb", SCHEMA)
    assert _analyst_edges(tmp_path / "a.duckdb", "conn-a") == {f"v1-s{i}" for i in range(10)}
    fresh = working_warehouse(TABLES)
    assert lake.hydrate(fresh, SCHEMA, TABLES, "conn-a") == 2  # the live layer has the held day: 1 edge + 1 row
    assert fresh.execute("SELECT student_id FROM lms.course_student_edges").fetchall() == [("v2-s0",)]


def _killed_before_commit(catalog: str, root: str) -> None:
    lake = Lake(catalog, root)
    lake._commit = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # dies with its files written
    conn = working_warehouse(TABLES)
    _write_day(conn, "conn-a", DAY, 2, 3)
    lake.replace_partition(conn, SCHEMA, TABLES, "conn-a", DAY, publish=TABLES)


def test_a_writer_killed_before_its_commit_changes_nothing_and_its_files_are_vacuumed(database, tmp_path):
    root = tmp_path / "lake"
    lake = Lake(database, root)
    lake.ensure()
    conn = working_warehouse(TABLES)
    _write_day(conn, "conn-a", DAY, 1, 10)
    lake.replace_partition(conn, SCHEMA, TABLES, "conn-a", DAY, publish=TABLES)
    child = multiprocessing.get_context("spawn").Process(target=_killed_before_commit, args=(database, str(root)))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == -signal.SIGKILL
    assert len(list(root.rglob("*.parquet"))) == 4  # 2 committed + 2 the killed writer left behind

    lake.analysts_db(tmp_path / "a.duckdb", SCHEMA)
    assert _analyst_edges(tmp_path / "a.duckdb", "conn-a") == {f"v1-s{i}" for i in range(10)}
    assert lake.vacuum(keep_snapshots_after=0, min_age_seconds=0) == 2
    assert sorted(root.rglob("*.parquet")) == sorted(p for v in lake.files(LIVE).values() for p in v)


def test_an_unreachable_catalog_is_named_without_its_password(tmp_path):
    lake = Lake("postgresql://lake:s3cret@127.0.0.1:1/lake", tmp_path)
    with pytest.raises(
        Exception, match=r"lake catalog postgresql://lake:\*\*\*@127\.0\.0\.1:1/lake: cannot connect"
    ) as err:
        lake.current_snapshot()
    assert "s3cret" not in str(err.value)
