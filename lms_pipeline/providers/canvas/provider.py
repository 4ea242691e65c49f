"""Canvas REST as the pipeline sees it: its capabilities, client, simulator, roster and grade normalizers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from lms_pipeline.providers.base import (
    BaseProvider,
    Capabilities,
    Endpoint,
    RosterFrames,
    client_day,
)
from lms_pipeline.providers.canvas.client import CanvasClient
from lms_pipeline.providers.canvas.grades import CanvasGrades
from lms_pipeline.providers.canvas.options import CanvasOptions
from lms_pipeline.providers.canvas.rosters import normalize_canvas_pages
from lms_pipeline.providers.canvas.simulator import CanvasSimulatorApp
from lms_pipeline.providers.full_scan import FullScanRosters

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

CAPABILITIES = Capabilities(
    provider="canvas",
    course_rosters="the account's courses (`/accounts/:account_id/courses`, `options.account_id`, default "
    "`self`; the token needs `read_course_list`), then `/courses/:id/enrollments`: StudentEnrollment, explicit "
    "`state[]` (Rack reads only `k[]` as a list)",
    section_rosters="yes: `course_section_id` of each enrollment",
    incremental_filter="none for enrollments (full scan daily)",
    deletions_visible="`deleted`, `inactive`, `completed` states (not enrolled); `invited` is pending",
    not_exposed_signal="401 (or 403) `unauthorized` on a course's enrollments (the same 401 on the account's "
    "course list fails the run, naming the account and `read_course_list`)",
    grades="assignments and submissions (used: lms_grades; the score is compared, excused stays excused)",
    grading_scheme="`/courses/:id/grading_standards` (read and stored; letters use the configured scheme)",
    write_back="LTI AGS scores (not used)",
    incremental_sync=False,
)


def _normalize(pages: pd.DataFrame, conn: ConnectionConfig, day: date) -> RosterFrames:
    frames = normalize_canvas_pages(pages.assign(course_id=pd.to_numeric(pages["course_id"]).astype("Int64")),
                                    conn.id)  # fmt: skip
    return RosterFrames(*frames)


class CanvasProvider(BaseProvider):
    name = "canvas"
    capabilities = CAPABILITIES
    options = CanvasOptions
    mount = "canvas"
    grade_sources = ("native",)
    rosters = FullScanRosters(CAPABILITIES, "link_next", lambda client: client.roster_pages(), _normalize,
                              course_endpoint="courses", class_endpoint="sections")  # fmt: skip
    grades = CanvasGrades()

    @contextmanager
    def open_client(
        self, conn: ConnectionConfig, endpoint: Endpoint, day: date, page_size: int | None = None
    ) -> Iterator[CanvasClient]:
        options: CanvasOptions = conn.options  # type: ignore[assignment]
        with CanvasClient(conn.id, endpoint.base_url, endpoint.secret, retry=options.retry.settings(),
                          per_page=page_size or options.page_size, simulated_date=client_day(conn, day),
                          account_id=options.account_id,
                          max_concurrent_requests=options.max_concurrent_requests) as client:  # fmt: skip
            yield client

    def simulator_app(self, worlds: Sequence[Any], credentials: Mapping[str, Any]) -> CanvasSimulatorApp:
        return CanvasSimulatorApp(worlds, credentials)


PROVIDER = CanvasProvider()
