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
from lms_pipeline.config import Settings, config_path, load_settings
from lms_pipeline.partitions import day_by_connection
from lms_pipeline.resources import LmsApiResource, WarehouseResource

ROSTER_JOB = "daily_roster_job"


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
        jobs=[job],
        # One run per connection for the last complete UTC day, at 05:30 UTC.
        schedules=[dg.build_schedule_from_partitioned_job(job, hour_of_day=5, minute_of_hour=30)],
        resources={
            "lms": LmsApiResource(config_path=config_file),
            "warehouse": WarehouseResource(duckdb=DuckDBResource(database=str(settings.warehouse_path()))),
        },
    )


defs = build_defs()
