"""Connection groups as the partition dimension, so that a deployment of thousands of connections stays well
under Dagster's advice of at most about 100,000 partitions per asset.

Day x connection passes that ceiling at about 270 connections kept a year (2,000 connections: 730,000). Day x group
with a fixed number of groups does not grow with connections: 100 groups x 365 days = 36,500 partitions whatever
the number of connections. A connection's group is a hash of its id, so adding or removing connections never moves
another one to a different group (its days stay in one partition's history); the groups are static keys ``g000``..

The single-machine default is untouched: ``lms_pipeline.partitions.day_by_connection`` stays the layout of
``lms_pipeline.definitions``; the grouped layout is the scaled deployment's (``lms_pipeline.scale.definitions``),
chosen by its configuration (``LMS_SCALE_GROUPS``). A connection's own days stay queryable one by one: in the
lake's ``lake.connection_days`` view and in each group run's metadata (one row per connection).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import date

import dagster as dg

from lms_pipeline.config import Settings
from lms_pipeline.scale.instance import GROUP_DIMENSION

DAGSTER_PARTITION_ADVICE = 100_000  # partitions per asset, Dagster's documented comfort limit


def group_keys(n_groups: int) -> list[str]:
    if not 1 <= n_groups <= 9_999:
        raise ValueError(f"LMS_SCALE_GROUPS={n_groups}: expected a number of connection groups from 1 to 9999")
    width = max(3, len(str(n_groups - 1)))
    return [f"g{i:0{width}d}" for i in range(n_groups)]


def group_of(connection_id: str, n_groups: int) -> str:
    """The group of a connection: a stable hash of its id (not Python's ``hash``, which changes per process)."""
    index = int.from_bytes(hashlib.sha256(connection_id.encode()).digest()[:8], "big") % n_groups
    return group_keys(n_groups)[index]


def members(connection_ids: Iterable[str], n_groups: int) -> dict[str, list[str]]:
    """Group -> its connections (every group present, possibly empty), in the connections file's order."""
    out: dict[str, list[str]] = {key: [] for key in group_keys(n_groups)}
    for connection_id in connection_ids:
        out[group_of(connection_id, n_groups)].append(connection_id)
    return out


def day_by_group(settings: Settings, n_groups: int) -> dg.MultiPartitionsDefinition:
    """Day x connection group. Dagster orders the dimensions by name: a key reads ``<group>|<date>``."""
    return dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date=settings.start_date.isoformat(), timezone="UTC"),
            GROUP_DIMENSION: dg.StaticPartitionsDefinition(group_keys(n_groups)),
        }
    )


def group_partition_key(group: str, day: date) -> str:
    return f"{group}|{day.isoformat()}"


def split_group_key(key: str | dg.MultiPartitionKey) -> tuple[str, date]:
    if isinstance(key, dg.MultiPartitionKey):
        return key.keys_by_dimension[GROUP_DIMENSION], date.fromisoformat(key.keys_by_dimension["date"])
    group, _, day = str(key).partition("|")
    return group, date.fromisoformat(day)


def partitions_per_year(n_connections: int, n_groups: int | None) -> int:
    """Partitions of one asset kept for a year: day x connection (``n_groups`` None) or day x group."""
    return 365 * (n_connections if n_groups is None else min(n_groups, max(n_connections, 1)))
