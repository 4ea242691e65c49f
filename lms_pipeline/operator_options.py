"""The connections file's operator sections: check thresholds, freshness deadline, alert webhook, raw-page
retention, exports folder (``checks:``, ``freshness:``, ``alerts:``, ``retention:``, ``exports:``), each with its
default, so a file without them behaves as documented in docs/operators.md."""

from __future__ import annotations

from pydantic import Field

from lms_pipeline.providers.options import Strict


class ChecksOptions(Strict):
    """Thresholds of the asset checks (``lms_pipeline.checks``) that are not the mass-drop guard's."""

    max_server_error_share: float = Field(
        0.05, ge=0, le=1, description="sync health warns when more than this share of a sync's requests got a 5xx"
    )
    max_exposure_fall: float = Field(
        0.1,
        ge=0,
        le=1,
        description="sync health warns when the share of courses whose roster is exposed falls by more than this "
        "(absolute, e.g. 0.1 = 10 points) from the previous day",
    )
    min_grade_match_rate: float = Field(
        0.5,
        ge=0,
        le=1,
        description="a reconciliation matching fewer compared grades than this fails its (blocking) check, and the "
        "write-back of that day does not run: a mapping gone wrong must not be written to the SIS",
    )


class FreshnessOptions(Strict):
    """When a connection is stale: its last complete day (a published change set) is older than yesterday once
    ``deadline_hour_utc`` has passed."""

    deadline_hour_utc: int = Field(
        9, ge=0, le=23, description="hour (UTC) by which yesterday's partition of every connection must be complete"
    )


class AlertsOptions(Strict):
    """Where the alert sensor posts (``lms_pipeline.alerts``): the URL itself is a secret and lives only in the
    environment variable named here."""

    webhook_url_env: str = Field("LMS_ALERT_WEBHOOK_URL", pattern=r"^[A-Z_][A-Z0-9_]*$")
    include_warnings: bool = Field(False, description="also alert on failed checks of WARN severity")
    timeout_seconds: float = Field(10.0, gt=0, le=60, description="one POST to the webhook, body included")
    lookback_hours: int = Field(24, ge=1, le=24 * 14, description="how far back the sensor's first tick looks")


class RetentionOptions(Strict):
    raw_pages_days: int = Field(
        400,
        ge=1,
        le=36_500,
        description="raw pages (course, dialect, progress, grade) of days older than this are dropped; derived "
        "tables are kept (lms_pipeline.privacy)",
    )


class ExportsOptions(Strict):
    path: str | None = Field(
        None, description="folder of the daily CSV/Parquet exports; default: exports/ beside the warehouse file"
    )
