"""What every provider folder builds on, and what the pipeline asks of a provider.

A provider (``providers/<name>/``) brings its client, its simulator app, its normalizers, its options model and its
capabilities; the assets, the resources and the config see it only through ``Provider`` (and the registry that names
it), so no code outside ``providers/`` branches on a provider's name. A provider folder imports only the shared
modules of ``providers/``: this one, ``http.py``, ``options.py``, ``pages.py`` and ``full_scan.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

import httpx
import pandas as pd

from lms_pipeline.providers.http import FetchStats

if TYPE_CHECKING:  # the config imports the registry, which imports every provider: types only, no cycle
    import duckdb

    from lms_pipeline.config import ConnectionConfig
    from lms_pipeline.providers.options import CommonOptions

SIMULATED_DATE_HEADER = "X-Simulated-Date"
ROSTER_TABLES = ("course_rosters", "course_student_edges", "class_student_edges")


# ---- what a provider reads and returns -----------------------------------------------------------------------
@dataclass(frozen=True)
class RawPage:
    """One answer of a listing as received: what was asked, what came back and when. Every client returns pages in
    this shape and every raw-page table stores them through one function (``pages.page_rows``), so a day can be
    replayed from what was stored."""

    endpoint: str  # what was listed: course, enrollments, lineItems, ...
    params: Mapping[str, object]  # the query parameters sent; never a secret (those travel in headers)
    status: int  # the HTTP status: 200, or a refusal kept as an answer (a roster the token may not read)
    payload: str  # the body as received, scrubbed of every credential the client sent
    items: list[dict]  # the page's records as parsed (empty for a refused page)
    fetched_at: datetime  # tz-aware UTC, when the answer arrived
    page_index: int = 0  # 0-based position in its listing
    offset: int = 0  # the offset query parameter (0 where paging follows links or tokens)
    attempts: int = 1  # attempts the page took (retries + 1)
    course_id: str | int | None = None  # the course a per-course listing belongs to, as the provider names it
    url: str | None = None  # the URL requested, where paging follows links
    total: int | None = None  # a total the server announced (X-Total-Count, or the body's totalCount)
    next_url: str | None = None  # the next page's link, as given (not stored: the next page is)


class PayloadError(ValueError):
    """Stored pages break the provider's contract; the message names the connection and each bad page (its URL or
    offset) and item. Nothing is written."""


class MissingSnapshotInput(ValueError):
    """The pages, or the base snapshot an incremental day is built on, are not there."""


def sent_params(url: httpx.URL, always_list: Callable[[str], bool] = lambda name: False) -> dict[str, object]:
    """The query parameters a URL sent, as a page records them: a parameter given once as its value, a repeated one
    (or one ``always_list`` names: Canvas's ``k[]``) as the list of its values."""
    params: dict[str, object] = {}
    for name, value in url.params.multi_items():
        if name in params or always_list(name):
            previous = params.get(name, [])
            params[name] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            params[name] = value
    return params


class RosterFrames(NamedTuple):
    """A day's roster tables as frames: what a normalizer returns when its days are small enough to hold."""

    course_rosters: pd.DataFrame
    course_student_edges: pd.DataFrame
    class_student_edges: pd.DataFrame


class GradeSides(NamedTuple):
    """The LMS side of a grade reconciliation: grades (``SIDE_GRADE_COLUMNS``, not parsed yet), the students' emails
    (``student_id``, ``email``) and the contents (``course_id``, ``content_id``, ``name``) for title matching."""

    grades: pd.DataFrame
    students: pd.DataFrame
    contents: pd.DataFrame


SIDE_GRADE_COLUMNS = ["course_id", "content_id", "student_id", "raw_grade", "points_possible", "graded_at"]


class Endpoint(NamedTuple):
    """Where a client sends its requests, and the secret it authenticates with (a token, a client secret)."""

    base_url: str
    secret: str


@dataclass(frozen=True)
class Capabilities:
    """What a provider dialect exposes, as data: the pipeline reads ``incremental_sync`` and ``rosters_visible``;
    the capability matrix in docs/providers.md is generated from the rest (``registry.markdown_table``)."""

    provider: str
    course_rosters: str  # how course-level membership is read
    section_rosters: str
    incremental_filter: str  # the provider's change filter, and whether the pipeline polls with it
    deletions_visible: str  # how a drop shows up
    not_exposed_signal: str  # what makes a roster unknown (never read as empty)
    grades: str
    grading_scheme: str
    write_back: str
    incremental_sync: bool  # the pipeline polls incrementally between full scans (else: a full scan every day)
    rosters_visible: bool = True  # False: every course is not_exposed, whatever the pages say


MATRIX_COLUMNS = {
    "provider": "provider", "course_rosters": "course rosters", "section_rosters": "section rosters",
    "incremental_filter": "incremental filter", "deletions_visible": "deletions visible",
    "not_exposed_signal": "roster unknown when", "grades": "grades", "grading_scheme": "grading scheme",
    "write_back": "write-back",
}  # fmt: skip


def matrix_row(capabilities: Capabilities) -> str:
    """One provider's row of the capability matrix (docs/providers.md)."""
    names = [f.name for f in fields(Capabilities) if f.name in MATRIX_COLUMNS]
    return "| " + " | ".join(str(getattr(capabilities, n)) for n in names) + " |"


def matrix_header() -> str:
    names = [f.name for f in fields(Capabilities) if f.name in MATRIX_COLUMNS]
    return "| " + " | ".join(MATRIX_COLUMNS[n] for n in names) + " |\n|" + "---|" * len(names)


@dataclass(frozen=True)
class BaseSync:
    """The latest earlier day whose snapshot is built: what an incremental poll would build on."""

    snapshot_date: date
    high_water: datetime | None  # newest updated_at that day's scan saw (the provider's clock)
    last_full_scan_date: date  # the full scan that snapshot descends from
    courses_without_updated_at: int


@dataclass(frozen=True)
class SyncPlan:
    """Full scan or incremental poll for one (connection, day), and why (``sync_log.mode_reason``)."""

    mode: Literal["full", "incremental"]
    reason: str
    since: datetime | None = None  # updated_gte of an incremental poll
    base_snapshot_date: date | None = None  # the snapshot an incremental poll's changes are applied to
    last_full_scan_date: date | None = None  # None until the full scan of this day has run
    base_high_water: datetime | None = None  # an incremental day's high-water mark never moves back past this

    def full_scan_date(self, day: date) -> date:
        return day if self.mode == "full" else self.last_full_scan_date  # type: ignore[return-value]


@dataclass
class RosterFetch:
    """One day's roster read: the pages as received and how they were read (what the day's sync_log row says)."""

    pages: Sequence[RawPage]
    technique: str  # how the listing was paged (sync_log.technique)
    courses_listed: int
    classes_listed: int
    passes: int = 1
    catch_up_rounds: int = 0
    catch_up_converged: bool = True
    high_water: datetime | None = None  # the newest updated_at read: where the next incremental poll starts
    health: dict[str, object] = field(default_factory=dict)  # the provider's own run metadata


@dataclass
class ProgressScan:
    """Contents and learner activity of every course of a day: the pages in a stable order (each names its
    ``course_id``), the endpoints the integration lacks, and the request counters."""

    pages: list[RawPage] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    stats: FetchStats = field(default_factory=FetchStats)


OpenClient = Callable[..., AbstractContextManager[Any]]


# ---- the protocol --------------------------------------------------------------------------------------------
class RosterSource(Protocol):
    """How a provider's rosters are read and turned into the roster tables."""

    pages_table: str  # the table its pages are stored in

    def plan(self, day: date, base: BaseSync | None, options: CommonOptions) -> SyncPlan:
        """Full scan or incremental poll for the day, and why."""

    def fetch(self, client: Any, options: CommonOptions, plan: SyncPlan) -> RosterFetch:
        """Every roster page of the day, read to its end; raises ``LmsClientError`` on anything but a refusal the
        provider reads as a roster it may not see."""

    def pages_frame(self, fetch: RosterFetch, connection_id: str, day: date, run_id: str) -> pd.DataFrame:
        """The fetched pages as rows of ``pages_table``."""

    def build_snapshot(
        self, db: duckdb.DuckDBPyConnection, pages: str, conn: ConnectionConfig, day: date, base_day: date | None
    ) -> RosterFrames | None:
        """The day's roster tables from the stored pages in the relation ``pages``, inside the caller's
        transaction: written there in SQL (returns None), or returned as frames for the caller to check and write.
        Raises ``PayloadError`` naming the bad pages, ``MissingSnapshotInput`` when there is nothing to build."""


class ProgressSource(Protocol):
    """Course contents and learner activity, read per course of the day's roster snapshot."""

    def disabled(self, options: CommonOptions) -> str | None:
        """Why the connection's options skip the read (None: read it)."""

    def scan(self, open_client: OpenClient, course_ids: Sequence[str], options: CommonOptions) -> ProgressScan:
        """Every content and activity page of the courses; raises on any failure (all or nothing)."""


class GradeSource(Protocol):
    """Where a connection's LMS grades come from, and how they become ``GradeSides``."""

    def fetch(self, client: Any) -> list[RawPage]:
        """The LMS side's pages of the day (a refused page kept: that course's grades are unknown)."""

    def sides(self, conn: ConnectionConfig, pages: pd.DataFrame, stored: Callable[[str], pd.DataFrame]) -> GradeSides:
        """The day's LMS grades, students and contents from its stored grade pages (``endpoint``, ``course_id``,
        ``page_index``, ``url``, ``params``, ``status``, ``payload``); ``stored(table)`` reads another of the day's
        tables (a Unified connection's grades are in its activity pages)."""


class SisSource(Protocol):
    """A school's SIS holding the grades of record, in this provider's dialect (OneRoster 1.2 gradebook)."""

    mount: str  # the first path segment of its simulator app on the embedded server

    def open_client(
        self, sis: Any, base_url: str, credentials: tuple[str, str], day: date | None, write: bool
    ) -> AbstractContextManager[Any]:
        """A client of the SIS (``write``: with the scope to write results)."""

    def world(self, sis: Any, lms_world: Any, scheme_for: Callable[[str], Any]) -> Any:
        """The embedded SIS's world, mirroring one embedded connection's LMS world."""

    def simulator_app(self, worlds: Sequence[Any], credentials: Mapping[str, tuple[str, str]]) -> Any:
        """The embedded SIS: a WSGI app serving ``worlds`` to clients holding ``credentials`` (per SIS)."""


class Provider(Protocol):
    """One provider dialect, as the pipeline sees it. ``options`` is None for a provider that is no connection's
    own (LTI AGS: a grade source of another connection)."""

    name: str
    capabilities: Capabilities
    options: type[CommonOptions] | None
    mount: str  # the first path segment of its simulator app on the embedded server
    grade_sources: tuple[str, ...]  # what a connection of this provider may name in ``grades.source``
    rosters: RosterSource | None
    progress: ProgressSource | None
    grades: GradeSource | None
    sis: SisSource | None

    def serves(self, conn: ConnectionConfig) -> bool:
        """Whether its simulator app serves this embedded connection."""

    def embedded_base_url(self, server: str, connection_id: str) -> str:
        """Its client's base URL for a connection served by the embedded server at ``server``."""

    def open_client(
        self, conn: ConnectionConfig, endpoint: Endpoint, day: date, page_size: int | None = None
    ) -> AbstractContextManager[Any]:
        """A client of the connection for the partition ``day`` (sent to a simulator that keeps its own clock)."""

    def simulator_app(self, worlds: Sequence[Any], credentials: Mapping[str, Any]) -> Any:
        """Its simulator: a WSGI app serving ``worlds`` to clients holding ``credentials`` (per connection)."""

    def simulator_credentials(self, conn: ConnectionConfig, secret: str) -> Any:
        """What its simulator checks a client of ``conn`` against (the token; OneRoster: client id and secret)."""


class BaseProvider:
    """What most providers share: a connection of its own ``provider:``, an app mounted at ``/<mount>/<connection>``
    on the embedded server, clients authenticated by the connection's token; no progress or grade source."""

    name: str
    mount: str
    grade_sources: tuple[str, ...] = ()
    rosters: RosterSource | None = None
    progress: ProgressSource | None = None
    grades: GradeSource | None = None
    sis: SisSource | None = None

    def serves(self, conn: ConnectionConfig) -> bool:
        return conn.provider == self.name

    def embedded_base_url(self, server: str, connection_id: str) -> str:
        return f"{server}/{self.mount}/{connection_id}"

    def simulator_credentials(self, conn: ConnectionConfig, secret: str) -> Any:
        return secret


def client_day(conn: ConnectionConfig, day: date) -> date | None:
    """The day a client sends as X-Simulated-Date: the partition's, to a source with a simulated clock only."""
    return day if conn.simulated_clock else None
