"""The Celery side of the scaled deployment: the executor's broker and result backend, and the app a worker runs.

Broker and result backend are the deployment's PostgreSQL (kombu's SQLAlchemy transport, ``sqla+postgresql://``, and
Celery's database backend, ``db+postgresql://``), so no broker server is added: ``make scale-demo`` needs only
Python. On a cluster a Redis or RabbitMQ broker is the usual choice (push instead of polling); only the two URLs
change (docs/scale-out.md).

A step's message is acknowledged after the step ran (``task_acks_late``) and given back to the queue when the
process running it dies (``task_reject_on_worker_lost``), so a killed worker process's step is run again by another
worker instead of being lost: the lake commit makes a re-run of a connection-day harmless.

Workers: ``python -m celery -A lms_pipeline.scale.celery_app worker -Q dagster -c 1`` with the deployment's
environment (``LMS_SCALE_POSTGRES_URL``, ``LMS_PIPELINE_CONFIG``, ...); ``worker_command`` builds it.
"""

from __future__ import annotations

import os
import sys

from lms_pipeline.scale import postgres

QUEUE = "dagster"  # dagster-celery routes every step to this queue unless a step's tag names another

CONFIG_SOURCE = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,  # a worker takes one step at a time; the rest stay for idle workers
    "broker_connection_retry_on_startup": True,
    # kombu's SQL transport passes every other transport option to SQLAlchemy's create_engine (so its polling interval
    # stays at 1 s: a step waits up to a second in the queue); pool_pre_ping drops connections PostgreSQL closed.
    "broker_transport_options": {
        "pool_pre_ping": True,
        "max_retries": 3,
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    },  # fmt: skip
    "result_backend_always_retry": True,
}


def executor_config(celery_db_url: str) -> dict:
    """``celery_executor`` config for the broker and backend on the database at ``celery_db_url`` (psycopg2 URL)."""
    return {
        "broker": postgres.sqlalchemy_url(celery_db_url, "sqla+"),
        "backend": postgres.sqlalchemy_url(celery_db_url, "db+"),
        "config_source": CONFIG_SOURCE,
    }


def worker_command(name: str, concurrency: int = 1) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "lms_pipeline.scale.celery_app", "worker", "-Q", QUEUE,
            "-c", str(concurrency), "-n", f"{name}@%h", "-l", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]  # fmt: skip


def _make_worker_app():  # noqa: ANN202 - a celery.Celery
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    url = os.environ.get("LMS_SCALE_POSTGRES_URL")
    if not url:
        raise RuntimeError("LMS_SCALE_POSTGRES_URL is not set: a worker needs the deployment's PostgreSQL")
    config = executor_config(postgres.url(url, "celery"))
    worker_app = make_app(CeleryExecutor.for_cli(**config).app_args())
    create_task(worker_app)  # the task dagster-celery sends each step as
    return worker_app


app = _make_worker_app() if os.environ.get("LMS_SCALE_POSTGRES_URL") else None
