"""The Canvas REST dialect end to end: the simulator speaks Canvas, the client reads every listing to its end by
following Link headers alone, and the normalizer turns the raw pages into exactly the world's truth.

Real HTTP on 127.0.0.1 only. Backoffs are short, and in the throttling tests time is fake: it passes only when
the client sleeps, so the leaky bucket drains by exactly the client's waits.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta

import httpx
import pandas as pd
import pytest

from lms_pipeline.providers.canvas.client import CanvasClient
from lms_pipeline.providers.canvas.rosters import CanvasPayloadError, CanvasRosterFrames, normalize_canvas_pages
from lms_pipeline.providers.canvas.simulator import CanvasSimulatorApp
from lms_pipeline.providers.http import (
    FetchStats,
    LmsAuthError,
    LmsClientError,
    LmsFetchError,
    LmsPayloadError,
    RetrySettings,
)
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread

D0 = date(2026, 9, 1)
D1 = D0 + timedelta(days=1)  # the first day with drops: left students' enrollments exist from here on
MAIN, SMALL = "canvas-main", "canvas-small"
WORLDS = {
    MAIN: World(WorldSpec(MAIN, seed=11, n_courses=40, mean_roster_size=80, n_students=400, progress=False,
                          classes="rosters", roster_exposure="mixed")),
    SMALL: World(WorldSpec(SMALL, seed=22, n_courses=10, mean_roster_size=30, n_students=400, progress=False,
                           classes="rosters", roster_exposure="mixed", deactivate_prob=0.3,
                           clear_roster_on_deactivate=1.0)),
}  # fmt: skip
TOKENS = {cid: f"canvas-token-{cid}-s3cret" for cid in WORLDS}
RETRY = RetrySettings(max_attempts=10, base_delay=0.01, max_delay=0.2, max_total_wait=10.0, timeout=10.0)
LEFT_STATES = {"deleted", "inactive", "completed"}


@dataclass
class Scan:
    pages: list[dict]
    frames: CanvasRosterFrames
    log: list[dict]  # the app's request log during the scan
    stats: FetchStats


class Canvas:
    """One served app, a plain httpx client for talking to it directly, and cached client scans."""

    def __init__(self, app: CanvasSimulatorApp, base_url: str, http: httpx.Client) -> None:
        self.app, self.base_url, self.http = app, base_url, http
        self._scans: dict[tuple, Scan] = {}

    def client(self, cid: str = MAIN, day: date = D0, token: str | None = None, **kw: object) -> CanvasClient:
        return CanvasClient(cid, f"{self.base_url}/canvas/{cid}", token or TOKENS[cid], simulated_date=day,
                            retry=kw.pop("retry", RETRY), **kw)  # type: ignore[arg-type]  # fmt: skip

    def get(self, path: str, cid: str = MAIN, day: date = D0, token: str | None = None,
            params: list[tuple[str, object]] | None = None) -> httpx.Response:  # fmt: skip
        headers = {"Authorization": f"Bearer {token or TOKENS[cid]}", "X-Simulated-Date": day.isoformat()}
        return self.http.get(f"/canvas/{cid}/api/v1/{path}", params=params, headers=headers)

    def scan(self, cid: str = MAIN, day: date = D0, per_page: int = 100) -> Scan:
        """Every roster page of ``cid`` on ``day``, normalized; cached, as several tests read the same scan."""
        key = (cid, day, per_page)
        if key not in self._scans:
            self.app.reset_log()
            with self.client(cid, day, per_page=per_page) as client:
                pages = client.roster_pages()
            self._scans[key] = Scan(pages, normalize_canvas_pages(pages, cid), list(self.app.request_log),
                                    client.stats)  # fmt: skip
        return self._scans[key]


class FakeClock:
    """Seconds that pass only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def canvas() -> Iterator[Canvas]:
    app = CanvasSimulatorApp(WORLDS.values(), TOKENS, clock=lambda: D0, bucket_capacity=None)
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as http:
        assert base_url.startswith("http://127.0.0.1:")
        yield Canvas(app, base_url, http)


@pytest.fixture(autouse=True)
def _no_fault_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "canvas" in request.fixturenames:
        request.getfixturevalue("canvas").app.clear_faults()


def rows(frame: pd.DataFrame) -> set[tuple]:
    return set(frame.itertuples(index=False, name=None))


def statuses(frames: CanvasRosterFrames) -> dict[str, str]:
    return dict(zip(frames.course_rosters["course_id"], frames.course_rosters["roster_status"], strict=True))


def items(pages: list[dict], endpoint: str = "enrollments") -> list[dict]:
    """Every item on the 200 pages of ``endpoint``, with the Canvas course id of the listing it came from."""
    return [{**item, "_course": p.course_id} for p in pages if p.endpoint == endpoint and p.status == 200
            for item in json.loads(p.payload)]  # fmt: skip


def pairs(pages: list[dict], states: set[str]) -> set[tuple[str, str]]:
    """(sis_course_id, sis_user_id) of the enrollments on ``pages`` in one of ``states``."""
    return {(e["sis_course_id"], e["sis_user_id"]) for e in items(pages) if e["enrollment_state"] in states}


def listings(pages: list[dict], endpoint: str) -> dict[int | None, list[dict]]:
    out: dict[int | None, list[dict]] = {}
    for page in pages:
        if page.endpoint == endpoint:
            out.setdefault(page.course_id, []).append(page)
    return out


def number(world_id: str) -> int:
    return int(world_id.rsplit("-", 1)[1])


def scan_app(app: CanvasSimulatorApp, cid: str = SMALL, **client_options: object) -> tuple[list[dict], CanvasClient]:
    """Serve ``app`` on 127.0.0.1 for one client scan; the pages and the (closed) client with its counters."""
    with serve_in_thread(app) as base_url, CanvasClient(cid, f"{base_url}/canvas/{cid}", TOKENS[cid], retry=RETRY,
                                                       **client_options) as client:  # type: ignore[arg-type]  # fmt: skip
        return client.roster_pages(), client


# ---- paging ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_page", [10, 100])
def test_every_listing_is_read_to_its_end_and_edges_equal_the_world(canvas: Canvas, per_page: int) -> None:
    world = WORLDS[MAIN]
    scan = canvas.scan(MAIN, D1, per_page)
    assert rows(scan.frames.course_student_edges) == world.true_course_edges(D1)
    assert rows(scan.frames.class_student_edges) == world.true_class_edges(D1)
    assert statuses(scan.frames) == world.roster_status(D1)
    assert set(world.roster_status(D1).values()) == {"exposed", "empty", "not_exposed"}
    for pages in [*listings(scan.pages, "enrollments").values(), *listings(scan.pages, "courses").values()]:
        sizes = [len(json.loads(p.payload)) for p in pages if p.status == 200]
        assert all(size == per_page for size in sizes[:-1]) and all(size <= per_page for size in sizes[-1:])
        assert len(sizes) <= 1 or sizes[-1] > 0  # a next link is offered only when more items follow
        assert [p.page_index for p in pages] == list(range(len(pages)))
    longest = max(len(pages) for pages in listings(scan.pages, "enrollments").values())
    assert longest >= (12 if per_page == 10 else 2)  # rosters over 100 students really took several pages
    assert max(len(c.enrolled) for c in world.roster_view(D1)) > 100
    rosters = scan.frames.course_rosters.set_index("course_id")
    truth = Counter(c for c, _ in world.true_course_edges(D1))
    exposed = rosters[rosters["roster_status"] != "not_exposed"]
    assert exposed["student_count"].to_dict() == {c: truth.get(c, 0) for c in exposed.index}
    assert rosters.loc[rosters["roster_status"] == "not_exposed", "student_count"].isna().all()
    assert rosters["is_active"].to_dict() == world.is_active(D1)


def test_the_app_defaults_per_page_to_10_and_clamps_it_to_100(canvas: Canvas) -> None:
    assert len(canvas.get("accounts/self/courses").json()) == 10
    assert "per_page=10" in canvas.get("accounts/self/courses").links["next"]["url"]
    for odd in [0, -5, "many"]:  # lib/api.rb: not a positive number means the default
        assert len(canvas.get("accounts/self/courses", params=[("per_page", odd)]).json()) == 10
    big = max(WORLDS[MAIN].roster_view(D0), key=lambda c: len(c.enrolled))
    response = canvas.get(f"courses/{big.number}/enrollments", params=[("per_page", 1000)])
    assert len(response.json()) == 100 and "per_page=100" in response.links["next"]["url"]


def test_enrollment_links_are_bookmarks_and_course_links_are_numbered_both_without_last(canvas: Canvas) -> None:
    big = max(WORLDS[MAIN].roster_view(D0), key=lambda c: len(c.enrolled))
    enrollments = canvas.get(f"courses/{big.number}/enrollments", params=[("type[]", "StudentEnrollment")])
    assert set(enrollments.links) == {"current", "next", "first"}
    assert (
        "page=bookmark%3A" in enrollments.links["next"]["url"]
        and "type%5B%5D=StudentEnrollment" in (enrollments.links["next"]["url"])
    )
    second = canvas.http.get(enrollments.links["next"]["url"], headers={"Authorization": f"Bearer {TOKENS[MAIN]}"})
    assert {e["id"] for e in second.json()}.isdisjoint(e["id"] for e in enrollments.json())
    courses = canvas.get("accounts/self/courses", params=[("page", 2)])
    assert set(courses.links) == {"current", "next", "prev", "first"}  # the account listing counts no total
    assert courses.links["next"]["url"].endswith("page=3&per_page=10")
    own = canvas.get("courses")  # the token user's own courses: numbered, with a last link, one page of them
    assert set(own.links) == {"current", "first", "last"} and own.links["last"]["url"].endswith("page=1&per_page=10")
    links = [link["url"] for r in (enrollments, second, courses) for link in r.links.values()]
    assert all(url.startswith(f"{canvas.base_url}/canvas/{MAIN}/api/v1/") for url in links)


def test_the_client_requests_only_a_first_url_per_listing_and_the_next_links_it_was_given(canvas: Canvas) -> None:
    log = canvas.scan(MAIN, D1, per_page=10).log
    offered: list[str] = []
    followed = 0
    for entry in log:
        if "page" in entry["params"]:
            assert entry["url"] in offered, f"requested a URL no Link offered: {entry['url']}"
            followed += 1
        if entry["next"]:
            offered.append(entry["next"])
    assert followed == len(offered) == len(set(offered)) > 100  # each next link followed once, nothing else
    first_urls = [e["url"] for e in log if "page" not in e["params"]]
    assert len(first_urls) == 1 + 2 * len(WORLDS[MAIN].roster_view(D1))  # courses, then 2 listings per course


def test_a_listing_longer_than_max_pages_is_refused_not_truncated(canvas: Canvas) -> None:
    with canvas.client(per_page=10, max_pages=3) as client, pytest.raises(LmsClientError, match="max_pages") as err:
        client.course_pages()
    assert "page=4" in str(err.value) and not isinstance(err.value, LmsFetchError)


# ---- enrollment states ----------------------------------------------------------------------------------------


def test_only_active_student_enrollments_become_edges(canvas: Canvas) -> None:
    scan = canvas.scan(MAIN, D1)
    enrollments = items(scan.pages)
    states = Counter(e["enrollment_state"] for e in enrollments)
    assert all(states[s] > 0 for s in ("active", "invited", "deleted", "inactive", "completed")), states
    assert {e["type"] for e in enrollments} == {"StudentEnrollment"}  # type[] kept teachers out
    active, others = pairs(scan.pages, {"active"}), pairs(scan.pages, set(states) - {"active"})
    assert others and not others & rows(scan.frames.course_student_edges)
    assert active == rows(scan.frames.course_student_edges)
    enrollment_pages = [p for p in scan.pages if p.endpoint == "enrollments"]
    filters = {(tuple(p.params["type[]"]), tuple(p.params["state[]"])) for p in enrollment_pages}
    assert filters == {(("StudentEnrollment",), ("active", "invited", "inactive", "completed", "deleted"))}


def test_without_state_the_app_lists_active_and_invited_and_state_reveals_the_rest(canvas: Canvas) -> None:
    views = [v for v in WORLDS[MAIN].roster_view(D1) if v.exposed and v.dropped and len(v.enrolled) < 90]
    every = [("state[]", s) for s in ("active", "invited", "creation_pending", "deleted", "rejected", "completed",
                                      "inactive")] + [("per_page", 100)]  # fmt: skip
    seen_default: Counter[str] = Counter()
    for view in views[:6]:
        path = f"courses/{view.number}/enrollments"
        default = canvas.get(path, day=D1, params=[("per_page", 100)]).json()
        everything = canvas.get(path, day=D1, params=every).json()
        assert len(everything) <= 100 and {e["id"] for e in default} == {
            e["id"] for e in everything if e["enrollment_state"] in ("active", "invited")
        }
        assert {e["type"] for e in default} == {"StudentEnrollment", "TeacherEnrollment"}  # no type[]: all types
        seen_default.update(e["enrollment_state"] for e in default)
        left = canvas.get(path, day=D1, params=[("state[]", "deleted"), ("state[]", "inactive")]).json()
        assert {e["enrollment_state"] for e in left} <= {"deleted", "inactive"}
        assert {e["sis_user_id"] for e in left} <= set(view.dropped)
    assert set(seen_default) == {"active", "invited"}
    unknown = canvas.get("courses/1/enrollments", params=[("state[]", "gone")])  # SQL IN: matches nothing
    assert unknown.status_code == 200 and unknown.json() == []


def test_a_later_drop_is_a_drop(canvas: Canvas) -> None:
    before, after = canvas.scan(MAIN, D0), canvas.scan(MAIN, D1)
    active_d0, left_d1 = pairs(before.pages, {"active"}), pairs(after.pages, LEFT_STATES)
    exposed_both = {c for c, s in statuses(before.frames).items() if s != "not_exposed"} & {
        c for c, s in statuses(after.frames).items() if s != "not_exposed"
    }
    dropped = {(c, s) for c, s in active_d0 & left_d1 if c in exposed_both}
    assert len(dropped) >= 5
    assert dropped <= rows(before.frames.course_student_edges)
    assert not dropped & rows(after.frames.course_student_edges)


def test_several_active_sections_make_one_course_edge_and_a_class_edge_each() -> None:
    world = WORLDS[SMALL]
    app = CanvasSimulatorApp([world], TOKENS, clock=lambda: D0, bucket_capacity=None, second_section_share=0.3)
    frames = normalize_canvas_pages(scan_app(app)[0], SMALL)
    assert rows(frames.course_student_edges) == world.true_course_edges(D0)
    extra = rows(frames.class_student_edges) - world.true_class_edges(D0)
    assert extra and world.true_class_edges(D0) <= rows(frames.class_student_edges)
    assert {(c, s) for _, c, s in extra} <= world.true_course_edges(D0)  # a second section of the same course
    truth = Counter(c for c, _ in world.true_course_edges(D0))
    exposed = frames.course_rosters[frames.course_rosters["roster_status"] == "exposed"]
    assert dict(zip(exposed["course_id"], exposed["student_count"], strict=True)) == dict(truth)


# ---- throttling, permissions, auth ----------------------------------------------------------------------------


@pytest.mark.parametrize("throttle_status", [403, 429])
def test_throttling_is_survived_and_counted_and_a_permission_refusal_is_not_retried(throttle_status: int) -> None:
    world, clock = WORLDS[SMALL], FakeClock()
    app = CanvasSimulatorApp([world], TOKENS, clock=lambda: D0, throttle_status=throttle_status, bucket_capacity=6,
                             preflight_penalty=0, leak_rate=200, timer=clock.time)  # fmt: skip
    pages, client = scan_app(app, per_page=10, sleep=clock.sleep)
    frames = normalize_canvas_pages(pages, SMALL)
    assert rows(frames.course_student_edges) == world.true_course_edges(D0)
    assert statuses(frames) == world.roster_status(D0)
    throttled = [e for e in app.request_log if e["throttled"]]
    assert len(throttled) >= 5 and {e["status"] for e in throttled} == {throttle_status}
    assert client.stats.throttled == client.stats.retries == len(throttled) and clock.now > 0
    assert client.legacy_throttles == (len(throttled) if throttle_status == 403 else 0)
    dark = [v.number for v in world.roster_view(D0) if not v.exposed]
    assert dark, "the fixture world should hide some rosters"
    for course in dark:
        answered = [e["status"] for e in app.request_log
                    if e["endpoint"] == "enrollments" and e["course_id"] == course and not e["throttled"]]  # fmt: skip
        assert answered == [401]  # asked once, refused once (Canvas's 401 permission body), never retried


def test_the_bucket_reports_cost_and_remaining_and_refills_with_time() -> None:
    clock = FakeClock()
    app = CanvasSimulatorApp([WORLDS[SMALL]], TOKENS, clock=lambda: D0, bucket_capacity=10, preflight_penalty=2,
                             request_cost=3, leak_rate=1, timer=clock.time)  # fmt: skip
    auth = {"Authorization": f"Bearer {TOKENS[SMALL]}"}
    with serve_in_thread(app) as base_url, httpx.Client(base_url=f"{base_url}/canvas/{SMALL}/api/v1") as http:
        answers = [http.get("courses", headers=auth) for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 403]
        assert [r.headers["X-Rate-Limit-Remaining"] for r in answers] == ["7.0", "4.0", "1.0", "1.0"]
        assert [r.headers["X-Request-Cost"] for r in answers] == ["3.0", "3.0", "3.0", "0.0"]
        assert answers[3].text == "403 Forbidden (Rate Limit Exceeded)"
        assert answers[3].headers["Content-Type"].startswith("text/plain")
        clock.sleep(3)
        refilled = http.get("courses", headers=auth)
        assert refilled.status_code == 200 and refilled.headers["X-Rate-Limit-Remaining"] == "1.0"
        other = http.get("courses", headers={"Authorization": "Bearer someone-else"})  # its own, empty bucket
        assert other.status_code == 401 and other.headers["X-Rate-Limit-Remaining"] == "7.0"
        assert http.get("nowhere", headers=auth).headers["X-Request-Cost"] == "0.0"  # every response has a cost


def test_a_bad_token_answers_401_and_raises_auth_error_without_leaking_any_token(canvas: Canvas) -> None:
    for headers in [{"Authorization": "Bearer nope"}, {}]:
        response = canvas.http.get(f"/canvas/{MAIN}/api/v1/courses", headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["errors"][0]["message"]
    bad = "bad-token-that-must-not-leak"
    with canvas.client(token=bad) as client, pytest.raises(LmsAuthError) as err:
        client.roster_pages()
    assert err.value.status == 401 and err.value.connection_id == MAIN
    scan = canvas.scan(MAIN, D1)
    texts = [str(err.value), repr(err.value), repr(client), repr(scan.pages), repr(scan.log)]
    assert not [t for t in texts for token in (bad, *TOKENS.values()) if token in t]


def test_a_course_the_token_may_not_read_is_not_exposed_never_empty(canvas: Canvas) -> None:
    scan = canvas.scan(MAIN, D1)
    refused = [p for p in scan.pages if p.status == 401]  # canvas-lms: render_unauthorized_action -> 401
    dark = {v.id for v in WORLDS[MAIN].roster_view(D1) if not v.exposed}
    assert refused and {p.endpoint for p in refused} == {"enrollments"}
    assert all(json.loads(p.payload)["status"] == "unauthorized" for p in refused)
    rosters = scan.frames.course_rosters.set_index("course_id")
    assert set(rosters.index[rosters["roster_status"] == "not_exposed"]) == dark
    assert {c for c, _ in rows(scan.frames.course_student_edges)}.isdisjoint(dark)
    with canvas.client() as client:  # a course's pages missing altogether is unknown too, never empty
        courses_only = client.course_pages()
    assert set(normalize_canvas_pages(courses_only, MAIN).course_rosters["roster_status"]) == {"not_exposed"}


def test_a_roster_refused_with_403_reads_the_same_as_canvas_401() -> None:
    world = WORLDS[SMALL]
    scans = {}
    for status in (401, 403):
        app = CanvasSimulatorApp([world], TOKENS, clock=lambda: D0, bucket_capacity=None, roster_denial_status=status)
        pages, _ = scan_app(app)
        assert {p.status for p in pages} == {200, status}
        scans[status] = normalize_canvas_pages(pages, SMALL)
    assert statuses(scans[403]) == statuses(scans[401]) == world.roster_status(D0)
    assert rows(scans[403].course_student_edges) == rows(scans[401].course_student_edges)


@pytest.mark.parametrize("body", ['{"errors": [{"message": "Invalid access token."}]}', "<html>denied</html>", "[]"])
def test_a_stored_refusal_without_canvas_permission_body_is_a_clear_error(canvas: Canvas, body: str) -> None:
    pages = canvas.scan(MAIN, D1).pages
    at = next(i for i, p in enumerate(pages) if p.status == 401)
    damaged = [*pages[:at], replace(pages[at], payload=body), *pages[at + 1 :]]
    with pytest.raises(CanvasPayloadError, match=r"enrollments page 0 of course \d+ \(GET .*\): status 401 without "
                       "Canvas's permission body"):  # fmt: skip
        normalize_canvas_pages(damaged, MAIN)


def test_without_sis_permission_ids_fall_back_to_canvas_ids() -> None:
    world = WORLDS[SMALL]
    app = CanvasSimulatorApp([world], TOKENS, clock=lambda: D0, bucket_capacity=None, sis_permission=False)
    pages, _ = scan_app(app)
    records = [item for p in pages if p.status == 200 for item in json.loads(p.payload)]
    assert records and not [k for r in records for k in [*r, *r.get("user", {})] if k.startswith("sis_")]
    frames = normalize_canvas_pages(pages, SMALL)
    assert rows(frames.course_student_edges) == {
        (f"canvas-course:{number(c)}", f"canvas-user:{number(s)}") for c, s in world.true_course_edges(D0)
    }
    assert rows(frames.class_student_edges) == {
        (f"canvas-section:{number(k)}", f"canvas-course:{number(c)}", f"canvas-user:{number(s)}")
        for k, c, s in world.true_class_edges(D0)
    }
    assert statuses(frames) == {f"canvas-course:{number(c)}": s for c, s in world.roster_status(D0).items()}


# ---- faults ---------------------------------------------------------------------------------------------------


def test_server_errors_are_retried_and_counted(canvas: Canvas) -> None:
    course = next(v for v in WORLDS[SMALL].roster_view(D0) if v.exposed)
    canvas.app.inject_fault(SMALL, status=503, endpoint="enrollments", course_id=course.number, times=2)
    with canvas.client(SMALL) as client:
        frames = normalize_canvas_pages(client.roster_pages(), SMALL)
    assert rows(frames.course_student_edges) == WORLDS[SMALL].true_course_edges(D0)
    assert client.stats.server_errors == client.stats.retries == 2


def test_a_page_that_is_not_json_raises_a_clear_client_error(canvas: Canvas) -> None:
    course = next(v for v in WORLDS[SMALL].roster_view(D0) if v.exposed)
    canvas.app.inject_fault(SMALL, status=200, body="<html>maintenance</html>", endpoint="enrollments",
                            course_id=course.number)  # fmt: skip
    with canvas.client(SMALL) as client, pytest.raises(LmsPayloadError) as err:
        client.roster_pages()
    message = str(err.value)
    assert message.startswith(f"connection '{SMALL}': GET {canvas.base_url}/canvas/{SMALL}/api/v1/courses/"
                              f"{course.number}/enrollments?")  # fmt: skip
    assert "(enrollments page 0) answered HTTP 200 with a body that is not JSON: '<html>maintenance</html>'" in message


def test_an_enrollment_without_user_id_raises_a_clear_normalizer_error(canvas: Canvas) -> None:
    course = next(v for v in WORLDS[SMALL].roster_view(D0) if v.exposed)
    stray = [{"id": 1, "type": "StudentEnrollment", "enrollment_state": "active", "course_section_id": 1}]
    canvas.app.inject_fault(SMALL, status=200, body=json.dumps(stray), endpoint="enrollments", course_id=course.number)
    with canvas.client(SMALL) as client:
        pages = client.roster_pages()
    with pytest.raises(CanvasPayloadError) as err:
        normalize_canvas_pages(pages, SMALL)
    assert str(err.value) == (
        f"connection '{SMALL}': 1 malformed Canvas page(s) or item(s):\n  enrollments page 0 of course "
        f"{course.number} (GET {pages_url(pages, course.number)}): item 0 is an enrollment without user_id"
    )
    pages[0] = replace(pages[0], payload='{"errors": []}')  # a stored page damaged later is caught the same way
    with pytest.raises(CanvasPayloadError, match=r"courses page 0 \(GET .*\): the body is a JSON object, not a list"):
        normalize_canvas_pages(pages, SMALL)


def pages_url(pages: list[dict], course: int) -> str:
    return next(p.url for p in pages if p.endpoint == "enrollments" and p.course_id == course)
