"""Google Classroom raw pages -> course rosters and course-student edges, in DuckDB SQL.

Input: the raw pages of one scan (``ClassroomClient.scan_rosters``): connection_id, endpoint ('courses' | 'aliases'
| 'students'), course_id (the Classroom id; None for courses), page_index, url, status and payload (body text).

Identities. A course's ``course_id`` is its domain alias without the ``d:`` prefix (the SIS link Classroom keeps in
the aliases sub-collection), else ``classroom-course:<id>``. Classroom has no SIS id for a user, so the caller says
how students are identified: ``identity="email"`` maps ``profile.emailAddress`` (case-insensitively) through a
directory frame (``email, student_id``, e.g. from the SIS) and leaves a user without a match (no email scope, an
email the SIS lacks) as ``classroom-user:<userId>`` with ``identity_matched`` False; ``identity="provider"`` uses
``classroom-user:<userId>`` for everyone (``identity_matched`` always False).

Roster status: a 403 students page is ``not_exposed`` (PERMISSION_DENIED: the provider does not tell), and so is a
course whose students were not read at all; only a complete 200 listing is known, ``empty`` when it holds no one.
Google omits an empty repeated field, so a page without ``students`` is an empty page, not a missing roster. A
listing whose last page still carries a ``nextPageToken``, or with a page missing, is not complete: it raises.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal, NamedTuple

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import PayloadError, RawPage
from lms_pipeline.providers.pages import page_frame, raise_on_problems

SQL = statements.load(Path(__file__).with_suffix(".sql"))
PAGE_SQL = statements.load(Path(__file__).with_name("pages.sql"))

Identity = Literal["email", "provider"]

PAGE_COLUMNS = ["endpoint", "course_id", "page_index", "url", "status", "payload"]
EDGE_COLUMNS = ["course_id", "student_id", "student_email", "identity_matched"]


class ClassroomPayloadError(PayloadError):
    """Raw pages break Classroom's contract; the message names the connection, each bad page's URL and index."""


class ClassroomFrames(NamedTuple):
    course_rosters: pd.DataFrame
    course_student_edges: pd.DataFrame


def normalize_classroom_pages(
    pages: pd.DataFrame | Iterable[RawPage | Mapping],
    connection_id: str,
    *,
    identity: Identity,
    directory: pd.DataFrame | None = None,
) -> ClassroomFrames:
    """Normalize one scan's raw pages; set-based, no Python loop touches a course or an edge.

    ``directory`` (columns ``email, student_id``) is required with ``identity="email"`` and ignored otherwise.
    Raises ClassroomPayloadError naming connection, URL and page for any page or item that breaks the contract.
    """
    with duckdb.connect() as conn:
        checked_items(conn, pages, connection_id, identity, directory)
        conn.execute(SQL["rosters"])
        rosters = conn.execute(SQL["roster_rows"]).df()
        edges = conn.execute(SQL["edges"]).df()
    rosters["student_count"] = rosters["student_count"].astype("Int64")
    return ClassroomFrames(rosters, edges[EDGE_COLUMNS])


def checked_items(
    conn: duckdb.DuckDBPyConnection,
    pages: pd.DataFrame | Iterable[RawPage | Mapping],
    connection_id: str,
    identity: Identity,
    directory: pd.DataFrame | None,
) -> None:
    """Register ``pages`` and ``directory`` on ``conn``, check every page, listing and item (``pages.sql``, one check
    for roster and grade listings) and leave the temp table ``items``; raises ClassroomPayloadError naming the
    first problems."""
    conn.execute("SET TimeZone = 'UTC'")
    conn.register("pages", page_frame(pages, PAGE_COLUMNS).assign(connection_id=connection_id))
    conn.register("directory", email_directory(identity, directory))
    raise_on_classroom_problems(conn, PAGE_SQL["page_problems"])
    raise_on_classroom_problems(conn, PAGE_SQL["listing_problems"])
    conn.execute(PAGE_SQL["items"])
    raise_on_classroom_problems(conn, PAGE_SQL["item_problems"])


def email_directory(identity: Identity, directory: pd.DataFrame | None) -> pd.DataFrame:
    """The email -> student id map, lower-cased; an email naming two students would make edges up, so it raises."""
    if identity not in ("email", "provider"):
        raise ValueError(f"identity must be 'email' or 'provider', got {identity!r}")
    if identity == "provider":
        return pd.DataFrame({"email": pd.Series(dtype="string"), "student_id": pd.Series(dtype="string")})
    if directory is None:
        raise ValueError('identity="email" needs a directory frame with columns email, student_id')
    out = pd.DataFrame({"email": directory["email"].str.lower(), "student_id": directory["student_id"]})
    out = out.dropna().drop_duplicates()
    clashes = out.loc[out["email"].duplicated(), "email"]
    if len(clashes):
        raise ValueError(f"the directory maps {len(clashes)} email(s) to several students, e.g. {clashes.iloc[0]!r}")
    return out


def raise_on_classroom_problems(conn: duckdb.DuckDBPyConnection, problems_sql: str, shown: int = 5) -> None:
    """Raise ClassroomPayloadError listing the first problems found by ``problems_sql`` (rows of connection, URL,
    page index and problem); the grade normalizer checks its pages with it too."""
    raise_on_problems(
        conn,
        f"SELECT * FROM ({problems_sql}) AS p(connection_id, url, page_index, problem)",
        ClassroomPayloadError,
        shown=shown,
        line=lambda c, url, page, problem: f"connection {c!r}: page {page} of GET {url}: {problem}",
        order_by="ALL",
    )
