"""Models of the contents and learner progress tables, labelled against the day's rosters."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from lms_pipeline.schemas.pages import UTC, _Partitioned
from lms_pipeline.schemas.rosters import ROSTER_STATUSES

ENROLLMENT_STATES = ["enrolled", "not_enrolled", "roster_not_exposed"]


class CourseContent(_Partitioned):
    course_id: Series[str] = pa.Field(description="LMS course id")
    content_id: Series[str] = pa.Field(description="LMS content id (Canvas: an assignment)")
    name: Series[str] = pa.Field(nullable=True, description="content name")
    is_active: Series[pd.BooleanDtype] = pa.Field(nullable=True, description="LMS is_active flag; null if absent")
    duration_minutes: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0, description="expected duration")
    updated_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=UTC, description="LMS updated_at")

    class Config:
        unique = ["connection_id", "snapshot_date", "course_id", "content_id"]


class StudentProgress(_Partitioned):
    course_id: Series[str] = pa.Field(description="LMS course id")
    student_id: Series[str] = pa.Field(description="LMS user id of the learner (may never have been on the roster)")
    content_id: Series[str] = pa.Field(description="LMS content id")
    is_completed: Series[pd.BooleanDtype] = pa.Field(nullable=True, description="LMS is_completed; null if absent")
    progress_percentage: Series[float] = pa.Field(nullable=True, ge=0, le=100, description="progress, 0..100")
    started_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=UTC, description="LMS started_at")
    completed_at: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=UTC, description="LMS completed_at; null until completed"
    )
    updated_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=UTC, description="LMS updated_at")
    enrollment_state: Series[str] = pa.Field(
        isin=ENROLLMENT_STATES,
        description="enrolled / not_enrolled by that day's course_student_edges; roster_not_exposed when the "
        "course's roster is not exposed (unknown). Activity never implies enrollment.",
    )

    @pa.dataframe_check(description="completed_at >= started_at where both are set")
    def completed_after_started(cls, df: pd.DataFrame) -> Series[bool]:
        both = df["started_at"].notna() & df["completed_at"].notna()
        return ~both | (df["completed_at"] >= df["started_at"])

    class Config:
        unique = ["connection_id", "snapshot_date", "course_id", "student_id", "content_id"]


class CourseProgressSummary(_Partitioned):
    course_id: Series[str] = pa.Field(description="LMS course id")
    roster_status: Series[str] = pa.Field(isin=ROSTER_STATUSES, description="the course's roster_status that day")
    enrolled_students: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, ge=0, description="students on the roster; null when not exposed"
    )
    learners_with_activity: Series[int] = pa.Field(ge=0, description="distinct learners with any activity")
    enrolled_with_activity: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, ge=0, description="enrolled students with any activity; null when the roster is not exposed"
    )
    active_contents: Series[int] = pa.Field(ge=0, description="contents with is_active not false")
    completed_share: Series[float] = pa.Field(
        nullable=True, ge=0, le=1,
        description="completed (enrolled student, active content) pairs / all such pairs; null when unknown",
    )  # fmt: skip
    average_progress: Series[float] = pa.Field(
        nullable=True, ge=0, le=100,
        description="mean progress_percentage of enrolled students' activities (all activities when the roster is "
        "not exposed); null without any",
    )  # fmt: skip
    activities_not_on_roster: Series[int] = pa.Field(
        ge=0, description="activities of learners not on the exposed roster (dropped students, guests)"
    )

    class Config:
        unique = ["connection_id", "snapshot_date", "course_id"]
