"""Incremental polling, full-scan reconciliation and churn while paging: real Dagster runs against the simulator.

The churn world changes 2% of its courses *during* every scan and ignores ``sort`` (lists stay in updated_at
order), the case where offset paging silently skips records. On five days a term rollover rewrites 90% of the
course rosters in one second first (over 12 pages of 20 share that ``updated_at`` second, microseconds apart), and
that day's changes during the scan touch rolled-over courses while the run is paged by offset: full days (7, 14) and
incremental days (3, 10, 17). Truth is the world as of the scan's last request.
"""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import pytest

from lms_pipeline.config import load_settings
from lms_pipeline.simulator import World, WorldSpec
from lms_pipeline.simulator.systems import world_spec
from lms_pipeline_tests.conftest import START, Pipeline, failure_message, make_pipeline

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
CHURN = WorldSpec("conn-churn", seed=5, start_date=START, n_courses=300, mean_roster_size=20,
                  missing_timestamps_share=0.0, remove_prob=0.0, drop_prob=0.002, adds_per_course=0.05,
                  new_courses_per_day=2, supports_sort=False, churn_share=0.02, churn_per_request=1,
                  classes="rosters", progress=False, rollover_days=(3, 7, 10, 14, 17), rollover_share=0.9,
                  rollover_stamps="microseconds")  # fmt: skip
ROLLOVER_DAYS = {START + timedelta(days=d) for d in CHURN.rollover_days}
CHURN_OPTIONS = {"page_size": 20, "full_scan_every_days": 7}


def run(pipe: Pipeline, cid: str, day: date, run_config: dict | None = None) -> None:
    result = pipe.run(cid, day, run_config or QUIET)
    assert result.success, failure_message(result)


def edges(pipe: Pipeline, cid: str, day: date) -> set[tuple[str, str]]:
    return pipe.rows(
        "SELECT course_id, student_id FROM lms.course_student_edges WHERE connection_id = ? AND snapshot_date = ?",
        [cid, day],
    )


def class_edges(pipe: Pipeline, cid: str, day: date) -> set[tuple[str, str, str]]:
    return pipe.rows(
        "SELECT class_id, course_id, student_id FROM lms.class_student_edges WHERE connection_id = ? "
        "AND snapshot_date = ?",
        [cid, day],
    )


def changes(pipe: Pipeline, cid: str, day: date) -> set[tuple[str, str, str]]:
    return pipe.rows(
        "SELECT course_id, student_id, change_type FROM lms.enrollment_changes WHERE connection_id = ? "
        "AND snapshot_date = ?",
        [cid, day],
    )


def true_changes(world: World, day: date) -> set[tuple[str, str, str]]:
    """Every roster exposed, no course removed: the change set is the difference of the true edges."""
    before, after = world.true_course_edges(day - timedelta(days=1)), world.true_course_edges(day)
    return {(c, s, "added") for c, s in after - before} | {(c, s, "dropped") for c, s in before - after}


def modes(pipe: Pipeline, cid: str) -> dict[date, str]:
    frame = pipe.query("SELECT snapshot_date, mode FROM lms.sync_log WHERE connection_id = ?", [cid])
    return {d.date(): m for d, m in zip(frame["snapshot_date"], frame["mode"], strict=True)}


def test_under_churn_and_bulk_updates_20_days_of_snapshots_and_change_sets_equal_the_truth(
    tmp_path, monkeypatch
) -> None:
    with make_pipeline(tmp_path, monkeypatch, [CHURN], {"conn-churn": CHURN_OPTIONS}) as pipe:
        world = pipe.worlds["conn-churn"]
        for offset in range(20):
            day = START + timedelta(days=offset)
            run(pipe, "conn-churn", day)
            fired, planned = world.churn_fired(day)
            assert fired >= 0.01 * len(world.roster_status(day)) and fired == planned, f"{day}: churn too weak"
            if day in ROLLOVER_DAYS:
                second = f"{day}T23:10:00."
                run_size = sum(c["updated_at"].startswith(second) for c in world.courses(day))
                assert run_size >= 12 * CHURN_OPTIONS["page_size"], f"{day}: the bulk update spans 12+ pages"
            assert edges(pipe, "conn-churn", day) == world.true_course_edges(day), f"{day}"
            assert class_edges(pipe, "conn-churn", day) == world.true_class_edges(day), f"{day}"
            if offset:
                assert changes(pipe, "conn-churn", day) == true_changes(world, day), f"{day}: change set"
        seen = modes(pipe, "conn-churn")
    full = sorted(d for d, m in seen.items() if m == "full")
    assert full == [START, START + timedelta(days=7), START + timedelta(days=14)], "weekly full scans"
    assert sum(m == "incremental" for m in seen.values()) == 17
    assert {seen[d] for d in ROLLOVER_DAYS} == {"full", "incremental"}, "bulk updates on both kinds of day"


def test_under_the_same_churn_plain_offset_paging_publishes_wrong_snapshots(tmp_path, monkeypatch) -> None:
    """The control: with the consistent-scan technique switched off, the same world gives wrong edges."""
    options = {"conn-churn": {**CHURN_OPTIONS, "scan": "single_pass"}}
    with make_pipeline(tmp_path, monkeypatch, [CHURN], options) as pipe:
        world = pipe.worlds["conn-churn"]
        wrong = []
        for offset in range(20):
            day = START + timedelta(days=offset)
            run(pipe, "conn-churn", day)
            if edges(pipe, "conn-churn", day) != world.true_course_edges(day):
                wrong.append(day)
                break
    assert wrong, "plain offset paging under churn should have skipped a record"


def test_a_deleted_course_is_carried_forward_until_the_next_full_scan_drops_it(tmp_path, monkeypatch) -> None:
    spec = WorldSpec("conn-rm", seed=8, start_date=START, n_courses=80, missing_timestamps_share=0.0,
                     remove_prob=0.03, deactivate_prob=0.0, progress=False)  # fmt: skip
    with make_pipeline(tmp_path, monkeypatch, [spec], {"conn-rm": {"full_scan_every_days": 4}}) as pipe:
        world = pipe.worlds["conn-rm"]
        days = [START + timedelta(days=i) for i in range(5)]  # full, 3 incremental, full
        for day in days:
            run(pipe, "conn-rm", day)
        assert [modes(pipe, "conn-rm")[d] for d in days] == ["full", "incremental", "incremental", "incremental",
                                                             "full"]  # fmt: skip
        removed = set(world.roster_status(days[0])) - set(world.roster_status(days[3]))
        assert removed, "the world should remove a course within three days"
        carried = pipe.query(
            "SELECT course_id, fetched_on FROM lms.course_rosters WHERE connection_id = 'conn-rm' "
            "AND snapshot_date = ?",
            [days[3]],
        )
        carried = dict(zip(carried["course_id"], carried["fetched_on"].dt.date, strict=True))
        for course in removed:
            assert course in carried and carried[course] < days[3], f"{course} must be carried forward"
        listed = set(world.roster_status(days[3]))
        assert {e for e in edges(pipe, "conn-rm", days[3]) if e[0] in listed} == world.true_course_edges(days[3])
        # the full scan on day 5 sees the deletions and publishes them as course_removed drops
        assert edges(pipe, "conn-rm", days[4]) == world.true_course_edges(days[4])
        drops = pipe.rows(
            "SELECT DISTINCT course_id FROM lms.enrollment_changes WHERE connection_id = 'conn-rm' "
            "AND snapshot_date = ? AND reason = 'course_removed'",
            [days[4]],
        )
        stale = {c for c, _ in edges(pipe, "conn-rm", days[3]) if c not in world.roster_status(days[4])}
        assert stale and {c for (c,) in drops} == stale, "each carried-forward course drops when the scan sees it gone"


def test_on_the_demo_world_incremental_days_cost_at_most_a_fifth_of_a_full_scan(tmp_path, monkeypatch) -> None:
    settings = load_settings()  # data/connections.yaml, the world `make demo` runs
    conn = settings.connection("district-canvas")
    options = conn.options.model_dump(exclude={"retry", "simulated_clock"})
    spec = world_spec(settings, conn)
    with make_pipeline(tmp_path, monkeypatch, [spec], {conn.id: options}) as pipe:
        for offset in range(8):
            run(pipe, conn.id, START + timedelta(days=offset))
        runs = pipe.query("SELECT snapshot_date, mode, requests FROM lms.sync_log ORDER BY snapshot_date")
    full = runs.loc[runs["mode"] == "full", "requests"]
    incremental = runs.loc[runs["mode"] == "incremental", "requests"]
    assert len(full) == 2 and len(incremental) == 6, runs.to_string()
    assert incremental.max() * 5 <= full.min(), runs.to_string()


def test_a_provider_ignoring_updated_gte_fails_the_run_naming_the_option(tmp_path, monkeypatch) -> None:
    """Keyset paging notices a filter that is not applied (instead of looping over the listing forever)."""
    spec = WorldSpec("conn-nogte", seed=9, start_date=START, n_courses=30, missing_timestamps_share=0.0,
                     supports_updated_gte=False, progress=False)  # fmt: skip
    with make_pipeline(tmp_path, monkeypatch, [spec], {"conn-nogte": {"full_scan_every_days": 7}}) as pipe:
        world, days = pipe.worlds["conn-nogte"], [START, START + timedelta(days=1)]
        result = pipe.run("conn-nogte", days[0], QUIET)
        assert not result.success
        assert "ignores updated_gte. Set options.supports_updated_gte: false" in failure_message(result)
        assert pipe.rows("SELECT count(*) FROM lms.raw_course_pages") == {(0,)}
        pipe.options["conn-nogte"]["supports_updated_gte"] = False  # the fix the message names
        for day in days:
            run(pipe, "conn-nogte", day)
            assert edges(pipe, "conn-nogte", day) == world.true_course_edges(day)
        assert modes(pipe, "conn-nogte") == {days[0]: "full", days[1]: "full"}


@pytest.mark.parametrize("endpoint", ["course", "class"])
def test_sync_health_is_recorded_as_run_metadata(tmp_path, monkeypatch, endpoint: str) -> None:
    spec = WorldSpec("conn-meta", seed=4, start_date=START, n_courses=40, missing_timestamps_share=0.0,
                     classes="rosters", rate_limit_every=4, progress=False)  # fmt: skip
    with make_pipeline(tmp_path, monkeypatch, [spec], {"conn-meta": {"full_scan_every_days": 7}}) as pipe:
        run(pipe, "conn-meta", START)
        pipe.app.inject_fault("conn-meta", status=503, endpoint=endpoint, times=2)
        run(pipe, "conn-meta", START + timedelta(days=1))
        events = pipe.instance.fetch_materializations(dg.AssetKey("raw_course_pages"), limit=10).records
        logged = pipe.query("SELECT mode, requests, throttled, server_errors FROM lms.sync_log ORDER BY snapshot_date")
    metadata = {e.partition_key: e.asset_materialization.metadata for e in events}  # type: ignore[union-attr]
    full, incremental = metadata["conn-meta|2026-09-01"], metadata["conn-meta|2026-09-02"]
    assert full["mode"].value == "full" and incremental["mode"].value == "incremental"
    assert "high-water mark" in incremental["mode_reason"].value
    for meta in (full, incremental):
        for key in ("http_requests", "http_pages", "http_retries", "http_throttled", "duration_seconds",
                    "technique", "catch_up_rounds", "high_water"):  # fmt: skip
            assert key in meta, key
        assert meta["http_throttled"].value >= 1, "every 4th request answers 429"
    assert incremental["http_server_errors"].value == 2 and incremental["http_retries"].value >= 2
    assert logged.values.tolist() == [
        [m["mode"].value, m["http_requests"].value, m["http_throttled"].value, m["http_server_errors"].value]
        for m in (full, incremental)
    ], "sync_log keeps the same health figures for analysts"


def test_an_integration_ignoring_limit_and_offset_fails_at_once_naming_the_options_then_is_read_whole(
    tmp_path, monkeypatch
) -> None:
    """Unified list options `-none-` (docs/providers.md §9.4, Moodle courses): every call answers the whole list.
    Before, the client paged it until max_pages (10,000 requests); now the first repeated answer fails the run."""
    spec = WorldSpec("conn-none", seed=12, start_date=START, n_courses=30, missing_timestamps_share=0.0,
                     supports_updated_gte=False, ignores_paging="limit_offset", progress=False)  # fmt: skip
    with make_pipeline(tmp_path, monkeypatch, [spec], {"conn-none": {"full_scan_every_days": 7}}) as pipe:
        world, days = pipe.worlds["conn-none"], [START, START + timedelta(days=1)]
        result = pipe.run("conn-none", days[0], QUIET)
        assert not result.success
        message = failure_message(result)
        assert "ignores updated_gte and limit" in message
        assert "options.supports_updated_gte: false and options.unpaged_endpoints: [course]" in message
        assert len(pipe.app.request_log) <= 3, "failed at the first repeated answer"
        assert pipe.rows("SELECT count(*) FROM lms.raw_course_pages") == {(0,)}
        pipe.options["conn-none"].update(supports_updated_gte=False, unpaged_endpoints=["course"])
        for day in days:
            pipe.app.reset_log()
            run(pipe, "conn-none", day)
            assert edges(pipe, "conn-none", day) == world.true_course_edges(day)
            courses = [e for e in pipe.app.request_log if e["endpoint"] == "course"]
            assert len(courses) == 2, "two one-request passes that agree"
        assert modes(pipe, "conn-none") == {days[0]: "full", days[1]: "full"}
