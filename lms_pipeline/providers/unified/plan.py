"""Full scan or incremental poll? The decision for one (connection, day), as a pure function of what is stored.

An incremental poll (``updated_gte``) is cheap but blind to deletions and to records without ``updated_at``, so it
only ever builds on a snapshot that descends from a recent full scan; everything else is a full scan, and the
reason is recorded so an operator can see why a day cost what it did.
"""

from __future__ import annotations

from datetime import date, timedelta

from lms_pipeline.providers.base import BaseSync, SyncPlan


def plan_sync(
    day: date,
    base: BaseSync | None,
    *,
    supports_updated_gte: bool,
    full_scan_every_days: int,
    overlap_minutes: int,
) -> SyncPlan:
    """Incremental only when the provider filters by updated_gte, a recent full scan underlies the base
    snapshot, and every course in it has an updated_at; otherwise a full scan, with the reason why."""
    if not supports_updated_gte:
        return SyncPlan("full", "the integration does not support updated_gte: every day is a full scan")
    if base is None:
        return SyncPlan("full", "no earlier snapshot to build on")
    age = (day - base.last_full_scan_date).days
    if age >= full_scan_every_days:
        return SyncPlan(
            "full",
            f"full scan due: the last one was on {base.last_full_scan_date} ({age} days ago; "
            f"full_scan_every_days is {full_scan_every_days})",
        )
    if base.courses_without_updated_at:
        return SyncPlan(
            "full",
            f"{base.courses_without_updated_at} course(s) of the {base.snapshot_date} snapshot have no updated_at: "
            "only a full scan sees their changes",
        )
    if base.high_water is None:
        return SyncPlan("full", f"the {base.snapshot_date} scan saw no updated_at to poll from")
    since = base.high_water - timedelta(minutes=overlap_minutes)
    return SyncPlan(
        "incremental",
        f"courses updated since {since:%Y-%m-%dT%H:%M:%SZ} (the {base.snapshot_date} high-water mark minus "
        f"{overlap_minutes} min overlap) applied to the {base.snapshot_date} snapshot; the last full scan was on "
        f"{base.last_full_scan_date}",
        since=since,
        base_snapshot_date=base.snapshot_date,
        last_full_scan_date=base.last_full_scan_date,
        base_high_water=base.high_water,
    )
