"""LMS grades vs the SIS gradebook: identity and assignment matching, then one status per (student, line item).

Matching, in order (a mapping-file row always wins; nothing is guessed):
* LMS user -> SIS user: the mapping file, else the one active SIS user whose email equals one of the LMS
  student's emails (case-insensitive). Zero or several candidates leave the student unmapped, with the reason.
* LMS course -> SIS class: the one active class whose ``classCode`` is the LMS course id.
* LMS content -> SIS line item: the mapping file, else the one active line item of that class with the content's
  title (case-insensitive, trimmed).

Statuses (first that applies), for rows where the LMS or the SIS holds a value:
``unmapped_student``, ``unmapped_assignment`` (also: a letter line item in a course without a grading scheme),
``unparseable``, ``missing_in_sis`` (LMS value, no active SIS result: ``tobedeleted`` counts as absent),
``missing_in_lms`` (SIS value, the LMS grade empty or absent), then ``match`` / ``score_mismatch``: excused only
matches exempt; letter line items compare the LMS letter (given, or the percent through the course's scheme) with
``textScore``; points line items compare percents (score / resultValueMax) within ``tolerance`` points.
SIS results no LMS row reaches are reported too: unmapped if their student or line item maps to no LMS id, else
``missing_in_lms``.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from lms_pipeline import statements

SQL = statements.load(Path(__file__).with_suffix(".sql"))

SIS_COLLECTIONS = ("users", "classes", "lineItems", "results")


def sis_frames(pages: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Stored SIS pages (``collection``, ``payload``: a JSON array) -> one frame per collection; a record listed
    twice (a page boundary moved) is kept once."""
    out = {}
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.register("pages", pages[["system", "collection", "payload"]])
        for collection in SIS_COLLECTIONS:
            out[collection] = conn.execute(SQL[f"sis_{collection.lower()}"]).df()
    return out


def reconcile(
    lms_grades: pd.DataFrame,
    lms_students: pd.DataFrame,
    contents: pd.DataFrame,
    sis: dict[str, pd.DataFrame],
    student_map: pd.DataFrame,
    assignment_map: pd.DataFrame,
    tolerance: float,
) -> pd.DataFrame:
    """One row per (student, line item) where either side holds a value, with its status and both values.

    ``lms_grades``: parsed and lettered LMS grades (``transforms.grades``); ``lms_students``: (student_id, email);
    ``contents``: (course_id, content_id, name); ``sis``: frames from ``sis_frames``; the maps: mapping-file rows of
    this connection. Pure: the asset stores what this returns.
    """
    with duckdb.connect() as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for name, frame in {
            "lms_grades": lms_grades, "lms_students": lms_students, "contents": contents,
            "sis_users": sis["users"], "sis_classes": sis["classes"], "sis_line_items": sis["lineItems"],
            "sis_results": sis["results"], "student_map": student_map, "assignment_map": assignment_map,
        }.items():  # fmt: skip
            conn.register(name, frame)
        out = statements.run(conn, SQL["reconcile"], {"tolerance": tolerance}).df()
    out["sis_late"] = out["sis_late"].astype("boolean")
    out["letter_scale"] = out["letter_scale"].astype("boolean")
    return out
