"""Dagster resources: the LMS APIs (a client per connection, opened by its provider) and the DuckDB warehouse.

Resources only wire configuration to the plain-Python clients and warehouse, which know nothing of Dagster. Where a
connection's requests go is ``Endpoints``'s business: the configured URL and the secret from the environment here;
``definitions.py`` picks, once, the embedded systems instead when the connections file has any.
"""

# No ``from __future__ import annotations``: Dagster reads the resource fields' annotations at run time, and a
# nested resource annotated with a string is never resolved (its attribute recurses forever).
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from lms_pipeline.config import ConnectionConfig, Settings, SisConfig, load_settings
from lms_pipeline.providers import registry
from lms_pipeline.providers.base import Endpoint, Provider
from lms_pipeline.warehouse import Warehouse


class MissingTokenError(RuntimeError):
    """A live connection's token env var is unset."""


class Endpoints(dg.ConfigurableResource):
    """Where each connection's and SIS's requests go, and the secret they carry: the ``base_url`` the connections
    file gives and the secret from the environment variable it names (live systems)."""

    def connection(self, settings: Settings, conn: ConnectionConfig, provider: Provider) -> Endpoint:
        """The endpoint of ``provider``'s client for ``conn`` (its own provider's, or its grade source's)."""
        token = conn.secret()
        if token is None:
            raise MissingTokenError(
                f"connection {conn.id!r}: environment variable {conn.token_env} (its API token) is not set"
            )
        return Endpoint(conn.base_url or "", token)

    def sis(self, settings: Settings, sis: SisConfig) -> tuple[str, tuple[str, str]]:
        """(base URL, (client id, client secret)) of an SIS."""
        credentials = sis.credentials()
        if credentials is None:
            raise MissingTokenError(f"sis {sis.id!r}: set {sis.client_id_env} and {sis.client_secret_env}")
        return sis.base_url or "", credentials


@functools.lru_cache(maxsize=8)
def _cached_settings(path: str, mtime_ns: int) -> Settings:
    """Parse the connections file once per version of it (assets and clients all ask for it)."""
    return load_settings(path)


class LmsApiResource(dg.ConfigurableResource):
    """Opens the clients of one connection; reads the connections file named by ``config_path``."""

    config_path: str
    endpoints: Endpoints

    def settings(self) -> Settings:
        path = Path(self.config_path)
        return _cached_settings(str(path), path.stat().st_mtime_ns if path.exists() else 0)

    @contextmanager
    def client(self, connection_id: str, snapshot_date: date, page_size: int | None = None) -> Iterator[Any]:
        """The client of the connection's own provider (its rosters, progress and native grades)."""
        conn = self.settings().connection(connection_id)
        with self._open(conn, registry.provider(conn.provider), snapshot_date, page_size) as client:
            yield client

    @contextmanager
    def grade_client(self, connection_id: str, snapshot_date: date) -> Iterator[Any]:
        """The client of the connection's grade source (``grades.source``: its own provider, or LTI AGS)."""
        conn = self.settings().connection(connection_id)
        provider = registry.grade_provider(conn)
        if provider is None:
            raise KeyError(f"connection {connection_id!r} has no 'grades' in the connections file")
        with self._open(conn, provider, snapshot_date) as client:
            yield client

    def _open(self, conn: ConnectionConfig, provider: Provider, day: date, page_size: int | None = None) -> Any:
        endpoint = self.endpoints.connection(self.settings(), conn, provider)
        return provider.open_client(conn, endpoint, day, page_size)

    @contextmanager
    def sis_client(self, connection_id: str, snapshot_date: date, write: bool = False) -> Iterator[Any]:
        """A client of the SIS this connection's grades are reconciled against; ``write`` asks for the
        gradebook.createput scope too (only the write-back does)."""
        settings = self.settings()
        conn, sis = settings.connection(connection_id), settings.sis_of(connection_id)
        if sis is None:
            raise KeyError(f"connection {connection_id!r} has no 'grades.sis' in the connections file")
        base_url, credentials = self.endpoints.sis(settings, sis)
        day = snapshot_date if conn.simulated_clock and sis.embedded else None
        with registry.provider(sis.provider).sis.open_client(sis, base_url, credentials, day, write) as client:
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
