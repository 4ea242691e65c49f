"""Options of a Unified.to connection (``options:`` in the connections file)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from lms_pipeline.providers.options import CommonOptions


class UnifiedOptions(CommonOptions):
    """Options of a Unified.to-style connection."""

    supports_updated_gte: bool = Field(
        True,
        description="the integration honours updated_gte (docs/providers.md capability tables). False: every day is "
        "a full scan, read in repeated passes until two agree.",
    )
    full_scan_every_days: int = Field(
        7, ge=1, le=366, description="a full scan (catches removed courses, repairs drift) at least this often"
    )
    incremental_overlap_minutes: int = Field(
        60, ge=0, le=7 * 24 * 60, description="an incremental poll re-reads this much before the last high-water mark"
    )
    scan: Literal["consistent", "single_pass"] = Field(
        "consistent",
        description="consistent: keyset paging on updated_at (or repeated passes) so records moving while paged "
        "are neither skipped nor stale. single_pass: one plain offset pass, unsafe under churn; for diagnosis only.",
    )
    max_scan_passes: int = Field(4, ge=2, le=10, description="bound on repeated passes of a consistent scan")
    unpaged_endpoints: tuple[Literal["course", "class"], ...] = Field(
        (),
        description="lists the integration answers whole, ignoring limit/offset (Unified list options `-none-`, "
        "e.g. Moodle courses: docs/providers.md §9.4): each read is one request; full scans compare two such reads",
    )
    max_pages_per_scan: int = Field(
        10_000, ge=1, le=1_000_000, description="bound on the requests of one endpoint's scan (x page_size records)"
    )
    fetch_progress: bool = Field(
        True, description="also read course contents and learner activities (skipped if the integration lacks them)"
    )
    progress_page_size: int = Field(
        100, ge=1, le=100, description="limit per page of content/activity scans (activities are many per course)"
    )
    progress_concurrency: int | None = Field(
        None, description="replaced by max_concurrent_requests (every per-course scan's budget); refused if set"
    )

    @field_validator("progress_concurrency")
    @classmethod
    def _progress_concurrency_replaced(cls, value: int | None) -> None:
        if value is not None:
            raise ValueError(f"progress_concurrency was replaced by max_concurrent_requests, the connection's "
                             f"request budget for every per-course scan (progress included): write "
                             f"max_concurrent_requests: {value} instead")  # fmt: skip
        return None
