"""The Unified.to LMS client: paging end rules, retries within bounds, errors that say where, and no token leaks.

Every test talks to ``FakeUnified`` through httpx.MockTransport (no sockets) and sleeps through a recorder, so the
file takes no wall time waiting.
"""

from __future__ import annotations

import logging
import pickle
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
import tenacity

from lms_pipeline.providers.http import LmsAuthError, LmsClientError, LmsFetchError, LmsPayloadError, RetrySettings
from lms_pipeline.providers.unified.client import UnifiedLmsClient

TOKEN = "tok-very-secret-123"
CONNECTION = "canvas-east"
RETRY = RetrySettings(max_attempts=4, base_delay=0.5, max_delay=8.0, max_total_wait=60.0)


class FakeUnified:
    """Unified.to's list behaviour (limit clamped to 100, bare arrays, short page at the end) over ``total``
    courses, serving ``script`` first: each entry a response to return, an exception to raise, or None to answer
    normally."""

    def __init__(self, total: int, script: list[httpx.Response | Exception | None] | None = None,
                 ignore_limit: int | None = None, ignore_offset: bool = False) -> None:  # fmt: skip
        self.total, self.script, self.ignore_limit = total, list(script or []), ignore_limit
        self.ignore_offset = ignore_offset  # every request answered from offset 0 (Unified list options `-none-`)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Exception):
            raise step
        if step is not None:
            return step
        limit = self.ignore_limit or min(int(request.url.params["limit"]), 100)
        offset = 0 if self.ignore_offset else int(request.url.params["offset"])
        return httpx.Response(200, json=[{"id": f"c{i}"} for i in range(offset, min(offset + limit, self.total))])

    @property
    def offsets(self) -> list[int]:
        return [int(r.url.params["offset"]) for r in self.requests]


def make_client(api: FakeUnified, *, page_size: int = 10, retry: RetrySettings = RETRY, **kw: object):
    """A client over ``api`` and the list its sleeps are recorded in."""
    sleeps: list[float] = []
    client = UnifiedLmsClient(CONNECTION, "http://unified.test", TOKEN, transport=httpx.MockTransport(api),
                              page_size=page_size, retry=retry, sleep=sleeps.append, **kw)  # fmt: skip
    return client, sleeps


def ids(pages) -> list[str]:
    return [item["id"] for page in pages for item in page.items]


# ---- paging ---------------------------------------------------------------------------------------------------


def test_paging_stops_after_a_short_page() -> None:
    api = FakeUnified(25)
    client, _ = make_client(api)
    pages = list(client.iter_pages("course"))
    assert [(p.offset, len(p.items)) for p in pages] == [(0, 10), (10, 10), (20, 5)]
    assert ids(pages) == [f"c{i}" for i in range(25)] and len(api.requests) == 3
    assert all(p.fetched_at.tzinfo is UTC and p.status == 200 and p.attempts == 1 for p in pages)
    assert client.stats.pages == 3 and client.stats.items == 25


def test_exactly_full_last_page_is_followed_by_an_empty_page_that_is_yielded() -> None:
    client, _ = make_client(FakeUnified(20))
    pages = list(client.iter_pages("course"))
    assert [(p.offset, len(p.items)) for p in pages] == [(0, 10), (10, 10), (20, 0)]


def test_page_size_above_100_is_clamped_so_a_silently_clamped_page_never_ends_paging_early() -> None:
    api = FakeUnified(250)
    client, _ = make_client(api, page_size=500)
    pages = list(client.iter_pages("course"))
    assert [len(p.items) for p in pages] == [100, 100, 50] and len(ids(pages)) == 250
    assert {r.url.params["limit"] for r in api.requests} == {"100"}


def test_offsets_advance_by_items_received_not_by_limit() -> None:
    api = FakeUnified(40, ignore_limit=15)  # a provider that answers 15 items whatever limit says
    client, _ = make_client(api)
    pages = list(client.iter_pages("course"))
    assert api.offsets == [0, 15, 30, 40] and [p.offset for p in pages] == [0, 15, 30, 40]
    assert ids(pages) == [f"c{i}" for i in range(40)]


def test_max_pages_bounds_a_listing_that_never_ends() -> None:
    api = FakeUnified(10**9)
    client, _ = make_client(api, max_pages=3)
    with pytest.raises(LmsClientError, match=r"at offset 30 not sent: 3 full pages read \(max_pages\)") as err:
        list(client.iter_pages("course"))
    assert len(api.requests) == 3 and err.value.offset == 30 and not isinstance(err.value, LmsFetchError)


def test_an_integration_ignoring_limit_and_offset_is_stopped_at_the_first_repeated_page() -> None:
    """Unified's Moodle course list has no list options (`-none-`): every call returns the whole list (§9.4)."""
    api = FakeUnified(60, ignore_limit=10**6, ignore_offset=True)
    client, _ = make_client(api, page_size=25)
    with pytest.raises(LmsClientError) as err:
        list(client.iter_pages("course"))
    assert len(api.requests) == 2, "detected at the first page that brings nothing new, not at max_pages"
    message = str(err.value)
    assert message.startswith(f"connection {CONNECTION!r}: GET /lms/{CONNECTION}/course at offset 60")
    assert "all already read at earlier offsets" in message and "ignores offset (and maybe limit" in message
    assert err.value.endpoint == "course" and err.value.offset == 60


def test_an_integration_serving_its_first_page_forever_is_stopped_at_the_second_request() -> None:
    api = FakeUnified(1000, ignore_offset=True)  # honours limit, ignores offset: the same full page every time
    client, _ = make_client(api)
    with pytest.raises(LmsClientError, match="at offset 10 answered a full page of 10 records all already read"):
        list(client.iter_pages("course"))
    assert len(api.requests) == 2


def test_an_unpaged_listing_is_read_whole_in_one_request() -> None:
    api = FakeUnified(60, ignore_limit=10**6, ignore_offset=True)
    client, _ = make_client(api, page_size=25)
    pages = list(client.iter_pages("course", unpaged=True))
    assert len(api.requests) == 1 and ids(pages) == [f"c{i}" for i in range(60)]


@pytest.mark.parametrize("total", [10, 25])
def test_an_unpaged_answer_exactly_limit_long_is_refused_as_possibly_cut(total: int) -> None:
    """Exactly ``limit`` records: the whole list, or the integration honours limit after all and cut it."""
    api = FakeUnified(total, ignore_offset=True)
    client, _ = make_client(api, page_size=10)
    if total == 10:
        with pytest.raises(LmsClientError, match="exactly limit=10 records.*options.page_size"):
            list(client.iter_pages("course", unpaged=True))
    else:  # the first page of 25, cut at 10
        with pytest.raises(LmsClientError, match="exactly limit=10 records"):
            list(client.iter_pages("course", unpaged=True))
    assert len(api.requests) == 1


def test_query_params_are_sent_as_recorded_with_fields_comma_separated() -> None:
    api = FakeUnified(3)
    client, _ = make_client(api, headers={"X-Simulated-Date": "2026-09-01", "Authorization": "Bearer other"})
    since = datetime(2026, 9, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    (page,) = client.iter_pages("course", {"fields": ["id", "students"], "sort": "created_at", "updated_gte": since,
                                           "query": None})  # fmt: skip
    sent = api.requests[0]
    assert sent.url.params["fields"] == "id,students"
    assert page.params == {"limit": 10, "offset": 0, "fields": "id,students", "sort": "created_at",
                           "updated_gte": "2026-09-01T10:00:00Z"}  # fmt: skip
    assert dict(sent.url.params) == {k: str(v) for k, v in page.params.items()}
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}" and sent.headers["Accept"] == "application/json"
    assert sent.headers["X-Simulated-Date"] == "2026-09-01"
    with pytest.raises(ValueError, match="set by the client"):
        list(client.iter_pages("course", {"offset": 5}))


# ---- retries --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [
        ("3", 3.0, 3.0),
        ("600", RETRY.max_delay, RETRY.max_delay),  # capped at max_delay
        (timedelta(seconds=6), 4.0, 6.0),  # HTTP-date form, 6 s from now (whole seconds, so 5-6 s)
    ],
)
def test_429_retry_after_is_honoured_within_max_delay(retry_after: str | timedelta, low: float, high: float) -> None:
    if isinstance(retry_after, timedelta):
        retry_after = format_datetime(datetime.now(UTC) + retry_after, usegmt=True)
    throttled = httpx.Response(429, headers={"Retry-After": retry_after}, json={"message": "Too many requests"})
    client, sleeps = make_client(FakeUnified(5, [throttled]))
    (page,) = client.iter_pages("course")
    assert len(sleeps) == 1 and low <= sleeps[0] <= high and page.attempts == 2
    assert (client.stats.throttled, client.stats.retries, client.stats.requests) == (1, 1, 2)


def test_429_without_retry_after_backs_off_exponentially_up_to_max_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    # Full jitter draws each wait from [0, window]; pin the draw to the window's top to see the windows.
    monkeypatch.setattr(tenacity.wait.random, "uniform", lambda low, high: high)
    retry = RetrySettings(max_attempts=6, base_delay=0.5, max_delay=4.0)
    client, sleeps = make_client(FakeUnified(5, [httpx.Response(429)] * 5), retry=retry)
    list(client.iter_pages("course"))
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_backoff_waits_are_jittered_within_their_window() -> None:
    retry = RetrySettings(max_attempts=4, base_delay=0.5, max_delay=1.5)
    script = ([httpx.Response(429)] * 3 + [None]) * 20  # every page: three throttles, then an answer
    client, sleeps = make_client(FakeUnified(10**9, script), retry=retry, max_pages=20)
    with pytest.raises(LmsClientError, match="max_pages"):
        list(client.iter_pages("course"))
    windows = [0.5, 1.0, 1.5] * 20
    assert len(sleeps) == 60 and all(0 <= s <= w for s, w in zip(sleeps, windows, strict=True))
    assert len(set(sleeps)) > 50  # drawn, not fixed
    assert client.stats.wait_seconds == pytest.approx(sum(sleeps))


def test_transient_server_errors_are_survived_and_counted() -> None:
    api = FakeUnified(15, [httpx.Response(200, json=[{"id": f"c{i}"} for i in range(10)]),
                           httpx.Response(500), httpx.Response(502)])  # fmt: skip
    client, sleeps = make_client(api)
    pages = list(client.iter_pages("course"))
    assert ids(pages) == [f"c{i}" for i in range(15)] and [p.attempts for p in pages] == [1, 3]
    assert api.offsets == [0, 10, 10, 10]
    stats = client.stats.as_dict()
    assert {k: stats[k] for k in ("requests", "retries", "server_errors", "throttled", "pages", "items")} == {
        "requests": 4, "retries": 2, "server_errors": 2, "throttled": 0, "pages": 2, "items": 15,
    }  # fmt: skip
    assert len(sleeps) == 2 and stats["wait_seconds"] == round(sum(sleeps), 3)


def test_a_page_that_keeps_failing_raises_fetch_error_naming_where_and_how() -> None:
    api = FakeUnified(30, [httpx.Response(200, json=[{"id": f"c{i}"} for i in range(10)])] + [httpx.Response(500)] * 9)
    client, sleeps = make_client(api)
    with pytest.raises(LmsFetchError) as err:
        list(client.iter_pages("course"))
    assert str(err.value) == (
        "connection 'canvas-east': GET /lms/canvas-east/course at offset 10 failed after 4 attempts (last: HTTP 500)"
    )
    assert (err.value.connection_id, err.value.endpoint, err.value.offset, err.value.status) == (
        CONNECTION, "course", 10, 500,
    )  # fmt: skip
    assert len(api.requests) == 1 + RETRY.max_attempts and len(sleeps) == RETRY.max_attempts - 1


def test_retrying_stops_before_the_wait_budget_would_be_exceeded() -> None:
    throttled = [httpx.Response(429, headers={"Retry-After": "3"})] * 4
    client, sleeps = make_client(FakeUnified(5, throttled), retry=RetrySettings(max_attempts=10, max_total_wait=5))
    with pytest.raises(LmsFetchError, match=r"failed after 2 attempts \(last: HTTP 429; waiting 3.0s more") as err:
        list(client.iter_pages("course"))
    assert sleeps == [3.0] and err.value.status == 429


def test_a_transport_timeout_is_retried() -> None:
    api = FakeUnified(5, [httpx.ReadTimeout("timed out")])
    client, sleeps = make_client(api)
    (page,) = client.iter_pages("course")
    assert len(page.items) == 5 and page.attempts == 2 and len(sleeps) == 1
    assert client.stats.transport_errors == 1 and client.stats.requests == 2


def test_a_connection_that_keeps_failing_names_the_transport_error() -> None:
    client, _ = make_client(FakeUnified(5, [httpx.ConnectError("connection refused")] * 4))
    with pytest.raises(LmsFetchError, match=r"after 4 attempts \(last: ConnectError: connection refused\)") as err:
        list(client.iter_pages("course"))
    assert err.value.status is None and isinstance(err.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_raise_auth_error_without_retry(status: int) -> None:
    api = FakeUnified(5, [httpx.Response(status, json={"message": "Unauthorized"})])
    client, sleeps = make_client(api)
    with pytest.raises(LmsAuthError, match=rf"offset 0 failed with HTTP {status} on attempt 1 .*: Unauthorized$"):
        list(client.iter_pages("course"))
    assert len(api.requests) == 1 and sleeps == []


@pytest.mark.parametrize("status", [400, 404, 501])
def test_other_client_errors_fail_at_once_quoting_the_server_message(status: int) -> None:
    long_message = "course_id is required " + "x" * 400
    api = FakeUnified(5, [httpx.Response(status, json={"message": long_message})])
    client, _ = make_client(api)
    with pytest.raises(LmsFetchError) as err:
        list(client.iter_pages("course"))
    assert not isinstance(err.value, LmsAuthError) and err.value.status == status and len(api.requests) == 1
    assert "course_id is required" in str(err.value) and len(str(err.value)) < 350
    assert client.stats.server_errors == 0  # a 501 'not supported' is an answer, not server trouble


# ---- payload checks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (httpx.Response(200, text="<html>maintenance</html>"), "not JSON: '<html>maintenance</html>'"),
        (httpx.Response(200, json={"data": []}), "a JSON dict, not the promised array"),
        (httpx.Response(200, json=[{"id": "c10"}, 1, "x"]), "holding int, str items, not objects"),
    ],
)
def test_a_malformed_page_raises_payload_error_naming_connection_endpoint_and_offset(
    body: httpx.Response, needle: str
) -> None:
    api = FakeUnified(30, [httpx.Response(200, json=[{"id": f"c{i}"} for i in range(10)]), body])
    client, _ = make_client(api)
    with pytest.raises(LmsPayloadError) as err:
        list(client.iter_pages("course"))
    assert str(err.value).startswith("connection 'canvas-east': GET /lms/canvas-east/course at offset 10 answered")
    assert needle in str(err.value)
    assert (err.value.connection_id, err.value.endpoint, err.value.offset) == (CONNECTION, "course", 10)


# ---- secrets --------------------------------------------------------------------------------------------------


def test_the_token_appears_in_no_error_repr_page_params_or_log_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = make_client(FakeUnified(25, [httpx.Response(429), httpx.ReadTimeout("timed out")]))
    pages = list(client.iter_pages("course", {"fields": ["id"]}))
    echoed = f"bad header: Authorization: Bearer {TOKEN}"  # servers that echo the request back
    failures = [
        [httpx.Response(401, json={"message": echoed})],
        [httpx.Response(500)] * 4,
        [httpx.ReadTimeout("timed out")] * 4,
        [httpx.Response(200, text=echoed)],
    ]
    errors = []
    for script in failures:
        with pytest.raises(LmsClientError) as err:
            list(make_client(FakeUnified(5, script))[0].iter_pages("course"))
        errors.append(err.value)
    texts = [repr(client), *(str(p.params) for p in pages)]
    texts += [t for e in errors for t in (str(e), repr(e), str(e.args), str(e.__cause__))]
    texts += [f"{r.getMessage()} {r.args}" for r in caplog.records]
    loggers = {"httpx", "lms_pipeline.providers.transport.retry", "lms_pipeline.providers.unified.client"}
    assert {r.name for r in caplog.records} >= loggers
    assert "[token]" in str(errors[0]) and "[token]" in str(errors[3])
    assert [t for t in texts if TOKEN in t] == []


def test_errors_keep_their_fields_through_pickling() -> None:
    client, _ = make_client(FakeUnified(5, [httpx.Response(503)] * 4))
    with pytest.raises(LmsFetchError) as err:
        list(client.iter_pages("class"))
    copy = pickle.loads(pickle.dumps(err.value))
    assert type(copy) is LmsFetchError and str(copy) == str(err.value)
    assert (copy.connection_id, copy.endpoint, copy.offset, copy.status) == (CONNECTION, "class", 0, 503)
