"""The simulator behaves like the Unified.to LMS API, and its world evolves deterministically.

Its truth API is what the pipeline's output is compared with, so most HTTP tests check the API against it.
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import date, timedelta

import httpx
import pytest

from lms_pipeline.providers.unified.simulator import SimulatorApp
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread

D0 = date(2026, 9, 1)
WEEK = [D0 + timedelta(days=i) for i in range(7)]

# One fixture world per provider behaviour; each throttled connection is used by one test only (counters persist).
SPECS = [
    WorldSpec("main", seed=1, n_courses=23, classes="rosters", roster_exposure="mixed", missing_timestamps_share=0.2),
    WorldSpec("throttled", seed=2, n_courses=5, rate_limit_every=3, retry_after_seconds=1.5),
    WorldSpec("throttled-bare", seed=3, n_courses=5, rate_limit_every=2),
    WorldSpec("no-gte", seed=4, n_courses=12, supports_updated_gte=False),
    WorldSpec("no-classes", seed=5, n_courses=5),
    WorldSpec("sections", seed=6, n_courses=5, classes="no_rosters"),
]
TOKENS = {spec.connection_id: f"token-{spec.connection_id}-s3cret" for spec in SPECS}


class Api:
    """The served app plus an httpx client that authenticates as whichever connection it calls."""

    def __init__(self, app: SimulatorApp, client: httpx.Client) -> None:
        self.app, self.client = app, client

    def world(self, cid: str) -> World:
        return self.app.worlds[cid]

    def get(self, cid: str, endpoint: str = "course", *, day: date | None = None, token: str | None = None,
            **params: object) -> httpx.Response:  # fmt: skip
        headers = {"Authorization": f"Bearer {token or TOKENS[cid]}"}
        if day is not None:
            headers["X-Simulated-Date"] = day.isoformat()
        return self.client.get(f"/lms/{cid}/{endpoint}", params=params, headers=headers)

    def scan(self, cid: str, endpoint: str = "course", limit: int = 7, **params: object) -> tuple[list[dict], int]:
        """Every record by offset paging until a short page (at most 50 pages), and the number of pages read."""
        records: list[dict] = []
        for pages in range(1, 51):
            page = self.get(cid, endpoint, limit=limit, offset=len(records), **params).json()
            records += page
            if len(page) < limit:
                return records, pages
        raise AssertionError("paging never ended")


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    app = SimulatorApp([World(spec) for spec in SPECS], TOKENS, clock=lambda: D0)
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        assert base_url.startswith("http://127.0.0.1:")
        yield Api(app, client)


@pytest.fixture(autouse=True)
def _fresh_controls(request: pytest.FixtureRequest) -> Iterator[None]:
    """No fault or log entry leaks from one test into another."""
    yield
    if "api" in request.fixturenames:
        app = request.getfixturevalue("api").app
        app.clear_faults()
        app.reset_log()


def by_id(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: r["id"])


def roster(record: dict) -> set[str] | None:
    """The roster a client reads: the union of both fields; None when the keys are absent (not exposed)."""
    if "student_ids" not in record and "students" not in record:
        return None
    return set(record.get("student_ids", [])) | {s["id"] for s in record.get("students", [])}


# ---- the world ------------------------------------------------------------------------------------------------


def test_same_spec_gives_the_same_world_whatever_order_days_are_asked() -> None:
    spec = WorldSpec("det", seed=9, classes="rosters", roster_exposure="mixed", roster_fields="mixed")
    forward, backward, jumpy = World(spec), World(spec), World(spec)
    late = D0 + timedelta(days=45)
    assert jumpy.courses(late) == World(spec).courses(late)
    answers = {}
    for world, days in [(forward, WEEK), (backward, WEEK[::-1]), (jumpy, [WEEK[5], WEEK[2], *WEEK])]:
        answers[id(world)] = {
            d: (world.courses(d), world.classes(d), world.true_course_edges(d), world.true_class_edges(d),
                world.roster_status(d), world.is_active(d), world.students(d))
            for d in days
        }  # fmt: skip
    assert answers[id(forward)] == answers[id(backward)] == answers[id(jumpy)]
    assert forward.courses(D0 - timedelta(days=30)) == forward.courses(D0)  # before day 0 is served as day 0
    assert World(WorldSpec("det", seed=10)).true_course_edges(D0) != forward.true_course_edges(D0)


def test_the_default_world_shows_every_kind_of_change_within_a_week() -> None:
    world = World(WorldSpec("demo"))
    sizes = [len(roster(c)) for c in world.courses(D0)]
    assert len(sizes) == 60 and 15 <= sum(sizes) / len(sizes) <= 35  # a realistic roster from day 0
    adds = drops = reenrolments = removed = deactivated = appeared = 0
    seen: set[tuple[str, str]] = set()
    for prev, day in zip(WEEK, WEEK[1:], strict=False):
        old, new = world.true_course_edges(prev), world.true_course_edges(day)
        seen |= old
        adds, drops, reenrolments = (
            adds + len(new - old),
            drops + len(old - new),
            reenrolments + len((new - old) & seen),
        )
        before, after = world.is_active(prev), world.is_active(day)
        removed += len(before.keys() - after.keys())
        appeared += len(after.keys() - before.keys())
        deactivated += sum(1 for c, active in after.items() if before.get(c) and not active)
    assert min(adds, drops, reenrolments, removed, deactivated, appeared) > 0


def test_updated_at_moves_on_the_day_roster_or_activity_changes_and_only_then() -> None:
    world = World(WorldSpec("stamps", seed=2, n_courses=80, deactivate_prob=0.05, missing_timestamps_share=0))
    moved = kept = 0
    for prev, day in zip(WEEK, WEEK[1:], strict=False):
        before = {c["id"]: c for c in world.courses(prev)}
        for course in world.courses(day):
            old = before.get(course["id"])
            if old is None:
                assert course["created_at"] == course["updated_at"] and course["created_at"].startswith(day.isoformat())
                continue
            changed = roster(old) != roster(course) or old["is_active"] != course["is_active"]
            assert course["created_at"] == old["created_at"]
            if changed:
                assert course["updated_at"].startswith(day.isoformat()), course["id"]
            else:
                assert course["updated_at"] == old["updated_at"], course["id"]
            moved, kept = moved + changed, kept + (not changed)
    assert moved and kept


def test_exposure_flips_do_not_touch_updated_at() -> None:
    frozen = {"drop_prob": 0, "adds_per_course": 0, "reenrol_prob": 0, "new_courses_per_day": 0, "deactivate_prob": 0,
              "remove_prob": 0}  # fmt: skip
    world = World(WorldSpec("still", seed=3, n_courses=40, roster_exposure="mixed", exposure_flip_prob=0.5, **frozen))
    statuses = [world.roster_status(d) for d in WEEK]
    assert any(a != b for a, b in zip(statuses, statuses[1:], strict=False))
    stamps = [{c["id"]: c.get("updated_at") for c in world.courses(d)} for d in WEEK]
    assert all(s == stamps[0] for s in stamps)


def test_no_exposure_means_no_roster_keys_and_no_true_edges() -> None:
    world = World(WorldSpec("dark", roster_exposure="none", n_courses=10, classes="rosters"))
    assert set(world.roster_status(WEEK[3]).values()) == {"not_exposed"}
    assert world.true_course_edges(WEEK[3]) == set() and world.true_class_edges(WEEK[3]) == set()
    assert all(roster(record) is None for record in world.courses(WEEK[3]) + world.classes(WEEK[3]))


def test_mixed_exposure_hides_about_the_share_and_courses_flip_both_ways() -> None:
    world = World(WorldSpec("mix", seed=4, n_courses=200, roster_exposure="mixed", exposure_flip_prob=0.3))
    days = [D0 + timedelta(days=i) for i in range(10)]
    statuses = [world.roster_status(d) for d in days]
    for status in statuses[::3]:
        assert 0.1 <= sum(s == "not_exposed" for s in status.values()) / len(status) <= 0.3
    for day, status in zip(days, statuses, strict=True):
        assert {c["id"] for c in world.courses(day) if roster(c) is None} == {
            c for c, s in status.items() if s == "not_exposed"
        }
    histories = ["".join(s.get(c, "-")[0] for s in statuses) for c in statuses[0]]  # e.g. "eeennee---"
    assert any(re.search("en+e", h) for h in histories), "some course should go exposed -> not_exposed -> exposed"


@pytest.mark.parametrize("fields", ["student_ids", "students", "both"])
def test_roster_fields_carry_one_roster_in_the_configured_keys(fields: str) -> None:
    world = World(WorldSpec("fields", seed=5, roster_fields=fields, n_courses=8, classes="rosters"))
    truth = world.true_course_edges(WEEK[2])
    for course in world.courses(WEEK[2]):
        assert ("student_ids" in course) == (fields != "students")
        assert ("students" in course) == (fields != "student_ids")
        if fields == "both":
            assert set(course["student_ids"]) == {s["id"] for s in course["students"]}
        assert roster(course) == {s for c, s in truth if c == course["id"]}
        assert all(set(s) == {"id", "name"} and s["name"] for s in course.get("students", []))


def test_mixed_roster_fields_are_a_stable_choice_per_course() -> None:
    world = World(WorldSpec("mixed-fields", seed=6, roster_fields="mixed", n_courses=30))

    def keys(day: date) -> dict[str, frozenset[str]]:
        return {c["id"]: frozenset(c) & {"student_ids", "students"} for c in world.courses(day)}

    first, later = keys(D0), keys(WEEK[6])
    assert set(first.values()) == {frozenset({"student_ids"}), frozenset({"students"}),
                                   frozenset({"student_ids", "students"})}  # fmt: skip
    assert all(later[c] == k for c, k in first.items() if c in later)


def test_a_deactivated_course_keeps_or_empties_its_exposed_roster() -> None:
    cleared = World(WorldSpec("clear", seed=7, n_courses=20, deactivate_prob=0.5, clear_roster_on_deactivate=1))
    kept = World(WorldSpec("keep", seed=7, n_courses=20, deactivate_prob=0.5, clear_roster_on_deactivate=0))
    for world, status in [(cleared, "empty"), (kept, "exposed")]:
        courses = {c["id"]: c for c in world.courses(WEEK[1])}
        inactive = [c for c, active in world.is_active(WEEK[1]).items() if not active]
        assert inactive and all(world.roster_status(WEEK[1])[c] == status for c in inactive)
        assert all(roster(courses[c]) is not None for c in inactive)  # an empty roster still has its keys


def test_class_rosters_partition_the_exposed_course_roster() -> None:
    world = World(WorldSpec("sect", seed=8, n_courses=40, classes="rosters", roster_exposure="mixed"))
    day = WEEK[3]
    classes, status = world.classes(day), world.roster_status(day)
    spread = 0
    for course in world.courses(day):
        sections = [k for k in classes if k["course_id"] == course["id"]]
        assert 1 <= len(sections) <= 3
        if status[course["id"]] == "not_exposed":
            assert all(roster(k) is None for k in sections)
            continue
        rosters = [roster(k) for k in sections]
        assert set().union(*rosters) == roster(course) and sum(map(len, rosters)) == len(roster(course))
        spread += sum(1 for r in rosters if r) > 1
    assert spread, "students should be spread over a course's sections"
    assert world.true_class_edges(day) == {(k["id"], k["course_id"], s) for k in classes for s in roster(k) or ()}
    ids = [k["id"] for k in classes]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"cls-\d{5}", i) for i in ids)
    assert {(k["id"], k["course_id"]) for k in world.classes(D0)} >= {
        (k["id"], k["course_id"]) for k in classes if k["course_id"] in world.is_active(D0)
    }  # stable ids
    plain = World(WorldSpec("sect", seed=8, n_courses=40, classes="no_rosters", roster_exposure="mixed"))
    assert [{k: v for k, v in c.items() if k not in ("student_ids", "students")} for c in classes] == plain.classes(day)
    assert all(roster(k) is None for k in plain.classes(day)) and plain.true_class_edges(day) == set()


@pytest.mark.timeout(60)
def test_a_quarter_year_of_150_courses_replays_from_checkpoints_not_from_day_0() -> None:
    world = World(WorldSpec("perf", n_courses=150))
    assert world.true_course_edges(D0 + timedelta(days=89))
    calls = []
    advance = world._evolution.advance
    world._evolution.advance = lambda prev, day: calls.append(day) or advance(prev, day)  # type: ignore[method-assign]
    world._recent.clear()
    world.true_course_edges(D0 + timedelta(days=85))
    assert len(calls) <= 9, "a day is replayed from the nearest checkpoint (every 10th day is kept)"


# ---- the HTTP API ---------------------------------------------------------------------------------------------


def test_paging_with_limit_7_until_a_short_page_returns_exactly_the_world(api: Api) -> None:
    records, pages = api.scan("main", limit=7)
    assert pages == 4 and len(records) == 23  # 7 + 7 + 7 + 2
    assert by_id(records) == by_id(api.world("main").courses(D0))
    students, pages = api.scan("main", "student", limit=100)
    assert pages == 16 and by_id(students) == api.world("main").students(D0)


def test_an_exactly_full_last_page_is_followed_by_an_empty_page(api: Api) -> None:
    assert len(api.get("main", limit=23).json()) == 23
    assert api.get("main", limit=23, offset=23).json() == []
    assert api.get("main", limit=10, offset=500).json() == []


def test_limit_is_clamped_to_1_through_100(api: Api) -> None:
    assert len(api.get("main", "student", limit=1000).json()) == 100
    assert len(api.get("main", "student").json()) == 100
    assert len(api.get("main", "student", limit=0).json()) == 1
    assert len(api.get("main", "student", limit=-3).json()) == 1


def test_limit_and_offset_as_integral_floats_like_the_vendor_sdk_sends_are_accepted(api: Api) -> None:
    """unified-python-sdk types limit/offset as float and sends ``limit=5.0&offset=0.0`` (docs/providers.md §9.4)."""
    as_ints = api.get("main", limit=5, offset=5).json()
    assert len(as_ints) == 5
    assert api.get("main", limit="5.0", offset="5.0").json() == as_ints
    assert api.get("main", limit="5.00", offset="5").json() == as_ints


@pytest.mark.parametrize(
    ("param", "value"),
    [("limit", "ten"), ("limit", "7.5"), ("limit", "nan"), ("limit", "inf"), ("offset", "-1"), ("offset", "x"),
     ("offset", "2.5"), ("sort", "id"), ("order", "up"), ("updated_gte", "last week")],
)  # fmt: skip
def test_a_bad_query_parameter_answers_400_naming_it(api: Api, param: str, value: str) -> None:
    response = api.get("main", **{param: value})
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    assert param in response.json()["message"]


def test_a_missing_or_wrong_token_answers_401(api: Api) -> None:
    assert api.client.get("/lms/main/course").status_code == 401
    for token in ["wrong", TOKENS["no-gte"]]:
        response = api.get("main", token=token)
        assert response.status_code == 401 and response.json() == {"message": "Unauthorized"}


def test_unknown_connection_object_or_method_answers_json_404_405(api: Api) -> None:
    assert api.client.get("/lms/nope/course").status_code == 404
    assert api.get("main", "instructor").status_code == 404
    assert api.client.get("/hris/main/employee").status_code == 404
    response = api.client.post("/lms/main/course", headers={"Authorization": f"Bearer {TOKENS['main']}"})
    assert response.status_code == 405 and "message" in response.json()


def test_every_nth_request_answers_429_with_retry_after_counting_rejected_ones(api: Api) -> None:
    responses = [api.get("throttled", token="wrong" if i == 1 else None) for i in range(6)]
    assert [r.status_code for r in responses] == [200, 401, 429, 200, 200, 429]
    throttled = responses[2]
    assert throttled.json() == {"message": "Too many requests to Unified.to"}
    assert throttled.headers["Retry-After"] == "2"  # 1.5 s, rounded up to whole seconds


def test_429_carries_no_retry_after_unless_configured(api: Api) -> None:
    responses = [api.get("throttled-bare") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 429, 200, 429]
    assert "retry-after" not in responses[1].headers


def test_fields_selection_returns_only_those_keys_plus_id(api: Api) -> None:
    response = api.client.get(
        "/lms/main/course",
        params=[("fields", "name,is_active"), ("fields", "students")],
        headers={"Authorization": f"Bearer {TOKENS['main']}"},
    )
    records = response.json()
    assert records and all(set(r) <= {"id", "name", "is_active", "students"} and {"id", "name"} <= set(r)
                           for r in records)  # fmt: skip
    truth = {c["id"]: c for c in api.world("main").courses(D0)}
    assert all(r.get("students") == truth[r["id"]].get("students") for r in records)
    assert api.app.request_log[-1]["params"] == {"fields": ["name,is_active", "students"]}


def test_updated_gte_keeps_records_updated_at_or_after_it(api: Api) -> None:
    day = WEEK[4]
    courses = api.world("main").courses(day)
    for since, floor in [(day.isoformat(), f"{day}T00:00:00Z"), (f"{day}T12:00:00Z", f"{day}T12:00:00Z")]:
        records, _ = api.scan("main", updated_gte=since, day=day)
        expected = [c for c in courses if c.get("updated_at", "") >= floor]
        assert by_id(records) == by_id(expected) and 0 < len(records) < len(courses)
    assert any("updated_at" not in c for c in courses)  # and those are never returned by updated_gte


def test_an_integration_without_updated_gte_ignores_it(api: Api) -> None:
    everything = by_id(api.world("no-gte").courses(D0))
    assert by_id(api.get("no-gte", updated_gte="2100-01-01").json()) == everything
    assert by_id(api.get("no-gte", updated_gte="not a date").json()) == everything


SORTS = [("course", "updated_at"), ("course", "created_at"), ("course", "name"), ("student", "name"),
         ("student", "created_at")]  # fmt: skip


@pytest.mark.parametrize(("endpoint", "sort"), SORTS)
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sort_and_order_with_missing_keys_first_and_ties_by_id(api: Api, endpoint: str, sort: str, order: str) -> None:
    records, _ = api.scan("main", endpoint, limit=100, sort=sort, order=order, day=WEEK[2])
    keys = [r.get(sort) for r in records]
    n_missing = keys.count(None)
    assert None not in keys[n_missing:]
    present = keys[n_missing:]
    assert present == sorted(present, reverse=order == "desc")
    runs: dict[object, list[str]] = {}
    for record in records:
        runs.setdefault(record.get(sort), []).append(record["id"])
    assert all(ids == sorted(ids) for ids in runs.values())
    if endpoint == "student" and sort == "name":
        assert max(map(len, runs.values())) > 1  # ties really occurred
    default = api.scan("main", endpoint, limit=100, day=WEEK[2])[0]
    assert default == api.scan("main", endpoint, limit=100, sort="updated_at", order="asc", day=WEEK[2])[0]


def test_injected_faults_answer_the_matching_requests_then_stop(api: Api) -> None:
    app = api.app
    app.inject_fault("main", status=503, endpoint="course", offset=7, times=2)
    app.inject_fault("main", status=200, body=b"<html>", endpoint="class")
    app.inject_fault("main", status=200, body='{"not": "an array"}', offset=14)
    assert api.get("main", offset=0).status_code == 200  # offset does not match
    assert [api.get("main", offset=7).status_code for _ in range(3)] == [503, 503, 200]
    html = api.get("main", "class")
    assert html.status_code == 200 and html.content == b"<html>"
    assert api.get("main", "student", offset=14).json() == {"not": "an array"}
    app.inject_fault("main", status=500, times=5)
    app.clear_faults()
    assert api.get("main").status_code == 200


def test_the_request_log_records_each_request_without_the_token(api: Api) -> None:
    api.get("main", limit=5, day=WEEK[3])
    api.get("main", "class", token="wrong")
    log = api.app.request_log
    assert log == [
        {"connection_id": "main", "endpoint": "course", "params": {"limit": "5"}, "as_of": WEEK[3], "status": 200},
        {"connection_id": "main", "endpoint": "class", "params": {}, "as_of": None, "status": 401},
    ]
    assert all(token not in repr(log) for token in TOKENS.values())
    api.app.reset_log()
    assert api.app.request_log == []


def test_x_simulated_date_selects_the_world_day(api: Api) -> None:
    world = api.world("main")
    first, later = (by_id(api.scan("main", day=d)[0]) for d in (WEEK[0], WEEK[6]))
    assert first == by_id(world.courses(WEEK[0])) and later == by_id(world.courses(WEEK[6])) and first != later
    assert by_id(api.scan("main")[0]) == first  # no header: the app's clock (day 0 here)
    assert by_id(api.get("main", day=D0 - timedelta(days=9)).json()) == by_id(api.get("main").json())
    for bad in ["2026-13-01", "yesterday"]:
        response = api.client.get("/lms/main/course", headers={"Authorization": f"Bearer {TOKENS['main']}",
                                                                "X-Simulated-Date": bad})  # fmt: skip
        assert response.status_code == 400 and "X-Simulated-Date" in response.json()["message"]
    assert api.get("main", day=date(2999, 1, 1)).status_code == 400  # beyond the world's horizon


def test_classes_answer_501_when_unsupported_and_otherwise_match_the_world(api: Api) -> None:
    unsupported = api.get("no-classes", "class")
    assert unsupported.status_code == 501
    assert unsupported.json() == {"message": "class is not supported by this integration"}
    sections, _ = api.scan("sections", "class")
    assert by_id(sections) == by_id(api.world("sections").classes(D0)) and all(roster(k) is None for k in sections)
    assert all(set(k) == {"id", "name", "course_id", "created_at", "updated_at"} for k in sections if "updated_at" in k)
    world = api.world("main")
    course_id = next(c for c, s in world.roster_status(D0).items() if s == "exposed")
    own = api.get("main", "class", course_id=course_id).json()
    assert own and by_id(own) == by_id([k for k in world.classes(D0) if k["course_id"] == course_id])
    edges = world.true_class_edges(D0)
    class_id = own[0]["id"]
    in_class = api.scan("main", "student", limit=100, class_id=class_id)[0]
    assert {s["id"] for s in in_class} == {s for k, _, s in edges if k == class_id}
    in_course = api.scan("main", "student", limit=100, course_id=course_id)[0]
    assert {s["id"] for s in in_course} == {s for c, s in world.true_course_edges(D0) if c == course_id}


def test_the_app_also_mounts_in_process_without_a_socket() -> None:
    app = SimulatorApp([World(WorldSpec("inproc", n_courses=3))], {"inproc": "t"}, clock=lambda: D0)
    transport = httpx.WSGITransport(app=app)
    with httpx.Client(transport=transport, base_url="http://simulator") as client:
        response = client.get("/lms/inproc/course", headers={"Authorization": "Bearer t"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert by_id(response.json()) == by_id(app.worlds["inproc"].courses(D0))


def test_serve_in_thread_stops_serving_and_frees_its_thread_on_exit() -> None:
    app = SimulatorApp([World(WorldSpec("short", n_courses=2))], {"short": "t"}, clock=lambda: D0)
    with serve_in_thread(app) as base_url:
        assert httpx.get(f"{base_url}/lms/short/course", headers={"Authorization": "Bearer t"}).status_code == 200
        assert base_url in {t.name for t in threading.enumerate()}  # the serving thread is named by its URL
    assert base_url not in {t.name for t in threading.enumerate()}
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/lms/short/course", timeout=2)


def test_churn_updates_land_between_requests_and_never_change_later_days() -> None:
    spec = WorldSpec("churny", seed=3, start_date=date(2026, 9, 1), n_courses=100, churn_share=0.05,
                     churn_per_request=2, missing_timestamps_share=0.0)  # fmt: skip
    day, next_day = date(2026, 9, 4), date(2026, 9, 5)
    busy, idle = World(spec), World(spec)
    before = {c["id"]: c for c in busy.courses(day)}
    planned = -(-len(before) * 5 // 100)  # churn_share of the day's courses, rounded up
    assert busy.fire(day) == 2 and busy.churn_fired(day) == (2, planned)
    changed = [c for c in busy.courses(day) if c != before[c["id"]]]
    assert len(changed) == 2, "each fired update changes exactly one course"
    day_stamps = [c["updated_at"] for c in before.values()]
    assert all(c["updated_at"] > max(day_stamps) for c in changed), "an update is stamped 'now', after the day"
    assert busy.true_course_edges(day) != idle.true_course_edges(day)
    busy.fire(day, 10)
    assert busy.churn_fired(day) == (planned, planned), "a day's updates are bounded"
    assert busy.courses(next_day) == idle.courses(next_day), "the next day starts from the day with every update"


def _serve_one(spec: WorldSpec) -> tuple[World, SimulatorApp]:
    world = World(spec)
    return world, SimulatorApp([world], {spec.connection_id: "t0ken"})


def _get(client: httpx.Client, cid: str, endpoint: str = "course", day: date = D0, **params: object) -> list[dict]:
    headers = {"Authorization": "Bearer t0ken", "X-Simulated-Date": day.isoformat()}
    response = client.get(f"/lms/{cid}/{endpoint}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("stamps", ["identical", "microseconds"])
def test_a_rollover_rewrites_many_rosters_in_one_second_and_updated_gte_compares_instants(stamps: str) -> None:
    """A term rollover stamps its courses within one second at microsecond precision, while updated_gte is sent in
    whole seconds: '…T23:10:00.418207Z' is at or after '…T23:10:00Z' (as strings it sorts before it)."""
    day = D0 + timedelta(days=2)
    spec = WorldSpec("rollover", seed=9, n_courses=120, missing_timestamps_share=0.0, rollover_days=(2,),
                     rollover_stamps=stamps, progress=False)  # type: ignore[arg-type]  # fmt: skip
    world, app = _serve_one(spec)
    rolled = {c["id"]: c["updated_at"] for c in world.courses(day) if c["updated_at"].startswith(f"{day}T23:10:00.")}
    active = sum(world.is_active(day).values())
    assert len(rolled) >= active // 2 - 1 >= 50, "about half the active courses, one bulk update"
    assert len(set(rolled.values())) == (1 if stamps == "identical" else len(rolled))
    before = {c: {s for k, s in world.true_course_edges(day - timedelta(days=1)) if k == c} for c in rolled}
    after = {c: {s for k, s in world.true_course_edges(day) if k == c} for c in rolled}
    assert all(before[c] != after[c] for c in rolled), "every rolled course's roster changes"
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        since = f"{day}T23:10:00Z"
        listed = [c for offset in (0, 100) for c in _get(client, "rollover", day=day, updated_gte=since, offset=offset)]
        assert [c["id"] for c in listed] == sorted(rolled, key=lambda c: (rolled[c], c)), "every one, in time order"
        assert _get(client, "rollover", day=day, updated_gte=f"{day}T23:10:01Z") == []
    assert not any(
        c["updated_at"].startswith(f"{day - timedelta(days=1)}T23:10") for c in world.courses(D0 + timedelta(days=1))
    )


@pytest.mark.parametrize("mode", ["limit_offset", "offset"])
def test_an_integration_ignoring_paging_answers_every_offset_alike(mode: str) -> None:
    """Unified list options `-none-` (docs/providers.md §9.4): the same records whatever limit and offset say."""
    spec = WorldSpec(
        "unpaged", seed=10, n_courses=30, ignores_paging=mode, missing_timestamps_share=0.0, progress=False
    )  # type: ignore[arg-type]
    world, app = _serve_one(spec)
    courses = sorted(world.courses(D0), key=lambda c: (c["updated_at"], c["id"]))
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as client:
        answers = [_get(client, "unpaged", limit=10, offset=offset) for offset in (0, 10, 20, 30)]
        students = _get(client, "unpaged", "student", limit=10, offset=10)
    assert all(answer == answers[0] for answer in answers)
    assert answers[0] == (courses if mode == "limit_offset" else courses[:10])
    assert students == sorted(world.students(D0), key=lambda s: (s["updated_at"], s["id"]))[10:20], "other lists page"
