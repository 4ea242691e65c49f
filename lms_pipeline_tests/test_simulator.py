"""The simulator behaves like the Unified LMS API and its world evolves deterministically."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import httpx
import pytest

from lms_pipeline.simulator import SimulatorApp, World, WorldSpec, serve_in_thread

D0 = date(2026, 9, 1)
DAYS = [D0 + timedelta(days=i) for i in range(7)]


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[httpx.Client, SimulatorApp]]:
    worlds = [World(WorldSpec("s1", seed=1, n_courses=23)),
              World(WorldSpec("s2", seed=2, n_courses=8, rate_limit_every=3, retry_after_seconds=2,
                              supports_updated_gte=False, classes="rosters"))]  # fmt: skip
    app = SimulatorApp(worlds, {"s1": "t1", "s2": "t2"}, clock=lambda: D0)
    with serve_in_thread(app) as base, httpx.Client(base_url=base, headers={"Authorization": "Bearer t1"}) as c:
        assert base.startswith("http://127.0.0.1:")
        yield c, app


def test_same_spec_gives_the_same_world_whatever_order_days_are_asked() -> None:
    a, b = World(WorldSpec("x", seed=9)), World(WorldSpec("x", seed=9))
    assert b.courses(DAYS[6]) == a.courses(DAYS[6])
    assert [a.true_course_edges(d) for d in DAYS] == [b.true_course_edges(d) for d in reversed(DAYS)][::-1]
    assert World(WorldSpec("x", seed=10)).true_course_edges(D0) != a.true_course_edges(D0)


def test_the_world_evolves_with_every_kind_of_change_over_a_week() -> None:
    w = World(WorldSpec("x", seed=3, n_courses=60))
    adds = drops = reenrols = 0
    removed = deactivated = False
    ever_dropped: set = set()
    for prev, day in zip(DAYS, DAYS[1:], strict=False):
        old, new = w.true_course_edges(prev), w.true_course_edges(day)
        adds, drops = adds + len(new - old), drops + len(old - new)
        reenrols += len((new - old) & ever_dropped)
        ever_dropped |= old - new
        removed |= bool(set(w.roster_status(prev)) - set(w.roster_status(day)))
        deactivated |= any(w.is_active(prev).get(c) and not a for c, a in w.is_active(day).items())
    assert adds and drops and reenrols and removed and deactivated


def test_exposure_modes() -> None:
    none = World(WorldSpec("n", roster_exposure="none", n_courses=10))
    assert set(none.roster_status(D0).values()) == {"not_exposed"} and none.true_course_edges(D0) == set()
    assert all("student_ids" not in c and "students" not in c for c in none.courses(D0))
    mixed = World(WorldSpec("m", seed=4, roster_exposure="mixed", exposure_flip_prob=0.3, n_courses=60))
    statuses = [mixed.roster_status(d) for d in DAYS]
    assert "not_exposed" in statuses[0].values() and "exposed" in statuses[0].values()
    assert any(a.get(c) == "exposed" and s == "not_exposed" for a, b in zip(statuses, statuses[1:], strict=False)
               for c, s in b.items())  # fmt: skip


@pytest.mark.parametrize("fields", ["student_ids", "students", "both"])
def test_roster_fields_carry_the_same_roster(fields: str) -> None:
    w = World(WorldSpec("f", seed=5, roster_fields=fields, n_courses=5))
    for course in w.courses(D0):
        ids = set(course.get("student_ids", [])) | {s["id"] for s in course.get("students", [])}
        assert ids == {s for c, s in w.true_course_edges(D0) if c == course["id"]}
        assert ("student_ids" in course) == (fields != "students") and ("students" in course) == (
            fields != "student_ids"
        )


def test_offset_paging_ends_with_a_short_page_and_returns_the_world(api) -> None:
    c, app = api
    got, offset = [], 0
    for _ in range(20):
        page = c.get("/lms/s1/course", params={"limit": 7, "offset": offset, "sort": "created_at"}).json()
        got += page
        offset += len(page)
        if len(page) < 7:
            break
    expected = sorted(
        app.worlds["s1"].courses(D0),
        key=lambda i: (i.get("created_at") is not None, i.get("created_at") or "", i["id"]),
    )
    assert got == expected and len(got) == 23


def test_an_exactly_full_last_page_is_followed_by_an_empty_one_and_limit_is_clamped(api) -> None:
    c, _ = api
    assert len(c.get("/lms/s1/course", params={"limit": 23}).json()) == 23
    assert c.get("/lms/s1/course", params={"limit": 23, "offset": 23}).json() == []
    assert len(c.get("/lms/s1/course", params={"limit": 1000}).json()) == 23  # clamped to 100, 23 exist
    bad = c.get("/lms/s1/course", params={"limit": "ten"})
    assert bad.status_code == 400 and "limit" in bad.json()["message"]


def test_bearer_token_is_required(api) -> None:
    c, _ = api
    assert c.get("/lms/s1/course", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{c.base_url}/lms/s1/course").status_code == 401
    assert c.get("/lms/s2/course").status_code == 401  # t1 is s1's token only


def test_rate_limit_every_nth_request_with_retry_after(api) -> None:
    c, _ = api
    statuses = [c.get("/lms/s2/course", headers={"Authorization": "Bearer t2"}) for _ in range(6)]
    throttled = [r for r in statuses if r.status_code == 429]
    assert len(throttled) == 2 and all(r.headers["Retry-After"] == "2" for r in throttled)
    assert throttled[0].json() == {"message": "Too many requests to Unified.to"}


def test_fields_updated_gte_sort_and_the_ignore_mode(api) -> None:
    c, app = api
    page = c.get("/lms/s1/course", params={"fields": "name,is_active"}).json()
    assert all(set(i) == {"id", "name", "is_active"} for i in page)
    since = "2026-09-01T12:00:00Z"
    recent = c.get("/lms/s1/course", params={"updated_gte": since}).json()
    assert recent and all(i["updated_at"] >= since for i in recent) and len(recent) < 23
    desc = c.get("/lms/s1/course", params={"sort": "name", "order": "desc"}).json()
    assert [i["name"] for i in desc] == sorted((i["name"] for i in desc), reverse=True)
    ignored = c.get("/lms/s2/course", params={"updated_gte": "2030-01-01"}, headers={"Authorization": "Bearer t2"})
    assert ignored.status_code == 429 or len(ignored.json()) == 8  # s2 ignores updated_gte


def test_simulated_date_header_moves_the_clock(api) -> None:
    c, app = api
    later = DAYS[5].isoformat()
    body = c.get("/lms/s1/course", params={"limit": 100}, headers={"X-Simulated-Date": later}).json()
    assert {i["id"] for i in body} == set(app.worlds["s1"].roster_status(DAYS[5]))
    assert c.get("/lms/s1/course", headers={"X-Simulated-Date": "yesterday"}).status_code == 400


def test_injected_faults_and_the_request_log_without_token(api) -> None:
    c, app = api
    app.inject_fault("s1", status=503, endpoint="course", offset=0, times=1)
    app.inject_fault("s1", status=200, body=b"<html>", endpoint="course", offset=5)
    assert c.get("/lms/s1/course").status_code == 503
    assert c.get("/lms/s1/course", params={"offset": 5}).text == "<html>"
    assert c.get("/lms/s1/course").status_code == 200
    app.clear_faults()
    assert app.request_log[-1]["params"] == {} and app.request_log[-1]["status"] == 200
    assert "t1" not in repr(app.request_log)


def test_class_modes(api) -> None:
    c, app = api
    unsupported = c.get("/lms/s1/class")
    assert unsupported.status_code == 501
    world = app.worlds["s2"]
    edges = {(i["id"], i["course_id"], s) for i in world.classes(D0) for s in i.get("student_ids", [])}
    assert edges == world.true_class_edges(D0) and edges
