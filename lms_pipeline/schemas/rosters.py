"""Models of the roster tables: the day's rosters and edges, and the change sets derived from them."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from lms_pipeline.schemas.pages import UTC, _Partitioned

ROSTER_STATUSES = ["exposed", "empty", "not_exposed"]
CHANGE_TYPES = ["added", "dropped"]
CHANGE_REASONS = ["enrolled", "unenrolled", "course_added", "course_removed", "course_deactivated"]


class CourseRoster(_Partitioned):
    course_id: Series[str] = pa.Field(description="LMS course id")
    course_name: Series[str] = pa.Field(nullable=True, description="course name as the LMS gives it")
    is_active: Series[pd.BooleanDtype] = pa.Field(nullable=True, description="LMS is_active flag; null if absent")
    roster_status: Series[str] = pa.Field(
        isin=ROSTER_STATUSES,
        description="exposed: students listed; empty: roster given and empty; not_exposed: the provider gave no "
        "roster (unknown, never read as empty)",
    )
    roster_source: Series[str] = pa.Field(
        nullable=True, description="field(s) the roster came from: student_ids, students or both"
    )
    student_count: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, ge=0, description="students on the roster; null when not exposed"
    )
    created_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=UTC, description="LMS created_at")
    updated_at: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=UTC, description="LMS updated_at (null when the provider omits it)"
    )
    fetched_on: Series[pd.Timestamp] = pa.Field(
        description="snapshot date of the scan that last read this course: earlier than snapshot_date when an "
        "incremental poll did not return it and it was carried forward"
    )

    @pa.dataframe_check(description="student_count is null exactly when the roster is not exposed")
    def count_null_iff_not_exposed(cls, df: pd.DataFrame) -> Series[bool]:
        return df["student_count"].isna() == (df["roster_status"] == "not_exposed")

    class Config:
        unique = ["connection_id", "snapshot_date", "course_id"]


class CourseStudentEdge(_Partitioned):
    course_id: Series[str] = pa.Field(description="LMS course id")
    student_id: Series[str] = pa.Field(description="LMS student id on the course's exposed roster")

    class Config:
        unique = ["connection_id", "snapshot_date", "course_id", "student_id"]


class ClassStudentEdge(_Partitioned):
    class_id: Series[str] = pa.Field(description="LMS class (section) id")
    course_id: Series[str] = pa.Field(nullable=True, description="course the class belongs to")
    student_id: Series[str] = pa.Field(description="LMS student id on the class roster")

    class Config:
        unique = ["connection_id", "snapshot_date", "class_id", "student_id"]


class EnrollmentChange(_Partitioned):
    previous_snapshot_date: Series[pd.Timestamp] = pa.Field(description="snapshot this one is compared with")
    course_id: Series[str] = pa.Field(description="LMS course id")
    student_id: Series[str] = pa.Field(description="LMS student id")
    change_type: Series[str] = pa.Field(isin=CHANGE_TYPES, description="added or dropped")
    reason: Series[str] = pa.Field(
        isin=CHANGE_REASONS,
        description="enrolled/unenrolled (roster change), course_added, course_removed, course_deactivated",
    )

    class Config:
        unique = ["connection_id", "snapshot_date", "course_id", "student_id"]


class EnrollmentChangeSet(_Partitioned):
    previous_snapshot_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="snapshot compared with; null for a baseline"
    )
    is_baseline: Series[bool] = pa.Field(description="first snapshot of the connection: no change rows by design")
    courses_compared: Series[int] = pa.Field(ge=0, description="courses with a known roster on both days")
    courses_not_exposed: Series[int] = pa.Field(ge=0, description="courses skipped: roster not exposed on a day")
    previous_edges: Series[int] = pa.Field(ge=0, description="edges in the previous snapshot")
    current_edges: Series[int] = pa.Field(ge=0, description="edges in this snapshot")
    added: Series[int] = pa.Field(ge=0, description="rows of change_type added")
    dropped: Series[int] = pa.Field(ge=0, description="rows of change_type dropped")
    drop_share: Series[float] = pa.Field(ge=0, le=1, description="dropped / previous_edges")
    max_drop_share: Series[float] = pa.Field(gt=0, le=1, description="guard threshold in force")
    guard: Series[str] = pa.Field(
        isin=["passed", "accepted_by_operator"],
        description="mass-drop guard outcome for a published change set",
    )

    class Config:
        unique = ["connection_id", "snapshot_date"]


class ChangeSetHold(_Partitioned):
    """A change set the mass-drop guard held: its day stays out of every analysts' table until it is released."""

    held_at: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs=UTC, description="when the guard held it")
    run_id: Series[str] = pa.Field(description="Dagster run that held it")
    reason: Series[str] = pa.Field(description="why, in words, with how to release it")
    previous_snapshot_date: Series[pd.Timestamp] = pa.Field(nullable=True, description="snapshot compared with")
    previous_edges: Series[int] = pa.Field(ge=0, description="edges in the previous snapshot")
    dropped: Series[int] = pa.Field(ge=0, description="edges the change set would drop")
    drop_share: Series[float] = pa.Field(ge=0, le=1, description="dropped / previous_edges")
    max_drop_share: Series[float] = pa.Field(gt=0, le=1, description="guard threshold in force")

    class Config:
        unique = ["connection_id", "snapshot_date"]
