"""Pieces every simulated provider app shares: injected faults, the request log, the simulated date, the status
line, and added latency (``Latency``, which the server puts in front of whatever app it serves). Each app keeps its
own routes, error bodies and error types; these only hold what was the same in all of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from http import HTTPStatus
from urllib.parse import parse_qs, quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

Params = dict[str, list[str]]
DATE_HEADER = "HTTP_X_SIMULATED_DATE"  # X-Simulated-Date, as WSGI names it: the as-of day a client asks for


@dataclass
class Fault:
    """One injected answer for the next ``times`` requests of a connection whose request matches ``where`` (a None
    value there matches anything)."""

    connection_id: str
    status: int
    body: bytes | str | None
    where: dict[str, object]
    times: int

    def matches(self, connection_id: str, seen: dict[str, object]) -> bool:
        return (
            self.times > 0
            and self.connection_id == connection_id
            and all(wanted is None or seen.get(key) == wanted for key, wanted in self.where.items())
        )

    @property
    def payload(self) -> bytes:
        """The body verbatim as bytes (only when one was given: None means the app's own error body)."""
        return self.body.encode() if isinstance(self.body, str) else self.body or b""


class FaultBook:
    """The faults a test injected; served threads take them one request at a time, hence the lock."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, connection_id: str, status: int, body: bytes | str | None, times: int, **where: object) -> None:
        with self._lock:
            self._faults.append(Fault(connection_id, status, body, where, times))

    def take(self, connection_id: str, **seen: object) -> Fault | None:
        """The first fault matching the request, with one use spent; None when none matches."""
        with self._lock:
            fault = next((f for f in self._faults if f.matches(connection_id, seen)), None)
            if fault is not None:
                fault.times -= 1
            return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


class SimulatedApp:
    """What every simulated provider app keeps: the worlds it serves by connection, the day it answers as of when a
    request names none (``clock``), the request log tests read, and the faults tests inject, each matched on the
    request fields the app names in ``FAULT_FIELDS`` (a field left out matches any request)."""

    FAULT_FIELDS: tuple[str, ...] = ("endpoint",)

    def __init__(self, worlds: Iterable, clock: Callable[[], date] | None = None) -> None:
        self.worlds = {w.spec.connection_id: w for w in worlds}
        self.clock = clock or (lambda: datetime.now(UTC).date())
        self.request_log = RequestLog()
        self._faults = FaultBook()
        self._lock = threading.Lock()

    def inject_fault(
        self, connection_id: str, *, status: int = 500, body: bytes | str | None = None, times: int = 1, **where: object
    ) -> None:
        """Answer the next ``times`` requests of the connection matching ``where`` with ``status`` and ``body``
        verbatim, or the app's own error body when ``body`` is None; with status 200 a body makes a malformed page.
        A fault answer carries no next link or token, so it ends the listing it lands in."""
        unknown = sorted(set(where) - set(self.FAULT_FIELDS))
        if unknown:
            raise TypeError(f"{type(self).__name__} matches faults on {', '.join(self.FAULT_FIELDS)}, not {unknown}")
        self._faults.add(connection_id, status, body, times, **where)

    def clear_faults(self) -> None:
        self._faults.clear()

    def reset_log(self) -> None:
        self.request_log.reset()


class RequestLog(list[dict]):
    """Every request an app answered, in order, for tests to read; served threads append to it concurrently."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def append(self, entry: dict) -> None:
        with self._lock:
            super().append(entry)

    def reset(self) -> None:
        with self._lock:
            self.clear()


def query_params(environ: WSGIEnvironment) -> Params:
    return parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)


def logged_params(params: Params) -> dict[str, str | list[str]]:
    """Parameters as the log shows them: a value given once as itself, a repeated one as its list."""
    return {k: v[0] if len(v) == 1 else v for k, v in params.items()}


def parse_as_of(value: str | None) -> date | None:
    """The X-Simulated-Date header's day (None when absent); ValueError with the message every app answers 400 with."""
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"X-Simulated-Date must be YYYY-MM-DD, got {value!r}") from None


def reason(status: int) -> str:
    """The status line's phrase; an injected status Python does not know still gets one."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def respond(
    start_response: StartResponse, status: int, body: bytes, content_type: str, headers: dict[str, str]
) -> list[bytes]:
    start_response(
        f"{status} {reason(status)}",
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers.items()],
    )
    return [body]


def origin(environ: WSGIEnvironment) -> str:
    return "http://" + (environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}")


def request_url(environ: WSGIEnvironment) -> str:
    """The absolute URL as requested: links are built from it, and the log shows exactly what a client asked."""
    query = environ.get("QUERY_STRING", "")
    return f"{origin(environ)}{quote(environ.get('PATH_INFO', ''))}" + (f"?{query}" if query else "")


class Latency:
    """WSGI middleware: each request is answered ``latency_ms`` after it arrived, as a real provider's network and
    server time would make it (100-300 ms is common), in the request's own server thread so requests in flight
    wait side by side. The app's own work is done within that time (when it takes longer, the answer is that much
    later): a client measured against the simulator then waits ``latency_ms`` per request, not that plus the
    simulator's CPU. Counts requests in flight, so a test or the bench can see they overlapped."""

    def __init__(self, app: WSGIApplication, latency_ms: float) -> None:
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        self.app, self.seconds = app, latency_ms / 1000
        self.in_flight = self.peak_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        arrived = time.monotonic()
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            body = list(self.app(environ, start_response))  # every app answers with a list of bytes
            time.sleep(max(0.0, arrived + self.seconds - time.monotonic()))
            return body
        finally:
            with self._lock:
                self.in_flight -= 1
