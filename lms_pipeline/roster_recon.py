"""Roster reconciliation: the SIS's rosters (the roster of record, read over OneRoster 1.2 rostering) against the
LMS's, one row per (course or SIS class, student) where they disagree (``roster_discrepancies``).

The SIS is read with the project's OneRoster rostering reader (``providers/oneroster/rostering.py``: courses,
classes, academicSessions, each class's enrollments, every listing to its end) plus the users listing (emails), and
normalized with the same SQL as a OneRoster LMS connection, so "enrolled" means the same on both sides (active,
role student, the day inside ``beginDate``..``endDate``). Matching is the grade reconciliation's (``grade_inputs``,
``transforms/reconcile.py``): students by the mapping file, then one exact email, never a guess; courses by the
class whose ``classCode`` is the LMS course id, extended to sections (``roster_recon.sql``). A roster the LMS does
not expose is unknown: its SIS students are ``lms_roster_not_exposed``, never ``missing_in_lms``.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.grade_inputs import STUDENT_MAP_COLUMNS, check_known, read_mapping
from lms_pipeline.providers.base import RawPage
from lms_pipeline.providers.http import RetrySettings
from lms_pipeline.providers.oneroster.rostering import OneRosterRosterReader
from lms_pipeline.providers.oneroster.rosters import normalize_oneroster_pages

if TYPE_CHECKING:
    from lms_pipeline.config import SisConfig

SQL = statements.load(Path(__file__).with_suffix(".sql"))
COLUMNS = ["row_key", "status", "detail", "course_id", "sis_class_ids", "lms_student_id", "sis_student_id",
           "student_match", "lms_sections", "sis_sections", "first_seen", "days_open"]  # fmt: skip


class SisRosterError(ValueError):
    """The SIS's rostering pages cannot be the roster of record; the message names the SIS and the cause."""


class SisRosterReader(OneRosterRosterReader):
    """The rostering reader pointed at an SIS, reading its users too: their emails are how students are matched."""

    def sis_pages(self) -> list[RawPage]:
        return self.roster_pages() + self._listing("users", {}, None)


def open_reader(sis: SisConfig, base_url: str, credentials: tuple[str, str], day: date | None) -> SisRosterReader:
    """A reader of ``sis`` (``day`` goes to a simulated SIS as X-Simulated-Date); the caller closes it."""
    retry: RetrySettings = sis.retry.settings()
    return SisRosterReader(sis.id, base_url, *credentials, retry=retry, simulated_date=day)


def sis_frames(pages: pd.DataFrame, sis_id: str, day: date) -> dict[str, pd.DataFrame]:
    """Stored SIS pages (``raw_sis_roster_pages``) -> who the SIS enrols in which class on ``day``
    (``sis_class_edges``: class_id, course_id, student_id = SIS user) and its classes, courses and users."""
    frame = pages.rename(columns={"request_params": "params", "status_code": "status"})
    try:
        rosters, _, class_edges = normalize_oneroster_pages(frame[frame["endpoint"] != "users"], sis_id, day)
    except ValueError as exc:
        raise SisRosterError(f"SIS {sis_id!r} rostering: {exc}") from None
    refused = rosters[rosters["roster_status"] == "not_exposed"]
    if len(refused):  # the roster of record must be read whole: a refused class would read as every student missing
        courses = ", ".join(refused["course_id"].head(5))
        raise SisRosterError(f"SIS {sis_id!r} rostering: the enrollments of SIS course(s) {courses} were not read "
                             "(refused or not listed)")  # fmt: skip
    out = {"sis_class_edges": class_edges}
    with duckdb.connect() as conn:
        conn.register("pages", pages[["endpoint", "payload"]])
        for name in ("sis_classes", "sis_courses", "sis_users"):
            out[name] = conn.execute(SQL[name]).df()
    return out


def student_map(sis: SisConfig, connection_id: str, sis_users: pd.DataFrame) -> pd.DataFrame:
    """The grade reconciliation's student mapping rows of this connection: errors name the file, the line and the
    problem (``GradeInputError``), and an SIS user the SIS does not list is one (a typo maps nobody)."""
    path = sis.path("student_map")
    rows = read_mapping(path, STUDENT_MAP_COLUMNS, ("lms_connection_id", "lms_user_id"), "sis_user_id")
    rows = rows[rows["lms_connection_id"] == connection_id]
    check_known(rows, path, "sis_user_id", sis_users["sourced_id"], f"SIS {sis.id} user")
    return rows.drop(columns="line")


def reconcile_rosters(
    sis: dict[str, pd.DataFrame],
    lms_rosters: pd.DataFrame,
    lms_edges: pd.DataFrame,
    lms_class_edges: pd.DataFrame,
    lms_students: pd.DataFrame,
    mapping: pd.DataFrame,
    previous: pd.DataFrame,
    day: date,
) -> pd.DataFrame:
    """One row per disagreement (``COLUMNS``), with since when it has lasted: ``previous`` is the day before's
    report of the connection (row_key, status, first_seen; empty when there is none). Pure: the asset stores what
    this returns."""
    frames = {"sis_class_edges": sis["sis_class_edges"], "sis_classes": sis["sis_classes"],
              "sis_courses": sis["sis_courses"], "sis_users": sis["sis_users"],
              "lms_rosters": lms_rosters[["course_id", "roster_status"]],
              "lms_edges": lms_edges[["course_id", "student_id"]],
              "lms_class_edges": lms_class_edges[["class_id", "course_id", "student_id"]],
              "lms_students": lms_students[["student_id", "email"]],
              "student_map": mapping[["lms_user_id", "sis_user_id"]],
              "previous": previous[["row_key", "status", "first_seen"]]}  # fmt: skip
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for name, frame in frames.items():
            conn.register(name, frame)
        out = statements.run(conn, SQL["discrepancies"], {"day": day}).df()
    return out[COLUMNS]
