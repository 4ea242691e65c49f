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
from lms_pipeline.schemas import MODELS, ddl

SCHEMA = "lms"
STAGING_SCHEMA = "lms_staging"
# What a fetch writes: staged, then promoted with the snapshot built from it (see the module docstring).
STAGED_TABLES = ("raw_course_pages", "sync_log")

# The analysts' contract: table -> its columns' DDL, generated from the pandera models (``schemas.ddl``). Partitioned
# tables all carry (connection_id, snapshot_date DATE).
TABLES: dict[str, str] = {name: ", ".join(column.sql() for column in ddl.columns(name)) for name in MODELS}

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
            replace_frames(conn, frames, connection_id, snapshot_date, qualify=staged_table)

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
    conn: duckdb.DuckDBPyConnection,
    frames: Mapping[str, pd.DataFrame],
    connection_id: str,
    snapshot_date: date,
    qualify: Callable[[str], str] | None = None,
) -> dict[str, int]:
    """Replace one partition of each table with its frame (by column name), inside the caller's transaction: the
    small rows (a change-set row) written with the big ones a ``rewrite`` builds in SQL. ``qualify`` names the
    table a frame goes to (default: the live table; ``staged_table`` for a held fetch)."""
    counts: dict[str, int] = {}
    for name, frame in frames.items():
        qualified = (qualify or table)(name)
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

    Added columns are nullable whatever the model says: rows written before they existed have no value.
    """
    layouts = {SCHEMA: list(TABLES), STAGING_SCHEMA: list(STAGED_TABLES)}
    existing: dict[tuple[str, str], set[str]] = {}
    for schema, name, column in conn.execute(
        "SELECT table_schema, table_name, column_name FROM information_schema.columns WHERE table_schema IN (?, ?)",
        [SCHEMA, STAGING_SCHEMA],
    ).fetchall():
        existing.setdefault((schema, name), set()).add(column)
    for schema, names in layouts.items():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for name in names:
            if (schema, name) not in existing:
                conn.execute(ddl.create_table(f"{schema}.{name}", name))
                continue
            for column in ddl.columns(name):
                if column.name not in existing[(schema, name)]:
                    kind = column.type.split(" USING ")[0]  # a compression setting is for new tables
                    conn.execute(f"ALTER TABLE {schema}.{name} ADD COLUMN IF NOT EXISTS {column.name} {kind}")


def _check_partition(frame: pd.DataFrame, name: str, connection_id: str, snapshot_date: date) -> None:
    """A frame may only hold rows of the partition it replaces, or a re-run would leave strays elsewhere."""
    conns = set(frame["connection_id"].unique())
    days = {pd.Timestamp(d).date() for d in frame["snapshot_date"].unique()}
    if conns != {connection_id} or days != {snapshot_date}:
        raise WarehouseError(
            f"{name}: rows for {sorted(conns)} x {sorted(map(str, days))} do not belong to partition "
            f"{connection_id}|{snapshot_date}"
        )
