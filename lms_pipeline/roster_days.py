"""A connection's roster day in the warehouse, whatever its provider: the base an incremental poll builds on, the
fetch held in staging until the snapshot built from it is written, that build, and the day's sync_log row.

The provider reads and normalizes (``providers/<name>/``); this module decides where the pages come from (the
attempt staged by the latest fetch, else what is stored: a rebuild), checks what is written against the pandera
models and writes the roster tables with the fetch's promotion in one transaction, so a refused normalization
changes nothing stored.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pandas as pd

from lms_pipeline.config import ConnectionConfig
from lms_pipeline.providers.base import ROSTER_TABLES, BaseSync, RosterFetch, RosterSource, SyncPlan
from lms_pipeline.schemas import check_stored, constraint_violation, validate
from lms_pipeline.transforms.snapshot import base_sync, snapshot_metadata
from lms_pipeline.warehouse import STAGED_TABLES, Warehouse, replace_frames, staged_table, table

NORMALIZATION_REFUSED = (
    "normalization refused; nothing was written (the day's stored pages, sync_log and snapshot are unchanged; the "
    "fetched pages are kept as a failed attempt in lms_staging)"
)


def load_base(store: Warehouse, connection_id: str, day: date) -> BaseSync | None:
    """The latest earlier day with a sync and a built snapshot: what an incremental poll builds on."""
    with store.session() as conn:
        return base_sync(conn, connection_id, day)


def fetched(store: Warehouse, connection_id: str, day: date, *names: str) -> tuple[list[pd.DataFrame], tuple[str, ...]]:
    """A fetch's tables for the day: the attempt staged by the latest fetch when there is one (the snapshot is built
    from it and promotes it), else what is stored (a rebuild from raw pages); and the tables to promote."""
    if len(store.read_staged("sync_log", connection_id, day)):
        return [store.read_staged(name, connection_id, day) for name in names], STAGED_TABLES
    return [store.read_partition(name, connection_id, day) for name in names], ()


def build_snapshot(
    store: Warehouse, conn: ConnectionConfig, day: date, source: RosterSource
) -> tuple[str, date | None, dict[str, int]]:
    """Build the day's roster tables from its pages and write them in one transaction, with the promotion of the
    fetch they were built from; checked against the models before it commits.

    Returns the sync mode, the base day of an incremental day and the snapshot's counts. Raises
    ``MissingSnapshotInput``, a ``PayloadError`` (a ``ValueError``) or ``SchemaViolation``; nothing is written then.
    """
    (sync,), promote = fetched(store, conn.id, day, "sync_log")
    pages = staged_table(source.pages_table) if promote else table(source.pages_table)
    mode = sync["mode"].iloc[0] if len(sync) else "full"  # pages stored before sync_log existed: full scans
    base_day = pd.Timestamp(sync["base_snapshot_date"].iloc[0]).date() if mode == "incremental" else None
    try:
        with store.rewrite(conn.id, day, promote=promote) as db:
            frames = source.build_snapshot(db, pages, conn, day, base_day)
            if frames is not None:
                checked = {name: validate(name, frame) for name, frame in frames._asdict().items()}
                replace_frames(db, checked, conn.id, day)
            for name in ROSTER_TABLES:
                check_stored(db, name, table(name), conn.id, day)
            counts = snapshot_metadata(db, conn.id, day)
    except duckdb.ConstraintException as exc:
        raise constraint_violation(exc) from None
    return mode, base_day, counts


def sync_row(
    connection_id: str, day: date, plan: SyncPlan, fetch: RosterFetch, stats: dict, duration: float, run_id: str
) -> pd.DataFrame:
    """The day's sync_log row: how the day was read (mode and why, technique, passes) and what it cost."""
    return pd.DataFrame([{
        "connection_id": connection_id, "snapshot_date": pd.Timestamp(day), "mode": plan.mode,
        "mode_reason": plan.reason, "technique": fetch.technique, "passes": fetch.passes,
        "catch_up_rounds": fetch.catch_up_rounds, "catch_up_converged": fetch.catch_up_converged,
        "updated_gte": pd.Timestamp(plan.since) if plan.since else pd.NaT,
        "high_water": pd.Timestamp(fetch.high_water) if fetch.high_water else pd.NaT,
        "base_snapshot_date": pd.Timestamp(plan.base_snapshot_date) if plan.base_snapshot_date else pd.NaT,
        "last_full_scan_date": pd.Timestamp(plan.full_scan_date(day)), "courses_listed": fetch.courses_listed,
        "classes_listed": fetch.classes_listed, "requests": stats["requests"], "pages": stats["pages"],
        "retries": stats["retries"], "throttled": stats["throttled"], "server_errors": stats["server_errors"],
        "duration_seconds": duration, "run_id": run_id,
    }])  # fmt: skip
