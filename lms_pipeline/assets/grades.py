"""Grade reconciliation assets: the SIS gradebook and the LMS student list as fetched, the LMS grades parsed and
lettered, the discrepancy report, and the opt-in write-back with its journal.

A connection without ``grades.sis`` in the connections file materializes these as skipped (nothing fetched,
nothing written). LMS grades come from the connection's grade source: a Unified connection's activity pages (which
the progress assets already stored: one fetch serves both) or its LTI platform's AGS; a Canvas or Classroom
connection's submissions. Each source's own normalizer turns them into the same parsed grades.
"""

import time

import dagster as dg
import pandas as pd

from lms_pipeline import writeback
from lms_pipeline.assets.specs import table_metadata, table_spec
from lms_pipeline.config import ConnectionConfig
from lms_pipeline.grade_inputs import GradeInputError, course_schemes, mapping_inputs
from lms_pipeline.partitions import split_key
from lms_pipeline.providers import registry
from lms_pipeline.providers.base import SIDE_GRADE_COLUMNS
from lms_pipeline.providers.http import LmsClientError
from lms_pipeline.providers.pages import page_rows
from lms_pipeline.resources import LmsApiResource, WarehouseResource
from lms_pipeline.schemas import DISCREPANCY_STATUSES, SchemaViolation, validate
from lms_pipeline.transforms.grades import parse_grades, to_letters
from lms_pipeline.transforms.reconcile import reconcile, sis_frames
from lms_pipeline.warehouse import Warehouse

GROUP = "grades"
SIS_COLLECTIONS = (("rostering", "users"), ("rostering", "classes"), ("gradebook", "lineItems"),
                   ("gradebook", "results"))  # fmt: skip


def build_grade_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name="raw_grade_pages",
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"duckdb", "python"},
        pool="lms_api",
        deps=["raw_progress_pages"],
        metadata=table_metadata("raw_grade_pages"),
    )
    def raw_grade_pages(
        context: dg.AssetExecutionContext, lms: LmsApiResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """The SIS gradebook (users, classes, line items, results; OneRoster 1.2) and the LMS side (the Unified
        student list for emails, or the grade pages of LTI AGS, Canvas or Classroom), stored as fetched: the
        replayable input of the reconciliation. Each SIS listing must add up to
        its X-Total-Count, or nothing is stored."""
        connection_id, day = split_key(context)
        sis = lms.settings().sis_of(connection_id)
        if sis is None:
            return _skipped(connection_id)
        started = time.monotonic()
        try:
            conn = lms.settings().connection(connection_id)
            with lms.grade_client(connection_id, day) as client:
                lms_pages, lms_stats = registry.grade_source(conn).fetch(client), client.stats.as_dict()
            with lms.sis_client(connection_id, day) as sis_client:
                sis_pages = [page for service, collection in SIS_COLLECTIONS
                             for page in sis_client.iter_pages(service, collection)]  # fmt: skip
                sis_stats = sis_client.stats.as_dict()
        except LmsClientError as exc:
            raise dg.Failure(description=f"grade source fetch failed; nothing was stored: {exc}") from None
        part = {"connection_id": connection_id, "snapshot_date": pd.Timestamp(day), "run_id": context.run_id}
        frame = pd.concat([page_rows(pages).assign(system=system) for system, pages in (("lms", lms_pages),
                                                                                          ("sis", sis_pages))])
        frame = validate("raw_grade_pages", frame.rename(columns={"endpoint": "collection"}).assign(**part))
        warehouse.warehouse().replace_partition({"raw_grade_pages": frame}, connection_id, day)
        items = frame.groupby("collection")["item_count"].sum()
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(frame),
                "sis": sis.id,
                **{f"{c}_rows": int(items.get(c, 0)) for c in ("student", "users", "classes", "lineItems", "results")},
                **{f"sis_http_{k}": v for k, v in sis_stats.items()},
                **{f"lms_http_{k}": v for k, v in lms_stats.items()},
                "duration_seconds": round(time.monotonic() - started, 3),
            }
        )

    @dg.multi_asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        specs=[
            table_spec(
                "lms_grades",
                ["raw_progress_pages"],
                "Every LMS grade of the day (activities with assigned_grade): the raw string, its status (graded, "
                "excused, incomplete, ungraded, missing, unparseable: zero is never empty), the percent, and the "
                "letter by the course's own scheme at its declared precision and rounding.",
            ),
            table_spec(
                "grade_discrepancies",
                ["lms_grades", "raw_grade_pages", "course_contents"],
                "One row per (student, line item) where the LMS or the SIS holds a grade: both values, normalized, "
                "and a status: match, score_mismatch, missing_in_sis, missing_in_lms, unmapped_student, "
                "unmapped_assignment or unparseable, with the reason in words. Scores match within the SIS "
                "entry's score_tolerance (percentage points).",
            ),
        ],
    )
    def grade_reconciliation(context: dg.AssetExecutionContext, lms: LmsApiResource, warehouse: WarehouseResource):
        """Parse the LMS grades, match students and assignments (mapping files first, then unambiguous automatic
        matches), and compare with the SIS. A bad mapping or scheme file fails the run before anything is
        written, naming the file, the line and the problem."""
        connection_id, day = split_key(context)
        sis = lms.settings().sis_of(connection_id)
        if sis is None:
            yield dg.MaterializeResult(asset_key="lms_grades", metadata=_skipped(connection_id).metadata)
            yield dg.MaterializeResult(asset_key="grade_discrepancies", metadata=_skipped(connection_id).metadata)
            return
        store = warehouse.warehouse()
        grade_pages = store.read_partition("raw_grade_pages", connection_id, day)
        conn = lms.settings().connection(connection_id)
        try:
            sis_data = sis_frames(grade_pages)
            grades, students, contents = _lms_side(conn, store, day, grade_pages)
            student_map, assignment_map, schemes, assignment, stale_rows = mapping_inputs(
                sis, connection_id, sis_data, students, grades, contents
            )
            grades = grades.assign(scheme=grades["course_id"].map(
                course_schemes(grades["course_id"], assignment).set_index("course_id")["scheme"]))  # fmt: skip
            grades = to_letters(grades, schemes)
            report = reconcile(grades, students, contents, sis_data, student_map, assignment_map, sis.score_tolerance)
            part = {"connection_id": connection_id, "snapshot_date": pd.Timestamp(day)}
            frames = {
                "lms_grades": validate("lms_grades", grades.drop(columns=["snapshot_date"]).assign(**part)),
                "grade_discrepancies": validate("grade_discrepancies", report.assign(**part, sis_id=sis.id)),
            }
        except (GradeInputError, SchemaViolation, ValueError) as exc:  # payload errors are ValueErrors naming the page
            raise dg.Failure(description=f"grade reconciliation refused; nothing was written: {exc}") from None
        store.replace_partition(frames, connection_id, day)
        published = store.publish_partition(connection_id, day, ["raw_grade_pages", *frames])
        lms_grades, report = frames["lms_grades"], frames["grade_discrepancies"]
        yield dg.MaterializeResult(
            asset_key="lms_grades",
            metadata={
                "dagster/row_count": len(lms_grades),
                **{f"grades_{k}": int(v) for k, v in lms_grades["grade_status"].value_counts().items()},
                "courses_without_scheme": int(lms_grades.loc[lms_grades["scheme"].isna(), "course_id"].nunique()),
            },
        )
        yield dg.MaterializeResult(
            asset_key="grade_discrepancies",
            metadata={**_report_metadata(report, published), "mapping_rows_students": len(student_map),
                      "mapping_rows_assignments": len(assignment_map), "mapping_rows_stale": stale_rows},
        )  # fmt: skip

    @dg.multi_asset(
        partitions_def=partitions_def,
        group_name=GROUP,
        pool="lms_api",
        specs=[
            dg.AssetSpec(
                "grade_sync_log",
                deps=["grade_discrepancies"],
                kinds={"duckdb"},
                metadata=table_metadata("grade_sync_log"),
                description="Journal of the opt-in write-back (append-only): an intent row before each write and an "
                "outcome row after it (same operation_id), one outcome row per decision that sends nothing: created, "
                "updated, conflict, would_write (dry run), skipped_sis_newer, already_current, identity_unproven, "
                "confirmed / not_applied (a past write whose answer was lost), failed.",
            )
        ],
    )
    def grade_sync(context: dg.AssetExecutionContext, lms: LmsApiResource, warehouse: WarehouseResource):
        """Write LMS grades that differ to the SIS, when ``write_back.enabled`` is set for the SIS (off by
        default), by the rules of ``lms_pipeline.writeback``: exact lookup and proven identity, compare-and-set,
        creation by PUT at a minted id, every write journaled before it is sent. Fails after the loop when any
        row failed."""
        connection_id, day = split_key(context)
        sis = lms.settings().sis_of(connection_id)
        if sis is None or not sis.write_back.enabled:
            reason = "no SIS for this connection" if sis is None else "write_back.enabled is false (the default)"
            yield dg.MaterializeResult(asset_key="grade_sync_log", metadata={"skipped": reason, "operations": 0})
            return
        dry = sis.write_back.dry_run
        summary, candidates = writeback.write_back_day(
            warehouse.warehouse(), lambda: lms.sis_client(connection_id, day, write=not dry), sis.id, connection_id,
            day, context.run_id, dry_run=dry,
        )  # fmt: skip
        outcomes = summary.outcomes
        yield dg.MaterializeResult(
            asset_key="grade_sync_log",
            metadata={
                "operations": sum(outcomes.values()),
                "dry_run": dry,
                "candidates": candidates,
                **{f"outcome_{k}": int(v) for k, v in sorted(outcomes.items())},
                **({"stopped": summary.stopped, "not_attempted": summary.not_attempted} if summary.stopped else {}),
            },
        )
        if summary.failed or summary.stopped:
            stopped = f"; {summary.stopped}, {summary.not_attempted} row(s) not attempted" if summary.stopped else ""
            raise dg.Failure(description=f"SIS {sis.id!r}: {summary.failed} grade write(s) failed{stopped}; see "
                             "grade_sync_log (outcome failed)")  # fmt: skip

    return [raw_grade_pages, grade_reconciliation, grade_sync]


def _skipped(connection_id: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"skipped": f"connection {connection_id!r} has no grades.sis in the connections file"}
    )


def _lms_side(conn: ConnectionConfig, store: Warehouse, day, grade_pages: pd.DataFrame) -> tuple:  # noqa: ANN001
    """(parsed LMS grades, LMS student emails, LMS contents) of the day, from the stored pages of the connection's
    grade source (``registry.grade_source``): Unified activities (stored by the progress assets), LTI AGS, Canvas
    or Classroom submissions."""
    pages = grade_pages[grade_pages["system"] == "lms"].rename(
        columns={"collection": "endpoint", "status_code": "status", "request_params": "params"}
    )
    sides = registry.grade_source(conn).sides(conn, pages, lambda name: store.read_partition(name, conn.id, day))
    part = {"snapshot_date": pd.Timestamp(day), "connection_id": conn.id}
    grades = parse_grades(sides.grades[SIDE_GRADE_COLUMNS].assign(**part))
    return grades, sides.students, sides.contents


def _report_metadata(report: pd.DataFrame, published) -> dict:  # noqa: ANN001
    counts = report["status"].value_counts()
    compared = report[report["status"].isin(["match", "score_mismatch"])]
    per_course = (
        compared.assign(is_match=compared["status"] == "match")
        .groupby("course_id")["is_match"].agg(["mean", "size"]).sort_values("mean").head(10)
    )  # fmt: skip
    table = "| course | match rate | compared |\n|---|---|---|\n" + "".join(
        f"| {course} | {rate:.1%} | {size} |\n" for course, (rate, size) in per_course.iterrows()
    )
    return {
        "dagster/row_count": len(report),
        **{f"status_{s}": int(counts.get(s, 0)) for s in DISCREPANCY_STATUSES},
        "match_rate": dg.MetadataValue.float(
            round(len(report[report["status"] == "match"]) / len(compared), 4) if len(compared) else 0.0
        ),  # fmt: skip
        "lowest_match_rate_courses": dg.MetadataValue.md(table),
        "analyst_copy": dg.MetadataValue.path(str(published.analysts_db)),
        "published": published.reason,
    }
