"""Models of the roster reconciliation tables: the SIS's rostering pages as fetched, and the disagreements between
the SIS (the roster of record) and the LMS, one row per (course or class, student)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from lms_pipeline.schemas.pages import UNCOMPRESSED_TEXT, _Partitioned, _RawPage

ROSTER_DISCREPANCY_STATUSES = ["missing_in_lms", "missing_in_sis", "section_mismatch", "unmapped_student",
                               "unmapped_course", "lms_roster_not_exposed"]  # fmt: skip
SIS_ROSTER_COLLECTIONS = ["courses", "classes", "academicSessions", "enrollments", "users"]


class RawSisRosterPage(_RawPage):
    """Every page of the SIS's OneRoster 1.2 rostering read of the day: what ``roster_discrepancies`` is rebuilt
    from without asking the SIS again."""

    sis_id: Series[str] = pa.Field(description="the SIS entry read (the connection's rosters.sis)")
    endpoint: Series[str] = pa.Field(isin=SIS_ROSTER_COLLECTIONS, description="the rostering collection listed")
    status_code: Series[int] = pa.Field(eq=200, description="HTTP status (a refused SIS listing fails the run)")
    payload: Series[str] = pa.Field(description="the page's records as a JSON array", metadata=UNCOMPRESSED_TEXT)

    class Config:
        unique = ["connection_id", "snapshot_date", "endpoint", "course_id", "url", "page_index"]


class RosterDiscrepancy(_Partitioned):
    row_key: Series[str] = pa.Field(
        description="<course>|<student>: the LMS course id (sis-class:<class sourcedId> for an SIS class no LMS "
        "course has) and the LMS student id (sis-user:<user sourcedId> for an SIS user no LMS student maps to); "
        "stable from day to day"
    )
    status: Series[str] = pa.Field(
        isin=ROSTER_DISCREPANCY_STATUSES,
        description="missing_in_lms: the SIS enrols the student, the LMS course does not; missing_in_sis: the "
        "reverse; section_mismatch: both enrol, in other sections; unmapped_student: no student on the other side "
        "matches (mapping file, then one exact email); unmapped_course: the course or class has no counterpart; "
        "lms_roster_not_exposed: the SIS enrols the student but the LMS does not expose the roster (unknown, never "
        "counted as missing)",
    )
    detail: Series[str] = pa.Field(description="why, in words")
    sis_id: Series[str] = pa.Field(description="the SIS the rosters were compared with")
    course_id: Series[str] = pa.Field(nullable=True, description="LMS course (null: an SIS class no course has)")
    sis_class_ids: Series[str] = pa.Field(
        nullable=True, description="SIS class sourcedId(s) enrolling the student in this course, comma-separated"
    )
    lms_student_id: Series[str] = pa.Field(nullable=True, description="LMS user (null: no LMS user matches)")
    sis_student_id: Series[str] = pa.Field(nullable=True, description="SIS user sourcedId (null: no SIS user matches)")
    student_match: Series[str] = pa.Field(nullable=True, isin=["mapping_file", "email"], description="how matched")
    lms_sections: Series[str] = pa.Field(nullable=True, description="LMS section id(s) of the student, comma-separated")
    sis_sections: Series[str] = pa.Field(
        nullable=True, description="LMS section id(s) the SIS classes stand for (their classCode), comma-separated"
    )
    first_seen: Series[pd.Timestamp] = pa.Field(
        description="first day of the unbroken run of days this row had this status (the day before had another "
        "status, no row, or was not reconciled)"
    )
    days_open: Series[int] = pa.Field(ge=1, description="days from first_seen to snapshot_date, both counted")

    @pa.dataframe_check(description="first_seen is on or before snapshot_date")
    def first_seen_not_after_snapshot(cls, df: pd.DataFrame) -> Series[bool]:
        return df["first_seen"] <= df["snapshot_date"]

    class Config:
        unique = ["connection_id", "snapshot_date", "row_key"]
