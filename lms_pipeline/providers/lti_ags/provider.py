"""LTI AGS as the pipeline sees it: a grade source for Unified connections (``grades.source: lti_ags``), read from
the platform's line items and results, students tied through NRPS memberships."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

from lms_pipeline.providers.base import (
    BaseProvider,
    Capabilities,
    Endpoint,
    client_day,
)
from lms_pipeline.providers.lti_ags.client import LtiAgsClient
from lms_pipeline.providers.lti_ags.grades import LtiGrades
from lms_pipeline.providers.lti_ags.simulator import LtiPlatformApp

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

CAPABILITIES = Capabilities(
    provider="lti_ags",
    course_rosters="NRPS memberships (identity only: `lis_person_sourcedid`)",
    section_rosters="no",
    incremental_filter="none",
    deletions_visible="NRPS `status: Deleted` or `Inactive`",
    not_exposed_signal="403 on a service without its scope",
    grades="line items and results (`resultScore`/`resultMaximum`; used with `grades.source: lti_ags`); "
    "ungraded learners omitted; line item ids may carry a query (results: `/results` before it); every "
    'page found by `Link: rel="next"` alone, to the configured origin only',
    grading_scheme="no",
    write_back="scores (`POST {lineitem}/scores`; not used)",
    incremental_sync=False,
    rosters_visible=False,
)


class LtiAgsProvider(BaseProvider):
    name = "lti_ags"
    capabilities = CAPABILITIES
    options = None  # no connection's own provider: the grade source of a Unified connection
    mount = "lti"
    grades = LtiGrades()

    def serves(self, conn: ConnectionConfig) -> bool:
        return conn.grades is not None and conn.grades.source == self.name

    @contextmanager
    def open_client(
        self, conn: ConnectionConfig, endpoint: Endpoint, day: date, page_size: int | None = None
    ) -> Iterator[LtiAgsClient]:
        """The platform's client: at ``grades.lti_base_url`` when set, with the connection's token."""
        base_url = (conn.grades.lti_base_url if conn.grades else None) or endpoint.base_url
        with LtiAgsClient(conn.id, base_url, endpoint.secret, retry=conn.options.retry.settings(),
                          simulated_date=client_day(conn, day),
                          max_concurrent_requests=conn.options.max_concurrent_requests) as client:  # fmt: skip
            yield client

    def simulator_app(self, worlds: Sequence[Any], credentials: Mapping[str, Any]) -> LtiPlatformApp:
        return LtiPlatformApp(worlds, credentials)


PROVIDER = LtiAgsProvider()
