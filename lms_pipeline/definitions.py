"""The one place that assembles Definitions: assets, checks, resources, the job and its schedule.

``dagster dev -w workspace.yaml`` loads ``defs`` from here, built from the connections file named by
``LMS_PIPELINE_CONFIG`` (default data/connections.yaml); tests call ``build_defs`` with their own settings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster_duckdb import DuckDBResource

from lms_pipeline import privacy
from lms_pipeline.alerts import FRESHNESS_JOB, ROSTER_JOB, build_alert_sensor
from lms_pipeline.assets.exports import build_export_assets
from lms_pipeline.assets.grades import build_grade_assets
from lms_pipeline.assets.progress import build_progress_assets
from lms_pipeline.assets.roster import build_roster_assets
from lms_pipeline.assets.roster_recon import build_roster_recon_assets
from lms_pipeline.checks import build_checks, build_freshness_checks, report_refused_contract
from lms_pipeline.config import ConnectionConfig, Settings, SisConfig, config_path, load_settings
from lms_pipeline.partitions import day_by_connection
from lms_pipeline.providers.base import Endpoint, Provider
from lms_pipeline.resources import Endpoints, LmsApiResource, WarehouseResource
from lms_pipeline.simulator import systems


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


RETENTION_JOB = "raw_page_retention_job"


# ``context`` is left unannotated: this module postpones annotations, and Dagster refuses a hint it cannot resolve.
@dg.op(description="Drop raw pages older than retention.raw_pages_days (lms_pipeline.privacy); derived tables stay.")
def drop_old_raw_pages(context, lms: LmsApiResource, warehouse: WarehouseResource) -> None:  # noqa: ANN001
    report = privacy.drop_old_raw_pages(warehouse.warehouse(), lms.settings(), datetime.now(UTC).date())
    context.log.info(f"raw pages before {report.cutoff} dropped: {report.rows_deleted or 'none'}; "
                     f"{report.published_days_rewritten} published day(s) rewritten")  # fmt: skip
    context.add_output_metadata({"cutoff": report.cutoff, "rows_deleted": sum(report.rows_deleted.values()),
                                 "published_days_rewritten": report.published_days_rewritten})  # fmt: skip


retention_job = dg.JobDefinition(
    graph_def=dg.GraphDefinition(name=RETENTION_JOB, node_defs=[drop_old_raw_pages]),
    description="Raw pages past the retention period go (live, staging, the analysts' copy); derived history stays.",
)


def freshness_policy(settings: Settings) -> dg.FreshnessPolicy:
    """Dagster's own freshness policy for the daily job's assets: some partition materialized in the 24 hours
    before the deadline. It judges an asset as a whole (any connection's run counts), so the per-connection checks
    (``lms_pipeline.checks.build_freshness_checks``) say which connection fell behind."""
    return dg.FreshnessPolicy.cron(
        deadline_cron=f"0 {settings.freshness.deadline_hour_utc} * * *", lower_bound_delta=timedelta(hours=24)
    )


def build_defs(settings: Settings | None = None, config_file: str | None = None) -> dg.Definitions:
    config_file = config_file or str(config_path())
    settings = settings or load_settings(config_file)
    partitions = day_by_connection(settings)
    policy = freshness_policy(settings)
    assets = [
        a.map_asset_specs(lambda spec: dg.apply_freshness_policy(spec, policy))
        for a in (*build_roster_assets(partitions), *build_progress_assets(partitions),
                  *build_grade_assets(partitions), *build_roster_recon_assets(partitions),
                  *build_export_assets(partitions))
    ]  # fmt: skip
    freshness_checks = build_freshness_checks(settings)
    job = dg.define_asset_job(
        ROSTER_JOB,
        # The freshness checks target enrollment_change_sets but judge the whole connection: their own job runs them.
        selection=dg.AssetSelection.groups("roster", "progress", "grades", "roster_recon", "exports")
        - dg.AssetSelection.checks(freshness_checks),
        partitions_def=partitions,
        hooks={report_refused_contract},
        description="Fetch, normalize and diff one connection's rosters for one day, then its contents and "
        "learner progress, then reconcile its grades with the SIS (connections with grades.sis) and its rosters "
        "(connections with rosters.sis), then export the "
        "day's change set and grade issues; each step's tables are checked as soon as they are stored "
        "(lms_pipeline.checks).",
    )
    freshness_job = dg.define_asset_job(
        FRESHNESS_JOB,
        selection=dg.AssetSelection.checks(freshness_checks),
        description="Is every connection's last complete day yesterday? One check per connection "
        "(fresh_<connection>) on enrollment_change_sets.",
    )
    deadline = settings.freshness.deadline_hour_utc
    return dg.Definitions(
        assets=assets,
        asset_checks=[*build_checks(partitions), freshness_checks],
        executor=in_process_first,
        jobs=[job, freshness_job, retention_job],
        sensors=[build_alert_sensor()],
        schedules=[
            # One run per connection for the last complete UTC day, at 05:30 UTC.
            dg.build_schedule_from_partitioned_job(job, hour_of_day=5, minute_of_hour=30),
            # Hourly from the deadline to midnight: a connection that catches up turns fresh within the hour.
            dg.ScheduleDefinition(job=freshness_job, cron_schedule=f"5 {deadline}-23 * * *", execution_timezone="UTC"),
            # Retention is a duty, not an option: on as soon as the daemon runs.
            dg.ScheduleDefinition(
                job=retention_job,
                cron_schedule="15 4 * * *",
                execution_timezone="UTC",
                default_status=dg.DefaultScheduleStatus.RUNNING,
            ),
        ],  # fmt: skip
        resources={
            "lms": LmsApiResource(config_path=config_file, endpoints=endpoints(settings)),
            "warehouse": WarehouseResource(duckdb=DuckDBResource(database=str(settings.warehouse_path()))),
        },
    )


defs = build_defs()
