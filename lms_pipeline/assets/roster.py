"""Roster assets: raw pages -> course rosters and edges -> enrollment change sets.

Each asset is thin: partition key -> client or stored rows -> pure transform -> pandera -> one warehouse
transaction -> metadata. Downstream assets read what upstream stored (never refetch), so every table can be
rebuilt from ``raw_course_pages`` alone.
"""

import json
import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
from dagster_pandera import pandera_schema_to_dagster_type

from lms_pipeline.clients.errors import LmsClientError, LmsFetchError
from lms_pipeline.clients.unified import Page
from lms_pipeline.config import ConnectionConfig
from lms_pipeline.partitions import split_key
from lms_pipeline.resources import LmsApiResource, WarehouseResource
from lms_pipeline.schemas import MODELS, SchemaViolation, validate
from lms_pipeline.transforms.changes import ChangeSummary, diff_snapshots
from lms_pipeline.transforms.rosters import MalformedPayloadError, normalize_pages
from lms_pipeline.warehouse import table

GROUP = "roster"

# Fields asked for explicitly: an absent roster must mean "provider did not expose it", not "not requested"
# (provider-apis.md §1.9). Sorting by created_at keeps a record in place when it is updated mid-scan.
COURSE_FIELDS = ["id", "name", "is_active", "created_at", "updated_at", "student_ids", "students"]
CLASS_FIELDS = ["id", "name", "course_id", "created_at", "updated_at", "student_ids", "students"]
SCAN_PARAMS = {"sort": "created_at", "order": "asc"}
# A Unified.to integration without an object answers 501 (see the README's capability table).
NOT_SUPPORTED_STATUS = 501


def table_metadata(name: str) -> dict:
    """Static metadata: the UI's Columns tab reads only ``dagster/column_schema``."""
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
            "payload": [json.dumps(p.items, separators=(",", ":")) for p in pages],
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


def _fail(exc: Exception, what: str) -> dg.Failure:
    return dg.Failure(description=f"{what}: {exc}", allow_retries=not isinstance(exc, SchemaViolation))


def build_roster_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The roster assets over one partitions definition (built from the connections file)."""

    @dg.asset(
        name="raw_course_pages",
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"duckdb", "python"},
        pool="lms_api",
        metadata=table_metadata("raw_course_pages"),
    )
    def raw_course_pages(
        context: dg.AssetExecutionContext,
        config: RawFetchConfig,
        lms: LmsApiResource,
        warehouse: WarehouseResource,
    ) -> dg.MaterializeResult:
        """Every course and class page of one connection's full scan, exactly as fetched (plus request parameters
        without secrets and fetch time). The replayable source: every roster table rebuilds from it. A scan that
        fails on any page stores nothing, so a partial listing can never turn into false drops."""
        connection_id, day = split_key(context)
        conn = lms.settings().connection(connection_id)
        refuse_live_backfill(conn, day, datetime.now(UTC).date(), config.allow_past_date_from_live)
        started = time.monotonic()
        classes_supported = conn.options.fetch_classes
        with lms.client(connection_id, day) as client:
            try:
                pages = list(client.iter_pages("course", {**SCAN_PARAMS, "fields": COURSE_FIELDS}))
                if classes_supported:
                    try:
                        pages += client.iter_pages("class", {**SCAN_PARAMS, "fields": CLASS_FIELDS})
                    except LmsFetchError as exc:
                        if exc.status != NOT_SUPPORTED_STATUS:
                            raise
                        classes_supported = False
            except LmsClientError as exc:
                raise _fail(exc, "fetch failed; nothing was stored for this partition") from None
            stats = client.stats.as_dict()
        frame = validate("raw_course_pages", pages_frame(pages, connection_id, day, context.run_id))
        warehouse.warehouse().replace_partition({"raw_course_pages": frame}, connection_id, day)
        course_pages = frame[frame["endpoint"] == "course"]
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(frame),
                "mode": "full",
                "course_pages": len(course_pages),
                "courses_listed": int(course_pages["item_count"].sum()),
                "class_pages": len(frame) - len(course_pages),
                "classes_supported": classes_supported,
                **{f"http_{k}": v for k, v in stats.items()},
                "duration_seconds": round(time.monotonic() - started, 3),
            }
        )

    @dg.multi_asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        specs=[
            table_spec(
                "course_rosters",
                ["raw_course_pages"],
                "One row per course per day: roster_status exposed / empty / not_exposed (the provider "
                "gave no roster: unknown, never empty), is_active, student_count, updated_at.",
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
    def roster_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        """Normalize one partition's stored pages into rosters and edges, written in one transaction."""
        connection_id, day = split_key(context)
        store = warehouse.warehouse()
        pages = store.read_partition("raw_course_pages", connection_id, day)
        if pages.empty:
            raise dg.Failure(
                description=f"no raw_course_pages stored for {connection_id}|{day}: materialize raw_course_pages first",
                allow_retries=False,
            )
        try:
            frames = normalize_pages(pages)._asdict()
            frames = {name: validate(name, frame) for name, frame in frames.items()}
        except (MalformedPayloadError, SchemaViolation) as exc:
            raise _fail(exc, "normalization refused; nothing was written") from None
        store.replace_partition(frames, connection_id, day)
        rosters, edges, class_edges = (
            frames["course_rosters"],
            frames["course_student_edges"],
            frames["class_student_edges"],
        )
        status = rosters["roster_status"].value_counts()
        known = int(status.get("exposed", 0) + status.get("empty", 0))
        yield dg.MaterializeResult(
            asset_key="course_rosters",
            metadata={
                "dagster/row_count": len(rosters),
                "courses_exposed": int(status.get("exposed", 0)),
                "courses_empty": int(status.get("empty", 0)),
                "courses_not_exposed": int(status.get("not_exposed", 0)),
                "courses_inactive": int((rosters["is_active"] == False).sum()),  # noqa: E712 (nullable boolean)
                "roster_coverage": dg.MetadataValue.float(round(known / len(rosters), 4) if len(rosters) else 0.0),
            },
        )
        yield dg.MaterializeResult(
            asset_key="course_student_edges",
            metadata={
                "dagster/row_count": len(edges),
                "distinct_students": int(edges["student_id"].nunique()),
                "courses_with_students": int(edges["course_id"].nunique()),
            },
        )
        yield dg.MaterializeResult(
            asset_key="class_student_edges",
            metadata={
                "dagster/row_count": len(class_edges),
                "classes": int(class_edges["class_id"].nunique()),
            },
        )

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
        cur_rosters = store.read_partition("course_rosters", connection_id, day)
        if cur_rosters.empty:
            raise dg.Failure(description=f"no course_rosters stored for {connection_id}|{day}", allow_retries=False)
        cur_edges = store.read_partition("course_student_edges", connection_id, day)
        previous = store.query(
            f"SELECT max(snapshot_date) AS d FROM {table('enrollment_change_sets')} "
            "WHERE connection_id = ? AND snapshot_date < ?",
            [connection_id, day],
        )["d"].iloc[0]
        prev_day = None if pd.isna(previous) else pd.Timestamp(previous).date()
        prev_rosters = prev_edges = None
        if prev_day is not None:
            prev_rosters = store.read_partition("course_rosters", connection_id, prev_day)
            prev_edges = store.read_partition("course_student_edges", connection_id, prev_day)
        changes, summary = diff_snapshots(
            connection_id, day, cur_rosters, cur_edges, prev_day, prev_rosters, prev_edges
        )
        guard = _guard(summary, threshold, config.accept_mass_drop)
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
            raise dg.Failure(
                description=(
                    f"mass-drop guard held the change set of {connection_id}|{day}: {summary.dropped} of "
                    f"{summary.previous_edges} edges ({summary.drop_share:.1%}) would drop, above max_drop_share "
                    f"{threshold:.0%}. Nothing was published. If the drops are real, re-run with run config "
                    "ops.enrollment_change_set.config.accept_mass_drop: true."
                ),
                metadata={"dropped": summary.dropped, "previous_snapshot_date": str(prev_day)},
                allow_retries=False,
            )
        try:
            frames = {
                "enrollment_changes": validate("enrollment_changes", changes),
                "enrollment_change_sets": validate(
                    "enrollment_change_sets",
                    pd.DataFrame([summary.as_row(max_drop_share=threshold, guard=guard)]),
                ),
            }
        except SchemaViolation as exc:
            raise _fail(exc, "change set refused; nothing was written") from None
        store.replace_partition(frames, connection_id, day)
        published = store.publish()
        yield dg.MaterializeResult(
            asset_key="enrollment_changes",
            metadata={
                "dagster/row_count": len(changes),
                "added": summary.added,
                "dropped": summary.dropped,
                "is_baseline": summary.is_baseline,
                "previous_snapshot_date": str(prev_day) if prev_day else "none (baseline)",
                "drop_share": dg.MetadataValue.float(round(summary.drop_share, 4)),
                "drops_by_reason": dg.MetadataValue.json(_reason_counts(changes, "dropped")),
                "adds_by_reason": dg.MetadataValue.json(_reason_counts(changes, "added")),
                "analyst_copy": dg.MetadataValue.path(str(published)),
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


def _guard(summary: ChangeSummary, threshold: float, accepted: bool) -> str | None:
    """'passed', 'accepted_by_operator', or None when the change set must be held."""
    if summary.drop_share <= threshold:
        return "passed"
    return "accepted_by_operator" if accepted else None


def _reason_counts(changes: pd.DataFrame, change_type: str) -> dict[str, int]:
    subset = changes.loc[changes["change_type"] == change_type, "reason"]
    return {k: int(v) for k, v in subset.value_counts().sort_index().items()}
