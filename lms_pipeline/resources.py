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
import duckdb
from dagster_duckdb import DuckDBResource

from lms_pipeline.clients.http import RetrySettings
from lms_pipeline.clients.unified import UnifiedLmsClient
from lms_pipeline.config import ConnectionConfig, Settings, load_settings
from lms_pipeline.simulator import SimulatorApp, World, WorldSpec, serve_in_thread
from lms_pipeline.warehouse import Warehouse

SIMULATED_DATE_HEADER = "X-Simulated-Date"


class MissingTokenError(RuntimeError):
    """A live connection's token env var is unset."""


def world_spec(settings: Settings, conn: ConnectionConfig) -> WorldSpec:
    params = conn.world.model_dump()
    params["start_date"] = params["start_date"] or settings.start_date
    return WorldSpec(connection_id=conn.id, **params)


def connection_token(conn: ConnectionConfig) -> str | None:
    return os.environ.get(conn.token_env) or None


class _EmbeddedSimulator:
    """One simulator per process for the connections without a base_url, served on 127.0.0.1 (real HTTP).

    A connection whose token env var is unset gets an ephemeral per-process token shared by client and
    simulator, so the demo runs with no secrets set while live connections still require theirs.
    """

    _lock = threading.Lock()
    _servers: dict[tuple, tuple[str, dict[str, str], SimulatorApp]] = {}
    _stack = ExitStack()

    @classmethod
    def _serve(cls, settings: Settings) -> tuple[str, dict[str, str], SimulatorApp]:
        embedded = [c for c in settings.connections if c.embedded]
        key = tuple((c.id, repr(world_spec(settings, c)), c.token_env) for c in embedded)
        with cls._lock:
            if key not in cls._servers:
                tokens = {c.id: connection_token(c) or secrets.token_urlsafe(24) for c in embedded}
                app = SimulatorApp([World(world_spec(settings, c)) for c in embedded], tokens)
                base_url = cls._stack.enter_context(serve_in_thread(app, host="127.0.0.1", port=0))
                cls._servers[key] = (base_url, tokens, app)
            return cls._servers[key]

    @classmethod
    def endpoint(cls, settings: Settings) -> tuple[str, dict[str, str]]:
        base_url, tokens, _ = cls._serve(settings)
        return base_url, tokens


def embedded_worlds(settings: Settings) -> dict[str, World]:
    """The worlds this process's embedded simulator serves: their truth includes the mid-scan churn it applied,
    which a fresh World would not know."""
    return _EmbeddedSimulator._serve(settings)[2].worlds


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
        settings = self.settings()
        conn = settings.connection(connection_id)
        if conn.embedded:
            base_url, tokens = _EmbeddedSimulator.endpoint(settings)
            token = tokens[conn.id]
        else:
            base_url, token = conn.base_url, connection_token(conn)
            if token is None:
                raise MissingTokenError(
                    f"connection {conn.id!r}: environment variable {conn.token_env} (its API token) is not set"
                )
        headers = {SIMULATED_DATE_HEADER: snapshot_date.isoformat()} if conn.simulated_clock else {}
        retry = conn.options.retry
        client = UnifiedLmsClient(
            conn.id,
            base_url,
            token,
            page_size=page_size or conn.options.page_size,
            headers=headers,
            retry=RetrySettings(
                max_attempts=retry.max_attempts,
                base_delay=retry.base_delay_seconds,
                max_delay=retry.max_delay_seconds,
                max_total_wait=retry.max_total_wait_seconds,
                timeout=retry.timeout_seconds,
            ),
        )
        with client:
            yield client


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse, configured through Dagster's DuckDB integration."""

    duckdb: DuckDBResource

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        # DuckDBResource.get_connection() closes its connection only on a clean exit (no try/finally in
        # dagster-duckdb 0.29), so an exception inside the block would leak the connection and its file lock
        # for the life of the process. Catch inside, let the resource close, then re-raise.
        failure: BaseException | None = None
        with self.duckdb.get_connection() as conn:
            try:
                yield conn
            except BaseException as exc:  # re-raised below, after the connection is closed
                failure = exc
        if failure is not None:
            raise failure

    def warehouse(self) -> Warehouse:
        return Warehouse(self.duckdb.database, connect=self._connect)
