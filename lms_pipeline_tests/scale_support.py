"""What the scale-out tests share: one local PostgreSQL per test session (the project's own, from the pgserver
wheel), a fresh database per test, and a working warehouse made from the project's DDL."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pytest

from lms_pipeline.schemas import ddl

SCHEMA = "lms"
START = date(2026, 9, 1)


@pytest.fixture(scope="session")
def postgres_base() -> Iterator[str]:
    pytest.importorskip("pgserver", reason="the scale extra is not installed")
    from lms_pipeline.scale import postgres

    # A short path of its own: the socket lives in the data folder (a socket path has ~100 bytes at most), and the
    # server runs as pgserver's own user when we are root, which pytest's private temporary folders shut out.
    folder = Path(tempfile.mkdtemp(prefix="lms-pg-"))
    try:
        with postgres.running(folder / "data") as base:
            yield base
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database(postgres_base: str) -> str:
    """A new, empty database on the session's server; its psycopg2 URL."""
    import psycopg2

    from lms_pipeline.scale import postgres

    name = f"t_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(postgres_base)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return postgres.url(postgres_base, name)


def working_warehouse(tables: list[str]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the project's tables (their real DDL) in schema ``lms``."""
    conn = duckdb.connect()
    conn.execute(f"CREATE SCHEMA {SCHEMA}")
    for name in tables:
        conn.execute(ddl.create_table(f"{SCHEMA}.{name}", name))
    return conn


@pytest.fixture
def own_postgres() -> Iterator[str]:
    """A server of this test's own (about a second to start): its databases dagster, lake and celery are fresh."""
    pytest.importorskip("pgserver", reason="the scale extra is not installed")
    from lms_pipeline.scale import postgres

    folder = Path(tempfile.mkdtemp(prefix="lms-pg-"))
    try:
        with postgres.running(folder / "data") as base:
            yield base
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def demo_config(folder: Path, n_connections: int) -> Path:
    """A connections file of ``n_connections`` small embedded connections (the scale demo's worlds)."""
    import yaml

    from lms_pipeline.scale.deployment import demo_connections

    path = folder / "connections.yaml"
    path.write_text(yaml.safe_dump(demo_connections(n_connections, START), sort_keys=False))
    return path
