"""A day's stored roster snapshot, whatever provider fed it: the base an incremental poll builds on, and the counts
operators see on the materialization. The SQL is in ``snapshot.sql``, run with bound parameters."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import BaseSync

SQL = statements.load(Path(__file__).with_suffix(".sql"))


def base_sync(conn: duckdb.DuckDBPyConnection, connection_id: str, snapshot_date: date) -> BaseSync | None:
    """The latest earlier day with a sync and a built snapshot: what an incremental poll builds on."""
    params = {"connection_id": connection_id, "snapshot_date": snapshot_date}
    found = statements.run(conn, SQL["base_sync"], params).df()
    if found.empty:
        return None
    row = found.iloc[0]
    return BaseSync(
        snapshot_date=pd.Timestamp(row["snapshot_date"]).date(),
        high_water=None if pd.isna(row["high_water"]) else pd.Timestamp(row["high_water"]).to_pydatetime(),
        last_full_scan_date=pd.Timestamp(row["last_full_scan_date"]).date(),
        courses_without_updated_at=int(row["stampless"]),
    )


def snapshot_metadata(conn: duckdb.DuckDBPyConnection, connection_id: str, snapshot_date: date) -> dict[str, int]:
    """Counts of the stored snapshot that operators see on the materialization, computed in SQL."""
    cursor = statements.run(conn, SQL["snapshot_metadata"],
                            {"connection_id": connection_id, "snapshot_date": snapshot_date})  # fmt: skip
    names = [d[0] for d in cursor.description]
    return {name: int(value) for name, value in zip(names, cursor.fetchone(), strict=True)}
