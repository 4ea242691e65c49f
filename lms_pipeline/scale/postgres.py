"""A local PostgreSQL for tests and the scale demo, started and stopped by the project itself.

The server is the ``pgserver`` wheel's (PostgreSQL 16 binaries inside a PyPI package), so ``make scale-demo`` needs
nothing but Python: no apt package, no manual step. It listens on a Unix socket inside its data folder only (no TCP
port at all), which also keeps two helpers' servers on one machine apart. A deployment points
``LMS_SCALE_POSTGRES_URL`` at its own server instead and never calls ``start``.

``python -m lms_pipeline.scale.postgres start|stop|url <data dir>`` is the script form.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

DATABASES = ("dagster", "lake", "celery")


class PostgresError(RuntimeError):
    """The local PostgreSQL could not be started, reached or stopped."""


def _pgserver():  # noqa: ANN202 - the optional 'scale' extra
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on a CI machine
            import pgserver
    except ImportError as exc:
        raise PostgresError("the local PostgreSQL needs the 'scale' extra (pip install -e '.[scale]')") from exc
    return pgserver


def start(data_dir: Path | str) -> str:
    """Start (or find running) the server whose data lives in ``data_dir``; create the project's databases.
    Returns the URL of its ``postgres`` database; ``url(base, name)`` names another. Idempotent."""
    pgserver = _pgserver()
    data_dir = Path(data_dir).resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    try:
        # cleanup_mode=None: the server outlives this process (workers and the daemon use it); ``stop`` ends it.
        server = pgserver.get_server(data_dir, cleanup_mode=None)
    except Exception as exc:  # pgserver raises CalledProcessError/TimeoutExpired with the log in its own logger
        log = data_dir / "log"
        tail = log.read_text()[-2000:] if log.exists() else "(no log)"
        raise PostgresError(f"local PostgreSQL in {data_dir} did not start: {exc}\n{tail}") from None
    base = server.get_uri()
    _databases(data_dir, base, DATABASES)
    return base


def url(base: str, database: str) -> str:
    """The URL of ``database`` on the server of ``base`` (a socket URL: ``postgresql://postgres:@/x?host=...``)."""
    head, _, query = base.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{quote(database)}" + (f"?{query}" if query else "")


def sqlalchemy_url(pg_url: str, prefix: str = "") -> str:
    """The same database as a SQLAlchemy URL naming the driver (SQLAlchemy 2.1 defaults ``postgresql://`` to
    psycopg 3, which is not installed: psycopg2 is, through dagster-postgres), behind ``prefix`` (Celery's ``sqla+``
    broker and ``db+`` result backend)."""
    return prefix + "postgresql+psycopg2" + pg_url.removeprefix("postgresql")


def stop(data_dir: Path | str, wait_seconds: float = 30.0) -> bool:
    """Stop the server of ``data_dir``: SIGINT is PostgreSQL's fast shutdown (sessions ended, data flushed); a
    server still up after ``wait_seconds`` is killed. False when none was running.

    The postmaster's pid is read from its ``postmaster.pid`` rather than through ``pg_ctl``, which runs as the
    server's own system user when we are root and may not be allowed into a private temporary folder."""
    pid_file = Path(data_dir).resolve() / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def _databases(data_dir: Path, base: str, wanted: tuple[str, ...]) -> None:
    import psycopg2

    try:
        conn = psycopg2.connect(base, connect_timeout=10)
    except psycopg2.Error as exc:
        raise PostgresError(f"local PostgreSQL in {data_dir}: cannot connect: {exc}") from None
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datname FROM pg_database")
            existing = {row[0] for row in cur.fetchall()}
            for name in wanted:
                if name not in existing:
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


@contextlib.contextmanager
def running(data_dir: Path | str) -> Iterator[str]:
    """A server for the length of a block (tests): started, then stopped whatever happens."""
    base = start(data_dir)
    try:
        yield base
    finally:
        stop(data_dir)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop", "url"):
        print("usage: python -m lms_pipeline.scale.postgres start|stop|url <data dir>", file=sys.stderr)
        return 2
    command, data_dir = argv
    if command == "stop":
        print("stopped" if stop(data_dir) else "not running")
        return 0
    print(start(data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
