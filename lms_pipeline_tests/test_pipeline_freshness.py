"""A connection whose last complete day is missing past the deadline hour is marked stale in the UI (a failed
freshness check of its own), while the others stay fresh; Dagster's freshness policy is on every asset."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from lms_pipeline import check_rules
from lms_pipeline.alerts import FRESHNESS_JOB
from lms_pipeline.config import load_settings
from lms_pipeline.simulator import WorldSpec
from lms_pipeline.warehouse import Warehouse
from lms_pipeline_tests.conftest import Pipeline, make_pipeline

TODAY = datetime.now(UTC).date()
FIRST = TODAY - timedelta(days=3)


@pytest.fixture(scope="module")
def recent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Two connections whose worlds start three days ago: one is run up to yesterday, the other only on day one."""
    specs = [WorldSpec("conn-ontime", seed=1, start_date=FIRST, n_courses=10),
             WorldSpec("conn-behind", seed=2, start_date=FIRST, n_courses=10)]  # fmt: skip
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        make_pipeline(tmp_path_factory.mktemp("recent"), monkeypatch, specs) as pipe,
    ):
        for offset in range(3):
            day = FIRST + timedelta(days=offset)
            for cid in ["conn-ontime", "conn-behind"] if offset == 0 else ["conn-ontime"]:
                assert pipe.run(cid, day).success
        yield pipe


def test_the_connection_missing_yesterday_is_stale_and_the_other_fresh(recent: Pipeline, monkeypatch) -> None:  # noqa: ANN001
    config = recent.write_config()
    config.write_text(config.read_text() + "freshness:\n  deadline_hour_utc: 0\n")
    monkeypatch.setattr(Pipeline, "write_config", lambda self: self.config_file)
    result = recent.defs().resolve_job_def(FRESHNESS_JOB).execute_in_process(instance=recent.instance)
    assert result.success
    found = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(found) == {"fresh_conn_ontime", "fresh_conn_behind"}
    assert found["fresh_conn_ontime"].passed
    behind = found["fresh_conn_behind"]
    assert not behind.passed
    yesterday = TODAY - timedelta(days=1)
    assert f"last complete day {FIRST}, but {yesterday} was due by 00:00 UTC" in behind.description
    assert behind.metadata["days_missing"].value == 2
    assert f"conn-behind|{yesterday}" in behind.description, "it names the partition to look for"


def test_yesterday_is_due_only_once_the_deadline_hour_has_passed(recent: Pipeline) -> None:
    settings, store = load_settings(recent.write_config()), Warehouse(recent.db)
    before = datetime.combine(FIRST + timedelta(days=2), datetime.min.time(), UTC) + timedelta(hours=8, minutes=59)
    after = before + timedelta(minutes=1)  # 09:00, the default deadline
    assert check_rules.freshness(store, settings, "conn-behind", before).passed, "the day before yesterday is complete"
    late = check_rules.freshness(store, settings, "conn-behind", after)
    assert not late.passed and late.metadata["last_complete_day"] == str(FIRST)
    assert check_rules.freshness(store, settings, "conn-ontime", after).passed


def test_a_connection_that_never_ran_is_stale_and_nothing_is_due_before_the_first_day(recent: Pipeline) -> None:
    settings, store = load_settings(recent.write_config()), Warehouse(recent.db)
    assert not check_rules.freshness(store, settings, "conn-unknown", datetime.now(UTC)).passed
    start = datetime.combine(settings.start_date, datetime.min.time(), UTC) + timedelta(hours=12)
    assert check_rules.freshness(store, settings, "conn-unknown", start).passed


def test_every_asset_of_the_daily_job_carries_the_cron_freshness_policy(recent: Pipeline) -> None:
    defs = recent.defs()
    for spec in defs.resolve_all_asset_specs():
        policy = spec.freshness_policy
        assert isinstance(policy, dg.FreshnessPolicy), spec.key
        assert policy.deadline_cron == "0 9 * * *" and policy.lower_bound_delta == timedelta(hours=24)


def test_check_names_are_valid_for_every_connection_id() -> None:
    assert check_rules.freshness_check_name("district.canvas-01") == "fresh_district_canvas_01"
