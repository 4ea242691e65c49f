"""The OneRoster SIS simulator and client over real HTTP on 127.0.0.1: OAuth2 client credentials with expiring
tokens, Link/X-Total-Count paging, imsx errors, 429 server_busy, gradebook answers and bodies checked against the
spec's schema (spec_schemas/oneroster_v1p2_gradebook.schema.json), PUT creating and replacing (201, no body), and
each vendor deviation the write-back must survive: 200/204 for PUT, 409 on a second result, a filter ignored, a
connection dropped mid-write."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import httpx
import jsonschema
import pytest

from lms_pipeline.providers.http import LmsAuthError, LmsFetchError, LmsPayloadError, RetrySettings
from lms_pipeline.providers.oneroster.client import (
    READ_SCOPES,
    WRITE_SCOPE,
    FilterValueError,
    OneRosterClient,
    filter_expression,
)
from lms_pipeline.providers.oneroster.sis_simulator import RESULT_FIELDS, SisSimulatorApp
from lms_pipeline.providers.oneroster.sis_world import SisSpec, SisWorld
from lms_pipeline.simulator import World, WorldSpec
from lms_pipeline.simulator.server import Router, serve_in_thread
from lms_pipeline.transforms.grades import GradingScheme

DAY = date(2026, 9, 8)
SECRET = "s3cret-client-secret"
SCHEME = GradingScheme(name="t", cutoffs=[("A", 90), ("B", 80), ("C", 70), ("F", 0)])
FAST = RetrySettings(base_delay=0.01, max_delay=0.05)
SCHEMA = json.loads((Path(__file__).parent / "spec_schemas" / "oneroster_v1p2_gradebook.schema.json").read_text())


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


def conforms(instance: object, definition: str) -> list[str]:
    """Why ``instance`` is not a valid ``definition`` of the OneRoster gradebook schema (empty when it is)."""
    validator = jsonschema.Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{definition}"})
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(instance)]


def valid_result(c: OneRosterClient, result: dict, **changes: object) -> dict:
    """A SIS result as a client must send it back: Result fields only, whole GUIDRefs, a fresh dateLastModified."""
    body = {k: v for k, v in result.items() if k in RESULT_FIELDS}
    body.update({k: c.ref(k, body[k]["sourcedId"]) for k in ("lineItem", "student", "class") if k in body})
    return {**body, "dateLastModified": "2026-09-08T12:00:00.000Z", **changes}


def until_not_throttled(call: Callable[[], httpx.Response]) -> httpx.Response:
    """The simulator's throttle answers every Nth request 429: ask again (bounded)."""
    for _ in range(3):
        response = call()
        if response.status_code != 429:
            return response
    return response


def test_lists_every_collection_to_the_end_following_link_headers(sis) -> None:
    base, app, world = sis
    with client(base) as c:
        for service, collection, truth in [("rostering", "users", world.users(DAY)),
                                           ("rostering", "classes", world.classes(DAY)),
                                           ("gradebook", "lineItems", world.line_items(DAY)),
                                           ("gradebook", "results", world.results(DAY))]:  # fmt: skip
            pages = list(c.iter_pages(service, collection))
            assert [i["sourcedId"] for p in pages for i in p.items] == [t["sourcedId"] for t in truth]
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


def test_gradebook_answers_conform_to_the_spec(sis) -> None:
    base, _, world = sis
    result, item = world.results(DAY)[0], world.line_items(DAY)[0]
    with client(base, write=True) as c:
        c._authorize()
        auth = {"Authorization": c._http.headers["Authorization"], "X-Simulated-Date": DAY.isoformat()}
    gradebook = f"{base}/ims/oneroster/gradebook/v1p2"
    asked = [(f"{gradebook}/results", "ResultSet"), (f"{gradebook}/results/{result['sourcedId']}", "SingleResult"),
             (f"{gradebook}/lineItems", "LineItemSet"),
             (f"{gradebook}/lineItems/{item['sourcedId']}", "SingleLineItem"),
             (f"{gradebook}/results/no-such-result", "imsx_StatusInfo")]  # fmt: skip
    for url, definition in asked:
        response = until_not_throttled(lambda u=url: httpx.get(u, headers=auth))
        assert conforms(response.json(), definition) == [], url
    refused = until_not_throttled(lambda: httpx.post(f"{gradebook}/results", headers=auth, json={"result": result}))
    assert refused.status_code == 405 and conforms(refused.json(), "imsx_StatusInfo") == []


def test_put_creates_and_replaces_answering_201_with_no_body(sis) -> None:
    base, _, world = sis
    existing = world.results(DAY)[0]
    other = next(u["sourcedId"] for u in world.users(DAY) if u["sourcedId"] != existing["student"]["sourcedId"])
    with client(base, write=True) as c:
        new = valid_result(c, existing, sourcedId="new-result-1", student=c.ref("student", other))
        assert conforms({"result": new}, "SingleResult") == []
        created = c.put_result("new-result-1", new)
        replaced = c.put_result("new-result-1", {**new, "score": 1.0})
        assert c.get_result("new-result-1")["score"] == 1.0
    assert (created.status_code, created.body, replaced.status_code, replaced.body) == (201, None, 201, None)


@pytest.mark.parametrize(("put_status", "body"), [(200, True), (204, False)])
def test_put_answers_of_vendors_that_deviate_are_read_as_success(lms_world: World, put_status: int, body: bool) -> None:
    world = SisWorld(SisSpec("sis1", put_status=put_status), lms_world, lambda _: SCHEME)
    app = SisSimulatorApp([world], {"sis1": ("client-1", SECRET)})
    existing = world.results(DAY)[0]
    with serve_in_thread(Router({"sis": app})) as base_url, client(f"{base_url}/sis/sis1", write=True) as c:
        answer = c.put_result(existing["sourcedId"], valid_result(c, existing, score=2.0))
    assert answer.status_code == put_status and (answer.body is not None) == body and answer.description is None


def test_a_sis_in_409_mode_refuses_a_second_result_for_a_pair(lms_world: World) -> None:
    world = SisWorld(SisSpec("sis1", conflict_on_duplicate=True), lms_world, lambda _: SCHEME)
    app = SisSimulatorApp([world], {"sis1": ("client-1", SECRET)})
    existing = world.results(DAY)[0]
    with serve_in_thread(Router({"sis": app})) as base_url, client(f"{base_url}/sis/sis1", write=True) as c:
        answer = c.put_result("another-id", valid_result(c, existing, sourcedId="another-id"))
    assert answer.status_code == 409 and existing["sourcedId"] in answer.description
    assert conforms(answer.body, "imsx_StatusInfo") == []


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"scoreStatus": "graded"}, 422, "scoreStatus must be one of"),
        ({"lineItem": "li-nope"}, 404, "Line item li-nope not found"),
        ({"student": "usr-99999"}, 404, "User usr-99999 not found"),
        ({"score": 1000.0, "scoreStatus": "fully graded"}, 422, "outside"),
        ({"dateLastModified": None}, 422, "dateLastModified is required"),
        ({"scoreDate": "2026-09-08T00:00:00Z"}, 422, "scoreDate must be YYYY-MM-DD"),
        ({"lineItem": {"sourcedId": "li-x", "type": "lineItem"}}, 422, "lineItem must be a GUIDRef"),
        ({"student": {"href": "http://x/u", "sourcedId": "u", "type": "student"}}, 422, "student.type must be 'user'"),
        ({"gradedBy": "lms"}, 422, "gradedBy is not a Result field"),
        ({"late": True}, 422, 'late must be the string "true" or "false"'),
        ({"sourcedId": "another"}, 422, "is not the path's"),
    ],
)  # fmt: skip
def test_invalid_writes_get_imsx_errors(sis, change: dict, status: int, words: str) -> None:
    base, _, world = sis
    points = next(r for r in world.results(DAY) if r.get("score") is not None)
    with client(base, write=True) as c:
        body = valid_result(c, points)
        for key, value in change.items():
            if value is None:
                body.pop(key)
            elif key in ("lineItem", "student") and isinstance(value, str):
                body[key] = c.ref(key, value)
            else:
                body[key] = value
        answer = c.put_result(points["sourcedId"], body)
    assert answer.status_code == status and words in answer.description
    assert conforms(answer.body, "imsx_StatusInfo") == []
    assert next(r for r in world.results(DAY) if r["sourcedId"] == points["sourcedId"]) == points  # nothing stored


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


def test_a_pair_lookup_keeps_only_the_pairs_results_when_the_sis_ignores_the_filter(lms_world: World) -> None:
    world = SisWorld(SisSpec("sis1", ignores_filter=True), lms_world, lambda _: SCHEME)
    app = SisSimulatorApp([world], {"sis1": ("client-1", SECRET)})
    wanted = world.results(DAY)[5]
    pair = (wanted["lineItem"]["sourcedId"], wanted["student"]["sourcedId"])
    with serve_in_thread(Router({"sis": app})) as base_url, client(f"{base_url}/sis/sis1") as c:
        lookup = c.find_pair(*pair)
    assert [r["sourcedId"] for r in lookup.matches] == [wanted["sourcedId"]]
    assert lookup.listed == len(world.results(DAY)) > 1  # every result came back: the filter was ignored


def test_a_result_is_read_by_its_id_and_a_missing_one_is_none(sis) -> None:
    base, _, world = sis
    wanted = world.results(DAY)[3]
    with client(base) as c:
        got = c.get_result(wanted["sourcedId"])
        assert c.get_result("no-such-result") is None
    assert got["sourcedId"] == wanted["sourcedId"] and got["student"]["sourcedId"] == wanted["student"]["sourcedId"]


@pytest.mark.parametrize(
    ("value", "cause"),
    [("usr-1' OR student.sourcedId='usr-2", "contains a single quote"), ("a AND b", "contains ' AND ' or ' OR '"),
     ("line\nbreak", "contains a control character"), ("", "is empty")],
)  # fmt: skip
def test_a_filter_value_the_grammar_cannot_carry_is_refused_before_anything_is_sent(
    sis, value: str, cause: str
) -> None:
    base, app, _ = sis
    with pytest.raises(FilterValueError, match=f"SIS 'sis1': filter student.sourcedId: .*{cause}"):
        filter_expression("sis1", {"student.sourcedId": value})
    before = len(app.request_log)
    with client(base) as c, pytest.raises(FilterValueError):
        c.find_pair("li-1", value)
    assert len(app.request_log) == before


def test_a_next_page_on_another_origin_is_not_followed() -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        if request.url.path.endswith("/oauth/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 60})
        return httpx.Response(200, json={"results": [{"sourcedId": "r1"}]},
                              headers={"Link": '<http://127.0.0.2:9/steal?offset=1>; rel="next"'})  # fmt: skip

    c = OneRosterClient("sis1", "http://127.0.0.1:9", "id", SECRET, transport=httpx.MockTransport(handler), retry=FAST)
    with pytest.raises(LmsPayloadError, match="SIS 'sis1'.*127.0.0.2:9, not the SIS's own origin"):
        list(c.iter_pages("gradebook", "results"))
    assert not [url for url in asked if "127.0.0.2" in url]


@pytest.mark.parametrize("applies", [True, False])
def test_a_dropped_write_is_an_error_naming_the_sis_and_the_sis_decides_whether_it_landed(
    lms_world: World, applies: bool
) -> None:
    world = SisWorld(SisSpec("sis1", drop_after_writes=1, drop_applies_write=applies), lms_world, lambda _: SCHEME)
    app = SisSimulatorApp([world], {"sis1": ("client-1", SECRET)})
    first, second = world.results(DAY)[:2]
    with serve_in_thread(Router({"sis": app})) as base_url, client(f"{base_url}/sis/sis1", write=True) as c:
        assert c.put_result(first["sourcedId"], valid_result(c, first, score=1.0)).status_code == 201
        with pytest.raises(LmsFetchError) as caught:
            c.put_result(second["sourcedId"], valid_result(c, second, score=1.0))
        landed = c.get_result(second["sourcedId"])["score"] == 1.0
        assert c.put_result(second["sourcedId"], valid_result(c, second, score=2.0)).status_code == 201  # only one
    message = str(caught.value)
    assert "SIS 'sis1'" in message and "may or may not have applied it" in message and SECRET not in message
    assert landed is applies
