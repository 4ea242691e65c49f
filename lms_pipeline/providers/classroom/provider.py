"""Google Classroom as the pipeline sees it: its capabilities, client, simulator, roster and grade normalizers."""

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
from lms_pipeline.providers.classroom.client import ClassroomClient
from lms_pipeline.providers.classroom.grades import ClassroomGrades
from lms_pipeline.providers.classroom.options import ClassroomOptions
from lms_pipeline.providers.classroom.rosters import normalize_classroom_pages
from lms_pipeline.providers.classroom.simulator import ClassroomSimulatorApp
from lms_pipeline.providers.full_scan import FullScanRosters

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

CAPABILITIES = Capabilities(
    provider="google_classroom",
    course_rosters="`courses/{id}/students` (`pageToken`; the simulator's answers are checked against "
    "Google's discovery document)",
    section_rosters="no",
    incremental_filter="none (full scan daily)",
    deletions_visible="no tombstone: a student vanishes; a full scan diffs by id",
    not_exposed_signal="403 `PERMISSION_DENIED` on a course's students",
    grades="courseWork / studentSubmissions `assignedGrade` (used: lms_grades; a `draftGrade` never counts; no "
    "excused or text grade exists)",
    grading_scheme="no",
    write_back="`assignedGrade` (not used)",
    incremental_sync=False,
)


def _normalize(pages: pd.DataFrame, conn: ConnectionConfig, day: date) -> RosterFrames:
    options: ClassroomOptions = conn.options  # type: ignore[assignment]
    frames = normalize_classroom_pages(pages, conn.id, **options.identity_args())
    no_sections = pd.DataFrame({"class_id": [], "course_id": [], "student_id": []}, dtype=str)  # Classroom has none
    return RosterFrames(frames.course_rosters, frames.course_student_edges[["course_id", "student_id"]], no_sections)


class ClassroomProvider(BaseProvider):
    name = "google_classroom"
    capabilities = CAPABILITIES
    options = ClassroomOptions
    mount = "classroom"
    grade_sources = ("native",)
    rosters = FullScanRosters(CAPABILITIES, "page_token", lambda client: client.scan_rosters(), _normalize,
                              course_endpoint="courses", class_endpoint=None)  # fmt: skip
    grades = ClassroomGrades()

    @contextmanager
    def open_client(
        self, conn: ConnectionConfig, endpoint: Endpoint, day: date, page_size: int | None = None
    ) -> Iterator[ClassroomClient]:
        options: ClassroomOptions = conn.options  # type: ignore[assignment]
        with ClassroomClient(conn.id, endpoint.base_url, endpoint.secret, as_of=client_day(conn, day),
                             retry=options.retry.settings(), page_size=page_size or options.page_size,
                             max_concurrent_requests=options.max_concurrent_requests) as client:  # fmt: skip
            yield client

    def simulator_app(self, worlds: Sequence[Any], credentials: Mapping[str, Any]) -> ClassroomSimulatorApp:
        return ClassroomSimulatorApp(worlds, credentials)


PROVIDER = ClassroomProvider()
