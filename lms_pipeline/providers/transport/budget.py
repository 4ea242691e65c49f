"""A connection's request budget: at most ``size`` requests in flight, one backoff for the whole connection when
the provider throttles, and the runner every per-course scan reads its listings with.

Why: a per-course scan is one listing (or a few) per course, so at real latencies (100-300 ms) a 50,000-course
tenant read one request at a time is hours of waiting; ``size`` requests in flight cut that ``size``-fold. But a
rate limit belongs to the connection (its token), not to one request: when one answer says "throttled", every
worker must hold off, or ``size`` workers draw ``size`` times the 429s. So the gate sits in the transport each
request of a client passes through (``BudgetTransport``); each request's own retries stay ``get_with_retries``'s.

After a throttled answer (429, or Canvas's legacy 403 that ``CanvasClient`` turns into one) the connection
pauses: for the Retry-After when one is sent, else for the backoff window of the retry policy, doubling with each
throttle in a row. The request that drew it retries after its own wait (the probe); every other request waits
out the pause, and then requests go one at a time, one more with each success, up to ``size`` again. So the only
throttled answers a budget of ``size`` can draw beyond what one request at a time would are those already on
the wire when the first throttle came: at most ``size - 1`` per throttle. A provider's header can lower the
number in flight before it throttles at all (``headroom``: Canvas's ``X-Rate-Limit-Remaining``).

Every wait is bounded: a pause by the retry policy's ``max_delay`` (or a Retry-After capped to it), a wait for a
free slot by the request deadline of the requests holding them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import httpx

from lms_pipeline.providers.transport.errors import LmsClientError
from lms_pipeline.providers.transport.retry import RetrySettings, retry_after_seconds

logger = logging.getLogger(__name__)

T = TypeVar("T")
THROTTLE_STATUS = 429
MAX_GATE_ROUNDS = 1_000_000  # bound on one request's turns at the gate (a pause slept, or a slot freed to another)


class ScanCancelled(Exception):  # noqa: N818 (not an error of its own: the scan already failed on another one)
    """A request not sent because another listing of the same scan failed: the scan stores nothing, so reading
    on would only spend the provider's quota. Never surfaces: ``run_bounded`` raises the failure itself."""


class RequestBudget:
    """The gate of one client (one connection): see the module docstring.

    ``headroom(response)`` may name how many requests the provider would take in flight now (None: no limit
    known); ``sleep`` is the client's, so a test's fake sleep serves pauses too.
    """

    def __init__(
        self,
        connection_id: str,
        size: int,
        retry: RetrySettings,
        *,
        headroom: Callable[[httpx.Response], int | None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError(f"connection {connection_id!r}: max_concurrent_requests must be at least 1, got {size}")
        self.connection_id, self.size, self.retry = connection_id, size, retry
        self._headroom, self._sleep, self._clock = headroom, sleep, clock
        self._cond = threading.Condition()
        self._in_flight = 0
        self._limit = size  # lowered to 1 by a throttle, raised by one with each success after it
        self._cap: int | None = None  # the provider's own say (headroom), when it has one
        self._resume_at = 0.0  # no request of the connection starts before this, but the probe
        self._probe: int | None = None  # the thread whose request drew the current pause
        self._episode = 0  # throttles that paused the connection; a request remembers the one it started in
        self._streak = 0  # throttles in a row without a success: the pause doubles with each
        self._cancelled = False
        self._progress = clock()  # when a slot was last taken or freed
        self._served = threading.local()  # the pause this thread last slept out (fake sleeps return at once)
        self.throttles = 0  # throttled answers seen
        self.pauses = 0  # times the whole connection paused
        self.peak_in_flight = 0

    # ---- the gate --------------------------------------------------------------------------------------------
    def acquire(self, request: httpx.Request) -> int:
        """Wait for a free slot and the end of any pause; return the throttle episode the request starts in."""
        me = threading.get_ident()
        for _ in range(MAX_GATE_ROUNDS):
            with self._cond:
                if self._cancelled:
                    raise ScanCancelled(f"connection {self.connection_id!r}: {request.method} {request.url} not sent")
                now = self._clock()
                left = self._resume_at - now
                paused = left > 0 and self._probe != me and getattr(self._served, "until", None) != self._resume_at
                if not paused:
                    if self._in_flight < self._allowed():
                        self._in_flight += 1
                        self._progress = now
                        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
                        return self._episode
                    # Every slot is held by a request bounded by its deadline, so one frees in time; a connection
                    # where none did is broken, not busy.
                    if now - self._progress > self.retry.deadline + self.retry.max_delay:
                        break
                    self._cond.wait(timeout=1.0)
                    continue
                until = self._resume_at
            self._sleep(left)  # outside the lock: the probe and the requests in flight go on
            self._served.until = until
        raise LmsClientError(f"connection {self.connection_id!r}: {request.method} {request.url} found no free "
                             "request slot (none was freed within the request deadline); not sent",
                             connection_id=self.connection_id, endpoint=request.url.path)  # fmt: skip

    def release(self, episode: int, response: httpx.Response | None) -> None:
        """A request ended (``response`` None: no answer): free its slot, and learn from its answer."""
        with self._cond:
            self._in_flight -= 1
            self._progress = self._clock()
            if response is not None:
                if response.status_code == THROTTLE_STATUS:
                    self._throttled(episode, response)
                elif response.status_code < 500 and episode == self._episode:
                    # An answer to a request sent after the last pause: the provider takes requests again.
                    self._streak, self._probe = 0, None
                    self._resume_at = min(self._resume_at, self._clock())
                    self._limit = min(self.size, self._limit + 1)
                if self._headroom is not None:
                    self._cap = self._headroom(response)
            self._cond.notify_all()

    def _throttled(self, episode: int, response: httpx.Response) -> None:
        self.throttles += 1
        hinted = retry_after_seconds(response)
        if episode != self._episode:  # on the wire before the pause began: it changes nothing but a longer hint
            if hinted is not None:
                self._resume_at = max(self._resume_at, self._clock() + min(hinted, self.retry.max_delay))
            return
        self._episode += 1
        self._streak += 1
        self.pauses += 1
        self._limit, self._probe = 1, threading.get_ident()
        window = min(self.retry.max_delay, self.retry.base_delay * 2 ** (self._streak - 1))
        pause = min(hinted, self.retry.max_delay) if hinted is not None else window
        self._resume_at = max(self._resume_at, self._clock() + pause)
        logger.info("connection %r: throttled (HTTP %d); every request of the connection waits %.2fs",
                    self.connection_id, response.status_code, pause)  # fmt: skip

    def _allowed(self) -> int:
        return max(1, min(self._limit, self._cap or self.size))

    # ---- scans -----------------------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Refuse every request not yet sent (``ScanCancelled``): the scan has failed."""
        with self._cond:
            self._cancelled = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._cancelled = False


class BudgetTransport(httpx.BaseTransport):
    """Sends through ``inner`` under ``budget``: the slot is held from the first byte sent to the last one read."""

    def __init__(self, inner: httpx.BaseTransport, budget: RequestBudget) -> None:
        self._inner, self.budget = inner, budget

    @property
    def inner(self) -> httpx.BaseTransport:
        """The transport under the budget (a client reading its provider's own headers keeps a hand on it)."""
        return self._inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        episode = self.budget.acquire(request)
        response = None
        try:
            response = self._inner.handle_request(request)
            return response
        finally:
            self.budget.release(episode, response)

    def close(self) -> None:
        self._inner.close()


def run_bounded(tasks: Sequence[Callable[[], T]], budget: RequestBudget) -> list[T]:
    """Run ``tasks`` (each one listing, or a few, read to its end) with ``budget.size`` workers; return their
    results in the order of ``tasks``, so pages come out as a one-at-a-time scan reads them.

    All or nothing: at the first failure no further request is sent (the budget refuses it), the workers finish
    the request they are in, and the failure is raised (of several, the first task's).
    """
    workers = min(budget.size, len(tasks))
    if workers <= 1:
        return [task() for task in tasks]
    results: list[T | None] = [None] * len(tasks)
    failures: dict[int, Exception] = {}
    lock = threading.Lock()
    todo = iter(range(len(tasks)))

    def work() -> None:
        while True:
            with lock:
                index = next(todo, None) if not failures else None
            if index is None:
                return
            try:
                results[index] = tasks[index]()
            except ScanCancelled:
                return
            except Exception as exc:  # noqa: BLE001 (raised below, in the caller's thread)
                with lock:
                    failures[index] = exc
                budget.cancel()
                return

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"scan-{budget.connection_id}") as pool:
            for future in [pool.submit(work) for _ in range(workers)]:
                future.result()
    finally:
        budget.reopen()
    if failures:
        raise failures[min(failures)]
    return results  # type: ignore[return-value]
