"""The DuckDB warehouse: table definitions, atomic partition replacement, fetched pages held until their snapshot
is built, and publication to the analysts' copy (``lms_pipeline.published``).

Why not Dagster's DuckDB IO manager: it deletes a partition and inserts the new rows outside any transaction and
inserts by column position, so a failed insert loses the partition and reordered columns are silently swapped
(shared/docs/dagster-duckdb-notes.md §d). Here every partition write is one transaction (DELETE + INSERT BY NAME,
committed together) taken under a file lock, so concurrent runs queue instead of failing on DuckDB's single-writer
lock, and a failed write leaves the previous rows byte-for-byte intact.

A fetch's pages and sync_log row are first *staged* (schema ``lms_staging``) and become the day's stored pages only
in the transaction that writes the snapshot built from them: a fetch whose normalization fails leaves the day's
stored pages, its sync_log (and so the high-water mark the next incremental poll starts from) and its snapshot as they
were, and stays behind in staging as the failed attempt, which nothing reads as a base.

Analysts never open the live file (a reader would block writers): they query the published copy, one partition at
a time (``lms_pipeline.published``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
from filelock import FileLock, Timeout

from lms_pipeline import published

SCHEMA = "lms"
STAGING_SCHEMA = "lms_staging"
# What a fetch writes: staged, then promoted with the snapshot built from it (see the module docstring).
STAGED_TABLES = ("raw_course_pages", "raw_dialect_pages", "sync_log")

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

# Course pages keep their bodies uncompressed. DuckDB compresses long strings with ZSTD a vector (2,048 rows) at a
# time, so reading one page of a big day decompresses ~400 MB, and the normalizer reads a day in batches of pages
# (transforms/rosters.py, BATCH_BYTES) to bound its memory; uncompressed, a batch reads only its own pages. The cost
# is disk: the bodies as received, about 7x their ZSTD size (README, Performance).
COURSE_PAGE_COLUMNS = PAGE_COLUMNS.replace("payload JSON", "payload JSON USING COMPRESSION uncompressed")

# The analysts' contract: table -> DDL. Partitioned tables all carry (connection_id, snapshot_date DATE).
TABLES: dict[str, str] = {
    "raw_course_pages": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        endpoint VARCHAR NOT NULL,"""
    + COURSE_PAGE_COLUMNS,
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
    "change_set_holds": """
        connection_id VARCHAR NOT NULL,
        snapshot_date DATE NOT NULL,
        held_at TIMESTAMPTZ NOT NULL,
        run_id VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        previous_snapshot_date DATE,
        previous_edges INTEGER NOT NULL,
        dropped INTEGER NOT NULL,
        drop_share DOUBLE NOT NULL,
        max_drop_share DOUBLE NOT NULL
    """,
}

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
# DuckDB's memory for a ``rewrite`` (a day's normalize or diff); beyond it, it spills to disk. 1 GB keeps a 10M-edge
# day's peak RSS under 2 GiB with Python and Dagster loaded (bench/normalize_diff.py).
WORK_MEMORY = "1GB"
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)$")


class WarehouseError(RuntimeError):
    """A warehouse operation failed; nothing was changed."""


def table(name: str) -> str:
    """Fully qualified name; unqualified names would hit DuckDB's replacement scan of Python variables."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}")
    return f"{SCHEMA}.{name}"


def published_path(path: Path) -> Path:
    """The analysts' database (views over the published partitions) of a live warehouse file."""
    return published.analysts_db_path(path)


# DuckDB refuses a second read-write process with this text; our own runs queue on the file lock first, so a
# conflict while we hold that lock means a process outside the pipeline (an analyst's read-write session).
LOCK_CONFLICT = "Could not set lock on file"


class Warehouse:
    """One DuckDB file. ``connect`` yields a read-write connection; every use is short and under ``lock``."""

    def __init__(
        self,
        path: Path | str,
        connect: Connect | None = None,
        lock_timeout: float = 600.0,
        foreign_lock_wait: float = 10.0,
        work_memory: str = WORK_MEMORY,
    ) -> None:
        if not _MEMORY.match(work_memory):
            raise WarehouseError(f"work_memory {work_memory!r}: expected a size such as '1GB' or '512MB'")
        self.work_memory = work_memory
        self.path = Path(path)
        if self.path.stem in (SCHEMA, STAGING_SCHEMA):
            # DuckDB names the catalog after the file: "lms.duckdb" + schema "lms" makes every "lms.x" ambiguous.
            raise WarehouseError(
                f"warehouse file {self.path}: its name {self.path.stem!r} equals the schema the tables live in; "
                "DuckDB would find 'lms.<table>' ambiguous. Name the file otherwise (e.g. warehouse.duckdb)."
            )
        self._connect = connect or self._plain_connect
        self.lock = FileLock(f"{self.path}.lock", timeout=lock_timeout)
        self.foreign_lock_wait = foreign_lock_wait

    @contextmanager
    def _plain_connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = connect_live(self.path, self.foreign_lock_wait)
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
        self,
        frames: Mapping[str, pd.DataFrame],
        connection_id: str,
        snapshot_date: date,
        promote: Iterable[str] = (),
    ) -> dict[str, int]:
        """Replace one (connection, day) partition of several tables in one transaction.

        Columns are matched by name, so column order in a frame does not matter; any error rolls everything back.
        ``promote`` names staged tables whose staged rows of the partition replace the stored ones in the same
        transaction (and leave staging).
        """
        with self.session() as conn, _transaction(conn, self.path):
            counts = replace_frames(conn, frames, connection_id, snapshot_date)
            for name in promote:
                counts[name] = _promote(conn, name, connection_id, snapshot_date)
        return counts

    @contextmanager
    def rewrite(
        self, connection_id: str, snapshot_date: date, promote: Iterable[str] = ()
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction under the writer lock for set-based SQL that rewrites a partition where the data lives
        (``INSERT ... SELECT``: no frame leaves DuckDB), then promotes ``promote``'s staged rows of the partition;
        committed together or not at all. DuckDB may hold ``work_memory`` and spills the rest to ``<file>.tmp``."""
        with self.session() as conn:
            conn.execute(f"SET memory_limit = '{self.work_memory}'")
            conn.execute("SET preserve_insertion_order = false")  # inserts need no order; it costs memory
            conn.execute("SET TimeZone = 'UTC'")  # API timestamps without an offset are UTC
            with _transaction(conn, self.path):
                yield conn
                for name in promote:
                    _promote(conn, name, connection_id, snapshot_date)

    def stage(self, frames: Mapping[str, pd.DataFrame], connection_id: str, snapshot_date: date) -> None:
        """Hold a fetch's tables (``STAGED_TABLES``) until the snapshot built from them is written; a later fetch of
        the same partition replaces an attempt still held."""
        with self.session() as conn, _transaction(conn, self.path):
            for name, frame in frames.items():
                qualified = staged_table(name)
                conn.execute(f"DELETE FROM {qualified} WHERE connection_id = ? AND snapshot_date = ?",
                             [connection_id, snapshot_date])  # fmt: skip
                if len(frame):
                    _check_partition(frame, name, connection_id, snapshot_date)
                    conn.register("incoming_frame", frame)
                    conn.execute(f"INSERT INTO {qualified} BY NAME SELECT * FROM incoming_frame")
                    conn.unregister("incoming_frame")

    def read_staged(self, name: str, connection_id: str, snapshot_date: date) -> pd.DataFrame:
        return self.query(
            f"SELECT * FROM {staged_table(name)} WHERE connection_id = ? AND snapshot_date = ?",
            [connection_id, snapshot_date],
        )

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

    def publish_partition(
        self, connection_id: str, snapshot_date: date, names: Iterable[str] | None = None
    ) -> published.Publication:
        """Publish one (connection, day) of ``names`` (default: every table) to the analysts' copy, if the day's
        change set is published and not held (``lms_pipeline.published``). Costs O(the partition)."""
        with self.session() as conn:
            return published.publish_partition(conn, self.path, SCHEMA, TABLES, connection_id, snapshot_date, names)

    def publish_all(self) -> int:
        """(Re)publish every partition: for a new or lost analysts' copy. Returns the partitions published."""
        with self.session() as conn:
            return published.publish_all(conn, self.path, SCHEMA, TABLES)


def replace_frames(
    conn: duckdb.DuckDBPyConnection, frames: Mapping[str, pd.DataFrame], connection_id: str, snapshot_date: date
) -> dict[str, int]:
    """Replace one partition of each table with its frame (by column name), inside the caller's transaction: the
    small rows (a change-set row) written with the big ones a ``rewrite`` builds in SQL."""
    counts: dict[str, int] = {}
    for name, frame in frames.items():
        qualified = table(name)
        conn.execute(f"DELETE FROM {qualified} WHERE connection_id = ? AND snapshot_date = ?",
                     [connection_id, snapshot_date])  # fmt: skip
        if len(frame):
            _check_partition(frame, name, connection_id, snapshot_date)
            conn.register("incoming_frame", frame)
            conn.execute(f"INSERT INTO {qualified} BY NAME SELECT * FROM incoming_frame")
            conn.unregister("incoming_frame")
        counts[name] = len(frame)
    return counts


def staged_table(name: str) -> str:
    if name not in STAGED_TABLES:
        raise KeyError(f"table {name!r} is not staged")
    return f"{STAGING_SCHEMA}.{name}"


def connect_live(path: Path, foreign_lock_wait: float) -> duckdb.DuckDBPyConnection:
    """Open the live file read-write, waiting at most ``foreign_lock_wait`` seconds for a process outside the
    pipeline that holds it (the pipeline's own runs queue on the file lock before they get here).

    Dagster's DuckDBResource retries 10 times over ~100 s before reporting the same conflict (notes §d); an
    analyst's session on the live file should be named at once, with what to do instead.
    """
    deadline = time.monotonic() + foreign_lock_wait
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if LOCK_CONFLICT not in str(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise WarehouseError(
                    f"warehouse {path} is held open by a process outside the pipeline ({exc}); analysts should "
                    f"query the published copy {published_path(path)} instead, read-only. Close that session "
                    "and re-run."
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


@contextmanager
def _transaction(conn: duckdb.DuckDBPyConnection, path: Path) -> Iterator[None]:
    """BEGIN ... COMMIT, rolled back on any error. When DuckDB already aborted the transaction itself (a disk full,
    an I/O error), the ROLLBACK fails with "no transaction is active": the original error is the one raised, so
    "No space left on device" is what the operator reads."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException as exc:
        try:
            conn.execute("ROLLBACK")
        except duckdb.Error as rollback_error:
            exc.add_note(f"warehouse {path}: the rollback also failed ({rollback_error}); nothing was committed")
        raise


def _promote(conn: duckdb.DuckDBPyConnection, name: str, connection_id: str, snapshot_date: date) -> int:
    params = [connection_id, snapshot_date]
    where = "WHERE connection_id = ? AND snapshot_date = ?"
    conn.execute(f"DELETE FROM {table(name)} {where}", params)
    conn.execute(f"INSERT INTO {table(name)} BY NAME SELECT * FROM {staged_table(name)} {where}", params)
    (count,) = conn.execute(f"SELECT count(*) FROM {table(name)} {where}", params).fetchone()
    conn.execute(f"DELETE FROM {staged_table(name)} {where}", params)
    return int(count)


def _ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables (and the staging copies of the staged ones); add columns a newer version defines to
    tables an older one created.

    Added columns are nullable whatever the DDL says: rows written before they existed have no value.
    """
    layouts = {SCHEMA: TABLES, STAGING_SCHEMA: {name: TABLES[name] for name in STAGED_TABLES}}
    existing: dict[tuple[str, str], set[str]] = {}
    for schema, name, column in conn.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE table_schema IN (?, ?)",
        [SCHEMA, STAGING_SCHEMA],
    ).fetchall():
        existing.setdefault((schema, name), set()).add(column)
    for schema, tables in layouts.items():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name, columns in tables.items():
            if (schema, name) not in existing:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.{name} ({columns})")
                continue
            for line in columns.split(","):
                column, kind = line.split()[:2]
                if column not in existing[(schema, name)]:
                    conn.execute(f"ALTER TABLE {schema}.{name} ADD COLUMN IF NOT EXISTS {column} {kind}")


def _check_partition(frame: pd.DataFrame, name: str, connection_id: str, snapshot_date: date) -> None:
    """A frame may only hold rows of the partition it replaces, or a re-run would leave strays elsewhere."""
    conns = set(frame["connection_id"].unique())
    days = {pd.Timestamp(d).date() for d in frame["snapshot_date"].unique()}
    if conns != {connection_id} or days != {snapshot_date}:
        raise WarehouseError(
            f"{name}: rows for {sorted(conns)} x {sorted(map(str, days))} do not belong to partition "
            f"{connection_id}|{snapshot_date}"
        )
