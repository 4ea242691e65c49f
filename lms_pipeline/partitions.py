"""The one partitions definition every roster asset shares: day x connection.

Dagster orders multi-partition dimensions by name, so a key reads ``<connection>|<date>``
(e.g. ``district-canvas|2026-09-03``). Keeping it in one module lets the connection dimension later become a
connection-group dimension (past ~100k partitions the UI slows down) without touching the assets.
"""

from __future__ import annotations

from datetime import date

import dagster as dg

from lms_pipeline.config import Settings


def day_by_connection(settings: Settings) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date=settings.start_date.isoformat(), timezone="UTC"),
            "connection": dg.StaticPartitionsDefinition(settings.connection_ids),
        }
    )


def partition_key(connection_id: str, day: date) -> str:
    return f"{connection_id}|{day.isoformat()}"


def split_key(context: dg.AssetExecutionContext) -> tuple[str, date]:
    """(connection, day) of the run's partition; a run launched by tag carries the key as a plain string."""
    key = context.partition_key
    if isinstance(key, dg.MultiPartitionKey):
        connection, day = key.keys_by_dimension["connection"], key.keys_by_dimension["date"]
    else:
        connection, _, day = str(key).partition("|")
    return connection, date.fromisoformat(day)
