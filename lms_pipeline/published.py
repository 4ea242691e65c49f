"""What analysts read: each published (connection, day) as a folder of Parquet files, one per table, behind a small
DuckDB file of views that carry the tables' names (``lms.course_student_edges`` ...).

Why not a copy of the live database (what this module replaced): copying the whole warehouse on every publish costs
O(history) under the writer lock, and it published whatever the live file held, a held day included.

Why folders of Parquet files behind views: a day is published by writing its files into a new version folder and
pointing the day's link at it (``os.replace`` of a symlink: atomic on POSIX), so a publish costs O(the partition), a
day is swapped whole (every table of it at once) and a SIGKILL at any moment leaves the previous version or the new
one. An analyst's connection to the views file can stay open as long as they like: the file is only ever replaced,
never written in place, so it never blocks a writer, and each query sees whole days. DuckLake would give the same
with snapshots, but its extension is pinned to an older DuckDB than the project's (dagster-duckdb-notes.md §e).

Layout beside the live ``<stem>.duckdb``: ``<stem>_published.duckdb`` (the views) and ``<stem>_published/`` with
``days/<connection>/<day>`` (a link to ``versions/<connection>/<day>/<version>/``, holding ``<table>.parquet`` for
each table with rows that day), ``days/_schema/empty/`` (a zero-row file per table, so a view reads something before
any day exists) and ``staging/`` (a version being written).

Publication is gated per (connection, day): a day's tables are published only once its change set is (the guard
passed or an operator accepted it) and while no hold stands on it. A day the mass-drop guard held keeps its last
published version, or stays absent, in every analysts' table until it is released; other connections and days
publish normally. The journals (``change_set_holds``, ``grade_sync_log``) are published ungated: they record what
happened, held or not.

Every function here runs on the live connection, under the warehouse's writer lock (``Warehouse.session``), so no
two publishes overlap and anything found in ``staging/`` is a killed publish's.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

UNGATED = frozenset({"change_set_holds", "grade_sync_log"})

# Views for the questions analysts ask daily, created beside the table views (docs/operators.md, "Analysts'
# views"). They read only published days, so "latest" means the newest day analysts may rely on (a held day is
# not there) and every figure is whole-day. ``{s}`` is the schema.
_LATEST_CHANGE_SET = (
    "SELECT connection_id, max(snapshot_date) AS snapshot_date FROM {s}.enrollment_change_sets GROUP BY ALL"
)
ANALYST_VIEWS: dict[str, str] = {
    # Who is enrolled where now: each connection's newest published snapshot, with the course's name.
    "current_roster": f"""
        WITH latest AS ({_LATEST_CHANGE_SET})
        SELECT e.connection_id, e.course_id, r.course_name, e.student_id, e.snapshot_date AS as_of
        FROM {{s}}.course_student_edges e JOIN latest USING (connection_id, snapshot_date)
        LEFT JOIN {{s}}.course_rosters r USING (connection_id, snapshot_date, course_id)""",
    # The newest published change set of each connection: who was added or dropped, and why.
    "latest_changes": f"""
        WITH latest AS ({_LATEST_CHANGE_SET})
        SELECT c.connection_id, c.snapshot_date, c.previous_snapshot_date, c.course_id, r.course_name, c.student_id,
               c.change_type, c.reason
        FROM {{s}}.enrollment_changes c JOIN latest USING (connection_id, snapshot_date)
        LEFT JOIN {{s}}.course_rosters r USING (connection_id, snapshot_date, course_id)""",
    # Every enrolment event of a student: the rosters of the connection's first (baseline) day, each add and drop,
    # and the days a course's roster became visible (roster_exposed) or stopped being exposed (roster_hidden: from
    # then on membership is unknown, which is not a drop). Replayed in date order (baseline, added and
    # roster_exposed put a student in, dropped and roster_hidden take them out), the events give current_roster.
    "student_enrollment_history": """
        WITH flips AS (
            SELECT cs.connection_id, cs.snapshot_date, cs.previous_snapshot_date, cur.course_id,
                   cur.roster_status IN ('exposed', 'empty') AS now_known
            FROM {s}.enrollment_change_sets cs
            JOIN {s}.course_rosters cur ON cur.connection_id = cs.connection_id AND cur.snapshot_date = cs.snapshot_date
            JOIN {s}.course_rosters prev ON prev.connection_id = cs.connection_id
                 AND prev.snapshot_date = cs.previous_snapshot_date AND prev.course_id = cur.course_id
            WHERE NOT cs.is_baseline
              AND (cur.roster_status = 'not_exposed') <> (prev.roster_status = 'not_exposed')
        )
        SELECT e.connection_id, e.student_id, e.course_id, e.snapshot_date, 'baseline' AS event,
               'on the roster on the first day mirrored' AS reason
        FROM {s}.course_student_edges e JOIN {s}.enrollment_change_sets s USING (connection_id, snapshot_date)
        WHERE s.is_baseline
        UNION ALL
        SELECT connection_id, student_id, course_id, snapshot_date, change_type, reason FROM {s}.enrollment_changes
        UNION ALL
        SELECT f.connection_id, e.student_id, f.course_id, f.snapshot_date,
               CASE WHEN f.now_known THEN 'roster_exposed' ELSE 'roster_hidden' END,
               CASE WHEN f.now_known THEN 'on the roster when it became visible (earlier membership unknown)'
                    ELSE 'the roster stopped being exposed: membership unknown from this day (not a drop)' END
        FROM flips f JOIN {s}.course_student_edges e ON e.connection_id = f.connection_id AND e.course_id = f.course_id
             AND e.snapshot_date = CASE WHEN f.now_known THEN f.snapshot_date ELSE f.previous_snapshot_date END""",
    # How much of each connection's course list exposes a roster, per day: a falling coverage means rosters went
    # dark (which never produces drops, so only this shows it).
    "course_roster_coverage": """
        SELECT connection_id, snapshot_date, count(*) AS courses,
               count(*) FILTER (WHERE roster_status = 'exposed') AS exposed,
               count(*) FILTER (WHERE roster_status = 'empty') AS empty,
               count(*) FILTER (WHERE roster_status = 'not_exposed') AS not_exposed,
               round(count(*) FILTER (WHERE roster_status IN ('exposed', 'empty')) / count(*), 4) AS coverage,
               coalesce(sum(student_count), 0) AS edges,
               count(*) FILTER (WHERE fetched_on < snapshot_date) AS carried_forward
        FROM {s}.course_rosters GROUP BY ALL""",
    # Grade disagreements still open in each connection's newest reconciliation, with the day each opened: the
    # first day of the current run of non-matching days (a row that matched in between reopened then).
    "grade_issues_open": """
        WITH latest AS (SELECT connection_id, max(snapshot_date) AS snapshot_date FROM {s}.grade_discrepancies
                        GROUP BY ALL),
        matched AS (SELECT connection_id, row_key, max(snapshot_date) AS last_matched FROM {s}.grade_discrepancies
                    WHERE status = 'match' GROUP BY ALL),
        since AS (SELECT g.connection_id, g.row_key, min(g.snapshot_date) AS open_since
                  FROM {s}.grade_discrepancies g LEFT JOIN matched m USING (connection_id, row_key)
                  WHERE g.status <> 'match' AND (m.last_matched IS NULL OR g.snapshot_date > m.last_matched)
                  GROUP BY ALL)
        SELECT d.connection_id, d.snapshot_date AS as_of, s.open_since,
               datediff('day', s.open_since, d.snapshot_date) + 1 AS days_open, d.status, d.course_id, d.content_id,
               d.lms_student_id, d.sis_student_id, d.sis_line_item_id, d.lms_raw_grade, d.lms_letter, d.sis_score,
               d.sis_result_max, d.sis_text_score, d.detail, d.sis_id, d.row_key
        FROM {s}.grade_discrepancies d JOIN latest USING (connection_id, snapshot_date)
        JOIN since s USING (connection_id, row_key)
        WHERE d.status <> 'match'""",
}
LAYOUT_FILE = "_layout"
VIEWS_STORAGE = "v1.0.0"
SCHEMA_DAY = ("_schema", "empty")  # connection ids start with a letter or digit: "_schema" is never one


@dataclass(frozen=True)
class Publication:
    """What one publish did: the analysts' database, whether every table asked for was published, and why not."""

    analysts_db: Path
    published: bool
    reason: str
    tables: tuple[str, ...] = ()


def analysts_db_path(live: Path) -> Path:
    return live.with_name(f"{live.stem}_published{live.suffix}")


def files_root(live: Path) -> Path:
    return live.with_name(f"{live.stem}_published")


def day_folder(live: Path, connection_id: str, day: date) -> Path:
    """The link analysts' views read through; its target is the day's current version."""
    return files_root(live) / "days" / connection_id / day.isoformat()


def gate(conn: duckdb.DuckDBPyConnection, schema: str, connection_id: str, day: date) -> str | None:
    """Why the day's tables may not be published yet, or None when they may."""
    held, has_change_set = conn.execute(
        f"""SELECT (SELECT any_value(reason) FROM {schema}.change_set_holds WHERE connection_id = $1
                    AND snapshot_date = $2),
                   EXISTS (SELECT 1 FROM {schema}.enrollment_change_sets WHERE connection_id = $1
                           AND snapshot_date = $2)""",
        [connection_id, day],
    ).fetchone()
    if held is not None:
        return f"held: {held}"
    if not has_change_set:
        return "its change set is not published yet"
    return None


def publish_partition(
    conn: duckdb.DuckDBPyConnection,
    live: Path,
    schema: str,
    tables: dict[str, str],
    connection_id: str,
    day: date,
    names: Iterable[str] | None = None,
) -> Publication:
    """Publish ``names`` (default: every table) of one (connection, day) as a new version of the day: the other
    tables' files are carried over from the current version (hard links), then the day's link is swapped."""
    ensure_views(conn, live, schema, tables)
    wanted = list(names) if names is not None else list(tables)
    blocked = gate(conn, schema, connection_id, day)
    chosen = [name for name in wanted if name in UNGATED or blocked is None]
    skipped = [name for name in wanted if name not in chosen]
    reason = f"{', '.join(skipped)} not published: {blocked}" if skipped else "published"
    if chosen:
        _new_version(conn, live, schema, chosen, connection_id, day)
    return Publication(analysts_db_path(live), not skipped, reason, tuple(chosen))


def publish_all(conn: duckdb.DuckDBPyConnection, live: Path, schema: str, tables: dict[str, str]) -> int:
    """Publish every day the live warehouse holds (gated as usual); returns the days published in full.

    For a new analysts' copy, or one rebuilt after its folder was lost: the cost is the whole warehouse, once.
    """
    keys = conn.execute(
        " UNION ".join(f"SELECT DISTINCT connection_id, snapshot_date FROM {schema}.{name}" for name in tables)
    ).fetchall()
    return sum(publish_partition(conn, live, schema, tables, c, d).published for c, d in sorted(keys))


def _new_version(
    conn: duckdb.DuckDBPyConnection, live: Path, schema: str, names: list[str], connection_id: str, day: date
) -> None:
    root, link = files_root(live), day_folder(live, connection_id, day)
    staging = root / "staging" / f"{connection_id}.{day}.{os.getpid()}"
    staging.mkdir(parents=True)
    current = link.resolve() if link.is_symlink() else None
    if current is not None and current.is_dir():
        for carried in current.iterdir():
            if carried.stem not in names:
                os.link(carried, staging / carried.name)
    for name in names:
        target = staging / f"{name}.parquet"
        (written,) = conn.execute(
            f"COPY (SELECT * FROM {schema}.{name} WHERE connection_id = $1 AND snapshot_date = $2) "
            f"TO {_literal(target)} (FORMAT parquet)",
            [connection_id, day],
        ).fetchone()
        if not written:
            target.unlink()
    _swap_in(live, staging, connection_id, day, current, keep_previous=True)


def _swap_in(
    live: Path, staging: Path, connection_id: str, day: date, current: Path | None, keep_previous: bool
) -> None:
    """Make ``staging`` the day's current version (the link's atomic swap) and drop older versions: all of them
    when ``keep_previous`` is false (an erasure or a retention cut must leave no copy behind)."""
    root, link = files_root(live), day_folder(live, connection_id, day)
    versions = root / "versions" / connection_id / day.isoformat()
    versions.mkdir(parents=True, exist_ok=True)
    version = versions / f"{time.time_ns()}-{os.getpid()}"
    os.rename(staging, version)
    link.parent.mkdir(parents=True, exist_ok=True)
    new_link = link.with_name(f".{link.name}.{os.getpid()}.link")
    new_link.unlink(missing_ok=True)
    new_link.symlink_to(os.path.relpath(version, link.parent))
    os.replace(new_link, link)  # the day switches to its new version here, whole
    # Keep the version just replaced (a query that globbed a moment ago may still open it); drop older ones.
    for old in versions.iterdir():
        if old != version and (old != current or not keep_previous):
            shutil.rmtree(old, ignore_errors=True)


def published_days(live: Path, connection_id: str) -> list[date]:
    """The days of a connection that have a published version."""
    folder = files_root(live) / "days" / connection_id
    if not folder.is_dir():
        return []
    return sorted(date.fromisoformat(p.name) for p in folder.iterdir() if p.is_symlink() and p.resolve().is_dir())


def day_files(live: Path, connection_id: str, day: date) -> dict[str, Path]:
    """Table -> Parquet file of the day's current version (tables without rows that day have none)."""
    link = day_folder(live, connection_id, day)
    if not link.is_symlink() or not link.resolve().is_dir():
        return {}
    return {f.stem: f for f in sorted(link.resolve().iterdir()) if f.suffix == ".parquet"}


def drop_previous_versions(live: Path, connection_id: str, day: date) -> int:
    """Delete every version of the day but the current one (publishing keeps the one it replaced, for queries in
    flight; an erasure must not leave it). Returns how many were deleted."""
    link = day_folder(live, connection_id, day)
    current = link.resolve() if link.is_symlink() else None
    versions = files_root(live) / "versions" / connection_id / day.isoformat()
    dropped = 0
    for old in versions.iterdir() if versions.is_dir() else ():
        if old != current:
            shutil.rmtree(old, ignore_errors=True)
            dropped += 1
    return dropped


def rewrite_day(
    conn: duckdb.DuckDBPyConnection, live: Path, connection_id: str, day: date, selects: dict[str, str | None]
) -> bool:
    """A new version of a published day in which each table named in ``selects`` is rewritten by its query over
    ``{source}`` (the current file, read with a ``file_row_number`` column) or dropped (None); other tables are
    carried over. Every earlier version is deleted: used by erasure and retention, whose point is that no copy of
    the removed rows survives. Returns False when the day has no published version."""
    current_files = day_files(live, connection_id, day)
    if not current_files:
        return False
    current = day_folder(live, connection_id, day).resolve()
    staging = files_root(live) / "staging" / f"{connection_id}.{day}.{os.getpid()}"
    staging.mkdir(parents=True)
    for name, source in current_files.items():
        if name not in selects:
            os.link(source, staging / source.name)
            continue
        if selects[name] is None:
            continue
        relation = f"read_parquet({_literal(source)}, file_row_number = true)"
        target = staging / source.name
        (written,) = conn.execute(f"COPY ({selects[name].format(source=relation)}) TO {_literal(target)} "
                                  "(FORMAT parquet)").fetchone()  # fmt: skip
        if not written:
            target.unlink()
    _swap_in(live, staging, connection_id, day, current, keep_previous=False)
    return True


def ensure_views(conn: duckdb.DuckDBPyConnection, live: Path, schema: str, tables: dict[str, str]) -> Path:
    """Create (or, when the tables' layout changed, replace) the analysts' database of views and the zero-row
    schema files behind them; clear what a killed publish left in staging."""
    target, root = analysts_db_path(live), files_root(live)
    staging = root / "staging"
    if staging.exists():
        shutil.rmtree(staging)
    layout = hashlib.sha256(repr((sorted(tables.items()), sorted(ANALYST_VIEWS.items()), VIEWS_STORAGE)).encode())
    layout = layout.hexdigest()
    marker = root / LAYOUT_FILE
    if target.exists() and marker.exists() and marker.read_text() == layout:
        return target
    empty = root.joinpath("days", *SCHEMA_DAY)
    staging.mkdir(parents=True)
    empty.mkdir(parents=True, exist_ok=True)
    for name in tables:
        tmp = staging / f"{name}.parquet"
        conn.execute(f"COPY (SELECT * FROM {schema}.{name} LIMIT 0) TO {_literal(tmp)} (FORMAT parquet)")
        os.replace(tmp, empty / f"{name}.parquet")
    views = staging / "views.duckdb"
    # The oldest storage format that holds views: SQL tools bundling an older DuckDB than the pipeline's (the DuckDB
    # CLI on PyPI is 1.5 while the pipeline runs 2.0) then open the analysts' file too.
    with duckdb.connect(str(views), config={"storage_compatibility_version": VIEWS_STORAGE}) as out:
        out.execute(f"CREATE SCHEMA {schema}")
        for name in tables:
            # union_by_name: a day published before a column was added reads it as NULL.
            pattern = _literal(root / "days" / "*" / "*" / f"{name}.parquet")
            out.execute(f"CREATE VIEW {schema}.{name} AS SELECT * FROM read_parquet({pattern}, union_by_name = true)")
        for name, sql in ANALYST_VIEWS.items():
            out.execute(f"CREATE VIEW {schema}.{name} AS {sql.format(s=schema)}")
    os.replace(views, target)
    marker.write_text(layout)
    return target


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"
