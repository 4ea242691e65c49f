"""Dagster resources: the LMS API (one client per connection) and the DuckDB warehouse.

Resources only wire configuration to the plain-Python clients and warehouse, which know nothing of Dagster.
"""

from __future__ import annotations

import atexit
import functools
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from lms_pipeline.clients.canvas import CanvasClient
from lms_pipeline.clients.classroom import ClassroomClient
from lms_pipeline.clients.http import RetrySettings
from lms_pipeline.clients.lti_ags import LtiAgsClient
from lms_pipeline.clients.oneroster import READ_SCOPES, WRITE_SCOPE, OneRosterClient
from lms_pipeline.clients.oneroster_rostering import OneRosterRosterReader
from lms_pipeline.clients.unified import UnifiedLmsClient
from lms_pipeline.config import ConnectionConfig, RetryOptions, Settings, SisConfig, load_settings
from lms_pipeline.grade_inputs import load_schemes
from lms_pipeline.simulator import SimulatorApp, World, WorldSpec, serve_in_thread
from lms_pipeline.simulator.canvas_app import CanvasSimulatorApp
from lms_pipeline.simulator.classroom_app import ClassroomSimulatorApp
from lms_pipeline.simulator.lti_app import LtiPlatformApp
from lms_pipeline.simulator.oneroster_app import OneRosterRosteringApp
from lms_pipeline.simulator.server import Router
from lms_pipeline.simulator.sis_app import SisSimulatorApp
from lms_pipeline.simulator.sis_world import SisSpec, SisWorld
from lms_pipeline.warehouse import Warehouse

SIMULATED_DATE_HEADER = "X-Simulated-Date"
# Path prefix of each dialect's embedded app: /lms/<conn>/..., /canvas/<conn>/api/v1/..., /classroom/<conn>/v1/...
DIALECT_PREFIX = {"unified": "lms", "canvas": "canvas", "google_classroom": "classroom", "oneroster": "oneroster"}


class MissingTokenError(RuntimeError):
    """A live connection's token env var is unset."""


def world_spec(settings: Settings, conn: ConnectionConfig) -> WorldSpec:
    params = conn.world.model_dump()
    params["start_date"] = params["start_date"] or settings.start_date
    return WorldSpec(connection_id=conn.id, **params)


def connection_token(conn: ConnectionConfig) -> str | None:
    return os.environ.get(conn.token_env) or None


def sis_credentials(sis: SisConfig) -> tuple[str, str] | None:
    client_id, secret = os.environ.get(sis.client_id_env), os.environ.get(sis.client_secret_env)
    return (client_id, secret) if client_id and secret else None


def _retry(options: RetryOptions) -> RetrySettings:
    return RetrySettings(
        max_attempts=options.max_attempts,
        base_delay=options.base_delay_seconds,
        max_delay=options.max_delay_seconds,
        max_total_wait=options.max_total_wait_seconds,
        timeout=options.timeout_seconds,
        deadline=options.request_deadline_seconds,
        max_response_bytes=int(options.max_response_mb * (1 << 20)),
    )


def sis_world(settings: Settings, sis: SisConfig, lms_world: World) -> SisWorld:
    """The embedded SIS mirroring the one embedded connection that names it; it grades letter line items with
    the same scheme file the pipeline reads, as a real SIS would have its own scheme."""
    conn = next(c for c in settings.connections if c.grades and c.grades.sis == sis.id)
    schemes, courses = load_schemes(sis.path("grading_schemes"), conn.id)

    def scheme_for(course_id: str):  # noqa: ANN202 (a GradingScheme or None)
        name = courses.get(course_id, courses.get("*"))
        return schemes.get(name) if name else None

    params = sis.simulator.model_dump() if sis.simulator else {}
    return SisWorld(SisSpec(sis_id=sis.id, **params), lms_world, scheme_for)


def simulated_systems(
    settings: Settings, tokens: dict[str, str], sis_credentials: dict[str, tuple[str, str]]
) -> tuple[Router, dict[str, World]]:
    """Every embedded connection's world in its own dialect (``/lms``, ``/canvas``, ``/classroom``, ``/oneroster``)
    and every embedded SIS (``/sis``), behind one WSGI router: what the embedded server and the simulator CLI
    serve."""
    embedded = [c for c in settings.connections if c.embedded]
    worlds = {c.id: World(world_spec(settings, c)) for c in embedded}
    sis_worlds = [
        sis_world(settings, s, worlds[next(c.id for c in embedded if c.grades and c.grades.sis == s.id)])
        for s in settings.sis if s.embedded
    ]  # fmt: skip
    dialect = {p: [worlds[c.id] for c in embedded if c.provider == p] for p in DIALECT_PREFIX}
    oneroster = {c.id: (c.options.client_id, tokens[c.id]) for c in embedded if c.provider == "oneroster"}
    return Router({
        "lms": SimulatorApp(dialect["unified"], tokens),
        "sis": SisSimulatorApp(sis_worlds, sis_credentials),
        "canvas": CanvasSimulatorApp(dialect["canvas"], tokens),
        "classroom": ClassroomSimulatorApp(dialect["google_classroom"], tokens),
        "oneroster": OneRosterRosteringApp(dialect["oneroster"], oneroster),
        # The LTI platform of the Unified connections whose grades are read through AGS.
        "lti": LtiPlatformApp([worlds[c.id] for c in embedded if c.grades and c.grades.source == "lti_ags"], tokens),
    }), worlds  # fmt: skip


class _EmbeddedSimulator:
    """One simulator per process for the connections without a base_url, served on 127.0.0.1 (real HTTP).

    A connection whose token env var is unset gets an ephemeral per-process token shared by client and
    simulator, so the demo runs with no secrets set while live connections still require theirs.
    """

    _lock = threading.Lock()
    _servers: dict[tuple, tuple[str, dict, dict[str, World], SisSimulatorApp]] = {}
    _stack = ExitStack()

    @classmethod
    def _serve(cls, settings: Settings) -> tuple[str, dict, dict[str, World], SisSimulatorApp]:
        embedded = [c for c in settings.connections if c.embedded]
        sis_list = [s for s in settings.sis if s.embedded]
        # The key holds what defines the worlds, not options such as write_back: the SIS keeps its written
        # grades when an operator switches write-back on between runs.
        key = (tuple((c.id, c.provider, repr(world_spec(settings, c)), c.token_env, c.grades and c.grades.source)
                     for c in embedded),
               tuple((s.id, repr(s.simulator), s.grading_schemes) for s in sis_list))  # fmt: skip
        with cls._lock:
            if key not in cls._servers:
                tokens: dict = {c.id: connection_token(c) or secrets.token_urlsafe(24) for c in embedded}
                credentials = {
                    s.id: sis_credentials(s) or ("lms-pipeline", secrets.token_urlsafe(24)) for s in sis_list
                }
                router, worlds = simulated_systems(settings, tokens, credentials)
                tokens.update({("sis", sis): pair for sis, pair in credentials.items()})
                base_url = cls._stack.enter_context(serve_in_thread(router, host="127.0.0.1", port=0))
                cls._servers[key] = (base_url, tokens, worlds, router.apps["sis"])
            return cls._servers[key]

    @classmethod
    def endpoint(cls, settings: Settings) -> tuple[str, dict]:
        base_url, tokens, _, _ = cls._serve(settings)
        return base_url, tokens


def embedded_worlds(settings: Settings) -> dict[str, World]:
    """The worlds this process's embedded simulator serves: their truth includes the mid-scan churn it applied,
    which a fresh World would not know."""
    return _EmbeddedSimulator._serve(settings)[2]


def embedded_sis(settings: Settings) -> SisSimulatorApp:
    """The embedded SIS app of this process (tests read its worlds' truth and request log)."""
    return _EmbeddedSimulator._serve(settings)[3]


atexit.register(_EmbeddedSimulator._stack.close)


@functools.lru_cache(maxsize=8)
def _cached_settings(path: str, mtime_ns: int) -> Settings:
    """Parse the connections file once per version of it (assets and clients all ask for it)."""
    return load_settings(path)


class LmsApiResource(dg.ConfigurableResource):
    """Opens an LMS client for one connection; reads the connections file named by ``config_path``."""

    config_path: str

    def settings(self) -> Settings:
        path = Path(self.config_path)
        return _cached_settings(str(path), path.stat().st_mtime_ns if path.exists() else 0)

    @contextmanager
    def client(
        self, connection_id: str, snapshot_date: date, page_size: int | None = None
    ) -> Iterator[UnifiedLmsClient]:
        conn = self.settings().connection(connection_id)
        base_url, token = self._endpoint(conn)  # the Unified client adds /lms/<connection> itself
        headers = {SIMULATED_DATE_HEADER: snapshot_date.isoformat()} if conn.simulated_clock else {}
        client = UnifiedLmsClient(
            conn.id,
            base_url,
            token,
            page_size=page_size or conn.options.page_size,
            headers=headers,
            retry=_retry(conn.options.retry),
            max_concurrent_requests=conn.options.max_concurrent_requests,
        )
        with client:
            yield client

    def _endpoint(self, conn: ConnectionConfig, embedded_path: str | None = None) -> tuple[str, str]:
        """(base URL, token) of a connection: the configured API and its token, or the embedded simulator's, where
        a dialect's app is mounted at ``/<embedded_path>/<connection>`` (none: the server root)."""
        settings = self.settings()
        if conn.embedded:
            base_url, tokens = _EmbeddedSimulator.endpoint(settings)
            return (f"{base_url}/{embedded_path}/{conn.id}" if embedded_path else base_url), tokens[conn.id]
        token = connection_token(conn)
        if token is None:
            raise MissingTokenError(
                f"connection {conn.id!r}: environment variable {conn.token_env} (its API token) is not set"
            )
        return conn.base_url, token

    @contextmanager
    def dialect_client(
        self, connection_id: str, snapshot_date: date
    ) -> Iterator[CanvasClient | ClassroomClient | OneRosterRosterReader]:
        """The roster client of a non-Unified connection (Canvas REST, Google Classroom, OneRoster 1.2)."""
        conn = self.settings().connection(connection_id)
        base_url, token = self._endpoint(conn, embedded_path=DIALECT_PREFIX[conn.provider])
        day = snapshot_date if conn.simulated_clock else None
        retry, page_size = _retry(conn.options.retry), conn.options.page_size
        budget = conn.options.max_concurrent_requests
        if conn.provider == "canvas":
            client = CanvasClient(conn.id, base_url, token, retry=retry, per_page=page_size, simulated_date=day,
                                  account_id=conn.options.account_id, max_concurrent_requests=budget)  # fmt: skip
        elif conn.provider == "google_classroom":
            client = ClassroomClient(conn.id, base_url, token, as_of=day, retry=retry, page_size=page_size,
                                     max_concurrent_requests=budget)  # fmt: skip
        elif conn.provider == "oneroster":
            client = OneRosterRosterReader(conn.id, base_url, conn.options.client_id, token, retry=retry,
                                           page_size=page_size, simulated_date=day,
                                           max_concurrent_requests=budget)  # fmt: skip
        else:
            raise ValueError(f"connection {conn.id!r}: no dialect client for provider {conn.provider!r}")
        with client:
            yield client

    @contextmanager
    def lti_client(self, connection_id: str, snapshot_date: date) -> Iterator[LtiAgsClient]:
        """The LTI AGS (+ NRPS) client of a connection whose grades are read through its platform's AGS."""
        conn = self.settings().connection(connection_id)
        if conn.grades is None or conn.grades.source != "lti_ags":
            raise KeyError(f"connection {connection_id!r} does not read grades through LTI AGS")
        base_url, token = self._endpoint(conn, embedded_path="lti")
        if conn.grades.lti_base_url:
            base_url = conn.grades.lti_base_url
        client = LtiAgsClient(conn.id, base_url, token, retry=_retry(conn.options.retry),
                              simulated_date=snapshot_date if conn.simulated_clock else None,
                              max_concurrent_requests=conn.options.max_concurrent_requests)  # fmt: skip
        with client:
            yield client

    @contextmanager
    def sis_client(self, connection_id: str, snapshot_date: date, write: bool = False) -> Iterator[OneRosterClient]:
        """A client of the SIS this connection's grades are reconciled against; ``write`` asks for the
        gradebook.createput scope too (only the write-back does)."""
        settings = self.settings()
        conn, sis = settings.connection(connection_id), settings.sis_of(connection_id)
        if sis is None:
            raise KeyError(f"connection {connection_id!r} has no 'grades.sis' in the connections file")
        if sis.embedded:
            base_url, tokens = _EmbeddedSimulator.endpoint(settings)
            base_url, credentials = f"{base_url}/sis/{sis.id}", tokens[("sis", sis.id)]
        else:
            base_url, credentials = sis.base_url, sis_credentials(sis)
            if credentials is None:
                raise MissingTokenError(f"sis {sis.id!r}: set {sis.client_id_env} and {sis.client_secret_env}")
        simulated = conn.simulated_clock and sis.embedded
        client = OneRosterClient(
            sis.id,
            base_url,
            *credentials,
            token_url=sis.token_url,
            scopes=READ_SCOPES + ((WRITE_SCOPE,) if write else ()),
            headers={SIMULATED_DATE_HEADER: snapshot_date.isoformat()} if simulated else {},
            retry=_retry(sis.retry),
        )
        with client:
            yield client


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse, configured through Dagster's DuckDB integration (its ``database`` path).

    Connections are opened by ``Warehouse`` itself, not by ``DuckDBResource.get_connection()``: that one retries a
    lock conflict for ~100 s before naming it and leaks the connection (and the file lock) when the block raises
    (dagster-duckdb 0.29; shared/docs/dagster-duckdb-notes.md §d).
    """

    duckdb: DuckDBResource

    def warehouse(self) -> Warehouse:
        return Warehouse(self.duckdb.database)
