"""Roster assets: raw pages -> course rosters and edges -> enrollment change sets.

Each asset is thin: partition key -> client or stored rows -> transform -> schema checks -> one warehouse
transaction -> metadata. A Unified connection's day is normalized and diffed where its pages are stored
(``unified_snapshot``, ``change_set``: set-based SQL in the warehouse, no day's rows in Python), the dialects' smaller
days in frames. Downstream assets read what upstream stored (never refetch), so every table can be rebuilt from
``raw_course_pages`` alone.
"""

import json
import time
import warnings
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type

from lms_pipeline.assets import dialects
from lms_pipeline.capabilities import capabilities
from lms_pipeline.clients.errors import LmsClientError, LmsFetchError
from lms_pipeline.clients.scans import Scan, catch_up, consistent_scan, single_pass
from lms_pipeline.clients.unified import Page, UnifiedLmsClient
from lms_pipeline.config import ConnectionConfig, UnifiedOptions
from lms_pipeline.partitions import split_key
from lms_pipeline.resources import LmsApiResource, WarehouseResource
from lms_pipeline.schemas import MODELS, SchemaViolation, check_stored, constraint_violation, validate
from lms_pipeline.sync_plan import BaseSync, SyncPlan, plan_sync
from lms_pipeline.transforms import changes, rosters, statements
from lms_pipeline.transforms.changes import ChangeSummary
from lms_pipeline.transforms.rosters import MalformedPayloadError, MissingSnapshotInput
from lms_pipeline.warehouse import STAGED_TABLES, Warehouse, replace_frames, staged_table, table

GROUP = "roster"

# Fields asked for explicitly: an absent roster must mean "provider did not expose it", not "not requested"
# (docs/providers.md §1.9). Paging order is the scan technique's business (lms_pipeline.clients.scans).
COURSE_FIELDS = ["id", "name", "is_active", "created_at", "updated_at", "student_ids", "students"]
CLASS_FIELDS = ["id", "name", "course_id", "created_at", "updated_at", "student_ids", "students"]
FIELDS = {"course": {"fields": COURSE_FIELDS}, "class": {"fields": CLASS_FIELDS}}
SINGLE_PASS_PARAMS = {"sort": "created_at", "order": "asc"}
# A Unified.to integration without an object answers 501 (docs/providers.md, "Unified.to integrations").
NOT_SUPPORTED_STATUS = 501


def table_metadata(name: str) -> dict:
    """Static metadata: the UI's Columns tab reads only ``dagster/column_schema``."""
    with warnings.catch_warnings():  # beta API, pinned version: the warning tells operators nothing
        warnings.simplefilter("ignore", dg.BetaWarning)
        schema = pandera_schema_to_dagster_type(MODELS[name]).metadata["schema"].schema
    return {"dagster/column_schema": schema, "dagster/table_name": table(name)}


def table_spec(name: str, deps: list[str], description: str) -> dg.AssetSpec:
    """An output of a multi-asset: one warehouse table, described for the UI."""
    return dg.AssetSpec(name, deps=deps, kinds={"duckdb"}, metadata=table_metadata(name), description=description)


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


def pages_frame(pages: list[Page], connection_id: str, snapshot_date: date, run_id: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "connection_id": connection_id,
            "snapshot_date": pd.Timestamp(snapshot_date),
            "endpoint": [p.endpoint for p in pages],
            "page_index": _page_indexes(pages),
            "page_offset": [p.offset for p in pages],
            "request_params": [json.dumps(p.params, sort_keys=True) for p in pages],
            "fetched_at": pd.to_datetime([p.fetched_at for p in pages], utc=True),
            "status_code": [p.status_code for p in pages],
            "attempts": [p.attempts for p in pages],
            "item_count": [len(p.items) for p in pages],
            # the body as received (pages built without one, e.g. by hand, store their items re-serialized)
            "payload": [p.body if p.body is not None else json.dumps(p.items, separators=(",", ":")) for p in pages],
            "run_id": run_id,
        }
    )


def _page_indexes(pages: list[Page]) -> list[int]:
    seen: dict[str, int] = {}
    out = []
    for page in pages:
        out.append(seen.get(page.endpoint, 0))
        seen[page.endpoint] = out[-1] + 1
    return out


NORMALIZATION_REFUSED = (
    "normalization refused; nothing was written (the day's stored pages, sync_log and snapshot are unchanged; the "
    "fetched pages are kept as a failed attempt in lms_staging)"
)


def fetched(store: Warehouse, connection_id: str, day: date, *names: str) -> tuple[list[pd.DataFrame], tuple[str, ...]]:
    """A fetch's tables for the day: the attempt staged by the latest fetch when there is one (the snapshot is built
    from it and promotes it), else what is stored (a rebuild from raw pages); and the tables to promote."""
    if len(store.read_staged("sync_log", connection_id, day)):
        return [store.read_staged(name, connection_id, day) for name in names], STAGED_TABLES
    return [store.read_partition(name, connection_id, day) for name in names], ()


def unified_snapshot(store: Warehouse, connection_id: str, day: date) -> tuple[str, date | None, dict[str, int]]:
    """Normalize a Unified connection's day where its pages are stored and write rosters and edges in one
    transaction, with the promotion of the fetch they were built from; validated before it commits.

    Returns the sync mode, the base day of an incremental day and the snapshot's counts. After an incremental poll,
    the polled courses replace theirs in the base snapshot; the rest are carried forward.
    """
    (sync,), promote = fetched(store, connection_id, day, "sync_log")
    pages = staged_table("raw_course_pages") if promote else table("raw_course_pages")
    mode = sync["mode"].iloc[0] if len(sync) else "full"  # pages stored before sync_log existed: full scans
    base_day = pd.Timestamp(sync["base_snapshot_date"].iloc[0]).date() if mode == "incremental" else None
    try:
        with store.rewrite(connection_id, day, promote=promote) as conn:
            rosters.build_snapshot(conn, pages, connection_id, day, base_day)
            for name in rosters.ROSTER_TABLES:
                check_stored(conn, name, table(name), connection_id, day)
            counts = rosters.snapshot_metadata(conn, connection_id, day)
    except MissingSnapshotInput as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except duckdb.ConstraintException as exc:
        raise _fail(constraint_violation(exc), NORMALIZATION_REFUSED) from None
    except (MalformedPayloadError, SchemaViolation) as exc:
        raise _fail(exc, NORMALIZATION_REFUSED) from None
    return mode, base_day, counts


def change_set(
    store: Warehouse, connection_id: str, day: date, threshold: float, accepted: bool
) -> tuple[ChangeSummary, str | None, dict[str, dict[str, int]]]:
    """Diff the day's stored snapshot with the previous published one, where both are stored; when the mass-drop
    guard lets it through (its outcome is returned: None when held), write the change rows, the change-set row and
    the release of any hold on the day in one transaction, validated before it commits. A held change set writes
    nothing here."""
    try:
        with store.rewrite(connection_id, day) as conn:
            params = {"connection_id": connection_id, "snapshot_date": day}
            if not statements.run(conn, changes.SQL["current_rosters"], params).fetchone()[0]:
                raise dg.Failure(description=f"no course_rosters stored for {connection_id}|{day}",
                                 allow_retries=False)  # fmt: skip
            previous = changes.previous_day(conn, connection_id, day)
            summary = changes.diff_partition(conn, connection_id, day, previous)
            guard = _guard(summary, threshold, accepted)
            reasons = changes.reason_counts(conn)
            if guard is not None:
                changes.write_changes(conn, connection_id, day, previous)
                check_stored(conn, "enrollment_changes", table("enrollment_changes"), connection_id, day)
                row = validate("enrollment_change_sets",
                               pd.DataFrame([summary.as_row(max_drop_share=threshold, guard=guard)]))  # fmt: skip
                # The change set and the release of any hold on the day, together: the day becomes publishable whole.
                replace_frames(conn, {"enrollment_change_sets": row, "change_set_holds": pd.DataFrame()},
                               connection_id, day)  # fmt: skip
    except duckdb.ConstraintException as exc:
        raise _fail(constraint_violation(exc), "change set refused; nothing was written") from None
    except SchemaViolation as exc:
        raise _fail(exc, "change set refused; nothing was written") from None
    return summary, guard, reasons


def _fail(exc: Exception, what: str) -> dg.Failure:
    return dg.Failure(description=f"{what}: {exc}", allow_retries=not isinstance(exc, SchemaViolation))


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
                description="Every course and class page of one connection's sync, exactly as fetched (request "
                "parameters without secrets, fetch time, attempts). A full scan lists everything; an incremental "
                "poll lists what was updated since the last high-water mark; either is read so that records changing "
                "while paged are neither skipped nor stale. A sync that fails on any page stores nothing, so a "
                "partial listing can never turn into false drops. The pages are held (lms_staging) until the "
                "snapshot built from them is written, in the same transaction: a fetch whose normalization fails "
                "changes nothing stored. The replayable source of every roster table.",
            ),
            dg.AssetSpec(
                "raw_dialect_pages",
                kinds={"duckdb", "python"},
                metadata=table_metadata("raw_dialect_pages"),
                description="The pages of a connection that speaks another dialect than the Unified API (Canvas "
                "REST, Google Classroom, OneRoster 1.2), exactly as fetched: courses, each course's enrollments or "
                "students, sections or classes, following each API's own paging to its end. A 403 refusing a roster "
                "is kept: it is why that roster is not_exposed. Empty for Unified connections.",
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
        """Fetch one connection's day (full scan or incremental poll) and store its pages and its sync_log row."""
        connection_id, day = split_key(context)
        conn = lms.settings().connection(connection_id)
        options = conn.options
        refuse_live_backfill(conn, day, datetime.now(UTC).date(), config.allow_past_date_from_live)
        store = warehouse.warehouse()
        if conn.provider != "unified":  # capabilities: no dialect but unified is polled incrementally yet
            yield from _fetch_dialect(context, conn, day, lms, store)
            return
        plan = plan_sync(
            day,
            load_base(store, connection_id, day),
            # The capability matrix says whether the dialect can be polled; the option says whether this tenant can.
            supports_updated_gte=capabilities(conn.provider).incremental_sync and options.supports_updated_gte,
            full_scan_every_days=options.full_scan_every_days,
            overlap_minutes=options.incremental_overlap_minutes,
        )
        context.log.info(f"{connection_id}|{day}: {plan.mode} sync: {plan.reason}")
        started = time.monotonic()
        classes_supported = options.fetch_classes
        scans: list[Scan] = []
        with lms.client(connection_id, day) as client:
            try:
                scans.append(_scan(client, "course", plan, options))
                if classes_supported:
                    try:
                        scans.append(_scan(client, "class", plan, options))
                    except LmsFetchError as exc:
                        if exc.status != NOT_SUPPORTED_STATUS:
                            raise
                        classes_supported = False
                rounds, converged = (0, True)
                if options.scan == "consistent":
                    rounds, converged = catch_up(client, scans, FIELDS)
            except LmsClientError as exc:
                raise _fail(exc, f"{plan.mode} sync failed; nothing was stored for this partition") from None
            stats = client.stats.as_dict()
        duration = round(time.monotonic() - started, 3)
        pages = [page for scan in scans for page in scan.pages]
        frame = validate("raw_course_pages", pages_frame(pages, connection_id, day, context.run_id))
        sync = validate(
            "sync_log",
            sync_row(connection_id, day, plan, scans, stats, duration, context.run_id).assign(
                catch_up_rounds=rounds, catch_up_converged=converged
            ),
        )
        store.stage({"raw_course_pages": frame, "raw_dialect_pages": frame.iloc[0:0], "sync_log": sync},
                    connection_id, day)  # fmt: skip
        row = sync.iloc[0]
        fell_back = [f"{s.endpoint}: {s.fell_back}" for s in scans if s.fell_back]
        health = {
            "mode": plan.mode,
            "mode_reason": plan.reason,
            "technique": row["technique"],
            **({"keyset_fallback": "; ".join(fell_back)} if fell_back else {}),
            "passes": int(row["passes"]),
            "catch_up_rounds": rounds,
            "catch_up_converged": converged,
            "updated_gte": _stamp_text(row["updated_gte"]),
            "high_water": _stamp_text(row["high_water"]),
            "base_snapshot_date": str(plan.base_snapshot_date) if plan.base_snapshot_date else "none",
            "last_full_scan_date": str(plan.full_scan_date(day)),
            "courses_listed": int(row["courses_listed"]),
            "classes_listed": int(row["classes_listed"]),
            "classes_supported": classes_supported,
            **{f"http_{k}": v for k, v in stats.items()},
            "duration_seconds": duration,
        }
        yield dg.MaterializeResult(asset_key="raw_course_pages", metadata={"dagster/row_count": len(frame), **health})
        yield dg.MaterializeResult(asset_key="raw_dialect_pages", metadata={"dagster/row_count": 0})
        yield dg.MaterializeResult(asset_key="sync_log", metadata={"dagster/row_count": 1, **health})

    @dg.multi_asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        specs=[
            table_spec(
                "course_rosters",
                ["raw_course_pages", "raw_dialect_pages", "sync_log", PREVIOUS_DAY_ROSTERS],
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
        store = warehouse.warehouse()
        conn = lms.settings().connection(connection_id)
        if conn.provider != "unified":
            yield from _snapshot_results(_dialect_snapshot(conn, day, store), "full", None, day)
            return
        mode, base_day, counts = unified_snapshot(store, connection_id, day)
        yield from _snapshot_results(counts, mode, base_day, day)

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
        summary, guard, reasons = change_set(store, connection_id, day, threshold, config.accept_mass_drop)
        prev_day = summary.previous_snapshot_date
        yield dg.AssetCheckResult(
            check_name="no_mass_drop",
            asset_key="enrollment_changes",
            passed=guard is not None,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "drop_share": summary.drop_share,
                "max_drop_share": threshold,
                "dropped": summary.dropped,
                "previous_edges": summary.previous_edges,
                "accepted_by_operator": guard == "accepted_by_operator",
            },
        )
        if guard is None:
            reason = (
                f"mass-drop guard held the change set of {connection_id}|{day}: {summary.dropped} of "
                f"{summary.previous_edges} edges ({summary.drop_share:.1%}) would drop, above max_drop_share "
                f"{threshold:.0%}. Nothing of this day is published (rosters, edges, progress, grades). If the drops "
                "are real, re-run the partition with run config "
                "ops.enrollment_change_set.config.accept_mass_drop: true."
            )
            hold = hold_row(connection_id, day, context.run_id, reason, summary, threshold)
            store.replace_partition({"change_set_holds": validate("change_set_holds", hold)}, connection_id, day)
            store.publish_partition(connection_id, day, ["change_set_holds"])
            raise dg.Failure(
                description=reason,
                metadata={"dropped": summary.dropped, "previous_snapshot_date": str(prev_day)},
                allow_retries=False,
            )
        published = store.publish_partition(connection_id, day)
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
                "guard": guard,
                "courses_compared": summary.courses_compared,
                "courses_not_exposed": summary.courses_not_exposed,
            },
        )

    return [raw_course_pages, roster_snapshot, enrollment_change_set]


def _scan(client: UnifiedLmsClient, endpoint: str, plan: SyncPlan, options: UnifiedOptions) -> Scan:
    params, unpaged = FIELDS[endpoint], endpoint in options.unpaged_endpoints
    if options.scan == "single_pass":
        return single_pass(client, endpoint, {**params, **SINGLE_PASS_PARAMS, "updated_gte": plan.since},
                           unpaged=unpaged)  # fmt: skip
    return consistent_scan(client, endpoint, params, since=plan.since, keyset=options.supports_updated_gte,
                           max_passes=options.max_scan_passes, unpaged=unpaged,
                           max_pages=options.max_pages_per_scan)  # fmt: skip


def load_base(store: Warehouse, connection_id: str, day: date) -> BaseSync | None:
    """The latest earlier day with a sync and a built snapshot: what an incremental poll builds on."""
    found = store.query(
        f"""
        WITH base AS (
            SELECT s.snapshot_date, s.high_water, s.last_full_scan_date FROM {table("sync_log")} s
            WHERE s.connection_id = $1 AND s.snapshot_date < $2 AND EXISTS (
                SELECT 1 FROM {table("course_rosters")} r
                WHERE r.connection_id = s.connection_id AND r.snapshot_date = s.snapshot_date)
            ORDER BY s.snapshot_date DESC LIMIT 1
        )
        SELECT base.*, (SELECT count(*) FROM {table("course_rosters")} r WHERE r.connection_id = $1
                        AND r.snapshot_date = base.snapshot_date AND r.updated_at IS NULL) AS stampless
        FROM base
        """,
        [connection_id, day],
    )
    if found.empty:
        return None
    row = found.iloc[0]
    return BaseSync(
        snapshot_date=pd.Timestamp(row["snapshot_date"]).date(),
        high_water=None if pd.isna(row["high_water"]) else pd.Timestamp(row["high_water"]).to_pydatetime(),
        last_full_scan_date=pd.Timestamp(row["last_full_scan_date"]).date(),
        courses_without_updated_at=int(row["stampless"]),
    )


def sync_row(
    connection_id: str, day: date, plan: SyncPlan, scans: list[Scan], stats: dict, duration: float, run_id: str
) -> pd.DataFrame:
    techniques = {s.technique for s in scans}
    technique = techniques.pop() if len(techniques) == 1 else "; ".join(f"{s.endpoint}={s.technique}" for s in scans)
    marks = [s.high_water for s in scans if s.high_water is not None]
    if plan.base_high_water is not None:
        marks.append(plan.base_high_water)  # a poll that saw nothing new keeps the mark (it never moves back)
    listed = {s.endpoint: sum(len(p.items) for p in s.pages) for s in scans}
    return pd.DataFrame(
        [
            {
                "connection_id": connection_id,
                "snapshot_date": pd.Timestamp(day),
                "mode": plan.mode,
                "mode_reason": plan.reason,
                "technique": technique,
                "passes": max(s.passes for s in scans),
                "updated_gte": pd.Timestamp(plan.since) if plan.since else pd.NaT,
                "high_water": pd.Timestamp(max(marks)) if marks else pd.NaT,
                "base_snapshot_date": pd.Timestamp(plan.base_snapshot_date) if plan.base_snapshot_date else pd.NaT,
                "last_full_scan_date": pd.Timestamp(plan.full_scan_date(day)),
                "courses_listed": listed.get("course", 0),
                "classes_listed": listed.get("class", 0),
                "requests": stats["requests"],
                "pages": stats["pages"],
                "retries": stats["retries"],
                "throttled": stats["throttled"],
                "server_errors": stats["server_errors"],
                "duration_seconds": duration,
                "run_id": run_id,
            }
        ]
    )


def _stamp_text(value: object) -> str:
    return "none" if pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _guard(summary: ChangeSummary, threshold: float, accepted: bool) -> str | None:
    """'passed', 'accepted_by_operator', or None when the change set must be held."""
    if summary.drop_share <= threshold:
        return "passed"
    return "accepted_by_operator" if accepted else None


def hold_row(
    connection_id: str, day: date, run_id: str, reason: str, summary: ChangeSummary, threshold: float
) -> pd.DataFrame:
    """The record of a held change set: what keeps the day out of the analysts' copy until it is released."""
    previous = summary.previous_snapshot_date
    return pd.DataFrame([{
        "connection_id": connection_id, "snapshot_date": pd.Timestamp(day), "held_at": pd.Timestamp.now(tz="UTC"),
        "run_id": run_id, "reason": reason, "previous_snapshot_date": pd.Timestamp(previous) if previous else pd.NaT,
        "previous_edges": summary.previous_edges, "dropped": summary.dropped, "drop_share": summary.drop_share,
        "max_drop_share": threshold,
    }])  # fmt: skip


def _fetch_dialect(context: dg.AssetExecutionContext, conn: ConnectionConfig, day: date, lms: LmsApiResource,
                   store: Warehouse):  # noqa: ANN202  # fmt: skip
    """A dialect connection's day: every roster page read to its end, stored with its sync_log row, or nothing."""
    started = time.monotonic()
    with lms.dialect_client(conn.id, day) as client:
        try:
            pages = dialects.read_pages(client, conn.provider)
        except LmsClientError as exc:
            raise _fail(exc, "full sync failed; nothing was stored for this partition") from None
        stats = client.stats.as_dict()
    duration = round(time.monotonic() - started, 3)
    frame = validate("raw_dialect_pages", dialects.pages_frame(pages, conn.id, conn.provider, day, context.run_id))
    sync = validate("sync_log", dialects.sync_row(conn, day, pages, stats, duration, context.run_id))
    store.stage({"raw_course_pages": pd.DataFrame(), "raw_dialect_pages": frame, "sync_log": sync}, conn.id, day)
    row = sync.iloc[0]
    health = {
        "provider": conn.provider,
        "mode": "full",
        "mode_reason": row["mode_reason"],
        "technique": row["technique"],
        "pages_refused": int(frame["status_code"].isin((401, 403)).sum()),  # permission refusals kept as pages
        "courses_listed": int(row["courses_listed"]),
        "classes_listed": int(row["classes_listed"]),
        **{f"http_{k}": v for k, v in stats.items()},
        "duration_seconds": duration,
    }
    yield dg.MaterializeResult(asset_key="raw_course_pages", metadata={"dagster/row_count": 0})
    yield dg.MaterializeResult(asset_key="raw_dialect_pages", metadata={"dagster/row_count": len(frame), **health})
    yield dg.MaterializeResult(asset_key="sync_log", metadata={"dagster/row_count": 1, **health})


def _dialect_snapshot(conn: ConnectionConfig, day: date, store: Warehouse) -> dict[str, int]:
    """Normalize and store a dialect connection's day; its sync is always a full scan (nothing carried forward)."""
    (pages,), promote = fetched(store, conn.id, day, "raw_dialect_pages")
    if pages.empty:
        raise dg.Failure(description=f"no raw_dialect_pages stored for {conn.id}|{day}: materialize "
                         "raw_course_pages first", allow_retries=False)  # fmt: skip
    try:
        frames = {name: validate(name, frame) for name, frame in dialects.normalize(conn, pages, day)._asdict().items()}
    except (ValueError, SchemaViolation) as exc:  # each dialect's payload error is a ValueError naming the page
        raise _fail(exc, NORMALIZATION_REFUSED) from None
    store.replace_partition(frames, conn.id, day, promote=promote)
    with store.session() as session:
        return rosters.snapshot_metadata(session, conn.id, day)


def _snapshot_results(counts: dict[str, int], mode: str, base_day: date | None, day: date):  # noqa: ANN202
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
