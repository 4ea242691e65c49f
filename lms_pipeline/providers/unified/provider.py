"""The Unified.to LMS API as the pipeline sees it: capabilities, client, simulator, rosters, progress and grades."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

from lms_pipeline.providers.base import SIMULATED_DATE_HEADER, BaseProvider, Capabilities, Endpoint, client_day
from lms_pipeline.providers.unified.client import UnifiedLmsClient
from lms_pipeline.providers.unified.grades import UnifiedGrades
from lms_pipeline.providers.unified.options import UnifiedOptions
from lms_pipeline.providers.unified.progress import UnifiedProgress
from lms_pipeline.providers.unified.simulator import SimulatorApp
from lms_pipeline.providers.unified.sync import UnifiedRosters

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

# Unified list options differ per integration and object (docs/providers.md §1.6, §9.4); the simulator has a switch
# for each: WorldSpec.supports_updated_gte / supports_sort (Udemy, Teachable), ignores_paging ("limit_offset":
# `-none-`, every answer the whole list, e.g. Moodle courses; "offset": the first page served forever),
# rollover_days (a bulk update putting pages of records in one updated_at second), unstable_ties (records tied on
# the sort key served in a new order per request).
CAPABILITIES = Capabilities(
    provider="unified",
    course_rosters="`Course.student_ids` / `students[]`, per course when the integration gives them",
    section_rosters="`Class.student_ids`, some integrations",
    incremental_filter="`updated_gte` (used: keyset polls between full scans; a bulk update in one second is "
    "paged with overlap); lists whose integration ignores `limit`/`offset` (`-none-`) are read whole "
    "(`unpaged_endpoints`)",
    deletions_visible="no tombstone: a student vanishes; a full scan diffs by id",
    not_exposed_signal="roster keys absent on the course",
    grades="`activity.assigned_grade` (used: lms_grades)",
    grading_scheme="no: configured per course (`grading_schemes.yaml`)",
    write_back="no (the SIS is written, over OneRoster)",
    incremental_sync=True,
)


class UnifiedProvider(BaseProvider):
    name = "unified"
    capabilities = CAPABILITIES
    options = UnifiedOptions
    mount = "lms"
    grade_sources = ("native", "lti_ags")
    rosters = UnifiedRosters(CAPABILITIES)
    progress = UnifiedProgress()
    grades = UnifiedGrades()

    def embedded_base_url(self, server: str, connection_id: str) -> str:
        return server  # the client adds /lms/<connection> itself, as on api.unified.to

    @contextmanager
    def open_client(
        self, conn: ConnectionConfig, endpoint: Endpoint, day: date, page_size: int | None = None
    ) -> Iterator[UnifiedLmsClient]:
        options: UnifiedOptions = conn.options  # type: ignore[assignment]
        simulated = client_day(conn, day)
        with UnifiedLmsClient(conn.id, endpoint.base_url, endpoint.secret, page_size=page_size or options.page_size,
                              headers={SIMULATED_DATE_HEADER: simulated.isoformat()} if simulated else {},
                              retry=options.retry.settings(),
                              max_concurrent_requests=options.max_concurrent_requests) as client:  # fmt: skip
            yield client

    def simulator_app(self, worlds: Sequence[Any], credentials: Mapping[str, Any]) -> SimulatorApp:
        return SimulatorApp(worlds, credentials)


PROVIDER = UnifiedProvider()
