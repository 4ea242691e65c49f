"""The scaled deployment's Definitions: connection groups as partitions, a group's connections as steps that Celery
workers run, every connection-day committed to the lake.

``workspace_scale.yaml`` loads ``defs`` from here; the daemon, the webserver, every run and every Celery worker
import it with the same environment (``ScaleConfig.from_env``). The single-machine ``lms_pipeline.definitions``
is not changed by any of it: its assets, checks and schedule are what each connection-day step runs.

One run per (group, day): ``plan_group`` maps the group's connections to one step each, on the op of their provider
(so each provider has its own pool, ``lms_api_<provider>``, whose limit holds across every worker because the slots
live in the PostgreSQL instance), and ``record_group`` reports one row per connection. The run queue admits one run
per group at a time (``instance.GROUP_TAG``), so a connection never has two steps in flight anywhere.
"""

# No ``from __future__ import annotations``: Dagster reads the ops' annotations (context, inputs) at definition.
import os
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from lms_pipeline.config import REPO_ROOT, Settings, config_path, load_settings
from lms_pipeline.scale import groups
from lms_pipeline.scale.connection_day import DayResult, sync_connection_day
from lms_pipeline.scale.lake import Lake

GROUP_ASSET = "connection_group_days"
GROUP_JOB = "connection_group_days_job"


@dataclass(frozen=True)
class ScaleConfig:
    """Where a scaled deployment keeps things; every process reads it from the same environment."""

    postgres_url: str  # psycopg2 URL of the server; the databases dagster, lake and celery live on it
    lake_root: Path  # the lake's files: a folder every worker mounts
    work_root: Path  # each worker process's working warehouse, and step outputs (the IO manager)
    n_groups: int = 100

    @classmethod
    def from_env(cls) -> "ScaleConfig":
        url = os.environ.get("LMS_SCALE_POSTGRES_URL")
        if not url:
            raise RuntimeError(
                "LMS_SCALE_POSTGRES_URL is not set: the scaled deployment needs its PostgreSQL (docs/scale-out.md); "
                "the single-machine pipeline is lms_pipeline.definitions"
            )
        data = Path(os.environ.get("LMS_SCALE_DATA") or REPO_ROOT / "data" / "scale")
        return cls(
            postgres_url=url,
            lake_root=Path(os.environ.get("LMS_SCALE_LAKE") or data / "lake"),
            work_root=Path(os.environ.get("LMS_SCALE_WORK") or data / "work"),
            n_groups=int(os.environ.get("LMS_SCALE_GROUPS") or 100),
        )

    def database(self, name: str) -> str:
        from lms_pipeline.scale import postgres

        return postgres.url(self.postgres_url, name)

    def lake(self) -> Lake:
        return Lake(self.database("lake"), self.lake_root)

    def celery(self) -> dict:
        """The Celery executor's config: broker and result backend on the same PostgreSQL (no other server)."""
        from lms_pipeline.scale import celery_app

        return celery_app.executor_config(self.database("celery"))


def _sync_op(provider: str, config_file: str, scale: ScaleConfig) -> dg.OpDefinition:
    @dg.op(
        name=f"sync_{provider}",
        pool=f"lms_api_{provider}",
        description=f"One {provider} connection's day: the ordinary pipeline on a working warehouse filled from and "
        "committed to the lake (lms_pipeline.scale.connection_day).",
    )
    def sync(context: dg.OpExecutionContext, connection_id: str) -> dict:
        _, day = groups.split_group_key(context.partition_key)
        result = sync_connection_day(config_file, scale.lake(), scale.work_root, connection_id, day)
        context.add_output_metadata(_metadata(result))
        return {"connection_id": connection_id, "snapshot_id": result.commit.snapshot_id, **result.commit.rows}

    return sync


def _metadata(result: DayResult) -> dict:
    return {
        "connection_id": result.connection_id,
        "snapshot_id": result.commit.snapshot_id,
        "edges": result.commit.rows.get("course_student_edges", 0),
        "published": len(result.commit.published),
        "hydrated_rows": result.hydrated_rows,
        "worker": result.worker,
    }


def build_scale_defs(
    settings: Settings,
    config_file: str,
    scale: ScaleConfig,
    executor: dg.ExecutorDefinition | None = None,
) -> dg.Definitions:
    partitions = groups.day_by_group(settings, scale.n_groups)
    by_group = groups.members(settings.connection_ids, scale.n_groups)
    provider_of = {c.id: c.provider for c in settings.connections}
    providers = sorted(set(provider_of.values()))

    @dg.op(
        out={p: dg.DynamicOut(str, is_required=False) for p in providers},
        description="The group's connections, each to the step of its provider.",
    )
    def plan_group(context: dg.OpExecutionContext):  # noqa: ANN202 - yields DynamicOutputs
        group, _ = groups.split_group_key(context.partition_key)
        for connection_id in by_group[group]:
            yield dg.DynamicOutput(connection_id, output_name=provider_of[connection_id],
                                   mapping_key=connection_id.replace("-", "_"))  # fmt: skip

    @dg.op(description="One row per connection of the group's day: the per-connection view of a grouped partition.")
    def record_group(context: dg.OpExecutionContext, synced: list[list[dict]]) -> None:
        rows = sorted((row for per_provider in synced for row in per_provider), key=lambda r: r["connection_id"])
        lines = [f"| {r['connection_id']} | {r['snapshot_id']} | {r.get('course_student_edges', 0)} |" for r in rows]
        context.add_output_metadata({
            "connections": len(rows),
            "edges": sum(r.get("course_student_edges", 0) for r in rows),
            "per_connection": dg.MetadataValue.md("| connection | lake snapshot | edges |\n|---|---|---|\n"
                                                  + "\n".join(lines)),
        })  # fmt: skip

    @dg.op
    def gather(values: list[dict]) -> list[dict]:
        return values

    sync_ops = {p: _sync_op(p, config_file, scale) for p in providers}

    @dg.graph_asset(
        name=GROUP_ASSET,
        partitions_def=partitions,
        description="Every connection of a group, one day: each connection's rosters, progress and grades through "
        "the ordinary pipeline, committed to the lake (docs/scale-out.md).",
    )
    def connection_group_days():
        planned = plan_group()
        per_provider = [gather(getattr(planned, p).map(sync_ops[p]).collect()) for p in providers]
        return record_group(per_provider)

    job = dg.define_asset_job(GROUP_JOB, selection=[GROUP_ASSET], partitions_def=partitions)
    scale.work_root.mkdir(parents=True, exist_ok=True)
    return dg.Definitions(
        assets=[connection_group_days],
        jobs=[job],
        executor=executor or _celery_executor(scale),
        # Step outputs (the group's connection ids) go through files every worker can read: on a cluster, an
        # object-store IO manager instead (docs/scale-out.md, Kubernetes).
        resources={"io_manager": dg.FilesystemIOManager(base_dir=str(scale.work_root / "io"))},
    )


def _celery_executor(scale: ScaleConfig) -> dg.ExecutorDefinition:
    from dagster_celery import celery_executor

    return celery_executor.configured(scale.celery(), name="celery_on_postgres")


def _defs_from_env() -> dg.Definitions:
    config_file = str(config_path())
    return build_scale_defs(load_settings(config_file), config_file, ScaleConfig.from_env())


defs = _defs_from_env() if os.environ.get("LMS_SCALE_POSTGRES_URL") else dg.Definitions()
