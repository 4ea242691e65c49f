"""Full scan or incremental poll: every rule of the decision, as a pure function."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from lms_pipeline.providers.base import BaseSync
from lms_pipeline.providers.unified.plan import plan_sync

DAY = date(2026, 9, 10)
MARK = datetime(2026, 9, 9, 23, 30, 5, tzinfo=UTC)


def base(**kw: object) -> BaseSync:
    fields = dict(snapshot_date=DAY - timedelta(days=1), high_water=MARK, last_full_scan_date=DAY - timedelta(days=3),
                  courses_without_updated_at=0)  # fmt: skip
    return BaseSync(**{**fields, **kw})


def plan(b: BaseSync | None, **kw: object):
    options = dict(supports_updated_gte=True, full_scan_every_days=7, overlap_minutes=60)
    return plan_sync(DAY, b, **{**options, **kw})


def test_incremental_polls_from_the_high_water_mark_minus_the_overlap_on_top_of_the_base() -> None:
    p = plan(base())
    assert p.mode == "incremental"
    assert p.since == MARK - timedelta(minutes=60)
    assert p.base_snapshot_date == DAY - timedelta(days=1)
    assert p.full_scan_date(DAY) == DAY - timedelta(days=3)
    assert p.base_high_water == MARK


@pytest.mark.parametrize(
    ("b", "options", "reason"),
    [
        (base(), {"supports_updated_gte": False}, "does not support updated_gte"),
        (None, {}, "no earlier snapshot"),
        (base(last_full_scan_date=DAY - timedelta(days=7)), {}, "full scan due: the last one was on 2026-09-03"),
        (base(last_full_scan_date=DAY - timedelta(days=30)), {}, "30 days ago"),
        (base(), {"full_scan_every_days": 1}, "full_scan_every_days is 1"),
        (base(courses_without_updated_at=3), {}, "3 course(s) of the 2026-09-09 snapshot have no updated_at"),
        (base(high_water=None), {}, "saw no updated_at to poll from"),
    ],
)
def test_everything_else_is_a_full_scan_with_its_reason(b: BaseSync | None, options: dict, reason: str) -> None:
    p = plan(b, **options)
    assert p.mode == "full" and reason in p.reason
    assert p.since is None and p.base_snapshot_date is None and p.full_scan_date(DAY) == DAY


def test_a_gap_of_missed_days_still_polls_from_the_last_built_snapshot() -> None:
    p = plan(base(snapshot_date=DAY - timedelta(days=3), last_full_scan_date=DAY - timedelta(days=4)))
    assert p.mode == "incremental" and p.base_snapshot_date == DAY - timedelta(days=3)
