"""Roster assets: raw pages -> course rosters and edges -> enrollment change sets.

Each asset is thin: partition key -> the connection's provider (``providers/registry.py``) reads or normalizes ->
the plain modules check and write (``roster_days``: the fetch held in staging until its snapshot is written;
``guard``: the mass-drop guard and the change set) -> metadata. Downstream assets read what upstream stored (never
refetch), so every table can be rebuilt from the stored pages alone.
"""

import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd

from lms_pipeline import guard, roster_days
from lms_pipeline.assets.specs import table_metadata, table_spec
from lms_pipeline.config import ConnectionConfig
from lms_pipeline.partitions import split_key
from lms_pipeline.providers import registry
from lms_pipeline.providers.base import MissingSnapshotInput
from lms_pipeline.providers.http import LmsClientError
from lms_pipeline.resources import LmsApiResource, WarehouseResource
from lms_pipeline.schemas import SchemaViolation, validate
from lms_pipeline.transforms.changes import ChangeSummary

GROUP = "roster"

# Day D's change set compares with day D-1's, so a backfill must build them in date order per connection:
# a self-dependency on the previous day makes Dagster sequence them (the first day has no upstream).
PREVIOUS_DAY_CHANGES = dg.AssetDep(
    "enrollment_changes",
    partition_mapping=dg.MultiPartitionMapping(
        {
            "date": dg.DimensionPartitionMapping("date", dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)),
            "connection": dg.DimensionPartitionMapping("connection", dg.IdentityPartitionMapping()),
        }
    ),
)
# An incremental day's snapshot is the base day's plus the polled changes: in a backfill the base must be built
# first. The base is usually the day before; the sync_log row names it.
PREVIOUS_DAY_ROSTERS = dg.AssetDep("course_rosters", partition_mapping=PREVIOUS_DAY_CHANGES.partition_mapping)


class RawFetchConfig(dg.Config):
    allow_past_date_from_live: bool = False
    """A live LMS only knows today's rosters: storing them under an older date falsifies history. Set this to
    fetch anyway (e.g. to seed a new warehouse), knowing the rows describe the fetch time, not that day."""


class ChangeSetConfig(dg.Config):
    accept_mass_drop: bool = False
    """Publish a change set the mass-drop guard held, after a person checked the drops are real."""


class LiveBackfillRefused(dg.Failure):
    pass


def refuse_live_backfill(conn: ConnectionConfig, snapshot_date: date, today: date, allowed: bool) -> None:
    """Refuse to store a live LMS's current rosters under a past date (yesterday is the scheduled day)."""
    if conn.simulated_clock or allowed or snapshot_date >= today - timedelta(days=1):
        return
    raise LiveBackfillRefused(
        description=(
            f"connection {conn.id!r} is a live LMS: it returns today's rosters, so fetching for {snapshot_date} "
            f"(today is {today}) would store today's data under a past date. Rebuild past days from "
            "raw_course_pages, or set run config ops.raw_course_pages.config.allow_past_date_from_live: true."
        ),
        allow_retries=False,
    )


def build_roster_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The roster assets over one partitions definition (built from the connections file)."""

    @dg.multi_asset(
        name="raw_course_pages",
        partitions_def=partitions_def,
        group_name=GROUP,
        pool="lms_api",
        specs=[
            dg.AssetSpec(
                "raw_course_pages",
                kinds={"duckdb", "python"},
                metadata=table_metadata("raw_course_pages"),
                description="Every roster page of one connection's sync, whatever its provider, exactly as fetched "
                "(request parameters without secrets, fetch time, attempts): Unified courses and classes, read so "
                "that records changing while paged are neither skipped nor stale (a full scan lists everything, an "
                "incremental poll what was updated since the last high-water mark); Canvas, Classroom or OneRoster "
                "courses and each course's enrollments, students, sections or classes, each API's own paging read "
                "to its end. A refusal of a roster (a 403, Canvas's 401) is kept: it is why that roster is "
                "not_exposed. A sync that fails on any page stores nothing, so a partial listing can never turn into "
                "false drops. The pages are held (lms_staging) until the snapshot built from them is written, in "
                "the same transaction: a fetch whose normalization fails changes nothing stored. The replayable "
                "source of every roster table.",
            ),
            dg.AssetSpec(
                "sync_log",
                kinds={"duckdb"},
                metadata=table_metadata("sync_log"),
                description="One row per sync: full scan or incremental poll and why, how the listing was paged, "
                "the high-water mark the next poll starts from, and sync health (requests, pages, retries, 429s, "
                "5xx, duration). Written with the pages, and like them stored with the snapshot built from them.",
            ),
        ],
    )
    def raw_course_pages(
        context: dg.AssetExecutionContext,
        config: RawFetchConfig,
        lms: LmsApiResource,
        warehouse: WarehouseResource,
    ):
        """Fetch one connection's day (full scan or incremental poll) and stage its pages and its sync_log row."""
        connection_id, day = split_key(context)
        conn = lms.settings().connection(connection_id)
        refuse_live_backfill(conn, day, datetime.now(UTC).date(), config.allow_past_date_from_live)
        store = warehouse.warehouse()
        source = registry.provider(conn.provider).rosters
        plan = source.plan(day, roster_days.load_base(store, connection_id, day), conn.options)
        context.log.info(f"{connection_id}|{day}: {plan.mode} sync: {plan.reason}")
        started = time.monotonic()
        with lms.client(connection_id, day) as client:
            try:
                fetch = source.fetch(client, conn.options, plan)
            except LmsClientError as exc:
                raise _fail(exc, f"{plan.mode} sync failed; nothing was stored for this partition") from None
            stats = client.stats.as_dict()
        duration = round(time.monotonic() - started, 3)
        frame = validate(source.pages_table, source.pages_frame(fetch, connection_id, day, context.run_id))
        sync = validate("sync_log", roster_days.sync_row(connection_id, day, plan, fetch, stats, duration,
                                                         context.run_id))  # fmt: skip
        store.stage({source.pages_table: frame, "sync_log": sync}, connection_id, day)
        row = sync.iloc[0]
        health = {
            "mode": plan.mode,
            "mode_reason": plan.reason,
            "technique": row["technique"],
            "passes": int(row["passes"]),
            "catch_up_rounds": fetch.catch_up_rounds,
            "catch_up_converged": fetch.catch_up_converged,
            "updated_gte": _stamp_text(row["updated_gte"]),
            "high_water": _stamp_text(row["high_water"]),
            "base_snapshot_date": str(plan.base_snapshot_date) if plan.base_snapshot_date else "none",
            "last_full_scan_date": str(plan.full_scan_date(day)),
            "courses_listed": int(row["courses_listed"]),
            "classes_listed": int(row["classes_listed"]),
            **fetch.health,
            **{f"http_{k}": v for k, v in stats.items()},
            "duration_seconds": duration,
        }
        yield dg.MaterializeResult(asset_key="raw_course_pages", metadata={"dagster/row_count": len(frame), **health})
        yield dg.MaterializeResult(asset_key="sync_log", metadata={"dagster/row_count": 1, **health})

    @dg.multi_asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        specs=[
            table_spec(
                "course_rosters",
                ["raw_course_pages", "sync_log", PREVIOUS_DAY_ROSTERS],
                "One row per course per day: roster_status exposed / empty / not_exposed (the provider "
                "gave no roster: unknown, never empty), is_active, student_count, updated_at, and fetched_on: the "
                "day of the scan that last read the course (earlier when an incremental poll carried it forward).",
            ),
            table_spec(
                "course_student_edges",
                ["raw_course_pages"],
                "Who is enrolled where: one row per (course, student) on an exposed roster that day; the "
                "union of student_ids and students[].id.",
            ),
            table_spec(
                "class_student_edges",
                ["raw_course_pages"],
                "Class (section) level rosters where the provider populates Class.student_ids, with the "
                "class's course_id. Rare: most providers expose none.",
            ),
        ],
    )
    def roster_snapshot(context: dg.AssetExecutionContext, lms: LmsApiResource, warehouse: WarehouseResource):
        """Normalize one partition's stored pages into rosters and edges, written in one transaction. After an
        incremental poll, the polled courses replace theirs in the base snapshot; the rest are carried forward."""
        connection_id, day = split_key(context)
        conn = lms.settings().connection(connection_id)
        try:
            mode, base_day, counts = roster_days.build_snapshot(warehouse.warehouse(), conn, day,
                                                                registry.provider(conn.provider).rosters)  # fmt: skip
        except MissingSnapshotInput as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        except (ValueError, SchemaViolation) as exc:  # each provider's payload error is a ValueError naming the page
            raise _fail(exc, roster_days.NORMALIZATION_REFUSED) from None
        yield from _snapshot_results(counts, mode, base_day)

    @dg.multi_asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        specs=[
            table_spec(
                "enrollment_changes",
                ["course_rosters", "course_student_edges", PREVIOUS_DAY_CHANGES],
                "Day-over-day added / dropped edges against the previous published snapshot, with a "
                "reason. A course not exposed on either day yields nothing; a connection's first day is a baseline "
                "(no rows; is_baseline in enrollment_change_sets).",
            ),
            table_spec(
                "enrollment_change_sets",
                ["course_rosters", "course_student_edges"],
                "One row per published change set: what it was compared with, counts, drop share and "
                "the mass-drop guard's outcome. A held change set has no row, so the next day compares with the last "
                "published one.",
            ),
        ],
        check_specs=[
            dg.AssetCheckSpec(
                "no_mass_drop",
                asset="enrollment_changes",
                blocking=True,
                description="Holds a change set that drops more than max_drop_share of the connection's edges: "
                "nothing is written until a person accepts it (run config accept_mass_drop).",
            )
        ],
    )
    def enrollment_change_set(
        context: dg.AssetExecutionContext,
        config: ChangeSetConfig,
        lms: LmsApiResource,
        warehouse: WarehouseResource,
    ):
        """Diff the day's snapshot with the previous published one; the mass-drop guard runs before any write."""
        connection_id, day = split_key(context)
        threshold = lms.settings().connection(connection_id).options.max_drop_share
        store = warehouse.warehouse()
        try:
            summary, outcome, reasons = guard.change_set(store, connection_id, day, threshold, config.accept_mass_drop)
        except MissingSnapshotInput as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        except SchemaViolation as exc:
            raise _fail(exc, "change set refused; nothing was written") from None
        prev_day = summary.previous_snapshot_date
        yield dg.AssetCheckResult(
            check_name="no_mass_drop",
            asset_key="enrollment_changes",
            passed=outcome is not None,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "drop_share": summary.drop_share,
                "max_drop_share": threshold,
                "dropped": summary.dropped,
                "previous_edges": summary.previous_edges,
                "accepted_by_operator": outcome == guard.ACCEPTED,
            },
        )
        if outcome is None:
            reason = guard.hold_reason(connection_id, day, summary, threshold)
            hold = guard.hold_row(connection_id, day, context.run_id, reason, summary, threshold)
            store.replace_partition({"change_set_holds": validate("change_set_holds", hold)}, connection_id, day)
            store.publish_partition(connection_id, day, ["change_set_holds"])
            raise dg.Failure(
                description=reason,
                metadata={"dropped": summary.dropped, "previous_snapshot_date": str(prev_day)},
                allow_retries=False,
            )
        published = store.publish_partition(connection_id, day)
        yield from _change_set_results(summary, outcome, reasons, published)

    return [raw_course_pages, roster_snapshot, enrollment_change_set]


def _fail(exc: Exception, what: str) -> dg.Failure:
    return dg.Failure(description=f"{what}: {exc}", allow_retries=not isinstance(exc, SchemaViolation))


def _stamp_text(value: object) -> str:
    return "none" if pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _snapshot_results(counts: dict[str, int], mode: str, base_day: date | None):  # noqa: ANN202
    courses, known = counts["courses"], counts["courses_exposed"] + counts["courses_empty"]
    yield dg.MaterializeResult(
        asset_key="course_rosters",
        metadata={
            "dagster/row_count": courses,
            "sync_mode": mode,
            "base_snapshot_date": str(base_day) if base_day else "none (built from this day's pages alone)",
            "courses_refreshed": courses - counts["courses_carried_forward"],
            "courses_carried_forward": counts["courses_carried_forward"],
            "courses_exposed": counts["courses_exposed"],
            "courses_empty": counts["courses_empty"],
            "courses_not_exposed": counts["courses_not_exposed"],
            "courses_inactive": counts["courses_inactive"],
            "roster_coverage": dg.MetadataValue.float(round(known / courses, 4) if courses else 0.0),
        },
    )
    yield dg.MaterializeResult(
        asset_key="course_student_edges",
        metadata={
            "dagster/row_count": counts["edges"],
            "distinct_students": counts["distinct_students"],
            "courses_with_students": counts["courses_with_students"],
        },
    )
    yield dg.MaterializeResult(
        asset_key="class_student_edges",
        metadata={"dagster/row_count": counts["class_edges"], "classes": counts["classes"]},
    )


def _change_set_results(summary: ChangeSummary, outcome: str, reasons: dict, published):  # noqa: ANN001, ANN202
    prev_day = summary.previous_snapshot_date
    yield dg.MaterializeResult(
        asset_key="enrollment_changes",
        metadata={
            "dagster/row_count": summary.added + summary.dropped,
            "added": summary.added,
            "dropped": summary.dropped,
            "is_baseline": summary.is_baseline,
            "previous_snapshot_date": str(prev_day) if prev_day else "none (baseline)",
            "drop_share": dg.MetadataValue.float(round(summary.drop_share, 4)),
            "drops_by_reason": dg.MetadataValue.json(reasons["dropped"]),
            "adds_by_reason": dg.MetadataValue.json(reasons["added"]),
            "analyst_copy": dg.MetadataValue.path(str(published.analysts_db)),
            "published": published.reason,
        },
    )
    yield dg.MaterializeResult(
        asset_key="enrollment_change_sets",
        metadata={
            "dagster/row_count": 1,
            "guard": outcome,
            "courses_compared": summary.courses_compared,
            "courses_not_exposed": summary.courses_not_exposed,
        },
    )
