"""Consistent scans of a listing that changes while it is paged, against the simulator over HTTP on 127.0.0.1.

The churn world updates courses between page requests and ignores ``sort`` (lists stay in updated_at order), the
case where plain offset paging skips records (docs/providers.md §1.9).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date

import pytest

from lms_pipeline.providers.http import RetrySettings
from lms_pipeline.providers.unified.client import UnifiedLmsClient
from lms_pipeline.providers.unified.scans import (
    KEYSET,
    STABLE,
    ScanError,
    consistent_scan,
    keyset_scan,
    parse_stamp,
    single_pass,
    stable_scan,
)
from lms_pipeline.providers.unified.simulator import SimulatorApp
from lms_pipeline.providers.unified.sync import catch_up
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread

DAY = date(2026, 9, 3)
FIELDS = {"fields": ["id", "updated_at", "student_ids"]}


def churn_spec(cid: str, **kw: object) -> WorldSpec:
    base = dict(seed=7, start_date=date(2026, 9, 1), n_courses=200, missing_timestamps_share=0.0,
                supports_sort=False, churn_share=0.05, churn_per_request=2)  # fmt: skip
    return WorldSpec(cid, **{**base, **kw})


SPECS = [
    churn_spec("churn"),
    churn_spec("churn-no-gte", supports_updated_gte=False),
    churn_spec("stampless", missing_timestamps_share=0.2, churn_share=0.0),
    churn_spec("forever", churn_share=1.0, churn_per_request=1),  # every course, one per request: never settles
    # DAY is a term rollover: 90% of the courses rewritten in one second (18 pages of 10), 10 of them touched while
    # paged, one per request; stamped alike (one SQL transaction) or microseconds apart (row by row).
    *(
        churn_spec(
            f"rollover-{stamps}", rollover_days=(2,), rollover_share=0.9, rollover_stamps=stamps, churn_per_request=1
        )
        for stamps in ("identical", "microseconds")
    ),
    # The same rollover from an integration serving records tied on updated_at in a new order on every request.
    *(
        churn_spec(
            f"shuffled-{stamps}",
            rollover_days=(2,),
            rollover_share=0.9,
            rollover_stamps=stamps,
            churn_per_request=1,
            unstable_ties=True,
        )
        for stamps in ("identical", "microseconds")
    ),  # fmt: skip
    # Unified list options `-none-` (docs/providers.md §9.4, Moodle courses): limit, offset and updated_gte ignored.
    churn_spec("none-options", churn_share=0.0, ignores_paging="limit_offset", supports_updated_gte=False),
    # Issue 19: the same full page forever, one updated_at: offset ignored, every course rewritten in one second.
    churn_spec("first-page-forever", churn_share=0.0, ignores_paging="offset", rollover_days=(2,), rollover_share=1.0),
]


@pytest.fixture
def simulator() -> Iterator[tuple[str, dict[str, World], SimulatorApp]]:
    """A fresh simulator per test: churn state (updates fired) must not leak between tests."""
    worlds = {s.connection_id: World(s) for s in SPECS}
    app = SimulatorApp(worlds.values(), {cid: "t0ken" for cid in worlds})
    with serve_in_thread(app, host="127.0.0.1", port=0) as base_url:
        yield base_url, worlds, app


@pytest.fixture
def served(simulator: tuple[str, dict[str, World], SimulatorApp]) -> tuple[str, dict[str, World]]:
    return simulator[0], simulator[1]


def client(base_url: str, cid: str, day: date = DAY) -> UnifiedLmsClient:
    return UnifiedLmsClient(cid, base_url, "t0ken", page_size=10, headers={"X-Simulated-Date": day.isoformat()},
                            retry=RetrySettings(base_delay=0.0))  # fmt: skip


def latest(pages: list) -> dict[str, frozenset[str]]:
    """id -> roster of each record's newest version (what the normalizer keeps)."""
    best: dict[str, tuple] = {}
    for index, page in enumerate(pages):
        for item in page.items:
            key = (parse_stamp(item.get("updated_at")), index)
            if item["id"] not in best or key >= best[item["id"]][0]:
                best[item["id"]] = (key, frozenset(item.get("student_ids") or []))
    return {cid: roster for cid, (_, roster) in best.items()}


def truth(world: World, day: date = DAY) -> dict[str, frozenset[str]]:
    rosters: dict[str, set[str]] = {c: set() for c in world.roster_status(day)}
    for course, student in world.true_course_edges(day):
        rosters[course].add(student)
    return {c: frozenset(s) for c, s in rosters.items()}


def test_keyset_scan_under_churn_returns_the_listing_as_of_its_last_request(served) -> None:
    base_url, worlds = served
    with client(base_url, "churn") as c:
        scan = keyset_scan(c, "course", FIELDS)
    fired, planned = worlds["churn"].churn_fired(DAY)
    assert fired == planned >= 10, "the world must have changed while it was paged"
    assert latest(scan.pages) == truth(worlds["churn"])
    assert scan.high_water == max(parse_stamp(i["updated_at"]) for p in scan.pages for i in p.items)


def test_single_offset_pass_under_the_same_churn_skips_or_keeps_stale_records(served) -> None:
    base_url, worlds = served
    with client(base_url, "churn") as c:
        scan = single_pass(c, "course", FIELDS)
    assert latest(scan.pages) != truth(worlds["churn"])


def test_an_incremental_keyset_poll_returns_exactly_the_records_updated_since(served) -> None:
    base_url, worlds = served
    world, since = worlds["churn"], parse_stamp(f"{DAY}T12:00:00Z")
    with client(base_url, "churn") as c:
        scan = keyset_scan(c, "course", FIELDS, since)
    polled = latest(scan.pages)
    updated = {c["id"] for c in world.courses(DAY) if parse_stamp(c["updated_at"]) >= since}
    assert set(polled) == updated and len(updated) >= 10
    assert polled == {cid: roster for cid, roster in truth(world).items() if cid in updated}


def test_catch_up_brings_an_endpoint_read_early_up_to_the_last_request(served) -> None:
    base_url, worlds = served
    world = worlds["churn"]
    since = parse_stamp(f"{DAY}T22:00:00Z")  # an incremental poll late in the day
    with client(base_url, "churn") as c:
        course = keyset_scan(c, "course", FIELDS, since)
        assert world.churn_fired(DAY)[0] == 0, "the poll's first request changes nothing"
        # every later request (another endpoint's scan, or the catch-up itself) lands more updates
        rounds, converged = catch_up(c, [course], {"course": FIELDS}, max_rounds=10)
    fired, planned = world.churn_fired(DAY)
    assert fired == planned >= 10 and converged and rounds >= 2
    updated = {c["id"] for c in world.courses(DAY) if parse_stamp(c["updated_at"]) >= since}
    assert latest(course.pages) == {cid: roster for cid, roster in truth(world).items() if cid in updated}


def test_a_listing_that_never_settles_stops_after_the_bounded_rounds(served) -> None:
    base_url, worlds = served
    with client(base_url, "forever") as c:
        course = keyset_scan(c, "course", FIELDS)
        rounds, converged = catch_up(c, [course], {"course": FIELDS}, max_rounds=2)
    assert (rounds, converged) == (2, False)


def test_provider_ignoring_updated_gte_is_detected_not_looped_over(served) -> None:
    base_url, _ = served
    with client(base_url, "churn-no-gte") as c, pytest.raises(ScanError, match="supports_updated_gte: false"):
        keyset_scan(c, "course", FIELDS)


def test_without_updated_gte_repeated_passes_reach_the_true_listing(served) -> None:
    base_url, worlds = served
    with client(base_url, "churn-no-gte") as c:
        scan = consistent_scan(c, "course", FIELDS, since=None, keyset=False, max_passes=6)
    assert scan.technique == STABLE and scan.passes >= 2
    assert latest(scan.pages) == truth(worlds["churn-no-gte"])


def test_repeated_passes_give_up_with_a_clear_error_when_the_listing_keeps_changing(served) -> None:
    base_url, _ = served
    with client(base_url, "forever") as c, pytest.raises(ScanError, match="still changed between passes after 2"):
        stable_scan(c, "course", FIELDS, max_passes=2)


def test_records_without_updated_at_fall_back_to_repeated_passes(served) -> None:
    base_url, worlds = served
    with client(base_url, "stampless") as c:
        scan = consistent_scan(c, "course", FIELDS, since=None, keyset=True, max_passes=4)
        assert scan.technique == STABLE and "no usable updated_at" in (scan.fell_back or "")
        assert latest(scan.pages) == truth(worlds["stampless"])


def test_keyset_scan_reads_a_run_of_equal_timestamps_longer_than_a_page(served) -> None:
    """Bulk updates share one updated_at: the scan must advance offset within the run, not loop or skip."""
    base_url, worlds = served
    world = worlds["stampless"]
    same = [c for c in world.courses(DAY) if c.get("updated_at")][:35]
    stamp = same[0]["updated_at"]
    for course in same:  # the listing is cached per (day, updates fired): edit it as a bulk update would
        course["updated_at"] = stamp
    with client(base_url, "stampless") as c:
        scan = keyset_scan(c, "course", FIELDS, parse_stamp(stamp))
    seen = [i["id"] for p in scan.pages for i in p.items]
    expected = {c["id"] for c in world.courses(DAY) if c.get("updated_at") and c["updated_at"] >= stamp}
    assert set(seen) == expected, "every record of the run, none skipped"
    assert len(scan.pages) <= len(expected) // 10 + 3, "paged on through the run, not stuck re-reading it"
    assert scan.technique == KEYSET


@pytest.mark.parametrize("stamps", ["identical", "microseconds"])
@pytest.mark.parametrize("since", [None, f"{DAY}T12:00:00Z"], ids=["full", "incremental"])
def test_keyset_scan_of_a_bulk_update_touched_while_paged_equals_the_listing_as_of_its_last_request(
    served, stamps: str, since: str | None
) -> None:
    """A rollover puts 18 pages of records in one updated_at second (updated_gte is sent in whole seconds, the
    records carry microseconds), so that run is paged by offset; records of it updated meanwhile move to the end and
    shift the rest down. Every record must still be read, each in its newest version."""
    base_url, worlds = served
    world = worlds[f"rollover-{stamps}"]
    run_second = f"{DAY}T23:10:00"
    in_run = [c for c in world.courses(DAY) if c["updated_at"].startswith(run_second)]
    assert len(in_run) >= 3 * 10, "at least three pages share one second"
    with client(base_url, f"rollover-{stamps}") as c:
        scan = keyset_scan(c, "course", FIELDS, parse_stamp(since))
    fired, planned = world.churn_fired(DAY)
    assert fired == planned == 10, "the run was touched while it was paged"
    touched = {c["id"] for c in world.courses(DAY) if c["updated_at"] > run_second + "Z"}
    assert touched and touched < {c["id"] for c in in_run} | touched
    floor = parse_stamp(since) if since else None
    expected = {
        cid: roster for cid, roster in truth(world).items()
        if floor is None or parse_stamp(next(c["updated_at"] for c in world.courses(DAY) if c["id"] == cid)) >= floor
    }  # fmt: skip
    assert latest(scan.pages) == expected


def test_a_listing_serving_one_full_page_forever_is_stopped_at_the_first_repeat(served) -> None:
    """Issue 19: 7,844 requests in 380 s with memory growing, because nothing noticed that no new id arrived."""
    base_url, _ = served
    with client(base_url, "first-page-forever") as c, pytest.raises(ScanError) as err:
        keyset_scan(c, "course", FIELDS, max_pages=500)
    assert c.stats.requests <= 5, "stopped at the first page bringing nothing new"
    message = str(err.value)
    assert message.startswith("connection 'first-page-forever': course: GET course (updated_gte=2026-09-03T23:10:00Z")
    assert "all already read" in message and "ignores offset" in message
    assert "options.page_size" in message and "options.unpaged_endpoints" in message


def test_an_integration_ignoring_every_list_option_is_named_and_read_whole_once_configured(served) -> None:
    """Keyset paging fails naming both options; repeated passes without them stop at the first repeated page; with
    the list read whole (unpaged), two one-request passes agree and give the true listing."""
    base_url, worlds = served
    with client(base_url, "none-options") as c:
        with pytest.raises(ScanError, match=r"ignores updated_gte and limit.*supports_updated_gte: false.*"
                           r"unpaged_endpoints: \[course\]"):  # fmt: skip
            consistent_scan(c, "course", FIELDS, since=None, keyset=True, max_passes=4)
        with pytest.raises(ScanError, match=r"all already read.*set options.unpaged_endpoints: \[course\]"):
            consistent_scan(c, "course", FIELDS, since=None, keyset=False, max_passes=4)
        before = c.stats.requests
        scan = consistent_scan(c, "course", FIELDS, since=None, keyset=False, max_passes=4, unpaged=True)
        assert c.stats.requests - before == 2 and scan.technique == STABLE and scan.passes == 2
    assert latest(scan.pages) == truth(worlds["none-options"])


def test_passes_that_agree_but_repeat_an_id_say_the_paging_repeats_records_not_to_raise_max_scan_passes(
    simulator,
) -> None:
    """Issue 19 (errors): a duplicate id in agreeing passes is no churn, and more passes cannot help."""
    base_url, worlds, app = simulator
    listing = worlds["stampless"].courses(DAY)  # the simulator's created_at order: records without it first
    courses = sorted(listing, key=lambda r: ("created_at" in r, r.get("created_at", ""), r["id"]))
    # In every pass the page at offset 10 repeats 5 records of the page before it and skips 5 others.
    page = [{k: r[k] for k in ("id", "updated_at", "student_ids") if k in r} for r in courses[5:15]]
    app.inject_fault("stampless", status=200, body=json.dumps(page), endpoint="course", offset=10, times=10)
    with client(base_url, "stampless") as c, pytest.raises(ScanError) as err:
        stable_scan(c, "course", {**FIELDS, "sort": "created_at", "order": "asc"}, max_passes=4)
    message = str(err.value)
    assert "two consecutive passes agree" in message and f"list {courses[5]['id']!r} at offsets 5 and 10" in message
    assert "paging repeats records" in message and "max_scan_passes" not in message


@pytest.mark.parametrize("stamps", ["identical", "microseconds"])
def test_a_bulk_update_whose_tied_records_change_order_between_requests_is_never_silently_skipped(
    served, stamps: str
) -> None:
    """Where the two stamp shapes differ: records stamped alike tie, and an integration may serve ties in any order,
    so no offset within them is trustworthy: the scan must say so, not publish a listing missing records. Records
    microseconds apart do not tie: the same integration is read exactly."""
    base_url, worlds = served
    world = worlds[f"shuffled-{stamps}"]
    with client(base_url, f"shuffled-{stamps}") as c:
        if stamps == "identical":
            with pytest.raises(ScanError, match="come in a different order from one request to the next"):
                keyset_scan(c, "course", FIELDS)
            assert c.stats.requests < 40, "gave up after a few restarts of the run, not at max_pages"
            return
        scan = keyset_scan(c, "course", FIELDS)
    assert world.churn_fired(DAY)[0] == 10
    assert latest(scan.pages) == truth(world)
