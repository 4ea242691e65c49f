"""The DuckDB warehouse: table definitions, atomic partition replacement and the analysts' published copy.

Why not Dagster's DuckDB IO manager: it deletes a partition and inserts the new rows outside any transaction and
inserts by column position, so a failed insert loses the partition and reordered columns are silently swapped
(shared/docs/dagster-duckdb-notes.md §d). Here every partition write is one transaction (DELETE + INSERT BY NAME,
committed together) taken under a file lock, so concurrent runs queue instead of failing on DuckDB's single-writer
lock, and a failed write leaves the previous rows byte-for-byte intact.

Analysts never open the live file (a reader would block writers): they query the published copy, which is
rebuilt beside it and swapped in with an atomic rename.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
from filelock import FileLock, Timeout

SCHEMA = "lms"

# Columns of every stored page (raw_course_pages, raw_progress_pages).
PAGE_COLUMNS = """
        page_index INTEGER NOT NULL,
        page_offset INTEGER NOT NULL,
        request_params JSON NOT NULL,
        fetched_at TIMESTAMPTZ NOT NULL,
        status_code INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        item_count INTEGER NOT NULL,
        payload JSON NOT NULL,
        run_id VARCHAR
    """

# The analysts' contract: table -> DDL. Partitioned tables all carry (connection_id, snapshot_date DATE).
TABLES: dict[str, str] = {
    "raw_course_pages": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        endpoint VARCHAR NOT NULL,"""
    + PAGE_COLUMNS,
    "sync_log": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        mode VARCHAR NOT NULL,
        mode_reason VARCHAR NOT NULL,
        technique VARCHAR NOT NULL,
        passes INTEGER NOT NULL,
        catch_up_rounds INTEGER NOT NULL,
        catch_up_converged BOOLEAN NOT NULL,
        updated_gte TIMESTAMPTZ,
        high_water TIMESTAMPTZ,
        base_snapshot_date DATE,
        last_full_scan_date DATE NOT NULL,
        courses_listed INTEGER NOT NULL,
        classes_listed INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        pages INTEGER NOT NULL,
        retries INTEGER NOT NULL,
        throttled INTEGER NOT NULL,
        server_errors INTEGER NOT NULL,
        duration_seconds DOUBLE NOT NULL,
        run_id VARCHAR
    """,
    "raw_progress_pages": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        endpoint VARCHAR NOT NULL,
        course_id VARCHAR NOT NULL,"""
    + PAGE_COLUMNS,
    "course_contents": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        course_id VARCHAR NOT NULL,
        content_id VARCHAR NOT NULL,
        name VARCHAR,
        is_active BOOLEAN,
        duration_minutes INTEGER,
        updated_at TIMESTAMPTZ
    """,
    "student_progress": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        course_id VARCHAR NOT NULL,
        student_id VARCHAR NOT NULL,
        content_id VARCHAR NOT NULL,
        is_completed BOOLEAN,
        progress_percentage DOUBLE,
        started_at TIMESTAMPTZ,
        completed_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ,
        enrollment_state VARCHAR NOT NULL
    """,
    "course_progress_summary": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        course_id VARCHAR NOT NULL,
        roster_status VARCHAR NOT NULL,
        enrolled_students INTEGER,
        learners_with_activity INTEGER NOT NULL,
        enrolled_with_activity INTEGER,
        active_contents INTEGER NOT NULL,
        completed_share DOUBLE,
        average_progress DOUBLE,
        activities_not_on_roster INTEGER NOT NULL
    """,
    "course_rosters": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        course_id VARCHAR NOT NULL,
        course_name VARCHAR,
        is_active BOOLEAN,
        roster_status VARCHAR NOT NULL,
        roster_source VARCHAR,
        student_count INTEGER,
        created_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ,
        fetched_on DATE
    """,
    "course_student_edges": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        course_id VARCHAR NOT NULL,
        student_id VARCHAR NOT NULL
    """,
    "class_student_edges": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        class_id VARCHAR NOT NULL,
        course_id VARCHAR,
        student_id VARCHAR NOT NULL
    """,
    "enrollment_changes": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        previous_snapshot_date DATE NOT NULL,
        course_id VARCHAR NOT NULL,
        student_id VARCHAR NOT NULL,
        change_type VARCHAR NOT NULL,
        reason VARCHAR NOT NULL
    """,
    "raw_dialect_pages": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        provider VARCHAR NOT NULL,
        endpoint VARCHAR NOT NULL,
        course_id VARCHAR,
        page_index INTEGER NOT NULL,
        url VARCHAR NOT NULL,
        request_params JSON NOT NULL,
        status_code INTEGER NOT NULL,
        fetched_at TIMESTAMPTZ NOT NULL,
        payload VARCHAR NOT NULL,
        run_id VARCHAR
    """,
    "raw_grade_pages": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        system VARCHAR NOT NULL,
        collection VARCHAR NOT NULL,
        course_id VARCHAR,
        url VARCHAR,
        total_count BIGINT,"""
    + PAGE_COLUMNS,
    "lms_grades": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        course_id VARCHAR NOT NULL,
        content_id VARCHAR NOT NULL,
        student_id VARCHAR NOT NULL,
        raw_grade VARCHAR,
        grade_status VARCHAR NOT NULL,
        percent DOUBLE,
        letter_given VARCHAR,
        points_possible DOUBLE,
        graded_at TIMESTAMPTZ,
        scheme VARCHAR,
        rounded_percent DOUBLE,
        letter VARCHAR
    """,
    "grade_discrepancies": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        row_key VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        detail VARCHAR,
        sis_id VARCHAR NOT NULL,
        course_id VARCHAR,
        content_id VARCHAR,
        lms_student_id VARCHAR,
        sis_student_id VARCHAR,
        sis_line_item_id VARCHAR,
        sis_result_id VARCHAR,
        student_match VARCHAR,
        item_match VARCHAR,
        lms_raw_grade VARCHAR,
        lms_grade_status VARCHAR,
        lms_percent DOUBLE,
        lms_letter VARCHAR,
        lms_graded_at TIMESTAMPTZ,
        scheme VARCHAR,
        sis_score_status VARCHAR,
        sis_score DOUBLE,
        sis_result_max DOUBLE,
        sis_text_score VARCHAR,
        sis_percent DOUBLE,
        sis_modified_at TIMESTAMPTZ,
        sis_late BOOLEAN,
        letter_scale BOOLEAN
    """,
    "grade_sync_log": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        run_id VARCHAR NOT NULL,
        operation_id VARCHAR NOT NULL,
        phase VARCHAR NOT NULL,
        attempted_at TIMESTAMPTZ NOT NULL,
        sis_id VARCHAR NOT NULL,
        row_key VARCHAR NOT NULL,
        lms_student_id VARCHAR NOT NULL,
        sis_student_id VARCHAR NOT NULL,
        sis_line_item_id VARCHAR NOT NULL,
        sis_result_id VARCHAR,
        method VARCHAR,
        http_status INTEGER,
        score_status_written VARCHAR,
        score_written DOUBLE,
        text_score_written VARCHAR,
        previous_score DOUBLE,
        previous_text_score VARCHAR,
        previous_modified_at TIMESTAMPTZ,
        outcome VARCHAR NOT NULL,
        detail VARCHAR,
        dry_run BOOLEAN NOT NULL
    """,
    "enrollment_change_sets": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        previous_snapshot_date DATE,
        is_baseline BOOLEAN NOT NULL,
        courses_compared INTEGER NOT NULL,
        courses_not_exposed INTEGER NOT NULL,
        previous_edges INTEGER NOT NULL,
        current_edges INTEGER NOT NULL,
        added INTEGER NOT NULL,
        dropped INTEGER NOT NULL,
        drop_share DOUBLE NOT NULL,
        max_drop_share DOUBLE NOT NULL,
        guard VARCHAR NOT NULL
    """,
}

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


class WarehouseError(RuntimeError):
    """A warehouse operation failed; nothing was changed."""


def table(name: str) -> str:
    """Fully qualified name; unqualified names would hit DuckDB's replacement scan of Python variables."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}")
    return f"{SCHEMA}.{name}"


def published_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_published{path.suffix}")


class Warehouse:
    """One DuckDB file. ``connect`` yields a read-write connection; every use is short and under ``lock``."""

    def __init__(self, path: Path | str, connect: Connect | None = None, lock_timeout: float = 600.0) -> None:
        self.path = Path(path)
        self._connect = connect or self._plain_connect
        self.lock = FileLock(f"{self.path}.lock", timeout=lock_timeout)

    @contextmanager
    def _plain_connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = duckdb.connect(str(self.path))
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection held under the cross-process writer lock, with the schema in place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self.lock, self._connect() as conn:
                _ensure_schema(conn)
                yield conn
        except Timeout:
            raise WarehouseError(
                f"{self.path}: waited {self.lock.timeout:.0f}s for the writer lock held by another run"
            ) from None

    def replace_partition(
        self, frames: Mapping[str, pd.DataFrame], connection_id: str, snapshot_date: date
    ) -> dict[str, int]:
        """Replace one (connection, day) partition of several tables in one transaction.

        Columns are matched by name, so column order in a frame does not matter; any error rolls everything back.
        """
        counts: dict[str, int] = {}
        with self.session() as conn:
            conn.execute("BEGIN TRANSACTION")
            try:
                for name, frame in frames.items():
                    qualified = table(name)
                    conn.execute(
                        f"DELETE FROM {qualified} WHERE connection_id = ? AND snapshot_date = ?",
                        [connection_id, snapshot_date],
                    )
                    if len(frame):
                        _check_partition(frame, name, connection_id, snapshot_date)
                        conn.register("incoming_frame", frame)
                        conn.execute(f"INSERT INTO {qualified} BY NAME SELECT * FROM incoming_frame")
                        conn.unregister("incoming_frame")
                    counts[name] = len(frame)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return counts

    def append(self, name: str, frame: pd.DataFrame) -> int:
        """Insert rows (by column name) in one transaction: for journals such as grade_sync_log, where every
        run's rows are kept."""
        with self.session() as conn:
            conn.register("incoming_frame", frame)
            try:
                conn.execute(f"INSERT INTO {table(name)} BY NAME SELECT * FROM incoming_frame")
            finally:
                conn.unregister("incoming_frame")
        return len(frame)

    def read_partition(self, name: str, connection_id: str, snapshot_date: date) -> pd.DataFrame:
        return self.query(
            f"SELECT * FROM {table(name)} WHERE connection_id = ? AND snapshot_date = ?",
            [connection_id, snapshot_date],
        )

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.session() as conn:
            return conn.execute(sql, params or []).df()

    def publish(self) -> Path:
        """Rebuild the analysts' copy and swap it in atomically; readers of the old copy keep their snapshot."""
        target = published_path(self.path)
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with self.session() as conn:
            # Under the writer lock no other publish is under way: any staging file left is from a killed process.
            for stale in target.parent.glob(f".{target.name}.*.tmp"):
                stale.unlink(missing_ok=True)
            conn.execute(f"ATTACH '{staging}' AS publish_target")
            try:
                conn.execute(f"COPY FROM DATABASE {_catalog(conn)} TO publish_target")
            finally:
                conn.execute("DETACH publish_target")
            os.replace(staging, target)
        return target


def _catalog(conn: duckdb.DuckDBPyConnection) -> str:
    return conn.execute("SELECT current_database()").fetchone()[0]


def _ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables; add columns a newer version defines to tables an older one created.

    Added columns are nullable whatever the DDL says: rows written before they existed have no value.
    """
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    existing: dict[str, set[str]] = {}
    for name, column in conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ?", [SCHEMA]
    ).fetchall():
        existing.setdefault(name, set()).add(column)
    for name, columns in TABLES.items():
        if name not in existing:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.{name} ({columns})")
            continue
        for line in columns.split(","):
            column, kind = line.split()[:2]
            if column not in existing[name]:
                conn.execute(f"ALTER TABLE {SCHEMA}.{name} ADD COLUMN IF NOT EXISTS {column} {kind}")


def _check_partition(frame: pd.DataFrame, name: str, connection_id: str, snapshot_date: date) -> None:
    """A frame may only hold rows of the partition it replaces, or a re-run would leave strays elsewhere."""
    conns = set(frame["connection_id"].unique())
    days = {pd.Timestamp(d).date() for d in frame["snapshot_date"].unique()}
    if conns != {connection_id} or days != {snapshot_date}:
        raise WarehouseError(
            f"{name}: rows for {sorted(conns)} x {sorted(map(str, days))} do not belong to partition "
            f"{connection_id}|{snapshot_date}"
        )
