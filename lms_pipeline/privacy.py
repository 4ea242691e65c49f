"""The privacy duties of a school's vendor (FERPA, GDPR): raw pages are kept for a bounded time, and one student's
personal data is erased on request from every table, the staging area, the analysts' copy and the exports.

**Retention** (``retention.raw_pages_days``, default 400): raw pages (course, dialect, progress and grade pages, and
fetches still staged) of older days are deleted; every derived table is kept. Those days can then no longer be
rebuilt from their pages (docs/operators.md, "Privacy: retention and erasure"); later days are unaffected, since an
incremental poll builds on the stored snapshot and a change set on the stored edges, never on old pages.

**Erasure** of one student id: the rows that are the student's (edges, changes, progress, grades, grade
discrepancies, write-back journal) are deleted, and the student is cut out of every stored page: their entry in a
roster list, their person record (name, emails, ids) and every record that refers to them (an activity, a grade, an
enrollment) are removed from the JSON, leaving every other record of the page as it was. The ids that are the same
person in other systems (an SIS user id, a Canvas user number, an LTI user id, an email) are found first, from the
grade reconciliation, the directory files and the person records themselves. Counts per course (``student_count``,
summaries) are aggregates, not personal data, and are kept. The live tables change in one transaction; then every
published day of the connections concerned gets a new version without the student and older versions are deleted;
exports of those days are rewritten from it. A final scan reports any remaining occurrence (by table and column,
never the value). The Dagster event log is outside the warehouse and not touched: the pipeline's checks and
metadata carry counts and course ids, not student ids (see the operators' guide for run logs).

Nothing here logs the student's id or data: the log (``privacy_log.jsonl`` beside the warehouse) holds a random
request id, the connections and the counts.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from lms_pipeline import published
from lms_pipeline.assets.exports import ExportRefused, day_export_folder, write_exports
from lms_pipeline.config import Settings, load_settings
from lms_pipeline.person_data import (
    PAGE_TABLES,
    PERSON_COLUMNS,
    PROVIDER_PREFIXES,
    _token_pattern,
    linked_identities,
    rewritten_columns,
    scrubbed_pages,
)
from lms_pipeline.warehouse import SCHEMA, STAGING_SCHEMA, Warehouse

MAX_ROUNDS = 4


class PrivacyError(RuntimeError):
    """An erasure or retention request that cannot be carried out; nothing was changed."""


# ---- the JSON rules ------------------------------------------------------------------------------------------------


def _contains_any(column: str, ids: Iterable[str]) -> str:
    return "(" + " OR ".join(f"contains({column}::VARCHAR, {_sql(i)})" for i in ids) + ")"


def _sql(value: str | date) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _in(values: Iterable[str]) -> str:
    return "(" + ", ".join(_sql(v) for v in sorted(values)) + ")"


# ---- erasure -------------------------------------------------------------------------------------------------------


@dataclass
class ErasureReport:
    """What an erasure removed, as counts (never the student's data); ``remaining`` should be empty."""

    request_id: str
    connections: list[str]
    identities_found: int
    rows_deleted: dict[str, int] = field(default_factory=dict)
    pages_rewritten: dict[str, int] = field(default_factory=dict)
    entries_removed: int = 0
    published_days_rewritten: int = 0
    published_versions_dropped: int = 0
    exports_rewritten: int = 0
    mapping_files_naming_the_student: list[str] = field(default_factory=list)
    remaining: dict[str, int] = field(default_factory=dict)


@contextmanager
def _transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    conn.execute("BEGIN TRANSACTION")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _tables(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN (?, ?) ORDER BY ALL",
        [SCHEMA, STAGING_SCHEMA],
    ).fetchall()


def _page_rows(conn: duckdb.DuckDBPyConnection, relation: str, name: str, key: str, ids: set[str],
               where: str) -> pd.DataFrame:  # fmt: skip
    kind, texts, has_count = PAGE_TABLES[name]
    columns = ", ".join([kind, "payload::VARCHAR AS payload", *texts, *(["item_count"] if has_count else [])])
    matches = " OR ".join([_contains_any("payload", ids), *(_contains_any(t, ids) for t in texts)])
    return conn.execute(f"SELECT {key} AS row_key, connection_id, snapshot_date, {columns} FROM {relation} "
                        f"WHERE {where} AND ({matches})").df()  # fmt: skip


def identities(
    conn: duckdb.DuckDBPyConnection, settings: Settings, student_id: str, connections: list[str]
) -> set[str]:
    """The student id and every id or email that is the same person in the stored data of ``connections``."""
    ids = {student_id}
    for prefix in PROVIDER_PREFIXES:
        if student_id.startswith(prefix):
            ids.add(student_id.removeprefix(prefix))
    for conn_id in connections:
        options = settings.connection(conn_id).options
        directory = getattr(options, "directory_path", lambda: None)()
        if directory is not None and directory.exists():
            with directory.open(newline="") as handle:
                ids |= {row["email"] for row in csv.DictReader(handle) if row.get("student_id") == student_id}
    where = f"connection_id IN {_in(connections)}"
    for _ in range(MAX_ROUNDS):
        before = set(ids)
        for table in ("grade_discrepancies", "grade_sync_log"):
            ids |= {r[0] for r in conn.execute(
                f"SELECT DISTINCT sis_student_id FROM {SCHEMA}.{table} WHERE {where} AND sis_student_id IS NOT NULL "
                f"AND lms_student_id IN {_in(ids)}").fetchall()}  # fmt: skip
        for schema, name in _tables(conn):
            if name not in PAGE_TABLES:
                continue
            for row in _page_rows(conn, f"{schema}.{name}", name, "rowid", ids, where).itertuples():
                ids |= linked_identities(json.loads(row.payload), ids, getattr(row, PAGE_TABLES[name][0]))
        if ids == before:
            return ids
    return ids


def _days(pairs: Iterable[tuple]) -> set[tuple[str, date]]:
    return {(c, pd.Timestamp(d).date()) for c, d in pairs}


def _person_filter(name: str, ids: set[str]) -> str:
    return " OR ".join(f"{column} IN {_in(ids)}" for column in PERSON_COLUMNS[name])


def _erase_live(conn: duckdb.DuckDBPyConnection, ids: set[str], connections: list[str],
                report: ErasureReport) -> set[tuple[str, date]]:  # fmt: skip
    """Delete the student's rows and cut them out of every stored page, in one transaction; the days touched."""
    where = f"connection_id IN {_in(connections)}"
    touched: set[tuple[str, date]] = set()
    with _transaction(conn):
        for schema, name in _tables(conn):
            qualified = f"{schema}.{name}"
            if name in PERSON_COLUMNS and schema == SCHEMA:
                condition = f"{where} AND ({_person_filter(name, ids)})"
                touched |= _days(conn.execute(f"SELECT DISTINCT connection_id, snapshot_date FROM {qualified} "
                                              f"WHERE {condition}").fetchall())  # fmt: skip
                (deleted,) = conn.execute(f"DELETE FROM {qualified} WHERE {condition}").fetchone()
                if deleted:
                    report.rows_deleted[qualified] = int(deleted)
            elif name in PAGE_TABLES:
                changed, removed = scrubbed_pages(_page_rows(conn, qualified, name, "rowid", ids, where), name, ids)
                if changed.empty:
                    continue
                sets = ", ".join(f"{c} = coalesce(e.{c}, t.{c})" for c in rewritten_columns(name))
                conn.register("erased_rows", changed)
                conn.execute(f"UPDATE {qualified} AS t SET {sets} FROM erased_rows e WHERE t.rowid = e.row_key")
                conn.unregister("erased_rows")
                report.pages_rewritten[qualified] = len(changed)
                report.entries_removed += removed
                touched |= _days(zip(changed["connection_id"], changed["snapshot_date"], strict=True))
    return touched


def _erase_published(conn: duckdb.DuckDBPyConnection, live: Path, ids: set[str], connections: list[str],
                     report: ErasureReport) -> set[tuple[str, date]]:  # fmt: skip
    """A new version of every published day holding the student, made from the published files themselves (so a
    day held since it was published is covered too); earlier versions are deleted. Returns the days rewritten."""
    rewritten: set[tuple[str, date]] = set()
    for conn_id in connections:
        for day in published.published_days(live, conn_id):
            selects: dict[str, str | None] = {}
            registered = []
            for name, source in published.day_files(live, conn_id, day).items():
                relation = f"read_parquet({_sql(source)}, file_row_number = true)"
                if name in PERSON_COLUMNS:
                    (hits,) = conn.execute(f"SELECT count(*) FROM {relation} WHERE {_person_filter(name, ids)}"
                                           ).fetchone()  # fmt: skip
                    if hits:
                        selects[name] = (f"SELECT * EXCLUDE (file_row_number) FROM {{source}} "
                                         f"WHERE NOT ({_person_filter(name, ids)})")  # fmt: skip
                elif name in PAGE_TABLES:
                    changed, _ = scrubbed_pages(_page_rows(conn, relation, name, "file_row_number", ids, "true"),
                                                 name, ids)  # fmt: skip
                    if changed.empty:
                        continue
                    view = f"erased_{name}"
                    conn.register(view, changed)
                    registered.append(view)
                    types = dict(conn.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM "
                                              f"{relation})").fetchall())  # fmt: skip
                    replaced = ", ".join(f"CASE WHEN e.row_key IS NULL THEN s.{c} ELSE CAST(e.{c} AS {types[c]}) "
                                         f"END AS {c}" for c in rewritten_columns(name))  # fmt: skip
                    selects[name] = (f"SELECT s.* EXCLUDE (file_row_number) REPLACE ({replaced}) FROM {{source}} s "
                                     f"LEFT JOIN {view} e ON e.row_key = s.file_row_number")  # fmt: skip
            try:
                if selects and published.rewrite_day(conn, live, conn_id, day, selects):
                    rewritten.add((conn_id, day))
            finally:
                for view in registered:
                    conn.unregister(view)
            report.published_versions_dropped += published.drop_previous_versions(live, conn_id, day)
    report.published_days_rewritten = len(rewritten)
    return rewritten


def remaining_traces(conn: duckdb.DuckDBPyConnection, live: Path, ids: set[str], connections: list[str],
                     exports_root: Path | None = None) -> dict[str, int]:  # fmt: skip
    """Where any of ``ids`` still occurs as a whole token, by table (or file kind) and column: the live tables,
    staging, the published days and the exports of ``connections``. Numeric ids (a Canvas user number) are left
    out of this scan (a number occurs everywhere); the JSON rules above remove them structurally."""
    tokens = [i for i in ids if not i.isdigit()]
    if not tokens:
        return {}
    pattern = "|".join(f"({_token_pattern(i)})" for i in tokens)
    found: dict[str, int] = {}

    def scan(relation: str, label: str, where: str) -> None:
        columns = conn.execute(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {relation})").fetchall()
        for column, kind in columns:
            if kind not in ("VARCHAR", "JSON"):
                continue
            (n,) = conn.execute(f"SELECT count(*) FROM {relation} WHERE {where} AND "
                                f"regexp_matches({column}::VARCHAR, {_sql(pattern)})").fetchone()  # fmt: skip
            if n:
                found[f"{label}.{column}"] = found.get(f"{label}.{column}", 0) + int(n)

    for schema, name in _tables(conn):
        scan(f"{schema}.{name}", f"{schema}.{name}", f"connection_id IN {_in(connections)}")
    for conn_id in connections:
        for day in published.published_days(live, conn_id):
            for name, source in published.day_files(live, conn_id, day).items():
                scan(f"read_parquet({_sql(source)})", f"published.{name}", "true")
        if exports_root is not None and exports_root.is_dir():
            compiled = re.compile(pattern)
            for path in exports_root.glob(f"*/{conn_id}/**/*.csv"):
                if compiled.search(path.read_text()):
                    found[f"exports.{path.name}"] = found.get(f"exports.{path.name}", 0) + 1
            for path in exports_root.glob(f"*/{conn_id}/*.parquet"):
                scan(f"read_parquet({_sql(path)})", f"exports.{path.name}", "true")
    return found


def _mapping_files(settings: Settings, ids: set[str]) -> list[str]:
    """The people-maintained mapping files that still name the student (the pipeline never rewrites them)."""
    named = []
    for sis in settings.sis:
        for field_name in ("student_map", "assignment_map"):
            path = sis.path(field_name)
            if path.exists() and any(re.search(_token_pattern(i), path.read_text()) for i in ids if not i.isdigit()):
                named.append(str(path))
    for conn in settings.connections:
        directory = getattr(conn.options, "directory_path", lambda: None)()
        if directory is not None and directory.exists() and any(i in directory.read_text() for i in ids):
            named.append(str(directory))
    return sorted(set(named))


def erase_student(store: Warehouse, settings: Settings, student_id: str,
                  connections: list[str] | None = None) -> ErasureReport:  # fmt: skip
    """Erase one student's personal data from the connections given (default: all) everywhere the pipeline keeps
    it. The id is never logged; the returned report holds counts only."""
    student_id = student_id.strip()
    if not student_id:
        raise PrivacyError("erase: give the student id to erase (--student-id)")
    chosen = connections or settings.connection_ids
    unknown = sorted(set(chosen) - set(settings.connection_ids))
    if unknown:
        raise PrivacyError(f"erase: no connection {unknown} in the connections file")
    with store.session() as conn:
        ids = identities(conn, settings, student_id, chosen)
        report = ErasureReport(uuid.uuid4().hex[:12], list(chosen), len(ids))
        touched = _erase_live(conn, ids, chosen, report)
        touched |= _erase_published(conn, store.path, ids, chosen, report)
        root = settings.exports_path()
        for conn_id, day in sorted(touched):
            folder = day_export_folder(root, conn_id, day)
            if not folder.exists():
                continue
            try:
                write_exports(store.path, root, conn_id, day, settings.sis_of(conn_id) is not None)
            except ExportRefused:
                shutil.rmtree(folder)  # exported before the day was held: the export cannot be rebuilt, so it goes
            report.exports_rewritten += 1
        conn.execute("CHECKPOINT")
        report.remaining = remaining_traces(conn, store.path, ids, chosen, root)
    report.mapping_files_naming_the_student = _mapping_files(settings, ids)
    _log(store.path, "erase", asdict(report))
    return report


# ---- retention -----------------------------------------------------------------------------------------------------


@dataclass
class RetentionReport:
    cutoff: str
    rows_deleted: dict[str, int] = field(default_factory=dict)
    published_days_rewritten: int = 0


def drop_old_raw_pages(store: Warehouse, settings: Settings, today: date) -> RetentionReport:
    """Delete the raw pages of days before ``today - retention.raw_pages_days`` from the live tables, staging and
    the analysts' copy; derived tables are kept."""
    cutoff = today - timedelta(days=settings.retention.raw_pages_days)
    report = RetentionReport(cutoff.isoformat())
    with store.session() as conn:
        with _transaction(conn):
            for schema, name in _tables(conn):
                if name in PAGE_TABLES:
                    (n,) = conn.execute(f"DELETE FROM {schema}.{name} WHERE snapshot_date < ?", [cutoff]).fetchone()
                    if n:
                        report.rows_deleted[f"{schema}.{name}"] = int(n)
        for conn_id in settings.connection_ids:
            for day in published.published_days(store.path, conn_id):
                if day >= cutoff:
                    break
                files = published.day_files(store.path, conn_id, day)
                drop = {name: None for name in PAGE_TABLES if name in files}
                if drop and published.rewrite_day(conn, store.path, conn_id, day, drop):
                    report.published_days_rewritten += 1
    _log(store.path, "retention", asdict(report))
    return report


def _log(live: Path, action: str, details: dict) -> None:
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "action": action, **details}
    with (live.parent / "privacy_log.jsonl").open("a") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lms_pipeline.privacy", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    erase = commands.add_parser("erase", help="erase one student's personal data everywhere the pipeline keeps it")
    erase.add_argument("--student-id", required=True, help="the student id as in course_student_edges.student_id")
    erase.add_argument("--connection", action="append", help="only this connection (repeatable); default: all")
    keep = commands.add_parser("retention", help="drop raw pages older than retention.raw_pages_days")
    keep.add_argument("--today", type=date.fromisoformat, default=datetime.now(UTC).date(),
                      help="the day retention counts back from (default: today, UTC)")  # fmt: skip
    args = parser.parse_args(argv)
    settings = load_settings()
    store = Warehouse(settings.warehouse_path())
    if args.command == "erase":
        report = erase_student(store, settings, args.student_id, args.connection)
        print(json.dumps(asdict(report), indent=2, sort_keys=True))
        if report.remaining:
            print("erase: occurrences remain (see 'remaining'); the warehouse is otherwise erased", file=sys.stderr)
            return 2
        return 0
    print(json.dumps(asdict(drop_old_raw_pages(store, settings, args.today)), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
