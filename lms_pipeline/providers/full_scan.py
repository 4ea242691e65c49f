"""A dialect read in full every day (Canvas, Classroom, OneRoster): its client reads every roster page, its
normalizer turns a day's stored pages into frames, and nothing is carried forward from an earlier day."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from lms_pipeline.providers.base import (
    BaseSync,
    Capabilities,
    MissingSnapshotInput,
    RawPage,
    RosterFetch,
    RosterFrames,
    SyncPlan,
)
from lms_pipeline.providers.options import CommonOptions
from lms_pipeline.providers.pages import page_rows

if TYPE_CHECKING:
    import duckdb

    from lms_pipeline.config import ConnectionConfig


class FullScanRosters:
    """The ``RosterSource`` of a dialect read in full every day (Canvas, Classroom, OneRoster): its client reads
    every roster page (``read``), its normalizer turns a day's stored pages into frames (``normalize``); nothing is
    carried forward from an earlier day. Pages are stored as fetched, a refused roster's page too (it is why that
    roster is not exposed)."""

    pages_table = "raw_course_pages"

    def __init__(
        self,
        capabilities: Capabilities,
        technique: str,
        read: Callable[[Any], list[RawPage]],
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
            kind = self._endpoints.get(page.endpoint)
            if page.status == 200 and kind is not None:
                listed[kind] += len(page.items)
        refused = sum(page.status in (401, 403) for page in pages)  # permission refusals kept as pages
        return RosterFetch(pages, self.technique, listed["course"], listed["class"],
                           health={"provider": self.name, "pages_refused": refused})  # fmt: skip

    def pages_frame(self, fetch: RosterFetch, connection_id: str, day: date, run_id: str) -> pd.DataFrame:
        return page_rows(fetch.pages).assign(connection_id=connection_id, snapshot_date=pd.Timestamp(day),
                                             provider=self.name, run_id=run_id)  # fmt: skip

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
