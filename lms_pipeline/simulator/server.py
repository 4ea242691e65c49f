"""Serve a WSGI app on one host (127.0.0.1 by default): in a background thread (tests, demo) or the foreground (CLI).

One thread per request, so a client's requests in flight are served side by side (a per-course scan with a budget
of N has N at once), each after the added latency, if any (``common.Latency``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import WSGIApplication

from lms_pipeline.simulator.common import Latency


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One daemon thread per request; closing does not wait for a stuck client."""

    daemon_threads = True
    block_on_close = False
    # The listen backlog (socketserver's default is 5): wsgiref answers HTTP/1.0, one connection per request, so
    # a client with many requests in flight opens as many connections at once, and a refused one waits a second.
    request_queue_size = 128


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request stderr line: tests and the demo make thousands of requests."""


class Router:
    """Dispatch requests to an app by the first path segment (``/lms/...``, ``/sis/...``): one loopback server
    serves every simulated system."""

    def __init__(self, apps: dict[str, WSGIApplication]) -> None:
        self.apps = apps

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        prefix = environ.get("PATH_INFO", "").lstrip("/").split("/", 1)[0]
        app = self.apps.get(prefix)
        if app is None:
            body = b'{"message": "Not found"}'
            start_response("404 Not Found", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)


def _server(app: WSGIApplication, host: str, port: int, latency_ms: float = 0) -> WSGIServer:
    served = Latency(app, latency_ms) if latency_ms else app
    return make_server(host, port, served, server_class=_ThreadingServer, handler_class=_QuietHandler)


@contextmanager
def serve_in_thread(
    app: WSGIApplication, host: str = "127.0.0.1", port: int = 0, *, latency_ms: float = 0
) -> Iterator[str]:
    """Yield the base URL of ``app`` served on ``host`` (an ephemeral port by default), each request answered
    ``latency_ms`` late; stop and close on exit."""
    server = _server(app, host, port, latency_ms)
    base_url = f"http://{host}:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=base_url, daemon=True)
    thread.start()
    try:
        yield base_url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve_forever(app: WSGIApplication, host: str = "127.0.0.1", port: int = 8765, latency_ms: float = 0) -> None:
    """Serve in the foreground until interrupted (the simulator CLI)."""
    with _server(app, host, port, latency_ms) as server:
        server.serve_forever()
