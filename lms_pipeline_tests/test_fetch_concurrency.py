"""Per-course scans under a connection's request budget (``options.max_concurrent_requests``): every dialect reads
the same pages with the same requests at any budget, really has that many requests in flight and never more, stops
at the first failure, and backs off as one connection when the provider throttles.

Real HTTP on 127.0.0.1 against the simulators, with a few milliseconds of added latency where requests must
overlap. No assertion here is an upper bound on wall time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date
from wsgiref.types import WSGIApplication

import httpx
import pytest

from lms_pipeline.config import PROVIDERS, ConfigError, load_settings
from lms_pipeline.providers.canvas.client import CanvasClient, rate_limit_headroom
from lms_pipeline.providers.canvas.simulator import CanvasSimulatorApp
from lms_pipeline.providers.classroom.client import ClassroomClient
from lms_pipeline.providers.classroom.simulator import ClassroomSimulatorApp
from lms_pipeline.providers.http import FetchStats, LmsFetchError, RequestBudget, RetrySettings, run_bounded
from lms_pipeline.providers.lti_ags.client import LtiAgsClient
from lms_pipeline.providers.lti_ags.simulator import LtiPlatformApp
from lms_pipeline.providers.oneroster.rostering import OneRosterRosterReader
from lms_pipeline.providers.oneroster.simulator import OneRosterRosteringApp
from lms_pipeline.providers.unified.client import UnifiedLmsClient
from lms_pipeline.providers.unified.progress import PARAMS, scan_per_course
from lms_pipeline.providers.unified.simulator import SimulatorApp
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread
from lms_pipeline.simulator.common import Latency

DAY = date(2026, 9, 1)
RETRY = RetrySettings(max_attempts=6, base_delay=0.01, max_delay=2.0, max_total_wait=20.0, timeout=10.0)
BUDGET = 4
LATENCY_MS = 15  # enough for requests of one scan to overlap, little enough to keep the file fast
CID = "conn-budget"
TOKEN = "budget-token-s3cret-xyz"
CLIENT_ID = "or-client-budget"
WORLD = World(WorldSpec(CID, seed=9, start_date=DAY, n_courses=14, mean_roster_size=25, n_students=300,
                        roster_exposure="mixed", classes="rosters", contents_per_course=4))  # fmt: skip


class Sends(httpx.BaseTransport):
    """The real HTTP transport, recording when each request went out and came back and its status: the wire as the
    test sees it, under the client's guard and budget."""

    def __init__(self) -> None:
        self._inner, self._lock = httpx.HTTPTransport(), threading.Lock()
        self.log: list[tuple[float, float, int, str | None]] = []  # (sent, answered, status, Retry-After)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = self._inner.handle_request(request)
        response.read()
        with self._lock:
            self.log.append((sent, time.monotonic(), response.status_code, response.headers.get("Retry-After")))
        return response

    def close(self) -> None:
        self._inner.close()

    def sent_while_paused(self) -> list[int]:
        """For each throttled answer with a Retry-After: how many requests were sent after it arrived and before
        the Retry-After had passed."""
        return [
            sum(answered < sent < answered + float(hint) for sent, *_ in self.log)
            for _, answered, status, hint in self.log
            if status == 429 and hint is not None
        ]

    @property
    def throttled(self) -> int:
        return sum(status == 429 for _, _, status, _ in self.log)


@dataclass
class Scan:
    pages: list[str]  # as the client returned them, as JSON, fetch times left out
    stats: FetchStats
    requests: Counter  # the app's request log, as a multiset
    peak: int  # requests the server had in flight at once, at most
    courses: dict[str, set]  # per endpoint read per course: the courses it was read for


@dataclass(frozen=True)
class Dialect:
    """How to serve one dialect's app and read one of its per-course scans."""

    app: Callable[..., WSGIApplication]
    read: Callable[[str, int, httpx.BaseTransport | None], tuple[list, FetchStats]]


def _canvas(read: str) -> Dialect:
    def scan(base_url: str, budget: int, transport: httpx.BaseTransport | None) -> tuple[list, FetchStats]:
        with CanvasClient(CID, f"{base_url}/canvas/{CID}", TOKEN, simulated_date=DAY, retry=RETRY, per_page=10,
                          transport=transport, max_concurrent_requests=budget) as client:  # fmt: skip
            return getattr(client, read)(), client.stats

    return Dialect(lambda **kw: CanvasSimulatorApp([WORLD], {CID: TOKEN}, clock=lambda: DAY, **kw), scan)


def _classroom(read: str) -> Dialect:
    def scan(base_url: str, budget: int, transport: httpx.BaseTransport | None) -> tuple[list, FetchStats]:
        with ClassroomClient(CID, f"{base_url}/classroom/{CID}", TOKEN, as_of=DAY, retry=RETRY, page_size=10,
                             transport=transport, max_concurrent_requests=budget) as client:  # fmt: skip
            return getattr(client, read)(), client.stats

    return Dialect(lambda **kw: ClassroomSimulatorApp([WORLD], {CID: TOKEN}, clock=lambda: DAY, **kw), scan)


def _oneroster(base_url: str, budget: int, transport: httpx.BaseTransport | None) -> tuple[list, FetchStats]:
    with OneRosterRosterReader(CID, f"{base_url}/oneroster/{CID}", CLIENT_ID, TOKEN, simulated_date=DAY,
                               retry=RETRY, page_size=10, transport=transport,
                               max_concurrent_requests=budget) as reader:  # fmt: skip
        return reader.roster_pages(), reader.stats


def _lti(base_url: str, budget: int, transport: httpx.BaseTransport | None) -> tuple[list, FetchStats]:
    with LtiAgsClient(CID, f"{base_url}/lti/{CID}", TOKEN, simulated_date=DAY, retry=RETRY, limit=10,
                      transport=transport, max_concurrent_requests=budget) as client:  # fmt: skip
        return client.grade_pages(), client.stats


def _progress(base_url: str, budget: int, transport: httpx.BaseTransport | None) -> tuple[list, FetchStats]:
    def open_client() -> UnifiedLmsClient:
        return UnifiedLmsClient(CID, base_url, TOKEN, transport=transport, retry=RETRY, page_size=10,
                                headers={"X-Simulated-Date": DAY.isoformat()},
                                max_concurrent_requests=budget)  # fmt: skip

    scan = scan_per_course(open_client, sorted(c["id"] for c in WORLD.courses(DAY)), PARAMS)
    return scan.pages, scan.stats


DIALECTS = {
    # The Unified app's behaviour is its world's: options go to the WorldSpec (same seed, so the same courses).
    "unified progress": Dialect(
        lambda **kw: SimulatorApp([World(replace(WORLD.spec, **kw))], {CID: TOKEN}, clock=lambda: DAY), _progress
    ),
    "canvas rosters": _canvas("roster_pages"),
    "canvas grades": _canvas("grade_pages"),
    "classroom rosters": _classroom("scan_rosters"),
    "classroom grades": _classroom("grade_pages"),
    "oneroster rosters": Dialect(
        lambda **kw: OneRosterRosteringApp([WORLD], {CID: (CLIENT_ID, TOKEN)}, clock=lambda: DAY, **kw), _oneroster
    ),
    "lti grades": Dialect(lambda **kw: LtiPlatformApp([WORLD], {CID: TOKEN}, clock=lambda: DAY, **kw), _lti),
}
CANVAS_QUIET = {"bucket_capacity": None}  # the Canvas app throttles by default; these tests are not about that


@contextmanager
def served(app: WSGIApplication, latency_ms: float = LATENCY_MS) -> Iterator[tuple[str, Latency]]:
    slow = Latency(app, latency_ms)
    with serve_in_thread(slow) as base_url:
        yield base_url, slow


def scan(
    name: str,
    budget: int,
    transport: httpx.BaseTransport | None = None,
    wrap: Callable[[WSGIApplication], WSGIApplication] | None = None,
    **app_options: object,
) -> Scan:
    """One scan of ``name`` on its own server (the app under ``wrap``, if given); URLs in pages and the request log
    read ``<server>`` for its origin."""
    dialect = DIALECTS[name]
    app = dialect.app(**(CANVAS_QUIET | app_options if name.startswith("canvas") else app_options))
    with served(wrap(app) if wrap else app) as (base_url, slow):
        pages, stats = dialect.read(base_url, budget, transport)

    requests = Counter(
        json.dumps(e, sort_keys=True, default=str).replace(base_url, "<server>") for e in app.request_log
    )
    courses: dict[str, set] = {}
    for page in pages:
        if page.course_id is not None:
            courses.setdefault(page.endpoint, set()).add(page.course_id)
    return Scan(comparable(pages, base_url), stats, requests, slow.peak_in_flight, courses)


def comparable(pages: list, base_url: str) -> list[str]:
    """Pages as JSON without their fetch times and attempts (a throttled page's retries depend on what else was in
    flight), the server's origin read as ``<server>``."""
    return [
        json.dumps({k: v for k, v in asdict(p).items() if k not in ("fetched_at", "attempts")}, sort_keys=True,
                   default=str).replace(base_url, "<server>")
        for p in pages
    ]  # fmt: skip


# ---- the same scan, faster ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DIALECTS)
def test_a_scan_at_any_budget_reads_the_same_pages_with_the_same_requests(name: str) -> None:
    serial, wide = scan(name, 1), scan(name, BUDGET)
    # Each per-course listing was read for every course (the same set whatever the listing): the tasks a budget
    # runs are the scan's, not a subset of them.
    assert len({frozenset(c) for c in serial.courses.values()}) == 1, serial.courses
    assert len(next(iter(serial.courses.values()))) == len(WORLD.courses(DAY))
    assert wide.pages == serial.pages, "same pages, in the same order"
    assert wide.requests == serial.requests, "not one request more or less"
    assert (wide.stats.requests, wide.stats.pages, wide.stats.items) == (
        serial.stats.requests, serial.stats.pages, serial.stats.items)  # fmt: skip
    assert serial.peak == 1
    assert 1 < wide.peak <= BUDGET, f"{wide.peak} requests in flight at most, with a budget of {BUDGET}"


# ---- failures ------------------------------------------------------------------------------------------------

# Per dialect: a per-course listing whose third request the provider refuses (404: not retried).
FAILING = {
    "unified progress": "/activity",
    "canvas rosters": "/sections",
    "canvas grades": "/submissions",
    "classroom rosters": "/students",
    "classroom grades": "/courseWork",
    "oneroster rosters": "/enrollments",
    "lti grades": "/memberships",
}


class FailThird:
    """Answers the third request whose path holds ``marker`` with a 404, and counts every request."""

    def __init__(self, app: WSGIApplication, marker: str) -> None:
        self.app, self.marker = app, marker
        self.seen = self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        with self._lock:
            self.requests += 1
            self.seen += self.marker in environ.get("PATH_INFO", "")
            fail = self.marker in environ.get("PATH_INFO", "") and self.seen == 3
        if fail:
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"message": "gone"}']
        return self.app(environ, start_response)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", FAILING)
def test_a_failing_course_listing_fails_the_scan_and_no_further_request_is_sent(name: str) -> None:
    full = scan(name, BUDGET)
    failing: list[FailThird] = []

    def wrap(app: WSGIApplication) -> FailThird:
        failing.append(FailThird(app, FAILING[name]))
        return failing[0]

    with pytest.raises(LmsFetchError) as raised:
        scan(name, BUDGET, wrap=wrap)
    assert raised.value.status == 404 and repr(CID) in str(raised.value)
    total = sum(full.requests.values())
    assert failing[0].requests < total / 2, f"{failing[0].requests} of the scan's {total} requests were sent"


# ---- throttling ------------------------------------------------------------------------------------------------

# Providers that refuse every n-th request with a Retry-After: the connection must send nothing while it runs.
RETRY_AFTER = {
    "unified progress": {"rate_limit_every": 25, "retry_after_seconds": 1},  # whole seconds (ceil) in this app
    "lti grades": {"rate_limit_every": 9, "retry_after_seconds": 0.3},
}
# Providers that refuse every n-th request: as many 429s at any budget, since the count is all that matters.
EVERY_NTH = {**RETRY_AFTER, "oneroster rosters": {"throttle_every": 9}}


@pytest.mark.parametrize("name", RETRY_AFTER)
def test_a_429_pauses_every_request_of_the_connection_until_its_retry_after_has_passed(name: str) -> None:
    sends = Sends()
    wide = scan(name, BUDGET, sends, **RETRY_AFTER[name])
    assert sends.throttled >= 2, "the app should throttle this scan more than once"
    # Requests already on the wire when the 429 came back may arrive after it; none is sent after that.
    assert max(sends.sent_while_paused()) <= BUDGET - 1, sends.sent_while_paused()
    assert wide.pages == scan(name, 1).pages


@pytest.mark.parametrize("name", EVERY_NTH)
def test_a_wider_budget_draws_no_more_429s_than_one_request_at_a_time(name: str) -> None:
    serial, wide = scan(name, 1, **EVERY_NTH[name]), scan(name, BUDGET, **EVERY_NTH[name])
    assert serial.stats.throttled >= 2, "the app should throttle this scan more than once"
    assert wide.stats.throttled == serial.stats.throttled
    assert wide.pages == serial.pages


def test_canvas_rate_limit_remaining_keeps_a_wide_scan_from_being_throttled_where_a_serial_one_is_not() -> None:
    """canvas-lms charges each request in flight an up-front cost (50) until it ends: with room for three but not
    four in the bucket, four at once would be refused; the remaining quota each answer reports keeps it serial."""
    tight = {"bucket_capacity": 180.0, "preflight_penalty": 50.0, "request_cost": 0.0, "request_seconds": 0.02}
    serial, wide = scan("canvas rosters", 1, **tight), scan("canvas rosters", BUDGET, **tight)
    assert serial.stats.throttled == 0, "one request at a time fits the bucket"
    assert wide.stats.throttled == 0
    assert wide.pages == serial.pages
    roomy = scan("canvas rosters", BUDGET, **{**tight, "bucket_capacity": 700.0})
    assert roomy.stats.throttled == 0 and roomy.peak > 1, "with room in the bucket the scan still goes wide"


def test_an_expired_oneroster_token_is_renewed_once_however_many_requests_in_flight_it_refused() -> None:
    app = OneRosterRosteringApp([WORLD], {CID: (CLIENT_ID, TOKEN)}, clock=lambda: DAY)
    expiries = gets = 0
    lock = threading.Lock()

    def expiring(environ: dict, start_response: Callable) -> list[bytes]:
        nonlocal expiries, gets
        with lock:
            gets += environ["REQUEST_METHOD"] == "GET"
            if environ["REQUEST_METHOD"] == "GET" and gets % 15 == 0:
                app.expire_tokens()
                expiries += 1
        return app(environ, start_response)  # type: ignore[arg-type]

    with served(expiring) as (base_url, _):
        reader = OneRosterRosterReader(CID, f"{base_url}/oneroster/{CID}", CLIENT_ID, TOKEN, simulated_date=DAY,
                                       retry=RETRY, page_size=10, max_concurrent_requests=BUDGET)  # fmt: skip
        with reader:
            pages = reader.roster_pages()
    refused = sum(e["status"] == 401 for e in app.request_log)
    assert expiries >= 2 and refused >= expiries
    assert reader.token_requests <= 1 + expiries, f"{reader.token_requests} token requests for {expiries} expiries"
    assert comparable(pages, base_url) == scan("oneroster rosters", 1).pages


# ---- the budget itself --------------------------------------------------------------------------------------


def test_run_bounded_keeps_the_order_of_the_tasks_and_raises_the_first_tasks_failure() -> None:
    budget = RequestBudget(CID, BUDGET, RETRY)
    running, peak, lock = 0, 0, threading.Lock()

    def task(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.005)
        with lock:
            running -= 1
        if i in (5, 7):
            raise ValueError(f"task {i}")
        return i

    assert run_bounded([lambda i=i: task(i) for i in range(5)], budget) == list(range(5))
    with pytest.raises(ValueError, match="task 5"):
        run_bounded([lambda i=i: task(i) for i in range(30)], budget)
    assert 1 < peak <= BUDGET


def test_a_throttle_pauses_the_others_for_the_backoff_window_and_lets_one_request_at_a_time_until_a_success() -> None:
    """Unified.to sends no Retry-After (docs/providers.md §1.5): the pause is the retry policy's backoff window,
    doubling with each throttle in a row. The request that drew it (the probe) is not held by it."""
    slept: list[float] = []
    budget = RequestBudget(CID, BUDGET, RetrySettings(base_delay=0.5, max_delay=8.0), sleep=slept.append)
    request = httpx.Request("GET", "http://127.0.0.1/")

    def send(status: int) -> None:
        budget.release(budget.acquire(request), httpx.Response(status, request=request))

    send(429)
    send(429)  # the probe again, at once: a second throttle in a row
    probe = budget.acquire(request)  # the probe's next try: not held by its own pause
    other = threading.Thread(target=send, args=(200,))
    other.start()
    other.join(timeout=0.2)
    assert other.is_alive(), "one request at a time after a throttle: the other waits for the probe to come back"
    budget.release(probe, httpx.Response(200, request=request))
    other.join(timeout=10)
    assert not other.is_alive() and budget.pauses == 2
    assert 0.9 < slept[0] <= 1.0, "it waited out the second window (2 x base_delay) first"
    send(429)
    other = threading.Thread(target=send, args=(200,))
    other.start()
    other.join(timeout=10)
    assert budget.pauses == budget.throttles == 3
    assert 0.45 < slept[-1] <= 0.5, "after a success the window starts over at base_delay"


def test_canvas_rate_limit_remaining_allows_one_request_in_flight_per_two_up_front_costs_left() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/")

    def headroom(remaining: str | None) -> int | None:
        headers = {} if remaining is None else {"X-Rate-Limit-Remaining": remaining}
        return rate_limit_headroom(httpx.Response(200, headers=headers, request=request))

    assert [headroom(v) for v in ("600.0", "250", "199.9", "35.5", "0.0")] == [6, 2, 1, 1, 1]
    assert headroom(None) is None and headroom("n/a") is None


def test_after_a_failure_the_budget_sends_nothing_more_and_the_next_scan_is_not_refused() -> None:
    app = DIALECTS["canvas rosters"].app(**CANVAS_QUIET)
    with served(app) as (base_url, _), CanvasClient(CID, f"{base_url}/canvas/{CID}", TOKEN, simulated_date=DAY,
                                                    retry=RETRY, max_concurrent_requests=BUDGET) as client:  # fmt: skip
        app.inject_fault(CID, status=404, endpoint="sections", course_id=2)
        with pytest.raises(LmsFetchError, match="sections"):
            client.roster_pages()
        assert len(client.roster_pages()) > 0, "the client reads again once the failed scan is over"


# ---- configuration and the simulator -----------------------------------------------------------------------


def test_every_dialect_has_a_request_budget_of_four_by_default(tmp_path) -> None:  # noqa: ANN001
    options = {"oneroster": {"client_id": "x"}}
    config = tmp_path / "connections.yaml"
    config.write_text(
        json.dumps(
            {
                "start_date": "2026-09-01",
                "connections": [
                    {"id": f"c-{p}", "provider": p, "token_env": "T", "options": options.get(p, {})} for p in PROVIDERS
                ],
            }
        )
    )
    settings = load_settings(config)
    assert {c.options.max_concurrent_requests for c in settings.connections} == {4}


def test_progress_concurrency_is_refused_naming_the_option_that_replaced_it(tmp_path) -> None:  # noqa: ANN001
    config = tmp_path / "connections.yaml"
    config.write_text(
        json.dumps(
            {
                "start_date": "2026-09-01",
                "connections": [
                    {
                        "id": "old-school",
                        "provider": "unified",
                        "token_env": "T",
                        "options": {"progress_concurrency": 3},
                    }
                ],
            }
        )
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    message = str(raised.value)
    assert "connection 'old-school'" in message and "options.progress_concurrency" in message
    assert "max_concurrent_requests: 3" in message


def test_the_simulator_answers_after_its_latency_and_serves_requests_side_by_side() -> None:
    with served(SimulatorApp([WORLD], {CID: TOKEN}, clock=lambda: DAY), latency_ms=100) as (base_url, slow):

        def get(_: int) -> float:
            started = time.monotonic()
            response = httpx.get(f"{base_url}/lms/{CID}/course", headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status_code == 200
            return time.monotonic() - started

        threads = [threading.Thread(target=get, args=(i,)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert get(0) >= 0.1, "each answer waits the latency"
    assert slow.peak_in_flight > 1, "requests in flight are served side by side, not one after another"
