"""The Dagster instance of a scaled-out deployment: runs, events and schedules in PostgreSQL (``dagster-postgres``),
runs queued by the daemon, one run per connection group at a time, and pools that hold across Celery workers.

Every process of a deployment (the daemon, the webserver, each run and each Celery worker) opens the instance from
the same ``dagster.yaml``; with PostgreSQL storage they all see one run queue, one event log and one table of pool
slots, which is what lets a pool's limit hold whatever worker runs the step (Dagster claims a slot in the instance
before it hands a step to Celery: ``dagster_celery.core_execution_loop`` runs under ``InstanceConcurrencyContext``).
"""

from __future__ import annotations

from pathlib import Path

import yaml

# The grouped job's partition dimension holding the connection group; Dagster tags each run of a multi-partition
# with ``dagster/partition/<dimension>``, which the run queue limits to one run per value.
GROUP_DIMENSION = "connection_group"
GROUP_TAG = f"dagster/partition/{GROUP_DIMENSION}"


def instance_config(
    postgres_url: str, max_concurrent_runs: int = 4, pool_limit: int = 4, max_runtime_seconds: int = 1800
) -> dict:
    """The ``dagster.yaml`` mapping for a deployment on ``postgres_url``."""
    return {
        "telemetry": {"enabled": False},
        # One database for runs, the event log and schedules; dagster-postgres creates its tables at first open.
        "storage": {"postgres": {"postgres_url": postgres_url}},
        "concurrency": {
            "pools": {"granularity": "op", "default_limit": pool_limit},
            "runs": {
                "max_concurrent_runs": max_concurrent_runs,
                "tag_concurrency_limits": [
                    # A group's days run in order, one at a time: a change set compares a day with the previous one,
                    # and a connection's rate budget is spent by one run at once (its own step in its group's run).
                    {"key": GROUP_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
                ],
            },
        },  # fmt: skip
        # A run whose worker vanished (its Celery task lost with the machine) is failed after max_runtime_seconds
        # instead of waiting forever; re-running its partition then completes it (docs/scale-out.md).
        "run_monitoring": {"enabled": True, "max_runtime_seconds": max_runtime_seconds, "poll_interval_seconds": 5},
    }


def write_instance(home: Path | str, postgres_url: str, **options: int) -> Path:
    """Write ``<home>/dagster.yaml`` for ``postgres_url``; returns its path. ``home`` is the DAGSTER_HOME."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(instance_config(postgres_url, **options), sort_keys=False))
    return path
