"""pandera models, one per published table: the schema is the data dictionary and the gate before any write.

``validate`` runs a model lazily and turns its failures into one message naming the table, the column and the
check, so an operator reading a failed run in the Dagster UI knows what broke without opening a notebook.

``check_stored`` runs the same model as SQL over a partition already written inside the open transaction, for the
tables too big to leave the warehouse (edges, rosters, changes): same checks, same message, and the caller's
rollback undoes the write. Why not pandera's own backends: the ibis backend (pandera 0.35 + ibis 12 over duckdb
2.0.0, tried 2026-12-01) validated a 10M-row edges table in 5.0 s at 1.4 GB peak (a query per check, the unique key as
a window count over every row), against 2.2 s at 0.76 GB for these generated checks (one scan with a FILTER per check,
one GROUP BY per unique key, within the warehouse's memory limit), and would add ibis, sqlglot and pyarrow to the lock;
the polars backend needs the day's rows copied out of DuckDB first.
"""

from __future__ import annotations

import re
from datetime import date
from typing import NamedTuple

import duckdb
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

ROSTER_STATUSES = ["exposed", "empty", "not_exposed"]
CHANGE_TYPES = ["added", "dropped"]
ENROLLMENT_STATES = ["enrolled", "not_enrolled", "roster_not_exposed"]
CHANGE_REASONS = ["enrolled", "unenrolled", "course_added", "course_removed", "course_deactivated"]
UTC = {"unit": "us", "tz": "UTC"}


class SchemaViolation(ValueError):
    """A frame failed its table's schema; nothing was written."""


class _Partitioned(pa.DataFrameModel):
    connection_id: Series[str] = pa.Field(description="LMS connection the row came from (partition dimension)")
    snapshot_date: Series[pd.Timestamp] = pa.Field(description="day of the snapshot (partition dimension)")

    class Config:
        coerce = True
        strict = True


class _RawPage(_Partitioned):
    """The columns every stored page has: what was asked, when it came, and the body as fetched."""

    page_index: Series[int] = pa.Field(ge=0, description="0-based position of the page in its scan")
    page_offset: Series[int] = pa.Field(ge=0, description="offset query parameter of the request")
    request_params: Series[str] = pa.Field(description="query parameters sent, as JSON; never a secret")
    fetched_at: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs=UTC, description="when the response arrived")
    status_code: Series[int] = pa.Field(eq=200, description="HTTP status of the stored response")
    attempts: Series[int] = pa.Field(ge=1, description="attempts the page took (retries + 1)")
    item_count: Series[int] = pa.Field(ge=0, description="items in the page; a short page ends the scan")
    payload: Series[str] = pa.Field(description="the response body as fetched: a JSON array of objects")
    run_id: Series[str] = pa.Field(nullable=True, description="Dagster run that fetched the page")


class RawCoursePage(_RawPage):
    endpoint: Series[str] = pa.Field(isin=["course", "class"], description="API object listed: course or class")

    class Config:
        unique = ["connection_id", "snapshot_date", "endpoint", "page_index"]


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


class SyncLog(_Partitioned):
    mode: Series[str] = pa.Field(isin=["full", "incremental"], description="full scan or updated_gte poll")
    mode_reason: Series[str] = pa.Field(description="why this mode was chosen, in words")
    technique: Series[str] = pa.Field(
        description="how the listing was paged: keyset_updated_at, repeat_until_stable or single_pass (per endpoint "
        "when they differ, e.g. 'course=keyset_updated_at; class=repeat_until_stable')"
    )
    passes: Series[int] = pa.Field(ge=1, description="most full passes one endpoint needed (repeat_until_stable)")
    catch_up_rounds: Series[int] = pa.Field(
        ge=0, description="re-polls from each keyset endpoint's high-water mark until nothing newer came"
    )
    catch_up_converged: Series[bool] = pa.Field(
        description="false: the listing still changed after the last round (endpoints are as of their last read)"
    )
    updated_gte: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=UTC, description="updated_gte of an incremental poll (null for a full scan)"
    )
    high_water: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=UTC, description="newest updated_at the snapshot has seen: the next poll's start"
    )
    base_snapshot_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="snapshot an incremental poll's changes were applied to (null for a full scan)"
    )
    last_full_scan_date: Series[pd.Timestamp] = pa.Field(description="the full scan this snapshot descends from")
    courses_listed: Series[int] = pa.Field(ge=0, description="course records returned (duplicates included)")
    classes_listed: Series[int] = pa.Field(ge=0, description="class records returned (duplicates included)")
    requests: Series[int] = pa.Field(ge=0, description="HTTP requests sent, retries included")
    pages: Series[int] = pa.Field(ge=0, description="pages read, including discarded passes")
    retries: Series[int] = pa.Field(ge=0, description="requests retried")
    throttled: Series[int] = pa.Field(ge=0, description="429 answers")
    server_errors: Series[int] = pa.Field(ge=0, description="retryable 5xx answers")
    duration_seconds: Series[float] = pa.Field(ge=0, description="wall time of the fetch")
    run_id: Series[str] = pa.Field(nullable=True, description="Dagster run that fetched")

    class Config:
        unique = ["connection_id", "snapshot_date"]


class RawProgressPage(_RawPage):
    endpoint: Series[str] = pa.Field(isin=["content", "activity"], description="API object listed")
    course_id: Series[str] = pa.Field(description="the course_id filter of the request (one scan per course)")

    class Config:
        unique = ["connection_id", "snapshot_date", "endpoint", "course_id", "page_index"]


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


GRADE_STATUSES = ["graded", "excused", "incomplete", "ungraded", "missing", "unparseable"]
DISCREPANCY_STATUSES = ["match", "score_mismatch", "missing_in_sis", "missing_in_lms", "unmapped_student",
                        "unmapped_assignment", "unparseable"]  # fmt: skip
# grade_sync_log: ``pending`` on an intent row (a write about to be sent), the rest on outcome rows (see writeback.py).
SYNC_OUTCOMES = ["pending", "created", "updated", "conflict", "would_write", "skipped_sis_newer", "already_current",
                 "identity_unproven", "confirmed", "not_applied", "failed"]  # fmt: skip


class RawDialectPage(_Partitioned):
    """A page of a non-Unified dialect, as fetched: a refused page (403, Canvas's 401) is kept too (it is why a
    roster is not exposed)."""

    provider: Series[str] = pa.Field(isin=["canvas", "google_classroom", "oneroster"], description="dialect")
    endpoint: Series[str] = pa.Field(description="what was listed: courses, enrollments, sections, students, ...")
    course_id: Series[str] = pa.Field(nullable=True, description="the course whose roster the page holds")
    page_index: Series[int] = pa.Field(ge=0, description="0-based position in its listing")
    url: Series[str] = pa.Field(description="the URL requested (a Link/next URL as given); never a secret")
    request_params: Series[str] = pa.Field(description="query parameters sent, as JSON")
    status_code: Series[int] = pa.Field(
        isin=[200, 401, 403], description="200, or 401/403 (Canvas answers 401): the roster is refused (unknown)"
    )
    fetched_at: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs=UTC, description="when the response arrived")
    payload: Series[str] = pa.Field(description="the response body as fetched")
    run_id: Series[str] = pa.Field(nullable=True, description="Dagster run that fetched the page")

    class Config:
        unique = ["connection_id", "snapshot_date", "endpoint", "course_id", "url", "page_index"]


class RawGradePage(_RawPage):
    system: Series[str] = pa.Field(isin=["lms", "sis"], description="lms: the LMS student list; sis: the SIS")
    collection: Series[str] = pa.Field(
        isin=["student", "users", "classes", "lineItems", "results", "courses", "assignments", "submissions",
              "grading_standards", "aliases", "students", "courseWork", "studentSubmissions", "contexts", "lineitems",
              "memberships"],
        description="object listed: the SIS's users, classes, lineItems, results; the LMS's student list (Unified), "
        "its courses, assignments, submissions and grading standards (Canvas), or its courses, aliases, students, "
        "courseWork and studentSubmissions (Google Classroom), or LTI contexts, lineitems, results and memberships",
    )  # fmt: skip
    course_id: Series[str] = pa.Field(nullable=True, description="the LMS course a per-course listing belongs to")
    url: Series[str] = pa.Field(nullable=True, description="the URL requested, where paging follows links")
    status_code: Series[int] = pa.Field(
        isin=[200, 401, 403], description="200, or 401/403 (Canvas answers 401): an LMS course refused (unknown)"
    )
    total_count: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0, description="X-Total-Count the SIS sent")

    class Config:
        unique = ["connection_id", "snapshot_date", "system", "collection", "course_id", "url", "page_index"]


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


MODELS: dict[str, type[pa.DataFrameModel]] = {
    "raw_dialect_pages": RawDialectPage,
    "raw_grade_pages": RawGradePage,
    "lms_grades": LmsGrade,
    "grade_discrepancies": GradeDiscrepancy,
    "grade_sync_log": GradeSyncLog,
    "raw_course_pages": RawCoursePage,
    "sync_log": SyncLog,
    "raw_progress_pages": RawProgressPage,
    "course_contents": CourseContent,
    "student_progress": StudentProgress,
    "course_progress_summary": CourseProgressSummary,
    "course_rosters": CourseRoster,
    "course_student_edges": CourseStudentEdge,
    "class_student_edges": ClassStudentEdge,
    "enrollment_changes": EnrollmentChange,
    "enrollment_change_sets": EnrollmentChangeSet,
    "change_set_holds": ChangeSetHold,
}


# The dataframe-wide checks above, as SQL conditions that hold for a valid row (NULL counts as a failure):
# ``check_stored`` refuses a model whose custom check has no twin here, so the two cannot drift apart silently.
SQL_CHECKS: dict[str, str] = {
    "count_null_iff_not_exposed": "(student_count IS NULL) = (roster_status = 'not_exposed')",
    "completed_after_started": "started_at IS NULL OR completed_at IS NULL OR completed_at >= started_at",
}
PARTITION_COLUMNS = ("connection_id", "snapshot_date")


def validate(table: str, frame: pd.DataFrame, shown: int = 8) -> pd.DataFrame:
    """Validate (and coerce) a frame for ``table``; raise SchemaViolation naming table, column and check."""
    try:
        # A fresh index: pandera's report of duplicate keys fails on a duplicated index (e.g. after concat).
        return MODELS[table].validate(frame.reset_index(drop=True), lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.assign(column=lambda d: d["column"].fillna("(table)").astype(str))
        lines = []
        dup = cases["check"] == "multiple_fields_uniqueness"
        if dup.any():
            key = ", ".join(MODELS[table].Config.unique)
            rows = cases.loc[dup, "index"].nunique()
            lines.append(f"columns ({key}): duplicate key in {rows} row(s)")
        grouped = cases[~dup].groupby(["column", "check"], sort=True)["failure_case"]
        for (column, check), failures in list(grouped)[:shown]:
            examples = ", ".join(map(repr, failures.head(3).tolist()))
            lines.append(f"column '{column}': check {check} failed for {len(failures)} row(s), e.g. {examples}")
        raise SchemaViolation(f"table {table}: schema validation failed\n  " + "\n  ".join(lines)) from None


def check_stored(
    conn: duckdb.DuckDBPyConnection, table: str, relation: str, connection_id: str, snapshot_date: date, shown: int = 8
) -> None:
    """Check the rows of one partition of ``relation`` (the stored ``table``) against ``table``'s model, in SQL;
    raise ``SchemaViolation`` worded as ``validate`` words it. Column types are the table's DDL, so dtype checks
    have nothing to add; nullability, value checks, dataframe checks (``SQL_CHECKS``), unique keys and strictness
    are checked."""
    schema = MODELS[table].to_schema()
    where = "connection_id = ? AND snapshot_date = ?"
    partition = [connection_id, snapshot_date]
    checks = _sql_checks(schema)
    lines = _strictness(conn, schema, relation)
    if schema.unique:
        # Within one partition the partition columns are constant: grouping by the rest is the same key, cheaper.
        key = [c for c in schema.unique if c not in PARTITION_COLUMNS] or list(schema.unique)
        (rows,) = conn.execute(
            f"SELECT coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {relation} WHERE {where} "
            f"GROUP BY {', '.join(map(_quoted, key))} HAVING count(*) > 1)",
            partition,
        ).fetchone()
        if rows:
            lines.append(f"columns ({', '.join(schema.unique)}): duplicate key in {rows} row(s)")
    if checks:
        counts = conn.execute(
            f"SELECT {', '.join(f'count(*) FILTER (WHERE {c.failing})' for c in checks)} FROM {relation} WHERE {where}",
            [p for c in checks for p in c.params] + partition,
        ).fetchone()
        failed = sorted(((c, n) for c, n in zip(checks, counts, strict=True) if n), key=lambda f: f[0][:2])
        for check, n in failed[:shown]:
            examples = conn.execute(
                f"SELECT {check.example} FROM {relation} WHERE {where} AND ({check.failing}) LIMIT 3",
                partition + check.params,
            ).fetchall()
            shown_examples = ", ".join(repr(row[0]) for row in examples)
            lines.append(f"column '{check.column}': check {check.label} failed for {n} row(s), e.g. {shown_examples}")
    if lines:
        raise SchemaViolation(f"table {table}: schema validation failed\n  " + "\n  ".join(lines))


class _SqlCheck(NamedTuple):
    """One pandera check as a SQL condition that is true for a failing row."""

    column: str
    label: str
    failing: str
    params: list
    example: str


def _sql_checks(schema: pa.DataFrameSchema) -> list[_SqlCheck]:
    out = []
    for name, column in schema.columns.items():
        col = _quoted(name)
        if not column.nullable:
            out.append(_SqlCheck(name, "not_nullable", f"{col} IS NULL", [], col))
        for check in column.checks:
            holds, params = _condition(check, col)
            failing = f"{col} IS NOT NULL AND NOT ({holds})" if check.ignore_na else f"NOT coalesce({holds}, false)"
            out.append(_SqlCheck(name, check.error or check.name, failing, params, col))
    key = ", ".join(map(_quoted, schema.unique or list(schema.columns)[:3]))
    for check in schema.checks:
        if check.name not in SQL_CHECKS:
            raise TypeError(f"dataframe check {check.name!r} has no SQL twin in schemas.SQL_CHECKS")
        out.append(_SqlCheck("(table)", check.name, f"NOT coalesce(({SQL_CHECKS[check.name]}), false)", [],
                             f"struct_pack({key})"))  # fmt: skip
    return out


def _condition(check: pa.Check, col: str) -> tuple[str, list]:
    """The SQL that holds for a valid value of a built-in pandera check, with its bound parameters."""
    stats = check.statistics
    simple = {"greater_than_or_equal_to": (">=", "min_value"), "greater_than": (">", "min_value"),
              "less_than_or_equal_to": ("<=", "max_value"), "less_than": ("<", "max_value"),
              "equal_to": ("=", "value"), "not_equal_to": ("<>", "value")}  # fmt: skip
    if check.name in simple:
        op, stat = simple[check.name]
        return f"{col} {op} ?", [stats[stat]]
    if check.name == "isin":
        return f"list_contains(?, {col})", [list(stats["allowed_values"])]
    if check.name == "notin":
        return f"NOT list_contains(?, {col})", [list(stats["forbidden_values"])]
    if check.name == "in_range":
        low = ">=" if stats.get("include_min", True) else ">"
        high = "<=" if stats.get("include_max", True) else "<"
        return f"{col} {low} ? AND {col} {high} ?", [stats["min_value"], stats["max_value"]]
    raise TypeError(f"check {check.name!r} has no SQL form (schemas._condition)")


def _strictness(conn: duckdb.DuckDBPyConnection, schema: pa.DataFrameSchema, relation: str) -> list[str]:
    """pandera's ``strict``: the stored table has exactly the model's columns."""
    if not schema.strict:
        return []
    stored = [row[0] for row in conn.execute(f"SELECT * FROM {relation} LIMIT 0").description]
    lines = [f"column '{c}': check column_in_schema failed for 1 row(s), e.g. {c!r}" for c in stored
             if c not in schema.columns]  # fmt: skip
    lines += [f"column '{c}': check column_in_dataframe failed for 1 row(s), e.g. {c!r}" for c in schema.columns
              if c not in stored]  # fmt: skip
    return lines


_CONSTRAINT = re.compile(r"NOT NULL constraint failed: (?:\w+\.)?(\w+)\.(\w+)")


def constraint_violation(exc: duckdb.ConstraintException) -> SchemaViolation:
    """A NOT NULL refused by the table itself while an ``INSERT ... SELECT`` ran, worded as ``validate`` words it."""
    found = _CONSTRAINT.search(str(exc))
    if not found:
        return SchemaViolation(f"schema validation failed: {exc}")
    table, column = found.groups()
    return SchemaViolation(f"table {table}: schema validation failed\n  column '{column}': check not_nullable "
                           "failed (the table's NOT NULL constraint refused the write)")  # fmt: skip


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
