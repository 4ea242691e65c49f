"""LTI AGS as the pipeline sees it: a grade source for Unified connections (``grades.source: lti_ags``), read from
the platform's line items and results, students tied through NRPS memberships."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from lms_pipeline.clients.lti_ags import LtiAgsClient
from lms_pipeline.providers.base import (
    SIDE_GRADE_COLUMNS,
    BaseProvider,
    Capabilities,
    Endpoint,
    GradeSides,
    client_day,
    grade_page_row,
)
from lms_pipeline.simulator.lti_app import LtiPlatformApp
from lms_pipeline.transforms.lti_grades import lti_sides, normalize_lti_grades

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


class LtiGrades:
    """AGS results as ``<score>/<maximum>``; a learner listed without a score is ungraded (""), never 0."""

    def fetch(self, client: LtiAgsClient) -> list[dict]:
        return [grade_page_row(page) for page in client.grade_pages()]

    def sides(self, conn: ConnectionConfig, pages: pd.DataFrame, stored: Callable[[str], pd.DataFrame]) -> GradeSides:
        frame = normalize_lti_grades(pages, conn.id)
        frame = frame.assign(raw_grade=frame["raw_grade"].where(frame["grade_status"] != "ungraded", ""),
                             points_possible=None, graded_at=pd.NaT)  # fmt: skip
        contents, students = lti_sides(pages)
        return GradeSides(frame[SIDE_GRADE_COLUMNS], students, contents)


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
