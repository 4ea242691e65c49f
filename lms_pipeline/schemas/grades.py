"""Models of the grade tables: the LMS grades, the discrepancy report and the write-back journal."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from lms_pipeline.schemas.pages import UTC, _Partitioned

GRADE_STATUSES = ["graded", "excused", "incomplete", "ungraded", "missing", "unparseable"]
DISCREPANCY_STATUSES = ["match", "score_mismatch", "missing_in_sis", "missing_in_lms", "unmapped_student",
                        "unmapped_assignment", "unparseable"]  # fmt: skip
# grade_sync_log: ``pending`` on an intent row (a write about to be sent), the rest on outcome rows (see writeback.py).
SYNC_OUTCOMES = ["pending", "created", "updated", "conflict", "would_write", "skipped_sis_newer", "already_current",
                 "identity_unproven", "confirmed", "not_applied", "failed"]  # fmt: skip


class LmsGrade(_Partitioned):
    course_id: Series[str] = pa.Field(description="LMS course id")
    content_id: Series[str] = pa.Field(description="LMS content (assignment) id")
    student_id: Series[str] = pa.Field(description="LMS user id of the learner")
    raw_grade: Series[str] = pa.Field(nullable=True, description="assigned_grade exactly as the LMS gave it")
    grade_status: Series[str] = pa.Field(
        isin=GRADE_STATUSES,
        description="graded (a percent or a letter), excused, incomplete, ungraded (empty: not graded yet), "
        "missing (no grade field), unparseable (kept verbatim, flagged). A graded 0 is a score, never empty.",
    )
    percent: Series[float] = pa.Field(nullable=True, description="score in percent, exact to 6 decimals")
    letter_given: Series[str] = pa.Field(nullable=True, description="letter when the LMS gave a letter")
    points_possible: Series[float] = pa.Field(nullable=True, description="points possible, when the LMS gives it")
    graded_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=UTC, description="activity updated_at")
    scheme: Series[str] = pa.Field(nullable=True, description="the course's grading scheme (null: none configured)")
    rounded_percent: Series[float] = pa.Field(nullable=True, description="percent at the scheme's precision")
    letter: Series[str] = pa.Field(nullable=True, description="letter by the course's scheme")

    class Config:
        unique = ["connection_id", "snapshot_date", "course_id", "content_id", "student_id"]


class GradeDiscrepancy(_Partitioned):
    row_key: Series[str] = pa.Field(
        description="lms|course|content|student for rows with an LMS grade, sis|result for SIS-only rows"
    )
    status: Series[str] = pa.Field(isin=DISCREPANCY_STATUSES, description="reconciliation outcome")
    detail: Series[str] = pa.Field(nullable=True, description="why, in words (the unmapped reason, what differs)")
    sis_id: Series[str] = pa.Field(description="SIS the grades were compared with")
    course_id: Series[str] = pa.Field(nullable=True, description="LMS course")
    content_id: Series[str] = pa.Field(nullable=True, description="LMS content (assignment)")
    lms_student_id: Series[str] = pa.Field(nullable=True, description="LMS user")
    sis_student_id: Series[str] = pa.Field(nullable=True, description="SIS user sourcedId it maps to")
    sis_line_item_id: Series[str] = pa.Field(nullable=True, description="SIS line item sourcedId it maps to")
    sis_result_id: Series[str] = pa.Field(nullable=True, description="SIS result sourcedId (active results only)")
    student_match: Series[str] = pa.Field(nullable=True, isin=["mapping_file", "email"], description="how matched")
    item_match: Series[str] = pa.Field(nullable=True, isin=["mapping_file", "title"], description="how matched")
    lms_raw_grade: Series[str] = pa.Field(nullable=True, description="LMS grade as given")
    lms_grade_status: Series[str] = pa.Field(nullable=True, isin=GRADE_STATUSES, description="parsed LMS status")
    lms_percent: Series[float] = pa.Field(nullable=True, description="LMS percent")
    lms_letter: Series[str] = pa.Field(nullable=True, description="LMS letter (given, or by the course's scheme)")
    lms_graded_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=UTC, description="LMS time")
    scheme: Series[str] = pa.Field(nullable=True, description="grading scheme used for letters")
    sis_score_status: Series[str] = pa.Field(nullable=True, description="SIS scoreStatus")
    sis_score: Series[float] = pa.Field(nullable=True, description="SIS score in points")
    sis_result_max: Series[float] = pa.Field(nullable=True, description="line item resultValueMax")
    sis_text_score: Series[str] = pa.Field(nullable=True, description="SIS textScore (letter line items)")
    sis_percent: Series[float] = pa.Field(nullable=True, description="SIS score / resultValueMax x 100")
    sis_modified_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=UTC, description="SIS time")
    sis_late: Series[pd.BooleanDtype] = pa.Field(nullable=True, description="SIS late flag")
    letter_scale: Series[pd.BooleanDtype] = pa.Field(nullable=True, description="the line item is letter-graded")

    class Config:
        unique = ["connection_id", "snapshot_date", "row_key"]


class GradeSyncLog(_Partitioned):
    """The write-back journal, append-only: an intent row before each write, an outcome row after it (same
    operation_id), and one outcome row for each decision that sends nothing."""

    run_id: Series[str] = pa.Field(description="Dagster run that made the operation")
    operation_id: Series[str] = pa.Field(description="one operation: its intent row and its outcome row(s)")
    phase: Series[str] = pa.Field(isin=["intent", "outcome"], description="intent: about to send; outcome: done")
    attempted_at: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs=UTC, description="when it was sent/decided")
    sis_id: Series[str] = pa.Field(description="SIS written to")
    row_key: Series[str] = pa.Field(description="grade_discrepancies row it acted on")
    lms_student_id: Series[str] = pa.Field(description="LMS user")
    sis_student_id: Series[str] = pa.Field(description="SIS user")
    sis_line_item_id: Series[str] = pa.Field(description="SIS line item")
    sis_result_id: Series[str] = pa.Field(nullable=True, description="result written (or that would be)")
    method: Series[str] = pa.Field(nullable=True, isin=["POST", "PUT"], description="HTTP method; null if none sent")
    http_status: Series[pd.Int64Dtype] = pa.Field(nullable=True, description="SIS answer; null if nothing sent")
    score_status_written: Series[str] = pa.Field(nullable=True, description="scoreStatus sent")
    score_written: Series[float] = pa.Field(nullable=True, description="score sent (points)")
    text_score_written: Series[str] = pa.Field(nullable=True, description="textScore sent (letter items)")
    previous_score: Series[float] = pa.Field(nullable=True, description="SIS score before the write")
    previous_text_score: Series[str] = pa.Field(nullable=True, description="SIS textScore before the write")
    previous_modified_at: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=UTC, description="SIS dateLastModified before the write"
    )
    outcome: Series[str] = pa.Field(isin=SYNC_OUTCOMES, description="what happened")
    detail: Series[str] = pa.Field(
        nullable=True, description="the SIS's words on failure, the rule applied, or how the result was identified"
    )
    dry_run: Series[bool] = pa.Field(description="true: nothing was sent")
