"""Every table the pipeline writes, by name: its pandera model (the columns, types, nullability, checks and unique
key), from which the gate before each write (``checks.py``), the DuckDB DDL (``ddl.py``) and the data dictionary
(``lms_pipeline/data_dictionary.py``) are generated."""

from __future__ import annotations

import pandera.pandas as pa

from lms_pipeline.schemas.grades import GradeDiscrepancy, GradeSyncLog, LmsGrade
from lms_pipeline.schemas.pages import RawCoursePage, RawGradePage, RawProgressPage, SyncLog
from lms_pipeline.schemas.progress import CourseContent, CourseProgressSummary, StudentProgress
from lms_pipeline.schemas.roster_recon import RawSisRosterPage, RosterDiscrepancy
from lms_pipeline.schemas.rosters import (
    ChangeSetHold,
    ClassStudentEdge,
    CourseRoster,
    CourseStudentEdge,
    EnrollmentChange,
    EnrollmentChangeSet,
)

MODELS: dict[str, type[pa.DataFrameModel]] = {
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
    "raw_sis_roster_pages": RawSisRosterPage,
    "roster_discrepancies": RosterDiscrepancy,
}
