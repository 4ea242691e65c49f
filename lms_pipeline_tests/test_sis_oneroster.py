"""The OneRoster SIS simulator and client over real HTTP on 127.0.0.1: OAuth2 client credentials with expiring
tokens, Link/X-Total-Count paging, imsx errors, 429 server_busy, PUT upserts (201/200), POST with the 409 mode."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import httpx
import pytest

from lms_pipeline.clients.errors import LmsAuthError, LmsFetchError, LmsPayloadError
from lms_pipeline.clients.http import RetrySettings
from lms_pipeline.clients.oneroster import READ_SCOPES, WRITE_SCOPE, OneRosterClient
from lms_pipeline.simulator import World, WorldSpec
from lms_pipeline.simulator.server import Router, serve_in_thread
from lms_pipeline.simulator.sis_app import SisSimulatorApp
from lms_pipeline.simulator.sis_world import SisSpec, SisWorld
from lms_pipeline.transforms.grades import GradingScheme

DAY = date(2026, 9, 8)
SECRET = "s3cret-client-secret"
SCHEME = GradingScheme(name="t", cutoffs=[("A", 90), ("B", 80), ("C", 70), ("F", 0)])
FAST = RetrySettings(base_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def lms_world() -> World:
    return World(WorldSpec("sis-test-lms", seed=4, n_courses=12, n_students=300))


@pytest.fixture
def sis(lms_world: World) -> Iterator[tuple[str, SisSimulatorApp, SisWorld]]:
    world = SisWorld(SisSpec("sis1", rate_limit_every=5, token_ttl_seconds=60), lms_world, lambda _: SCHEME)
    app = SisSimulatorApp([world], {"sis1": ("client-1", SECRET)})
    with serve_in_thread(Router({"sis": app})) as base_url:
        yield f"{base_url}/sis/sis1", app, world


def client(base: str, write: bool = False, secret: str = SECRET) -> OneRosterClient:
    return OneRosterClient("sis1", base, "client-1", secret, scopes=READ_SCOPES + ((WRITE_SCOPE,) if write else ()),
                           headers={"X-Simulated-Date": DAY.isoformat()}, retry=FAST, page_size=7)  # fmt: skip


def test_lists_every_collection_to_the_end_following_link_headers(sis) -> None:
    base, app, world = sis
    with client(base) as c:
        for service, collection, truth in [("rostering", "users", world.users(DAY)),
                                           ("rostering", "classes", world.classes(DAY)),
                                           ("gradebook", "lineItems", world.line_items(DAY)),
                                           ("gradebook", "results", world.results(DAY))]:  # fmt: skip
            pages = list(c.iter_pages(service, collection))
            assert [i for p in pages for i in p.items] == truth
            assert len(pages) == -(-len(truth) // 7) and pages[0].total == len(truth)
        assert c.stats.throttled > 0  # every 5th request answered 429 server_busy and was retried
    listed = [e for e in app.request_log if e.get("collection") and e["status"] == 200]
    assert len(listed) > 10


def test_link_headers_and_the_limit_cap(sis) -> None:
    base, _, world = sis
    with client(base) as c:
        c._authorize()
        token = c._http.headers["Authorization"]
    response = httpx.get(f"{base}/ims/oneroster/rostering/v1p2/users", params={"limit": 500, "offset": 0},
                         headers={"Authorization": token, "X-Simulated-Date": DAY.isoformat()})  # fmt: skip
    if response.status_code == 429:  # the throttle counts every request; the next one passes
        response = httpx.get(f"{base}/ims/oneroster/rostering/v1p2/users", params={"limit": 500, "offset": 0},
                             headers={"Authorization": token, "X-Simulated-Date": DAY.isoformat()})  # fmt: skip
    assert response.status_code == 200
    assert len(response.json()["users"]) == 100  # silently capped, like real servers
    assert int(response.headers["X-Total-Count"]) == len(world.users(DAY))
    assert {"next", "last", "first"} <= set(response.links) and "prev" not in response.links


def test_an_expired_token_is_refreshed_and_the_listing_completes(sis) -> None:
    base, app, world = sis
    with client(base) as c:
        pages = c.iter_pages("rostering", "users")
        first = next(pages)
        app.expire_tokens()
        rest = list(pages)
        assert c.token_requests == 2
    assert len(first.items) + sum(len(p.items) for p in rest) == len(world.users(DAY))


def test_bad_client_credentials_fail_clearly_without_echoing_the_secret(sis) -> None:
    base, _, _ = sis
    with pytest.raises(LmsAuthError) as caught, client(base, secret="wrong-" + SECRET) as c:
        list(c.iter_pages("rostering", "users"))
    assert "HTTP 401" in str(caught.value) and "client id and secret" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_writes_need_the_createput_scope(sis) -> None:
    base, _, world = sis
    result = world.results(DAY)[0]
    with client(base) as c:
        answer = c.put_result(result["sourcedId"], result)
    assert answer.status_code == 403 and "gradebook.createput" in answer.description


def test_put_upserts_201_then_200_and_post_conflicts_in_409_mode(sis) -> None:
    base, _, world = sis
    existing = world.results(DAY)[0]
    new = {**existing, "sourcedId": "new-result-1", "student": {"sourcedId": "usr-99999", "type": "user"}}
    with client(base, write=True) as c:
        assert c.put_result("new-result-1", new).status_code == 201
        assert c.put_result("new-result-1", new).status_code == 200
        conflict = c.post_result({**existing, "sourcedId": "another-id"})
        assert conflict.status_code == 409 and "exists" in conflict.description
        assert c.find_result(existing["lineItem"]["sourcedId"], existing["student"]["sourcedId"]) == existing
    assert any(r["sourcedId"] == "new-result-1" for r in world.results(DAY))


def test_post_creates_with_sourced_id_pairs_when_the_sis_has_no_409_mode(lms_world: World) -> None:
    world = SisWorld(SisSpec("sis1", conflict_on_post=False), lms_world, lambda _: SCHEME)
    app = SisSimulatorApp([world], {"sis1": ("client-1", SECRET)})
    item = world.line_items(DAY)[0]
    body = {"sourcedId": "posted-1", "lineItem": {"sourcedId": item["sourcedId"]},
            "student": {"sourcedId": "usr-00001"}, "scoreStatus": "exempt", "scoreDate": "2026-09-08"}  # fmt: skip
    with serve_in_thread(Router({"sis": app})) as base_url, client(f"{base_url}/sis/sis1", write=True) as c:
        answer = c.post_result(body)
    assert answer.status_code == 201
    assert answer.body == {"sourcedIdPairs": [{"suppliedSourcedId": "posted-1", "allocatedSourcedId": "posted-1"}]}


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"scoreStatus": "graded"}, 422, "scoreStatus must be one of"),
        ({"lineItem": {"sourcedId": "li-nope"}}, 404, "Line item li-nope not found"),
        ({"score": 1000.0, "scoreStatus": "fully graded"}, 422, "outside"),
    ],
)
def test_invalid_writes_get_imsx_errors(sis, change: dict, status: int, words: str) -> None:
    base, _, world = sis
    points = next(r for r in world.results(DAY) if r.get("score") is not None)
    with client(base, write=True) as c:
        answer = c.put_result("bad-1", {**points, **change})
    assert answer.status_code == status and words in answer.description
    assert answer.body["imsx_codeMajor"] == "failure"


def test_filters_allow_two_predicates_at_most(sis) -> None:
    base, _, _ = sis
    with client(base) as c:
        too_many = "status='active' AND status='active' AND status='active'"
        with pytest.raises(LmsFetchError, match="HTTP 400.*at most two predicates"):
            list(c.iter_pages("gradebook", "results", {"filter": too_many}))


def test_a_listing_shorter_than_its_total_count_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 60})
        return httpx.Response(200, json={"users": [{"sourcedId": "u1"}]}, headers={"X-Total-Count": "3"})

    c = OneRosterClient("sis1", "http://127.0.0.1:9", "id", SECRET, transport=httpx.MockTransport(handler), retry=FAST)
    with pytest.raises(LmsPayloadError, match="ended after 1 users but X-Total-Count said 3"):
        list(c.iter_pages("rostering", "users"))
