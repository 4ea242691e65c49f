"""Stored course/class pages -> course rosters and course/class-student edges, inside the warehouse.

The one rule that matters: a course whose roster keys are absent (or null) is ``not_exposed`` (the provider does
not tell), never ``empty``. Only a present, empty list means "no students". The roster is the union of the
deprecated ``student_ids`` and the newer ``students[].id`` (docs/providers.md §1.4), so a provider moving from one
field to the other changes nothing downstream.

Why inside the warehouse: a 10M-edge day read back into pandas and re-registered in a second DuckDB cost 7 GB and
twice the time of plain SQL over the stored pages. Here the pages are read where they are stored, in batches of
bounded bytes, into a temp table of items that DuckDB may spill; the tables are written with ``INSERT ... SELECT``
in the caller's transaction (``Warehouse.rewrite``), so nothing of a day reaches Python but counts. The SQL is in
``rosters.sql``, run statement by statement with bound parameters.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import duckdb

from lms_pipeline import statements
from lms_pipeline.providers.base import MissingSnapshotInput, PayloadError

SQL = statements.load(Path(__file__).with_suffix(".sql"))

# Text parsed per statement. Parsing holds about five times the text in memory (the JSON documents and their items),
# and a batch is one DuckDB chunk whatever its size, so this bounds the parse's memory.
BATCH_BYTES = 64 * 1024 * 1024
_RELATION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


class UnifiedPayloadError(PayloadError):
    """Stored pages hold items that break the API's contract; the message names connection, endpoint, offset."""


def build_snapshot(
    conn: duckdb.DuckDBPyConnection,
    pages: str,
    connection_id: str,
    snapshot_date: date,
    base_date: date | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> None:
    """Replace the partition of the roster tables with what the partition's pages in ``pages`` say, inside the
    caller's transaction (on any error it must roll back).

    ``pages`` names the table (``lms.raw_course_pages``, or its staged copy) holding the partition's rows with the
    columns of ``raw_course_pages``. ``base_date``: an incremental day's base snapshot, whose courses and classes the
    poll did not return are carried forward. Raises ``UnifiedPayloadError`` naming the first bad items.
    """
    if not _RELATION.match(pages):
        raise ValueError(f"not a table name: {pages!r}")
    params = {"connection_id": connection_id, "snapshot_date": snapshot_date, "base_date": base_date}
    conn.execute(f"CREATE OR REPLACE TEMP VIEW roster_pages AS SELECT * FROM {pages}")
    statements.run(conn, SQL["create_items"], params)
    (last,) = statements.run(conn, SQL["last_page"], params).fetchone()
    if last is None:
        raise MissingSnapshotInput(
            f"no raw_course_pages stored for {connection_id}|{snapshot_date}: materialize raw_course_pages first"
        )
    if base_date is not None and not statements.run(conn, SQL["base_courses"], params).fetchone()[0]:
        raise MissingSnapshotInput(
            f"the base snapshot {connection_id}|{base_date} of this incremental day is not built: materialize its "
            "roster_snapshot first"
        )
    sizes = statements.run(conn, SQL["page_sizes"], {**params, "middle_page": last // 2}).fetchall()
    for endpoint, first, middle, final in _batches(sizes, batch_bytes):
        statements.run(conn, SQL["parse_pages"], {**params, "endpoint": endpoint, "first_page": first,
                                                  "middle_page": middle, "last_page": final})  # fmt: skip
    _raise_on_problems(conn, params)
    for name in ("superseded_items", "latest_items", "delete_rosters", "delete_course_edges", "delete_class_edges",
                 "write_rosters", "write_course_edges", "write_class_edges"):  # fmt: skip
        statements.run(conn, SQL[name], params)


def _batches(sizes: list[tuple[str, int, int]], budget: int) -> list[tuple[str, int, int, int]]:
    """(endpoint, first page_index, last of the first half, last page_index): runs of consecutive pages of one
    endpoint of at most ``budget`` bytes (a bigger page alone), cut in two halves of about equal bytes."""
    runs: list[list[tuple[int, int]]] = []
    endpoints: list[str] = []
    used = 0
    for endpoint, index, size in sizes:
        if runs and endpoints[-1] == endpoint and used + size <= budget:
            runs[-1].append((index, size))
            used += size
        else:
            runs.append([(index, size)])
            endpoints.append(endpoint)
            used = size
    out = []
    for endpoint, run in zip(endpoints, runs, strict=True):
        total, seen, middle = sum(size for _, size in run), 0, run[0][0]
        for index, size in run:
            if seen + size > total / 2 and seen:
                break
            seen, middle = seen + size, index
        out.append((endpoint, run[0][0], middle, run[-1][0]))
    return out


def _raise_on_problems(conn: duckdb.DuckDBPyConnection, params: dict, shown: int = 5) -> None:
    statements.run(conn, SQL["suspect_pages"], params)
    if not conn.execute("SELECT count(*) FROM suspect_pages").fetchone()[0]:
        return
    found = f"SELECT * FROM ({SQL['problems']}) WHERE problem IS NOT NULL"
    total = statements.run(conn, f"SELECT count(*) FROM ({found})", params).fetchone()[0]
    if total == 0:  # an unusual but valid page shape: nothing to report
        return
    problems = statements.run(conn, f"{found} ORDER BY ALL LIMIT {shown}", params).fetchall()
    lines = [
        f"connection {c!r}: GET /lms/{c}/{endpoint} page at offset {offset}, item {item!r}: {problem}"
        for c, endpoint, offset, item, problem in problems
    ]
    more = f"\n  ... and {total - shown} more" if total > shown else ""
    raise UnifiedPayloadError(f"{total} malformed item(s) in stored pages:\n  " + "\n  ".join(lines) + more)
