"""The Google Classroom dialect end to end: simulator, client and normalizer against the world's truth.

Contract from docs/providers.md §5 and peers-and-user-pains.md item 2: only the token ends a listing (short and empty
pages with a token are followed), pageSize above 30 is truncated silently, a token replayed with other parameters is
refused, 429 is survived, a 403 on students.list is "not exposed" (never empty, never retried), dropped students
simply vanish. Real HTTP on 127.0.0.1 only; one seeded fixture world.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, timedelta

import httpx
import pandas as pd
import pytest

from lms_pipeline.providers.classroom.client import ClassroomClient
from lms_pipeline.providers.classroom.rosters import ClassroomFrames, ClassroomPayloadError, normalize_classroom_pages
from lms_pipeline.providers.classroom.simulator import ClassroomSimulatorApp
from lms_pipeline.providers.classroom.simulator_world import classroom_course_id, classroom_user_id
from lms_pipeline.providers.http import LmsAuthError, LmsClientError, LmsPayloadError, RetrySettings
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread

CID = "gc-main"
TOKEN = "gc-token-s3cret-0123456789"
D0 = date(2026, 9, 1)
DAY = D0 + timedelta(days=5)  # by then some courses are archived and students have dropped
SPEC = WorldSpec(CID, seed=11, start_date=D0, n_courses=30, mean_roster_size=45, n_students=400,
                 roster_exposure="mixed", progress=False, deactivate_prob=0.05)  # fmt: skip
RETRY = RetrySettings(max_attempts=5, base_delay=0.01, max_delay=0.05, max_total_wait=5.0)


@dataclass
class Served:
    app: ClassroomSimulatorApp
    base_url: str

    def client(self, day: date = DAY, token: str = TOKEN, **kw: object) -> ClassroomClient:
        return ClassroomClient(CID, f"{self.base_url}/classroom/{CID}", token, as_of=day, retry=RETRY, **kw)

    def scan(self, day: date = DAY, **kw: object) -> list[dict]:
        with self.client(day, **kw) as client:
            return client.scan_rosters()

    def get(self, path: str, day: date = DAY, **params: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Simulated-Date": day.isoformat()}
        return httpx.get(f"{self.base_url}/classroom/{CID}/v1/{path}", params=params, headers=headers, timeout=10)


@dataclass(frozen=True)
class Scan:
    pages: list[dict]
    log: list[dict]
    stats: dict


@contextmanager
def served(world: World, **options: object) -> Iterator[Served]:
    app = ClassroomSimulatorApp([world], {CID: TOKEN}, clock=lambda: D0, **options)
    with serve_in_thread(app) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        yield Served(app, base_url)


@pytest.fixture(scope="module")
def world() -> World:
    return World(SPEC)


@pytest.fixture(scope="module")
def api(world: World) -> Iterator[Served]:
    with served(world) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh_controls(request: pytest.FixtureRequest) -> Iterator[None]:
    """No fault or log entry leaks from one test into another."""
    yield
    if "api" in request.fixturenames:
        app = request.getfixturevalue("api").app
        app.clear_faults()
        app.reset_log()


@pytest.fixture(scope="module")
def scanned(api: Served) -> Scan:
    """DAY read once with the default page size, for the tests that only look at what it fetched."""
    api.app.reset_log()
    with api.client() as client:
        pages = client.scan_rosters()
    return Scan(pages, list(api.app.request_log), client.stats.as_dict())


def directory(world: World, day: date = DAY) -> pd.DataFrame:
    """The SIS side of the identity map: every student's email and id."""
    students = world.students(day)
    emails = [s["emails"][0]["email"] for s in students]
    return pd.DataFrame({"email": emails, "student_id": [s["id"] for s in students]})


def normalized(pages: list[dict], world: World, day: date = DAY) -> ClassroomFrames:
    return normalize_classroom_pages(pages, CID, identity="email", directory=directory(world, day))


def edge_set(frames: ClassroomFrames) -> set[tuple[str, str]]:
    return set(frames.course_student_edges[["course_id", "student_id"]].itertuples(index=False, name=None))


def statuses(frames: ClassroomFrames) -> dict[str, str]:
    return dict(zip(frames.course_rosters["course_id"], frames.course_rosters["roster_status"], strict=True))


def assert_true_rosters(frames: ClassroomFrames, world: World, day: date = DAY) -> None:
    assert edge_set(frames) == world.true_course_edges(day)
    assert statuses(frames) == world.roster_status(day)
    rosters = frames.course_rosters
    assert (rosters["student_count"].isna() == (rosters["roster_status"] == "not_exposed")).all()


def student_pages(log: list[dict]) -> list[dict]:
    return [e for e in log if e["endpoint"] == "students" and e["status"] == 200]


# ---- paging ---------------------------------------------------------------------------------------------------


def test_fixture_world_has_big_rosters_hidden_rosters_and_archived_courses(world: World) -> None:
    sizes = [len(c.enrolled) for c in world.roster_view(DAY) if c.exposed]
    status = world.roster_status(DAY).values()
    assert max(sizes) > 2 * 30 and sum(s > 30 for s in sizes) >= 5  # several listings span 2-3 pages of 30
    assert "not_exposed" in status and "exposed" in status and not all(world.is_active(DAY).values())


def test_paging_to_the_end_with_page_size_30_gives_the_true_rosters(world: World, scanned: Scan) -> None:
    assert_true_rosters(normalized(scanned.pages, world), world)
    pages = student_pages(scanned.log)
    assert {e["params"]["pageSize"] for e in pages} == {"30"} and max(e["items"] for e in pages) == 30
    assert any(e["page_index"] >= 2 for e in pages)  # some listings took three pages or more


def test_page_size_100_is_truncated_to_30_and_still_read_to_the_end(world: World, api: Served) -> None:
    frames = normalized(api.scan(page_size=100), world)
    assert_true_rosters(frames, world)
    pages = student_pages(api.app.request_log)
    assert {e["params"]["pageSize"] for e in pages} == {"100"}
    assert max(e["items"] for e in pages) == 30 and any(e["next_page_token"] for e in pages)


def test_short_pages_and_an_empty_page_with_a_token_are_followed_to_the_end(world: World) -> None:
    # Every page half a page, and every listing's second page empty, while items remain.
    with served(world, short_page_every=1, empty_page_every=1) as forced:
        frames = normalized(forced.scan(), world)
        log = forced.app.request_log
    assert_true_rosters(frames, world)
    assert any(e["items"] == 0 and e["next_page_token"] for e in log)
    assert any(0 < e["items"] < 30 and e["next_page_token"] for e in student_pages(log))


def test_default_simulator_serves_empty_and_short_pages_with_a_token(scanned: Scan) -> None:
    pages = student_pages(scanned.log)
    assert any(e["items"] == 0 and e["next_page_token"] for e in pages)
    assert any(0 < e["items"] < 30 and e["next_page_token"] for e in pages)


def test_client_never_sends_an_empty_page_token_and_asks_for_course_states(scanned: Scan) -> None:
    sent = [e["params"] for e in scanned.log]
    assert any(e["page_index"] > 0 for e in scanned.log)
    assert all(p.get("pageToken", "-") != "" for p in sent)
    assert all(("pageToken" in e["params"]) == (e["page_index"] > 0) for e in scanned.log)
    courses = [e["params"] for e in scanned.log if e["endpoint"] == "courses"]
    assert courses and all(p["courseStates"] == ["ACTIVE", "ARCHIVED"] for p in courses)


def test_a_token_replayed_with_other_params_is_invalid_argument(world: World, api: Served) -> None:
    course = next(c for c in world.roster_view(DAY) if c.exposed and len(c.enrolled) > 10)
    path = f"courses/{classroom_course_id(course.number)}/students"
    token = api.get(path, pageSize=10).json()["nextPageToken"]
    assert api.get(path, pageSize=10, pageToken=token).status_code == 200
    refused = [
        api.get(path, pageSize=20, pageToken=token),
        api.get(path, DAY + timedelta(days=1), pageSize=10, pageToken=token),
        api.get(path, pageSize=10, pageToken="not-a-token"),
        api.get(path, pageSize=10, pageToken=""),
    ]
    states = api.get("courses", pageSize=5, courseStates=["ACTIVE", "ARCHIVED"]).json()["nextPageToken"]
    refused.append(api.get("courses", pageSize=5, courseStates=["ACTIVE"], pageToken=states))
    for response in refused:
        assert response.status_code == 400
        assert response.json()["error"] == {"code": 400, "message": "Request contains an invalid argument.",
                                             "status": "INVALID_ARGUMENT"}  # fmt: skip


def test_max_pages_bounds_a_listing(world: World, api: Served) -> None:
    course = next(c for c in world.roster_view(DAY) if c.exposed and len(c.enrolled) > 30)
    with api.client(max_pages=1) as client, pytest.raises(LmsClientError, match=r"max_pages.*\(page 1\)"):
        list(client.iter_pages("students", classroom_course_id(course.number)))


# ---- throttling, errors, permissions --------------------------------------------------------------------------


def test_resource_exhausted_is_survived_and_counted(world: World) -> None:
    ticks = itertools.count()

    def clock() -> float:
        """Each request moves the limiter's clock 10 ms: 8 requests per 100 ms pass, whatever the machine's speed."""
        return next(ticks) * 0.01

    with served(world, rate_limit=8, rate_window=0.1, monotonic=clock) as throttled:
        with throttled.client() as client:
            frames = normalized(client.scan_rosters(), world)
        refused = [e for e in throttled.app.request_log if e["status"] == 429]
        bodies = [throttled.get("courses").json() for _ in range(10)]
    assert_true_rosters(frames, world)
    assert len(refused) >= 10 and client.stats.throttled == len(refused) and client.stats.retries >= len(refused)
    errors = [b["error"] for b in bodies if "error" in b]
    assert errors and all(e["code"] == 429 and e["status"] == "RESOURCE_EXHAUSTED" for e in errors)


def test_a_transient_server_error_is_retried(api: Served) -> None:
    api.app.inject_fault(CID, status=503, endpoint="courses", page=0, times=2)
    with api.client() as client:
        pages = list(client.iter_pages("courses"))
    assert pages[0].status == 200 and client.stats.server_errors == 2 and client.stats.retries == 2


def test_a_hidden_roster_is_not_exposed_and_never_retried(world: World, scanned: Scan) -> None:
    hidden = {classroom_course_id(c.number): c.id for c in world.roster_view(DAY) if not c.exposed}
    assert hidden
    denied = [e for e in scanned.log if e["status"] == 403]
    assert sorted(e["course_id"] for e in denied) == sorted(hidden)  # one request each: not retried
    assert all(e["endpoint"] == "students" for e in denied) and scanned.stats["retries"] == 0
    frames = normalized(scanned.pages, world)
    rosters = frames.course_rosters.set_index("course_id").loc[list(hidden.values())]
    assert (rosters["roster_status"] == "not_exposed").all() and rosters["student_count"].isna().all()
    assert not frames.course_student_edges["course_id"].isin(hidden.values()).any()


def test_a_bad_token_raises_the_auth_error_and_the_token_never_leaks(api: Served, scanned: Scan) -> None:
    with api.client(token="wrong-" + TOKEN) as client, pytest.raises(LmsAuthError) as err:
        client.scan_rosters()
    assert err.value.status == 401 and TOKEN not in str(err.value) and "(page 0)" in str(err.value)
    assert TOKEN not in json.dumps([asdict(p) for p in scanned.pages], default=str)


def test_a_malformed_page_raises_naming_connection_url_and_page_without_the_token(world: World, api: Served) -> None:
    course = next(c for c in world.roster_view(DAY) if c.exposed and len(c.enrolled) > 30)
    classroom_id = classroom_course_id(course.number)
    api.app.inject_fault(CID, status=200, body=f"<html>echo: Bearer {TOKEN}</html>", endpoint="students",
                         course_id=classroom_id, page=1)  # fmt: skip
    with pytest.raises(LmsPayloadError) as err:
        api.scan()
    message = str(err.value)
    assert message.startswith(f"connection {CID!r}: GET /v1/courses/{classroom_id}/students answered HTTP 200 with")
    assert "not JSON" in message and message.endswith("(page 1)") and TOKEN not in message and "[token]" in message


def _not_json(page: dict) -> None:
    page["payload"] = "<html>bad gateway</html>"


def _students_not_a_list(page: dict) -> None:
    page["payload"] = json.dumps({**json.loads(page["payload"]), "students": {"userId": "1"}})


def _student_without_user_id(page: dict) -> None:
    body = json.loads(page["payload"])
    del body["students"][0]["userId"]
    page["payload"] = json.dumps(body)


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_not_json, "the body is not JSON"),
        (_students_not_a_list, "students is OBJECT, not a list"),
        (_student_without_user_id, "a student without a string userId"),
    ],
)
def test_the_normalizer_refuses_a_malformed_stored_page(
    world: World, scanned: Scan, spoil: Callable[[dict], None], problem: str
) -> None:
    pages = [asdict(p) for p in scanned.pages]
    target = next(p for p in pages if p["endpoint"] == "students" and p["status"] == 200 and '"userId"' in p["payload"])
    spoil(target)
    with pytest.raises(ClassroomPayloadError) as err:
        normalized(pages, world)
    assert f"connection {CID!r}: page {target['page_index']} of GET {target['url']}: {problem}" in str(err.value)


def test_the_normalizer_refuses_a_listing_not_read_to_its_end(world: World, scanned: Scan) -> None:
    cut = next(p for p in scanned.pages if p.endpoint == "students" and p.page_index == 1)
    pages = [p for p in scanned.pages if not (p.course_id == cut.course_id and p.page_index >= 1)]
    with pytest.raises(ClassroomPayloadError, match="the listing was not read to its end"):
        normalized(pages, world)


# ---- semantics ------------------------------------------------------------------------------------------------


def test_a_student_gone_the_next_day_is_a_drop(world: World, api: Served, scanned: Scan) -> None:
    after = DAY + timedelta(days=1)
    exposed_after = {c for c, s in world.roster_status(after).items() if s != "not_exposed"}
    drops = sorted((c, s) for c, s in world.true_course_edges(DAY) - world.true_course_edges(after)
                   if c in exposed_after)  # fmt: skip
    assert drops, "the fixture world should drop someone from a still-exposed course overnight"
    course, student = drops[0]
    before, later = normalized(scanned.pages, world), normalized(api.scan(after), world, after)
    assert (course, student) in edge_set(before) and (course, student) not in edge_set(later)
    assert statuses(later)[course] in ("exposed", "empty")
    assert_true_rosters(later, world, after)


def test_without_the_email_scope_users_stay_unmatched_but_every_edge_is_kept(world: World) -> None:
    with served(world, emails_scope=False) as no_emails:
        pages = no_emails.scan()
    truth = world.true_course_edges(DAY)
    by_email = normalized(pages, world).course_student_edges
    assert len(by_email) == len(truth) and not by_email["identity_matched"].any()
    assert by_email["student_email"].isna().all() and by_email["student_id"].str.startswith("classroom-user:").all()
    by_provider = normalize_classroom_pages(pages, CID, identity="provider")
    assert edge_set(by_provider) == {(c, f"classroom-user:{classroom_user_id(s)}") for c, s in truth}


def test_email_identity_flags_users_missing_from_the_directory(world: World, scanned: Scan) -> None:
    truth = world.true_course_edges(DAY)
    missing = min(s for _, s in truth)
    partial = directory(world).query("student_id != @missing")
    edges = normalize_classroom_pages(scanned.pages, CID, identity="email", directory=partial).course_student_edges
    unmatched = edges.loc[~edges["identity_matched"]]
    assert set(unmatched["student_id"]) == {f"classroom-user:{classroom_user_id(missing)}"}
    assert len(edges) == len(truth) and edges["identity_matched"].sum() == len(truth) - len(unmatched)


def test_archived_courses_are_listed_inactive(world: World, api: Served, scanned: Scan) -> None:
    rosters = normalized(scanned.pages, world).course_rosters
    assert dict(zip(rosters["course_id"], rosters["is_active"], strict=True)) == world.is_active(DAY)
    archived = {classroom_course_id(c.number) for c in world.roster_view(DAY) if not c.is_active}
    listed = api.get("courses", courseStates="ARCHIVED").json()["courses"]
    assert archived and {c["id"] for c in listed} == archived and {c["courseState"] for c in listed} == {"ARCHIVED"}
