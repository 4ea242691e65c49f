"""Roster reconciliation assets: the SIS's rostering pages as fetched, and the day's disagreements between the SIS
(the roster of record) and the LMS (``lms_pipeline.roster_recon``).

A connection without ``rosters.sis`` in the connections file materializes these as skipped. The LMS side is what the
roster assets stored for the day (rosters, course and section edges) and the grade reconciliation's LMS student list
(emails) and student mapping file: a student is matched exactly as the grade reconciliation matches them.
"""

import time
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from lms_pipeline.assets.roster import PREVIOUS_DAY_CHANGES
from lms_pipeline.assets.specs import table_metadata
from lms_pipeline.config import ConnectionConfig
from lms_pipeline.grade_inputs import GradeInputError
from lms_pipeline.partitions import split_key
from lms_pipeline.providers import registry
from lms_pipeline.providers.http import LmsClientError
from lms_pipeline.providers.pages import page_rows
from lms_pipeline.resources import LmsApiResource, WarehouseResource
from lms_pipeline.roster_recon import SisRosterError, open_reader, reconcile_rosters, sis_frames, student_map
from lms_pipeline.schemas import SchemaViolation, validate
from lms_pipeline.schemas.roster_recon import ROSTER_DISCREPANCY_STATUSES
from lms_pipeline.warehouse import Warehouse

GROUP = "roster_recon"
# Since-when carries on from the day before, so a backfill must build days in order per connection.
PREVIOUS_DAY_REPORT = dg.AssetDep("roster_discrepancies", partition_mapping=PREVIOUS_DAY_CHANGES.partition_mapping)
LONGEST_SHOWN = 10


def build_roster_recon_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name="raw_sis_roster_pages",
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"duckdb", "python"},
        pool="lms_api",
        deps=["raw_grade_pages"],
        metadata=table_metadata("raw_sis_roster_pages"),
    )
    def raw_sis_roster_pages(
        context: dg.AssetExecutionContext, lms: LmsApiResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """The SIS's OneRoster 1.2 rostering (courses, classes, academicSessions, each class's enrollments,
        users), every listing read to its end, stored as fetched: the replayable input of the roster
        reconciliation. Any failure stores nothing."""
        connection_id, day = split_key(context)
        settings = lms.settings()
        sis = settings.roster_sis_of(connection_id)
        if sis is None:
            return _skipped(connection_id)
        started = time.monotonic()
        conn = settings.connection(connection_id)
        base_url, credentials = lms.endpoints.sis(settings, sis)
        try:
            with open_reader(sis, base_url, credentials, day if conn.simulated_clock and sis.embedded else None) as r:
                pages, stats = r.sis_pages(), r.stats.as_dict()
        except LmsClientError as exc:
            raise dg.Failure(description=f"SIS {sis.id!r} rostering fetch failed; nothing was stored: {exc}") from None
        part = {"connection_id": connection_id, "snapshot_date": pd.Timestamp(day), "run_id": context.run_id}
        frame = validate("raw_sis_roster_pages", page_rows(pages).assign(**part, sis_id=sis.id))
        warehouse.warehouse().replace_partition({"raw_sis_roster_pages": frame}, connection_id, day)
        items = frame.groupby("endpoint")["item_count"].sum()
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(frame),
                "sis": sis.id,
                **{f"{c}_rows": int(items.get(c, 0)) for c in ("courses", "classes", "enrollments", "users")},
                **{f"sis_http_{k}": v for k, v in stats.items()},
                "duration_seconds": round(time.monotonic() - started, 3),
            }
        )

    @dg.asset(
        name="roster_discrepancies",
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"duckdb"},
        deps=[
            "raw_sis_roster_pages",
            "course_rosters",
            "course_student_edges",
            "class_student_edges",
            "lms_grades",
            PREVIOUS_DAY_REPORT,
        ],  # fmt: skip
        metadata=table_metadata("roster_discrepancies"),
        description="One row per (LMS course or SIS class, student) where the SIS and the LMS disagree: "
        "missing_in_lms, missing_in_sis, section_mismatch, unmapped_student, unmapped_course or "
        "lms_roster_not_exposed (unknown, never counted as missing), with the first day it was seen.",
    )
    def roster_discrepancies(
        context: dg.AssetExecutionContext, lms: LmsApiResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Compare the SIS's enrollments with the LMS's as of the day. A bad mapping file fails the run before
        anything is written, naming the file, the line and the problem."""
        connection_id, day = split_key(context)
        settings = lms.settings()
        sis = settings.roster_sis_of(connection_id)
        if sis is None:
            return _skipped(connection_id)
        store, conn = warehouse.warehouse(), settings.connection(connection_id)
        read = lambda name, on=day: store.read_partition(name, connection_id, on)  # noqa: E731
        try:
            sis_data = sis_frames(read("raw_sis_roster_pages"), sis.id, day)
            mapping = student_map(sis, connection_id, sis_data["sis_users"])
            report = reconcile_rosters(
                sis_data, read("course_rosters"), read("course_student_edges"), read("class_student_edges"),
                _lms_students(conn, store, day), mapping, _previous(store, connection_id, day, settings.start_date),
                day,
            )  # fmt: skip
            part = {"connection_id": connection_id, "snapshot_date": pd.Timestamp(day), "sis_id": sis.id}
            frame = validate("roster_discrepancies", report.assign(**part))
        except (GradeInputError, SisRosterError, SchemaViolation, ValueError) as exc:
            raise dg.Failure(description=f"roster reconciliation refused; nothing was written: {exc}") from None
        store.replace_partition({"roster_discrepancies": frame}, connection_id, day)
        published = store.publish_partition(connection_id, day, ["raw_sis_roster_pages", "roster_discrepancies"])
        return dg.MaterializeResult(metadata={**report_metadata(frame), "mapping_rows_students": len(mapping),
                                              "published": published.reason})  # fmt: skip

    return [raw_sis_roster_pages, roster_discrepancies]


def _skipped(connection_id: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"skipped": f"connection {connection_id!r} has no rosters.sis in the connections file"}
    )


def _lms_students(conn: ConnectionConfig, store: Warehouse, day: date) -> pd.DataFrame:
    """(student_id, email) of the LMS's students, from the grade source's stored pages (as the grade side reads
    them)."""
    grade_pages = store.read_partition("raw_grade_pages", conn.id, day)
    pages = grade_pages[grade_pages["system"] == "lms"].rename(
        columns={"collection": "endpoint", "status_code": "status", "request_params": "params"}
    )
    sides = registry.grade_source(conn).sides(conn, pages, lambda name: store.read_partition(name, conn.id, day))
    return sides.students


def _previous(store: Warehouse, connection_id: str, day: date, start: date) -> pd.DataFrame:
    """The day before's report (row_key, status, first_seen); empty on the first day."""
    if day <= start:
        return pd.DataFrame({"row_key": pd.Series(dtype=str), "status": pd.Series(dtype=str),
                             "first_seen": pd.Series(dtype="datetime64[ns]")})  # fmt: skip
    previous = store.read_partition("roster_discrepancies", connection_id, day - timedelta(days=1))
    return previous[["row_key", "status", "first_seen"]].astype({"first_seen": "datetime64[ns]"})


def report_metadata(report: pd.DataFrame) -> dict:
    """Counts by status and the longest-lasting disagreements (the UI's metadata of the day)."""
    counts = report["status"].value_counts()
    longest = report.sort_values(["days_open", "row_key"], ascending=[False, True]).head(LONGEST_SHOWN)
    table = "| status | course | student | first seen | days |\n|---|---|---|---|---|\n" + "".join(
        f"| {r.status} | {r.course_id or r.sis_class_ids} | {r.lms_student_id or r.sis_student_id} | "
        f"{pd.Timestamp(r.first_seen).date()} | {r.days_open} |\n"
        for r in longest.itertuples()
    )
    missing = report[report["status"] == "missing_in_lms"]
    return {
        "dagster/row_count": len(report),
        **{f"status_{s}": int(counts.get(s, 0)) for s in ROSTER_DISCREPANCY_STATUSES},
        "oldest_missing_in_lms_days": int(missing["days_open"].max()) if len(missing) else 0,
        "longest_lasting": dg.MetadataValue.md(table),
    }
