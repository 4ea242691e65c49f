"""OneRoster 1.2 as the pipeline sees it: rostering connections (capabilities, client, simulator, normalizer) and
the SIS gradebook (``OneRosterSis``: the client the reconciliation reads with and the write-back writes with, the
embedded SIS and its world)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from typing import TYPE_CHECKING, Any

import pandas as pd

from lms_pipeline.providers.base import (
    SIMULATED_DATE_HEADER,
    BaseProvider,
    Capabilities,
    Endpoint,
    RosterFrames,
    client_day,
)
from lms_pipeline.providers.full_scan import FullScanRosters
from lms_pipeline.providers.oneroster.client import READ_SCOPES, WRITE_SCOPE, OneRosterClient
from lms_pipeline.providers.oneroster.options import OneRosterOptions
from lms_pipeline.providers.oneroster.rostering import OneRosterRosterReader
from lms_pipeline.providers.oneroster.rosters import normalize_oneroster_pages
from lms_pipeline.providers.oneroster.simulator import OneRosterRosteringApp
from lms_pipeline.providers.oneroster.sis_simulator import SisSimulatorApp
from lms_pipeline.providers.oneroster.sis_world import SisSpec, SisWorld

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig, SisConfig
    from lms_pipeline.simulator.world import World

CAPABILITIES = Capabilities(
    provider="oneroster",
    course_rosters="enrollments of each class (`role=student`, `status: active`, the day inside the optional "
    "`beginDate`..`endDate`, end excluded), union over the course's classes; no course active flag: a course "
    "is active while one of its classes is `active` and the day is inside one of its `terms` "
    "(`academicSessions` dates) and the course's `schoolYear`. Listings read to their end by `Link` next + "
    "`X-Total-Count`, or totals in the body (Timeback), or offsets to an empty page (a silently capped "
    "`limit` is never trusted); next links to the configured origin only",
    section_rosters="yes: classes",
    incremental_filter="`filter=dateLastModified>'...'` (not used yet: full scan daily)",
    deletions_visible="`status: tobedeleted` (legacy 1.0 `inactive`), an `endDate` that has passed (status "
    "left `active`), or rows vanish; all read as not enrolled. A stopped class: its term ended, or it is "
    "`tobedeleted`",
    not_exposed_signal="403 `forbidden` on a class's enrollments",
    grades="gradebook results (the SIS side of reconciliation)",
    grading_scheme="`scoreScales` (letter line items compared on `textScore`)",
    write_back="yes: `PUT /results/{sourcedId}` at an id minted from (line item, student); 201 with no "
    "body (200, 204 and 409 handled as vendor variants); never without proving whose result it is",
    incremental_sync=False,
)


def _normalize(pages: pd.DataFrame, conn: ConnectionConfig, day: date) -> RosterFrames:
    return RosterFrames(*normalize_oneroster_pages(pages, conn.id, day))


class OneRosterSis:
    """A school's SIS holding the grades of record (``sis:`` entries of the connections file)."""

    mount = "sis"

    @contextmanager
    def open_client(
        self, sis: SisConfig, base_url: str, credentials: tuple[str, str], day: date | None, write: bool
    ) -> Iterator[OneRosterClient]:
        """``write`` asks for the gradebook.createput scope too (only the write-back does); ``day`` goes to a
        simulated SIS as X-Simulated-Date."""
        with OneRosterClient(sis.id, base_url, *credentials, token_url=sis.token_url,
                             scopes=READ_SCOPES + ((WRITE_SCOPE,) if write else ()),
                             headers={SIMULATED_DATE_HEADER: day.isoformat()} if day else {},
                             retry=sis.retry.settings()) as client:  # fmt: skip
            yield client

    def world(self, sis: SisConfig, lms_world: World, scheme_for: Callable[[str], Any]) -> SisWorld:
        """The embedded SIS of ``sis``, mirroring one embedded connection's world."""
        params = sis.simulator.model_dump() if sis.simulator else {}
        return SisWorld(SisSpec(sis_id=sis.id, **params), lms_world, scheme_for)

    def simulator_app(self, worlds: Sequence[SisWorld], credentials: Mapping[str, tuple[str, str]]) -> SisSimulatorApp:
        return SisSimulatorApp(worlds, credentials)


class OneRosterProvider(BaseProvider):
    name = "oneroster"
    capabilities = CAPABILITIES
    options = OneRosterOptions
    mount = "oneroster"
    rosters = FullScanRosters(CAPABILITIES, "link_next_total_count", lambda client: client.roster_pages(),
                              _normalize, course_endpoint="courses", class_endpoint="classes")  # fmt: skip
    sis = OneRosterSis()

    @contextmanager
    def open_client(
        self, conn: ConnectionConfig, endpoint: Endpoint, day: date, page_size: int | None = None
    ) -> Iterator[OneRosterRosterReader]:
        options: OneRosterOptions = conn.options  # type: ignore[assignment]
        with OneRosterRosterReader(conn.id, endpoint.base_url, options.client_id, endpoint.secret,
                                   retry=options.retry.settings(), page_size=page_size or options.page_size,
                                   simulated_date=client_day(conn, day),
                                   max_concurrent_requests=options.max_concurrent_requests) as client:  # fmt: skip
            yield client

    def simulator_app(self, worlds: Sequence[Any], credentials: Mapping[str, Any]) -> OneRosterRosteringApp:
        return OneRosterRosteringApp(worlds, credentials)

    def simulator_credentials(self, conn: ConnectionConfig, secret: str) -> tuple[str, str]:
        options: OneRosterOptions = conn.options  # type: ignore[assignment]
        return options.client_id, secret


PROVIDER = OneRosterProvider()
