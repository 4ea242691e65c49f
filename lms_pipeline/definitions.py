"""The one place that assembles Definitions: assets, checks, resources, the job and its schedule.

``dagster dev -w workspace.yaml`` loads ``defs`` from here, built from the connections file named by
``LMS_PIPELINE_CONFIG`` (default data/connections.yaml); tests call ``build_defs`` with their own settings.
"""

from __future__ import annotations

import dagster as dg
from dagster_duckdb import DuckDBResource

from lms_pipeline.assets.grades import build_grade_assets
from lms_pipeline.assets.progress import build_progress_assets
from lms_pipeline.assets.roster import build_roster_assets
from lms_pipeline.config import ConnectionConfig, Settings, SisConfig, config_path, load_settings
from lms_pipeline.partitions import day_by_connection
from lms_pipeline.providers.base import Endpoint, Provider
from lms_pipeline.resources import Endpoints, LmsApiResource, WarehouseResource
from lms_pipeline.simulator import systems

ROSTER_JOB = "daily_roster_job"


def _multiprocess_requested(config: dict) -> list:
    return dg.multiple_process_executor_requirements() if "multiprocess" in config else []


# Dagster's own default executor, with its modes' defaults swapped: a run is one Python process unless a run asks for
# a process per step (run config ``{"execution": {"config": {"multiprocess": {}}}}``). A process per step cost a
# one-partition shell run ~35 s, mostly imports, and this job's steps are sequential (each reads what the previous one
# stored), so processes buy no parallelism; parallelism comes from several runs at once (the run queue).
_default_executor = dg.multi_or_in_process_executor
in_process_first = dg.ExecutorDefinition(
    name="in_process_or_multiprocess_executor",
    config_schema=dg.Field(
        dg.Selector(
            {
                "in_process": _default_executor.config_schema.config_type.fields["in_process"],
                "multiprocess": _default_executor.config_schema.config_type.fields["multiprocess"],
            }
        ),
        default_value={"in_process": {}},
    ),  # fmt: skip
    executor_creation_fn=_default_executor.executor_creation_fn,
    requirements=_multiprocess_requested,
    description="In-process by default; multiprocess when the run config asks for it.",
)


class EmbeddedEndpoints(Endpoints):
    """The connections and SISs without a base_url are served by this process's embedded simulator on 127.0.0.1
    (``simulator/systems.py``), started at the first request; the others are live."""

    def connection(self, settings: Settings, conn: ConnectionConfig, provider: Provider) -> Endpoint:
        if not conn.embedded:
            return super().connection(settings, conn, provider)
        return systems.connection_endpoint(settings, conn, provider)

    def sis(self, settings: Settings, sis: SisConfig) -> tuple[str, tuple[str, str]]:
        return systems.sis_endpoint(settings, sis) if sis.embedded else super().sis(settings, sis)


def endpoints(settings: Settings) -> Endpoints:
    """Live systems, or the embedded simulator for the connections and SISs the file gives no base_url: chosen
    here, once."""
    if any(c.embedded for c in settings.connections) or any(s.embedded for s in settings.sis):
        return EmbeddedEndpoints()
    return Endpoints()


def build_defs(settings: Settings | None = None, config_file: str | None = None) -> dg.Definitions:
    config_file = config_file or str(config_path())
    settings = settings or load_settings(config_file)
    partitions = day_by_connection(settings)
    assets = [*build_roster_assets(partitions), *build_progress_assets(partitions), *build_grade_assets(partitions)]
    job = dg.define_asset_job(
        ROSTER_JOB,
        selection=dg.AssetSelection.groups("roster", "progress", "grades"),
        partitions_def=partitions,
        description="Fetch, normalize and diff one connection's rosters for one day, then its contents and "
        "learner progress, then reconcile its grades with the SIS (connections with grades.sis).",
    )
    return dg.Definitions(
        assets=assets,
        executor=in_process_first,
        jobs=[job],
        # One run per connection for the last complete UTC day, at 05:30 UTC.
        schedules=[dg.build_schedule_from_partitioned_job(job, hour_of_day=5, minute_of_hour=30)],
        resources={
            "lms": LmsApiResource(config_path=config_file, endpoints=endpoints(settings)),
            "warehouse": WarehouseResource(duckdb=DuckDBResource(database=str(settings.warehouse_path()))),
        },
    )


defs = build_defs()
