"""Enrichment assets: course contents and learner progress, labelled against the day's roster snapshot.

Progress is read per course of the day's ``course_rosters`` and never writes to a roster table: an activity is
progress data, not membership. ``raw_progress_pages`` is the replayable store of content and activity pages (the
grade reconciliation reads activities from it too).
"""

import functools
import time

import dagster as dg
import pandas as pd

from lms_pipeline.assets.specs import table_metadata, table_spec
from lms_pipeline.partitions import split_key
from lms_pipeline.providers import registry
from lms_pipeline.providers.base import PayloadError
from lms_pipeline.providers.http import LmsClientError
from lms_pipeline.providers.pages import page_rows
from lms_pipeline.resources import LmsApiResource, WarehouseResource
from lms_pipeline.schemas import SchemaViolation, validate
from lms_pipeline.transforms.progress import normalize_progress

GROUP = "progress"


def build_progress_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name="raw_progress_pages",
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"duckdb", "python"},
        pool="lms_api",
        deps=["course_rosters"],
        metadata=table_metadata("raw_progress_pages"),
    )
    def raw_progress_pages(
        context: dg.AssetExecutionContext, lms: LmsApiResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Content and activity pages of every course in the day's roster snapshot: one paged scan per course and
        endpoint (``course_id`` filter), up to ``options.max_concurrent_requests`` at once, stored as fetched. An
        integration without contents or activities answers 501 and is recorded as unsupported; any other failure
        stores nothing for the partition."""
        connection_id, day = split_key(context)
        conn = lms.settings().connection(connection_id)
        options = conn.options
        store = warehouse.warehouse()
        courses = store.query(
            "SELECT course_id FROM lms.course_rosters WHERE connection_id = ? AND snapshot_date = ? ORDER BY 1",
            [connection_id, day],
        )["course_id"].tolist()
        started = time.monotonic()
        source = registry.provider(conn.provider).progress
        scan = None
        if source is None:
            skipped = f"not read for provider {conn.provider} yet (the Unified API's content/activity)"
        elif not (skipped := source.disabled(options)):
            try:
                scan = source.scan(functools.partial(lms.client, connection_id, day), courses, options)
            except LmsClientError as exc:
                raise dg.Failure(description=f"progress fetch failed; nothing was stored: {exc}") from None
            skipped = ", ".join(f"{e}: not supported by the integration (HTTP 501)" for e in scan.unsupported)
        part = {"connection_id": connection_id, "snapshot_date": pd.Timestamp(day), "run_id": context.run_id}
        frame = validate("raw_progress_pages", page_rows(scan.pages if scan else []).assign(**part))
        store.replace_partition({"raw_progress_pages": frame}, connection_id, day)
        rows = frame.groupby("endpoint")["item_count"].sum()
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(frame),
                "courses_scanned": len(courses) if scan else 0,
                "content_rows": int(rows.get("content", 0)),
                "activity_rows": int(rows.get("activity", 0)),
                "content_pages": int((frame["endpoint"] == "content").sum()),
                "activity_pages": int((frame["endpoint"] == "activity").sum()),
                "skipped": skipped or "nothing",
                **({f"http_{k}": v for k, v in scan.stats.as_dict().items()} if scan else {}),
                "duration_seconds": round(time.monotonic() - started, 3),
            }
        )

    @dg.multi_asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        specs=[
            table_spec(
                "course_contents",
                ["raw_progress_pages"],
                "Contents of each course that day (Canvas: assignments): name, is_active, duration, updated_at.",
            ),
            table_spec(
                "student_progress",
                ["raw_progress_pages", "course_rosters", "course_student_edges"],
                "One row per learner activity (course, student, content): completion and progress, labelled "
                "enrolled / not_enrolled against that day's course_student_edges, or roster_not_exposed. Dropped "
                "students keep their rows as not_enrolled. Never adds to the roster tables.",
            ),
            table_spec(
                "course_progress_summary",
                ["raw_progress_pages", "course_rosters", "course_student_edges"],
                "Per course and day: enrolled students, learners with activity, completed share, average "
                "progress, and activities of learners not on the roster.",
            ),
        ],
    )
    def progress_snapshot(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
        """Normalize the day's content/activity pages and label each activity against the day's roster."""
        connection_id, day = split_key(context)
        store = warehouse.warehouse()
        pages = store.read_partition("raw_progress_pages", connection_id, day)
        rosters = store.read_partition("course_rosters", connection_id, day)
        edges = store.read_partition("course_student_edges", connection_id, day)
        try:
            frames = normalize_progress(pages, rosters, edges)._asdict()
            frames = {name: validate(name, frame) for name, frame in frames.items()}
        except (PayloadError, SchemaViolation) as exc:
            raise dg.Failure(description=f"progress normalization refused; nothing was written: {exc}") from None
        store.replace_partition(frames, connection_id, day)
        published = store.publish_partition(connection_id, day, ["raw_progress_pages", *frames])
        progress, summary = frames["student_progress"], frames["course_progress_summary"]
        states = progress["enrollment_state"].value_counts()
        yield dg.MaterializeResult(
            asset_key="course_contents",
            metadata={"dagster/row_count": len(frames["course_contents"])},
        )
        yield dg.MaterializeResult(
            asset_key="student_progress",
            metadata={
                "dagster/row_count": len(progress),
                **{
                    f"rows_{state}": int(states.get(state, 0))
                    for state in ("enrolled", "not_enrolled", "roster_not_exposed")
                },
                "completed": int(progress["is_completed"].fillna(False).sum()),
            },  # fmt: skip
        )
        yield dg.MaterializeResult(
            asset_key="course_progress_summary",
            metadata={
                "dagster/row_count": len(summary),
                "average_progress": dg.MetadataValue.float(
                    round(float(summary["average_progress"].mean()), 2)
                    if summary["average_progress"].notna().any()
                    else 0.0
                ),  # fmt: skip
                "activities_not_on_roster": int(summary["activities_not_on_roster"].sum()),
                "analyst_copy": dg.MetadataValue.path(str(published.analysts_db)),
                "published": published.reason,
            },
        )

    return [raw_progress_pages, progress_snapshot]
