"""Exports for people outside the warehouse (a registrar's office, a district's data team): per day and
connection, the change set and the grade discrepancies as CSV and Parquet files, with the grade issues also one
file per course.

Layout: ``<exports>/<date>/<connection>/enrollment_changes.{csv,parquet}``, ``grade_discrepancies.{csv,parquet}``
(connections reconciled with an SIS) and ``grade_discrepancies_by_course/<course>.csv``. ``<exports>`` is
``exports.path`` of the connections file, default ``exports/`` beside the warehouse (``data/exports``).

The files are written from the analysts' copy (``lms_pipeline.published``), never from the live tables: what leaves
the warehouse is what analysts see, a held day is never exported, and an erasure (``lms_pipeline.privacy``)
rewrites the exports it touches from the republished day. A day's folder is swapped in whole.
"""

import os
import shutil
from datetime import date
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import duckdb

from lms_pipeline import published
from lms_pipeline.partitions import split_key
from lms_pipeline.resources import LmsApiResource, WarehouseResource

GROUP = "exports"
EXPORTED = ("enrollment_changes", "grade_discrepancies")


class ExportRefused(RuntimeError):
    """The day is not published (held, or not built yet): nothing is exported for it."""


def day_export_folder(root: Path, connection_id: str, day: date) -> Path:
    return root / day.isoformat() / connection_id


def _published_file(live: Path, connection_id: str, day: date, name: str) -> Path:
    """The day's published Parquet file of ``name``, or the zero-row schema file when the day has no such rows."""
    found = published.day_folder(live, connection_id, day) / f"{name}.parquet"
    if found.exists():
        return found
    return published.files_root(live).joinpath("days", *published.SCHEMA_DAY, f"{name}.parquet")


def write_exports(live: Path, root: Path, connection_id: str, day: date, with_grades: bool) -> dict[str, int]:
    """Write one (connection, day)'s export folder from its published version; returns rows per file written."""
    if not (published.day_folder(live, connection_id, day) / "enrollment_change_sets.parquet").exists():
        raise ExportRefused(
            f"{connection_id}|{day} is not published (its change set is held or not built): nothing is exported"
        )
    target = day_export_folder(root, connection_id, day)
    staging = target.with_name(f".{connection_id}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    counts: dict[str, int] = {}
    with duckdb.connect() as conn:
        for name in EXPORTED if with_grades else EXPORTED[:1]:
            source = _published_file(live, connection_id, day, name)
            rows = f"SELECT * FROM read_parquet({_literal(source)}) ORDER BY ALL"
            for fmt, suffix in (("csv, header true", "csv"), ("parquet", "parquet")):
                (n,) = conn.execute(f"COPY ({rows}) TO {_literal(staging / f'{name}.{suffix}')} (FORMAT {fmt})"
                                    ).fetchone()  # fmt: skip
                counts[f"{name}.{suffix}"] = int(n)
        if with_grades:
            by_course = staging / "grade_discrepancies_by_course"
            by_course.mkdir()
            source = _literal(_published_file(live, connection_id, day, "grade_discrepancies"))
            courses = conn.execute(f"SELECT DISTINCT course_id FROM read_parquet({source}) "
                                   "WHERE course_id IS NOT NULL ORDER BY 1").fetchall()  # fmt: skip
            for (course,) in courses:
                out = by_course / f"{quote(course, safe='')}.csv"
                conn.execute(f"COPY (SELECT * FROM read_parquet({source}) WHERE course_id = $1 ORDER BY ALL) "
                             f"TO {_literal(out)} (FORMAT csv, header true)", [course])  # fmt: skip
            counts["courses"] = len(courses)
    old = target.with_name(f".{connection_id}.{os.getpid()}.old")
    if target.exists():
        os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    return counts


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def build_export_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        name="daily_exports",
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"csv", "parquet"},
        deps=["enrollment_changes", "enrollment_change_sets", "grade_discrepancies"],
    )
    def daily_exports(
        context: dg.AssetExecutionContext, lms: LmsApiResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """The day's change set and grade discrepancies of one connection as CSV and Parquet files under
        exports/<date>/<connection>/ (grade issues also one CSV per course), written from the analysts' copy: a
        held day is never exported."""
        connection_id, day = split_key(context)
        settings = lms.settings()
        live, root = warehouse.warehouse().path, settings.exports_path()
        try:
            counts = write_exports(live, root, connection_id, day, settings.sis_of(connection_id) is not None)
        except ExportRefused as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from None
        return dg.MaterializeResult(
            metadata={
                "folder": dg.MetadataValue.path(str(day_export_folder(root, connection_id, day))),
                "change_rows": counts["enrollment_changes.csv"],
                "grade_rows": counts.get("grade_discrepancies.csv", 0),
                "grade_courses": counts.get("courses", 0),
            }
        )

    return [daily_exports]
