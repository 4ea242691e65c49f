"""What every provider folder builds on, and what the pipeline asks of a provider.

A provider (``providers/<name>/``) brings its client, its simulator app, its normalizers, its options model and its
capabilities; the assets, the resources and the config see it only through ``Provider`` (and the registry that names
it), so no code outside ``providers/`` branches on a provider's name. A provider folder imports this module and
``providers/http.py`` only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol
from urllib.parse import urlsplit

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from lms_pipeline.providers.http import FetchStats, RetrySettings

if TYPE_CHECKING:  # the config imports the registry, which imports every provider: types only, no cycle
    import duckdb

    from lms_pipeline.config import ConnectionConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
SIMULATED_DATE_HEADER = "X-Simulated-Date"
ROSTER_TABLES = ("course_rosters", "course_student_edges", "class_student_edges")


# ---- options every provider has ------------------------------------------------------------------------------
class Strict(BaseModel):
    """A settings model: unknown keys are refused (a typo is an error, not a silent default) and values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryOptions(Strict):
    """How one connection's requests are retried and bounded (``providers.http.RetrySettings``)."""

    max_attempts: int = Field(8, ge=1, le=20)
    base_delay_seconds: float = Field(1.0, ge=0, le=60)
    max_delay_seconds: float = Field(30.0, ge=0, le=600)
    max_total_wait_seconds: float = Field(120.0, ge=0, le=3600)
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="per connect, read or write")
    request_deadline_seconds: float = Field(
        120.0, gt=0, le=3600, description="one request, body included: a body that trickles in is cut off here"
    )
    max_response_mb: float = Field(
        32.0, gt=0, le=1024, description="largest answer read, before and after gzip/deflate decoding"
    )

    def settings(self) -> RetrySettings:
        return RetrySettings(
            max_attempts=self.max_attempts,
            base_delay=self.base_delay_seconds,
            max_delay=self.max_delay_seconds,
            max_total_wait=self.max_total_wait_seconds,
            timeout=self.timeout_seconds,
            deadline=self.request_deadline_seconds,
            max_response_bytes=int(self.max_response_mb * (1 << 20)),
        )


class CommonOptions(Strict):
    """Options every provider dialect has; a provider's own options model extends it."""

    page_size: int = Field(100, ge=1, le=100, description="limit per page; the APIs cap it at 100")
    fetch_classes: bool = Field(True, description="also list classes (sections) for class-level rosters")
    max_drop_share: float = Field(
        0.2, gt=0, le=1, description="a change set dropping more than this share of edges is held"
    )
    simulated_clock: bool | None = Field(
        None,
        description="send the partition date to a simulator (X-Simulated-Date); default: on for the embedded "
        "simulator, off for a base_url. Off means the connection is live: it only knows today's rosters.",
    )
    retry: RetryOptions = RetryOptions()
    max_concurrent_requests: int = Field(
        4,
        ge=1,
        le=16,
        description="requests of this connection in flight at once: per-course listings (rosters, sections, "
        "grades, progress) are read side by side up to this budget; a throttled answer pauses all of them",
    )


def http_url(value: str | None) -> str | None:
    """An API root, refused unless it is a plain http(s) URL. The messages never quote the value: it may hold a
    password or a token, which would then reach errors and logs."""
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port out of range or not a number)
    except ValueError:
        raise ValueError("is not a valid URL (check the brackets of an IPv6 host and the port)") from None
    if "@" in parts.netloc:
        # httpx would send user:password as Basic auth instead of the bearer token, and the URL, password
        # included, would be stored with every raw page.
        raise ValueError("holds credentials (user:password@); put secrets in the environment variables the "
                         "file names, never in a URL")  # fmt: skip
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.query or value.endswith("?"):
        raise ValueError("has a query string, which the clients would silently drop; give the API root only")
    if parts.fragment or value.endswith("#"):
        raise ValueError("has a fragment (#...); give the API root only")
    return value.rstrip("/")


# ---- what a provider reads and returns -----------------------------------------------------------------------
class PayloadError(ValueError):
    """Stored pages break the provider's contract; the message names the connection and each bad page (its URL or
    offset) and item. Nothing is written."""


class MissingSnapshotInput(ValueError):
    """The pages, or the base snapshot an incremental day is built on, are not there."""


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

    pages: Sequence[Any]
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
    """Contents and learner activity of every course of a day: (course_id, page) in a stable order, the endpoints
    the integration lacks, and the request counters."""

    pages: list[tuple[str, Any]] = field(default_factory=list)
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

    def fetch(self, client: Any) -> list[dict]:
        """The LMS side's pages of the day, as rows of ``raw_grade_pages`` (without the partition columns)."""

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


class FullScanRosters:
    """The ``RosterSource`` of a dialect read in full every day (Canvas, Classroom, OneRoster): its client reads
    every roster page (``read``), its normalizer turns a day's stored pages into frames (``normalize``); nothing is
    carried forward from an earlier day. Pages are stored as fetched, a refused roster's page too (it is why that
    roster is not exposed)."""

    pages_table = "raw_dialect_pages"

    def __init__(
        self,
        capabilities: Capabilities,
        technique: str,
        read: Callable[[Any], list[dict]],
        normalize: Callable[[pd.DataFrame, ConnectionConfig, date], RosterFrames],
        course_endpoint: str,
        class_endpoint: str | None,
    ) -> None:
        self.capabilities, self.technique = capabilities, technique
        self._read, self._normalize = read, normalize
        self._endpoints = {course_endpoint: "course", class_endpoint: "class"}

    @property
    def name(self) -> str:
        return self.capabilities.provider

    def plan(self, day: date, base: BaseSync | None, options: CommonOptions) -> SyncPlan:
        return SyncPlan("full", f"{self.name}: {self.capabilities.incremental_filter}")

    def fetch(self, client: Any, options: CommonOptions, plan: SyncPlan) -> RosterFetch:
        pages = self._read(client)
        listed = {"course": 0, "class": 0}
        for page in pages:
            kind = self._endpoints.get(page["endpoint"])
            if page["status"] == 200 and kind is not None:
                listed[kind] += _item_count(page["payload"])
        refused = sum(page["status"] in (401, 403) for page in pages)  # permission refusals kept as pages
        return RosterFetch(pages, self.technique, listed["course"], listed["class"],
                           health={"provider": self.name, "pages_refused": refused})  # fmt: skip

    def pages_frame(self, fetch: RosterFetch, connection_id: str, day: date, run_id: str) -> pd.DataFrame:
        """The pages as rows of ``raw_dialect_pages`` (no token: the clients never put one in)."""
        pages = fetch.pages
        return pd.DataFrame(
            {
                "connection_id": connection_id,
                "snapshot_date": pd.Timestamp(day),
                "provider": self.name,
                "endpoint": pd.Series([p["endpoint"] for p in pages], dtype=str),
                "course_id": pd.Series(
                    [None if p.get("course_id") is None else str(p["course_id"]) for p in pages], dtype=object
                ),  # fmt: skip
                "page_index": pd.Series([p["page_index"] for p in pages], dtype="int64"),
                "url": pd.Series([p["url"] for p in pages], dtype=str),
                "request_params": pd.Series(
                    [json.dumps(p.get("params") or {}, sort_keys=True, default=str) for p in pages], dtype=str
                ),  # fmt: skip
                "status_code": pd.Series([p["status"] for p in pages], dtype="int64"),
                "fetched_at": pd.to_datetime([p["fetched_at"] for p in pages], utc=True),
                "payload": pd.Series([p["payload"] for p in pages], dtype=str),
                "run_id": run_id,
            }
        )

    def build_snapshot(
        self, db: duckdb.DuckDBPyConnection, pages: str, conn: ConnectionConfig, day: date, base_day: date | None
    ) -> RosterFrames:
        """The day's frames (a full scan: fetched_on is the day), for the caller to check and write."""
        stored = db.execute(f"SELECT * FROM {pages} WHERE connection_id = ? AND snapshot_date = ?",
                            [conn.id, day]).df()  # fmt: skip
        if stored.empty:
            raise MissingSnapshotInput(f"no {self.pages_table} stored for {conn.id}|{day}: materialize "
                                       "raw_course_pages first")  # fmt: skip
        frames = self._normalize(stored.rename(columns={"status_code": "status", "request_params": "params"}),
                                 conn, day)  # fmt: skip
        rosters, edges, class_edges = frames
        if not self.capabilities.rosters_visible:
            rosters = rosters.assign(roster_status="not_exposed", student_count=pd.NA)
            edges, class_edges = edges.iloc[0:0], class_edges.iloc[0:0]
        part = {"connection_id": conn.id, "snapshot_date": pd.Timestamp(day)}
        rosters = rosters.assign(
            **part,
            roster_source=f"{self.name}:{self.technique}",
            created_at=pd.NaT,
            updated_at=pd.to_datetime(rosters["updated_at"], utc=True),
            fetched_on=pd.Timestamp(day),
        )
        return RosterFrames(rosters, edges.assign(**part), class_edges.assign(**part))


def _item_count(payload: str) -> int:
    """Items on a page, whatever the envelope (a bare array, or an object with one list)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return 0
    if isinstance(body, list):
        return len(body)
    lists = [v for v in body.values() if isinstance(v, list)] if isinstance(body, dict) else []
    return len(lists[0]) if lists else 0


def grade_page_row(page: dict) -> dict:
    """A dialect client's raw page as a raw_grade_pages row (a 403 page is kept: its course's grades are unknown)."""
    body = json.loads(page["payload"]) if page["status"] == 200 else []
    course = page.get("course_id")
    return {
        "system": "lms", "collection": page["endpoint"], "page_index": page["page_index"], "page_offset": 0,
        "request_params": json.dumps(page.get("params") or {}, sort_keys=True, default=str),
        "fetched_at": page["fetched_at"], "status_code": page["status"], "attempts": 1,
        "item_count": len(body) if isinstance(body, list) else 1, "payload": page["payload"], "total_count": None,
        "url": page["url"], "course_id": None if course is None else str(course),
    }  # fmt: skip


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
