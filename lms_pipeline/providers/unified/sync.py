"""A Unified connection's day of rosters: full scan or incremental poll, read so that a listing changing while it is
paged is neither skipped nor stale (``scans.py``), then stored as the pages received and normalized where they are
stored (``rosters.py``).

A sync reads several endpoints one after another, so the course listing is as of the course scan's end while the
class scan runs later. ``catch_up`` closes that gap for keyset-read endpoints: it polls each again from its own
high-water mark until a round finds nothing newer anywhere (a few requests), so every endpoint is as of the sync's
last request. This is not the catch-up pass that fails (docs/providers.md §1.9): it runs over keyset scans that
skipped nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from lms_pipeline.providers.base import BaseSync, Capabilities, RosterFetch, RosterFrames, SyncPlan
from lms_pipeline.providers.http import LmsFetchError
from lms_pipeline.providers.pages import page_rows
from lms_pipeline.providers.unified import rosters
from lms_pipeline.providers.unified.client import UnifiedLmsClient
from lms_pipeline.providers.unified.options import UnifiedOptions
from lms_pipeline.providers.unified.plan import plan_sync
from lms_pipeline.providers.unified.scans import KEYSET, Scan, consistent_scan, keyset_scan, single_pass

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

# Fields asked for explicitly: an absent roster must mean "provider did not expose it", not "not requested"
# (docs/providers.md §1.9). Paging order is the scan technique's business (scans.py).
COURSE_FIELDS = ["id", "name", "is_active", "created_at", "updated_at", "student_ids", "students"]
CLASS_FIELDS = ["id", "name", "course_id", "created_at", "updated_at", "student_ids", "students"]
FIELDS = {"course": {"fields": COURSE_FIELDS}, "class": {"fields": CLASS_FIELDS}}
SINGLE_PASS_PARAMS = {"sort": "created_at", "order": "asc"}
# A Unified.to integration without an object answers 501 (docs/providers.md, "Unified.to integrations").
NOT_SUPPORTED_STATUS = 501


class UnifiedRosters:
    """The ``RosterSource`` of Unified connections."""

    pages_table = "raw_course_pages"

    def __init__(self, capabilities: Capabilities) -> None:
        self.capabilities = capabilities

    def plan(self, day: date, base: BaseSync | None, options: UnifiedOptions) -> SyncPlan:
        return plan_sync(
            day,
            base,
            # The capability matrix says whether the dialect can be polled; the option whether this tenant can.
            supports_updated_gte=self.capabilities.incremental_sync and options.supports_updated_gte,
            full_scan_every_days=options.full_scan_every_days,
            overlap_minutes=options.incremental_overlap_minutes,
        )

    def fetch(self, client: UnifiedLmsClient, options: UnifiedOptions, plan: SyncPlan) -> RosterFetch:
        """The course listing, then the class listing unless the integration lacks classes (501), then catch-up
        rounds so both are as of the last request."""
        scans = [_scan(client, "course", plan, options)]
        classes_supported = options.fetch_classes
        if classes_supported:
            try:
                scans.append(_scan(client, "class", plan, options))
            except LmsFetchError as exc:
                if exc.status != NOT_SUPPORTED_STATUS:
                    raise
                classes_supported = False
        rounds, converged = catch_up(client, scans, FIELDS) if options.scan == "consistent" else (0, True)
        techniques = {s.technique for s in scans}
        per_endpoint = "; ".join(f"{s.endpoint}={s.technique}" for s in scans)
        technique = techniques.pop() if len(techniques) == 1 else per_endpoint
        marks = [s.high_water for s in scans if s.high_water is not None]
        if plan.base_high_water is not None:
            marks.append(plan.base_high_water)  # a poll that saw nothing new keeps the mark (it never moves back)
        listed = {s.endpoint: sum(len(p.items) for p in s.pages) for s in scans}
        fell_back = [f"{s.endpoint}: {s.fell_back}" for s in scans if s.fell_back]
        return RosterFetch(
            pages=[page for scan in scans for page in scan.pages],
            technique=technique,
            courses_listed=listed.get("course", 0),
            classes_listed=listed.get("class", 0),
            passes=max(s.passes for s in scans),
            catch_up_rounds=rounds,
            catch_up_converged=converged,
            high_water=max(marks) if marks else None,
            health={
                **({"keyset_fallback": "; ".join(fell_back)} if fell_back else {}),
                "classes_supported": classes_supported,
            },  # fmt: skip
        )

    def pages_frame(self, fetch: RosterFetch, connection_id: str, day: date, run_id: str) -> pd.DataFrame:
        """The pages of every pass and catch-up round, each numbered among its endpoint's pages of the day."""
        seen: dict[str, int] = {}
        pages = []
        for page in fetch.pages:
            pages.append(replace(page, page_index=seen.get(page.endpoint, 0)))
            seen[page.endpoint] = pages[-1].page_index + 1
        return page_rows(pages).assign(connection_id=connection_id, snapshot_date=pd.Timestamp(day),
                                       provider=self.capabilities.provider, run_id=run_id)  # fmt: skip

    def build_snapshot(
        self, db: duckdb.DuckDBPyConnection, pages: str, conn: ConnectionConfig, day: date, base_day: date | None
    ) -> RosterFrames | None:
        """Normalized where the pages are stored (set-based SQL, no day's rows in Python): written here."""
        rosters.build_snapshot(db, pages, conn.id, day, base_day)
        return None


def _scan(client: UnifiedLmsClient, endpoint: str, plan: SyncPlan, options: UnifiedOptions) -> Scan:
    params, unpaged = FIELDS[endpoint], endpoint in options.unpaged_endpoints
    if options.scan == "single_pass":
        return single_pass(client, endpoint, {**params, **SINGLE_PASS_PARAMS, "updated_gte": plan.since},
                           unpaged=unpaged)  # fmt: skip
    return consistent_scan(client, endpoint, params, since=plan.since, keyset=options.supports_updated_gte,
                           max_passes=options.max_scan_passes, unpaged=unpaged,
                           max_pages=options.max_pages_per_scan)  # fmt: skip


def catch_up(
    client: UnifiedLmsClient, scans: list[Scan], params: Mapping[str, Mapping[str, object]], *, max_rounds: int = 3
) -> tuple[int, bool]:
    """Re-poll every keyset scan from its high-water mark until no endpoint has anything newer.

    The pages are appended to their scans. Returns (rounds run, converged); a listing still changing after
    ``max_rounds`` is left as of each endpoint's last read, and the caller reports it.
    """
    keyset = [s for s in scans if s.technique == KEYSET and (s.high_water or s.since) is not None]
    if not keyset:
        return 0, True
    for round_number in range(1, max_rounds + 1):
        newer = False
        for scan in keyset:
            mark = scan.high_water or scan.since
            extra = keyset_scan(client, scan.endpoint, params[scan.endpoint], mark, unpaged=scan.unpaged)
            scan.pages.extend(extra.pages)
            if extra.high_water is not None and extra.high_water > mark:
                scan.high_water, newer = extra.high_water, True
        if not newer:
            return round_number, True
    return max_rounds, False
