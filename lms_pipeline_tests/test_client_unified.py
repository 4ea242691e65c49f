"""The Unified LMS client: paging end rules, retries, clear errors, and no token leaks."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from lms_pipeline.clients.errors import LmsAuthError, LmsFetchError, LmsPayloadError
from lms_pipeline.clients.http import RetrySettings
from lms_pipeline.clients.unified import UnifiedLmsClient, read_roster_ids

TOKEN = "tok-very-secret-123"
FAST = RetrySettings(max_attempts=4, base_delay=0.5, max_delay=8.0, max_total_wait=60.0)


def items(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"c{i}"} for i in range(start, start + n)]


class Api:
    """A scripted server: total records, plus a queue of responses to serve first."""

    def __init__(self, total: int, script: list[httpx.Response] | None = None) -> None:
        self.total, self.script, self.requests = total, list(script or []), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            return self.script.pop(0)
        limit = min(int(request.url.params["limit"]), 100)
        offset = int(request.url.params["offset"])
        return httpx.Response(200, json=items(max(0, min(limit, self.total - offset)), offset))


def client(api: Api, page_size: int = 10, sleeps: list | None = None, **kw) -> UnifiedLmsClient:
    return UnifiedLmsClient("canvas-east", "http://127.0.0.1:9", TOKEN, transport=httpx.MockTransport(api),
                            page_size=page_size, retry=FAST, sleep=(sleeps.append if sleeps is not None else lambda s: None),
                            **kw)  # fmt: skip


def test_pages_until_a_short_page() -> None:
    api = Api(25)
    pages = list(client(api).iter_pages("course"))
    assert [p.offset for p in pages] == [0, 10, 20] and [len(p.items) for p in pages] == [10, 10, 5]
    assert [i["id"] for p in pages for i in p.items] == [f"c{i}" for i in range(25)]


def test_exactly_full_last_page_is_followed_by_an_empty_page() -> None:
    pages = list(client(Api(20)).iter_pages("course"))
    assert [len(p.items) for p in pages] == [10, 10, 0]


def test_page_size_is_capped_at_100_so_a_clamped_page_never_looks_short() -> None:
    api = Api(250)
    pages = list(client(api, page_size=500).iter_pages("course"))
    assert [len(p.items) for p in pages] == [100, 100, 50]
    assert {r.url.params["limit"] for r in api.requests} == {"100"}


def test_429_with_retry_after_is_honoured() -> None:
    sleeps: list[float] = []
    api = Api(5, [httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "Too many requests"})])
    c = client(api, sleeps=sleeps)
    assert sum(len(p.items) for p in c.iter_pages("course")) == 5
    assert sleeps == [3.0] and c.stats.throttled == 1 and c.stats.retries == 1 and c.stats.requests == 2


def test_429_without_retry_after_backs_off_exponentially_within_bounds() -> None:
    sleeps: list[float] = []
    api = Api(5, [httpx.Response(429)] * 3)
    list(client(api, sleeps=sleeps).iter_pages("course"))
    assert len(sleeps) == 3 and all(0 < s <= FAST.max_delay for s in sleeps)
    assert sleeps[2] >= 2.0  # initial 0.5 doubled twice, plus jitter


def test_transient_server_errors_and_timeouts_are_survived_and_counted() -> None:
    calls = {"n": 0}
    api = Api(5, [httpx.Response(502), httpx.Response(500)])

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise httpx.ReadTimeout("slow", request=request)
        return api(request)

    c = UnifiedLmsClient("canvas-east", "http://127.0.0.1:9", TOKEN, transport=httpx.MockTransport(flaky),
                         retry=FAST, sleep=lambda s: None)  # fmt: skip
    assert sum(len(p.items) for p in c.iter_pages("course")) == 5
    assert c.stats.transport_errors == 1 and c.stats.server_errors == 2 and c.stats.requests == 4


def test_a_page_that_keeps_failing_names_connection_endpoint_offset_and_attempts() -> None:
    api = Api(30, [httpx.Response(200, json=items(10))] + [httpx.Response(500)] * 10)
    with pytest.raises(LmsFetchError) as err:
        list(client(api).iter_pages("course"))
    message = str(err.value)
    assert message == "connection 'canvas-east': GET /lms/canvas-east/course at offset 10 failed after 4 attempts (last: HTTP 500)"
    assert err.value.offset == 10 and err.value.status == 500


def test_401_is_not_retried() -> None:
    api = Api(5, [httpx.Response(401, json={"message": "Unauthorized"})])
    with pytest.raises(LmsAuthError, match="HTTP 401"):
        list(client(api).iter_pages("course"))
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("response", "needle"),
    [
        (httpx.Response(200, text="<html>oops</html>"), "body is not JSON"),
        (httpx.Response(200, json={"data": []}), "expected a JSON array, got dict"),
        (httpx.Response(200, json=[1, 2]), "something other than objects"),
    ],
)
def test_malformed_pages_raise_naming_connection_endpoint_and_offset(response, needle) -> None:
    with pytest.raises(LmsPayloadError) as err:
        list(client(Api(5, [response])).iter_pages("course"))
    assert "connection 'canvas-east': GET /lms/canvas-east/course at offset 0" in str(err.value)
    assert needle in str(err.value)


def test_paging_is_bounded() -> None:
    with pytest.raises(Exception, match="still had data after 3 pages"):
        list(client(Api(1000), max_pages=3).iter_pages("course"))


def test_fields_are_sent_comma_separated_and_recorded_without_secrets() -> None:
    api = Api(3)
    (page,) = client(api).iter_pages("course", {"fields": ["id", "students"], "sort": "created_at"})
    assert api.requests[0].url.params["fields"] == "id,students"
    assert page.params == {"fields": "id,students", "sort": "created_at", "limit": 10, "offset": 0}
    assert api.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_token_never_appears_in_errors_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = Api(15, [httpx.Response(429)])
    c = client(api)
    pages = list(c.iter_pages("course"))
    with pytest.raises(LmsFetchError) as err:
        list(client(Api(5, [httpx.Response(500)] * 10)).iter_pages("course"))
    texts = [repr(c), str(err.value), repr(err.value), json.dumps([p.params for p in pages])]
    texts += [r.getMessage() for r in caplog.records]
    assert caplog.records, "httpx should have logged the requests"
    assert all(TOKEN not in t for t in texts)


def test_roster_rule_absent_is_unknown_empty_is_empty_and_both_fields_union() -> None:
    assert read_roster_ids({"id": "a"}) is None
    assert read_roster_ids({"id": "a", "student_ids": None, "students": None}) is None
    assert read_roster_ids({"id": "a", "students": []}) == []
    assert read_roster_ids({"student_ids": ["s2", "s1"], "students": [{"id": "s3"}, {"id": "s1"}]}) == ["s1", "s2", "s3"]
    with pytest.raises(ValueError, match="not a list of strings"):
        read_roster_ids({"id": "a", "student_ids": "s1"})
    with pytest.raises(ValueError, match="string ids"):
        read_roster_ids({"id": "a", "students": [{"name": "x"}]})
