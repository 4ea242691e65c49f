"""LTI AGS raw pages (``LtiAgsClient.grade_pages``) -> LMS grades, in DuckDB SQL.

One row per AGS result: ``course_id`` (the context), ``content_id`` (the line item's ``resourceId``, else
``lti-lineitem:<id>``), ``student_id``, ``raw_grade``, ``score_given``, ``score_maximum``, ``percent``,
``grade_status``, ``lti_user_id``, ``identity_matched`` and ``comment``.

What AGS can and cannot say (docs/providers.md §3.3, peers-and-user-pains.md item 16):

- A result with ``resultScore`` is ``graded``: ``raw_grade`` is ``"<resultScore>/<resultMaximum>"`` (e.g. "17/20",
  "84.5/100", "0/20"), and ``percent`` is resultScore / resultMaximum * 100 (the result's own maximum, which may
  differ from its line item's ``scoreMaximum``; AGS's default of 1 when absent), computed exactly: scores are read
  from their JSON text into DECIMAL and divided in integers, rounded half away from zero to 6 decimals, so it equals
  what ``transforms.grades.parse_grades`` gives for the same score. A score of 0 is a graded 0.
- A result without ``resultScore`` (optional in AGS: a platform lists the user but holds no score, e.g. an excused
  or pass/fail entry, whose text may be in ``comment``) is ``ungraded``: no raw grade, no percent, never a 0.
- No result at all makes no row: platforms may omit users without a score, so AGS cannot tell ungraded from
  missing, and a row for them would be a guess. ``missing`` is therefore never produced here.

Identity: ``userId`` is an opaque LTI ``sub``. NRPS members with a ``lis_person_sourcedid`` (in any context of the
connection, whatever their status: a student who left keeps their id) give it a student id; a ``sub`` with none, or
with two different ones, keeps ``lti-user:<userId>`` with ``identity_matched`` false. Never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import SIDE_GRADE_COLUMNS, GradeSides, PayloadError, RawPage
from lms_pipeline.providers.lti_ags.client import LtiAgsClient
from lms_pipeline.providers.pages import page_frame, raise_on_problems

SQL = statements.load(Path(__file__).with_suffix(".sql"))

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

GRADE_COLUMNS = ["course_id", "content_id", "student_id", "raw_grade", "score_given", "score_maximum", "percent",
                 "grade_status", "lti_user_id", "identity_matched", "comment"]  # fmt: skip
PAGE_COLUMNS = ["endpoint", "course_id", "page_index", "url", "status", "payload"]


class LtiPayloadError(PayloadError):
    """Raw pages break the AGS/NRPS contract; the message names the connection, each bad page's URL and index."""


def normalize_lti_grades(pages: pd.DataFrame | Sequence[Mapping[str, object]], connection_id: str) -> pd.DataFrame:
    """LMS grades of one scan of one connection from its raw pages (dicts as the client returns them, or a frame
    with their columns), one row per (course, content, student). Raises LtiPayloadError when a page or item breaks
    the contract, a result names a line item its context did not list, or two results land on one key. Set-based:
    no Python loop touches a result."""
    frame = page_frame(pages, PAGE_COLUMNS, {"course_id": "string", "page_index": "int64", "status": "Int64"})
    with duckdb.connect() as conn:
        conn.execute("CREATE MACRO _text(d) AS rtrim(rtrim(CAST(d AS VARCHAR), '0'), '.')")  # 84.500000 -> 84.5
        conn.register("pages", frame)
        _raise_on_problems(conn, SQL["page_problems"], connection_id)
        conn.execute(SQL["items"])
        _raise_on_problems(conn, SQL["item_problems"], connection_id)
        conn.execute(SQL["tables"])
        _raise_on_problems(conn, SQL["link_problems"], connection_id)
        conn.execute(SQL["grades"])
        _raise_on_problems(conn, SQL["duplicates"], connection_id)
        grades = conn.execute("SELECT * FROM grades").df()
    grades["percent"] = grades["percent"].astype("float64")
    return grades.astype({"identity_matched": "bool"})[GRADE_COLUMNS]


def _raise_on_problems(conn: duckdb.DuckDBPyConnection, problems_sql: str, connection_id: str) -> None:
    raise_on_problems(
        conn, problems_sql, LtiPayloadError, f"connection {connection_id!r}: ", label="LTI ", line=_problem_line
    )


def _problem_line(endpoint: str, course: object, index: object, url: object, position: object, problem: str) -> str:
    """As ``pages.page_problem``, but a link or duplicate problem may have no page index or URL to name."""
    return (
        f"{endpoint}" + (f" page {index}" if index is not None else "")
        + (f" of course {course}" if course is not None else "") + (f" (GET {url})" if url is not None else "")
        + ": " + (f"item {position} {problem}" if position is not None else problem)
    )  # fmt: skip


def lti_sides(pages: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(contents: course_id, content_id, name; students: student_id, email) from pages ``normalize_lti_grades``
    has already accepted."""
    frame = page_frame(pages, PAGE_COLUMNS, {"course_id": "string", "page_index": "int64", "status": "Int64"})
    with duckdb.connect() as conn:
        conn.register("pages", frame)
        return conn.execute(SQL["side_contents"]).df(), conn.execute(SQL["side_students"]).df()


class LtiGrades:
    """AGS results as ``<score>/<maximum>``; a learner listed without a score is ungraded (""), never 0."""

    def fetch(self, client: LtiAgsClient) -> list[RawPage]:
        return client.grade_pages()

    def sides(self, conn: ConnectionConfig, pages: pd.DataFrame, stored: Callable[[str], pd.DataFrame]) -> GradeSides:
        frame = normalize_lti_grades(pages, conn.id)
        frame = frame.assign(raw_grade=frame["raw_grade"].where(frame["grade_status"] != "ungraded", ""),
                             points_possible=None, graded_at=pd.NaT)  # fmt: skip
        contents, students = lti_sides(pages)
        return GradeSides(frame[SIDE_GRADE_COLUMNS], students, contents)
