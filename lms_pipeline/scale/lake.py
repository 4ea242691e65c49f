"""One lake, many writers: the warehouse's tables as Parquet files, one per (table, connection, day) and version,
with a catalog in PostgreSQL that says which file is current, as of which snapshot.

Why this and not DuckLake: DuckLake is this design (a SQL catalog plus Parquet), but its extension is published only
for DuckDB 1.5.5 and the project is on 2.0.0 (dagster-duckdb-notes.md §e; docs/decisions.md, "Scale-out"). So the
same storage choice as ``lms_pipeline.published`` (Parquet per connection and day, swapped whole, atomically) is kept
and only its pointer moves: a row in PostgreSQL instead of a symlink, so writers on many machines can swap days.

- **Many writers.** A writer writes its files under names no one else uses (a fresh uuid), then commits one
  PostgreSQL transaction that retires the partition's current rows and adds the new ones. Writers of different
  partitions never wait on each other; two writers of one partition queue on a transaction-scoped advisory lock and
  the later commit wins whole. There is no shared DuckDB writer and no file lock.
- **Atomic partition replace.** Every table of a (connection, day) changes in that one transaction, so a reader
  sees the day before or after, never half. A writer killed before its commit leaves files nothing points to (
  ``vacuum`` removes them), and the catalog as it was.
- **Snapshots.** Each commit is a snapshot id; a file row carries the snapshot that added it and the one that
  retired it. An analyst's database is built for one snapshot (``analysts_db``) and keeps reading exactly that
  state while writers go on; ``vacuum`` keeps the files a retained snapshot may still read.
- **Two layers.** ``live`` holds every table's rows of the day as the pipeline stored them (what the next day's
  run of the connection reads back: previous snapshots, high-water marks, journals); ``published`` holds what
  ``lms_pipeline.published`` lets analysts see (a day held by the mass-drop guard keeps its last published files).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from lms_pipeline import published
from lms_pipeline.schemas import ddl
from lms_pipeline.warehouse import TABLES

LIVE, PUBLISHED = "live", "published"
LAYERS = (LIVE, PUBLISHED)

_CATALOG = """
CREATE SCHEMA IF NOT EXISTS lake;
CREATE TABLE IF NOT EXISTS lake.snapshots (
    snapshot_id BIGSERIAL PRIMARY KEY,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    connection_id TEXT NOT NULL,
    snapshot_date DATE NOT NULL,
    writer TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lake.files (
    layer TEXT NOT NULL,
    table_name TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    snapshot_date DATE NOT NULL,
    path TEXT NOT NULL,
    row_count BIGINT NOT NULL,
    added_in BIGINT NOT NULL REFERENCES lake.snapshots,
    retired_in BIGINT REFERENCES lake.snapshots
);
-- At most one current file per (layer, table, connection, day): a second writer's commit cannot add a twin.
CREATE UNIQUE INDEX IF NOT EXISTS files_current ON lake.files (layer, table_name, connection_id, snapshot_date)
    WHERE retired_in IS NULL;
CREATE INDEX IF NOT EXISTS files_by_connection ON lake.files (connection_id, layer) WHERE retired_in IS NULL;
-- The per-connection view at any scale: one row per (connection, day) with its last commit and what it holds.
CREATE OR REPLACE VIEW lake.connection_days AS
SELECT f.connection_id, f.snapshot_date, max(f.added_in) AS snapshot_id,
       bool_or(f.layer = 'published' AND f.table_name = 'course_student_edges') AS edges_published,
       sum(f.row_count) FILTER (WHERE f.layer = 'live') AS live_rows,
       count(*) FILTER (WHERE f.layer = 'live') AS live_tables
FROM lake.files f WHERE f.retired_in IS NULL GROUP BY f.connection_id, f.snapshot_date;
"""


class LakeError(RuntimeError):
    """A lake operation failed; the catalog is as it was before it."""


@dataclass(frozen=True)
class Commit:
    """What one partition replace committed."""

    snapshot_id: int
    connection_id: str
    snapshot_date: date
    rows: dict[str, int]  # live rows per table
    published: tuple[str, ...]  # tables whose published file changed


class Lake:
    """The catalog at ``catalog_url`` (PostgreSQL, psycopg2 URL) and the files under ``root`` (a folder every
    writer and reader mounts; on a cluster, a shared volume, or an object store through DuckDB's httpfs)."""

    def __init__(self, catalog_url: str, root: Path | str, writer: str | None = None) -> None:
        self.catalog_url = catalog_url
        self.root = Path(root)
        self.writer = writer or f"{os.uname().nodename}:{os.getpid()}"

    @contextmanager
    def _catalog(self) -> Iterator:
        import psycopg2

        try:
            conn = psycopg2.connect(self.catalog_url, connect_timeout=10)
        except psycopg2.Error as exc:
            raise LakeError(f"lake catalog {_redacted(self.catalog_url)}: cannot connect: {exc}") from None
        try:
            # One transaction: committed on success, rolled back on any error.
            with conn, conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def ensure(self) -> None:
        """Create the catalog's tables (idempotent; concurrent callers serialize on an advisory lock)."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        with self._catalog() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('lake.ensure'))")
            cur.execute(_CATALOG)

    # -- writing ------------------------------------------------------------------------------------------------

    def replace_partition(
        self,
        source: duckdb.DuckDBPyConnection,
        schema: str,
        tables: Iterable[str],
        connection_id: str,
        snapshot_date: date,
        publish: Iterable[str] = (),
    ) -> Commit:
        """Make ``source``'s rows of (connection, day) the lake's, for every table of ``tables``, in one commit.

        ``publish`` names the tables whose published layer takes the new file too (the others keep their published
        file: ``lms_pipeline.published.gate`` said the day may not be shown yet). A table without rows that day
        retires its file.
        """
        tables, publish = list(tables), set(publish)
        token = uuid.uuid4().hex
        written: dict[str, tuple[Path, int]] = {}
        try:
            for name in tables:
                folder = self.root / "data" / name / _safe(connection_id) / snapshot_date.isoformat()
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / f"{token}.parquet"
                (count,) = source.execute(
                    f"COPY (SELECT * FROM {schema}.{name} WHERE connection_id = $1 AND snapshot_date = $2) "
                    f"TO {_literal(target)} (FORMAT parquet)",
                    [connection_id, snapshot_date],
                ).fetchone()
                if count:
                    written[name] = (target, int(count))
                else:
                    target.unlink(missing_ok=True)
            snapshot_id = self._commit(connection_id, snapshot_date, tables, written, publish)
        except BaseException:
            for path, _ in written.values():  # nothing points at them; vacuum would find them too
                path.unlink(missing_ok=True)
            raise
        rows = {name: written[name][1] if name in written else 0 for name in tables}
        return Commit(snapshot_id, connection_id, snapshot_date, rows, tuple(sorted(publish & set(tables))))

    def _commit(
        self,
        connection_id: str,
        snapshot_date: date,
        tables: list[str],
        written: Mapping[str, tuple[Path, int]],
        publish: set[str],
    ) -> int:
        with self._catalog() as cur:
            # Two writers of the same partition: the second waits here for the first's commit, then wins whole.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"{connection_id}|{snapshot_date}"])
            cur.execute(
                "INSERT INTO lake.snapshots (connection_id, snapshot_date, writer) VALUES (%s, %s, %s) "
                "RETURNING snapshot_id",
                [connection_id, snapshot_date, self.writer],
            )
            (snapshot_id,) = cur.fetchone()
            for layer, names in ((LIVE, tables), (PUBLISHED, [n for n in tables if n in publish])):
                if not names:
                    continue
                cur.execute(
                    "UPDATE lake.files SET retired_in = %s WHERE layer = %s AND connection_id = %s "
                    "AND snapshot_date = %s AND table_name = ANY(%s) AND retired_in IS NULL",
                    [snapshot_id, layer, connection_id, snapshot_date, names],
                )
                for name in names:
                    if name in written:
                        path, count = written[name]
                        cur.execute(
                            "INSERT INTO lake.files (layer, table_name, connection_id, snapshot_date, path, "
                            "row_count, added_in) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            [layer, name, connection_id, snapshot_date, str(path.relative_to(self.root)), count,
                             snapshot_id],
                        )  # fmt: skip
        return int(snapshot_id)

    # -- reading ------------------------------------------------------------------------------------------------

    def current_snapshot(self) -> int:
        """The newest committed snapshot id (0 for an empty lake)."""
        with self._catalog() as cur:
            cur.execute("SELECT coalesce(max(snapshot_id), 0) FROM lake.snapshots")
            return int(cur.fetchone()[0])

    def files(
        self,
        layer: str,
        snapshot_id: int | None = None,
        connection_ids: Iterable[str] | None = None,
    ) -> dict[str, list[Path]]:
        """Table -> the files of ``layer`` as of ``snapshot_id`` (default: now), for some connections or all."""
        if layer not in LAYERS:
            raise LakeError(f"unknown lake layer {layer!r}; expected one of {LAYERS}")
        where, params = ["layer = %s"], [layer]
        if snapshot_id is None:
            where.append("retired_in IS NULL")
        else:
            where.append("added_in <= %s AND (retired_in IS NULL OR retired_in > %s)")
            params += [snapshot_id, snapshot_id]
        if connection_ids is not None:
            where.append("connection_id = ANY(%s)")
            params.append(list(connection_ids))
        with self._catalog() as cur:
            cur.execute(
                f"SELECT table_name, path FROM lake.files WHERE {' AND '.join(where)} "
                "ORDER BY table_name, connection_id, snapshot_date",
                params,
            )
            out: dict[str, list[Path]] = {}
            for name, path in cur.fetchall():
                out.setdefault(name, []).append(self.root / path)
        return out

    def connection_days(self, connection_id: str) -> list[tuple[date, int, bool, int]]:
        """One connection's days in the lake, whatever the partitions' grouping: (day, last snapshot, edges
        published, live rows), oldest first (the catalog's ``lake.connection_days`` view)."""
        with self._catalog() as cur:
            cur.execute(
                "SELECT snapshot_date, snapshot_id, edges_published, live_rows FROM lake.connection_days "
                "WHERE connection_id = %s ORDER BY snapshot_date",
                [connection_id],
            )
            return [(day, int(snapshot), bool(shown), int(rows)) for day, snapshot, shown, rows in cur.fetchall()]

    def hydrate(self, target: duckdb.DuckDBPyConnection, schema: str, tables: Iterable[str], connection_id: str) -> int:
        """Load every live row of one connection into ``target``'s tables (a fresh working warehouse): what a run
        of the connection reads from earlier days. Returns the rows loaded."""
        loaded = 0
        files = self.files(LIVE, connection_ids=[connection_id])
        for name in tables:
            paths = files.get(name)
            if not paths:
                continue
            listing = ", ".join(_literal(p) for p in paths)
            (count,) = target.execute(
                f"INSERT INTO {schema}.{name} BY NAME SELECT * FROM read_parquet([{listing}], union_by_name = true)"
            ).fetchone()
            loaded += int(count)
        return loaded

    def analysts_db(
        self,
        target: Path | str,
        schema: str,
        snapshot_id: int | None = None,
        connection_ids: Iterable[str] | None = None,
    ) -> int:
        """Write a DuckDB file of views over the published files as of ``snapshot_id`` (default: the newest), for
        every connection or some: an analyst's consistent snapshot, which writers never change. Every table of the
        analysts' contract (``warehouse.TABLES``) is there, with the analysts' views. Returns the snapshot id."""
        snapshot_id = self.current_snapshot() if snapshot_id is None else snapshot_id
        files = self.files(PUBLISHED, snapshot_id, connection_ids)
        target = Path(target)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        with duckdb.connect(str(tmp)) as out:
            out.execute(f"CREATE SCHEMA {schema}")
            for name in TABLES:
                paths = files.get(name)
                if paths:
                    listing = ", ".join(_literal(p) for p in paths)
                    out.execute(f"CREATE VIEW {schema}.{name} AS SELECT * FROM read_parquet([{listing}], "
                                "union_by_name = true)")  # fmt: skip
                else:  # no published day yet: the table's columns, no rows
                    out.execute(ddl.create_table(f"{schema}.{name}", name))
            for name, sql in published.ANALYST_VIEWS.items():
                out.execute(f"CREATE VIEW {schema}.{name} AS {sql.format(s=schema)}")
            out.execute(f"CREATE TABLE {schema}.lake_snapshot AS SELECT {int(snapshot_id)} AS snapshot_id")
        os.replace(tmp, target)
        return snapshot_id

    # -- upkeep -------------------------------------------------------------------------------------------------

    def vacuum(self, keep_snapshots_after: int, min_age_seconds: float = 3600.0) -> int:
        """Delete files no snapshot newer than ``keep_snapshots_after`` can read: retired before it, or never
        committed (a killed writer's) and older than ``min_age_seconds``. Returns the files deleted."""
        with self._catalog() as cur:
            cur.execute(
                "DELETE FROM lake.files WHERE retired_in IS NOT NULL AND retired_in <= %s RETURNING path",
                [keep_snapshots_after],
            )
            gone = [self.root / p for (p,) in cur.fetchall()]
            cur.execute("SELECT path FROM lake.files")
            known = {self.root / p for (p,) in cur.fetchall()}
        cutoff = time.time() - min_age_seconds
        orphans = [p for p in (self.root / "data").rglob("*.parquet") if p not in known and p.stat().st_mtime < cutoff]
        for path in {*gone, *orphans}:
            path.unlink(missing_ok=True)
        for folder in sorted((self.root / "data").rglob("*"), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                shutil.rmtree(folder, ignore_errors=True)
        return len({*gone, *orphans})


def _safe(connection_id: str) -> str:
    """A connection id as one path component (ids are validated by the connections file; this is a backstop)."""
    if not connection_id or "/" in connection_id or connection_id in (".", ".."):
        raise LakeError(f"connection id {connection_id!r} cannot name a lake folder")
    return connection_id


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _redacted(url: str) -> str:
    """A catalog URL without its password (``user:secret@`` -> ``user:***@``): errors must not carry secrets."""
    head, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{head}{sep}{user}:***@{host}"
    return url
