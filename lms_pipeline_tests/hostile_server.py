"""A hostile LMS/SIS server for the test suite: real HTTP on 127.0.0.1, one switchable bad behaviour at a time.

It answers every dialect's first listing well enough that the behaviour under test is the only thing wrong:
a JSON array for Unified, Canvas and LTI contexts, ``{"courses": [...]}`` for Classroom, ``{collection: [...]}``
with ``X-Total-Count`` for OneRoster, and an OAuth2 token for ``POST .../oauth/token``. ``behaviour`` says what it
does to each answer (``BEHAVIOURS``). Every request is recorded (method, path, headers), so a test can prove what a
client did or did not send, e.g. that a foreign server never saw the token.

The simulators in ``lms_pipeline.simulator`` model providers as they are documented; this server models what no
provider documents: slow, huge, malicious or broken answers.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
import socket
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"

BEHAVIOURS = {
    "ok": "a normal short page",
    "echo_token": "a normal page whose items echo the bearer token the request carried (and the secret of a "
    "token request, in the token answer)",
    "trickle": "the headers at once, then the body one byte every trickle_seconds",
    "trickle_headers": "the status line and headers one byte every trickle_seconds",
    "gzip_bomb": "Content-Encoding: gzip, a small body inflating to BOMB_MB of JSON whitespace",
    "gzip": "a normal page, gzip-encoded (what a well-behaved server may send)",
    "deflate": "a normal page, deflate-encoded in the zlib wrapper RFC 9110 names",
    "raw_deflate": "a normal page, deflate-encoded without the zlib wrapper (as many servers send it)",
    "brotli": "a normal page labelled Content-Encoding: br, which no client asked for",
    "huge_page": "a valid page of HUGE_MB, chunked (no Content-Length)",
    "huge_declared": "Content-Length: HUGE_MB, then the page",
    "foreign_next": "a normal page whose Link rel=next (Classroom: none) points at foreign_url",
    "deep_json": "a JSON array nested DEEP levels",
    "same_page_forever": "a full page (limit items, the same ones) with a next link (and a huge total) every time",
    "drop_mid_body": "Content-Length of the page, half the body, then the connection closed",
}
BOMB_MB = 600
HUGE_MB = 50
DEEP = 100_000


ENCODERS = {
    "gzip": ("gzip", lambda raw: zlib.compress(raw, wbits=31)),
    "deflate": ("deflate", zlib.compress),
    "raw_deflate": ("deflate", lambda raw: zlib.compress(raw, wbits=-15)),
    "brotli": ("br", lambda raw: raw),
}


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]


@functools.cache
def gzip_bomb() -> bytes:
    """gzip of ``[`` + BOMB_MB of spaces + ``]``: valid JSON (an empty array) once inflated, ~0.6 MB on the wire."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b" " * (1 << 20)
    return b"".join([packer.compress(b"["), *(packer.compress(block) for _ in range(BOMB_MB)),
                     packer.compress(b"]"), packer.flush()])  # fmt: skip


class HostileServer:
    """Serve on 127.0.0.1 (ephemeral port) while the ``with`` block runs. ``token`` is the access token its
    OAuth2 endpoint issues; ``behaviour`` and ``foreign_url`` may be changed between requests."""

    def __init__(self, behaviour: str = "ok", *, foreign_url: str | None = None, trickle_seconds: float = 0.25,
                 page_items: int = 3) -> None:  # fmt: skip
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {behaviour!r}; one of {sorted(BEHAVIOURS)}")
        self.behaviour = behaviour
        self.foreign_url = foreign_url
        self.trickle_seconds = trickle_seconds
        self.page_items = page_items
        self.token = "issued-" + secrets.token_urlsafe(16)
        self.requests: list[Seen] = []
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> HostileServer:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"hostile {self.url}", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # trickling answers stop at their next byte
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def saw(self, secret: str) -> bool:
        """Whether any request carried ``secret`` (in its path or any header, Basic auth decoded too)."""
        for seen in self.requests:
            texts = [seen.path, *seen.headers.values()]
            auth = seen.headers.get("authorization", "")
            if auth.startswith("Basic "):
                texts.append(base64.b64decode(auth[6:]).decode(errors="replace"))
            if any(secret in text for text in texts):
                return True
        return False

    # ---- answers ----------------------------------------------------------------------------------------------
    def answer(self, handler: _Handler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        form = handler.rfile.read(length).decode(errors="replace") if length else ""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        self.requests.append(Seen(method, handler.path, headers))
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        bearer = headers.get("authorization", "").removeprefix("Bearer ")
        if method == "POST" and url.path.endswith("/oauth/token"):
            body = {"access_token": self.token, "token_type": "Bearer", "expires_in": 3600}
            if self.behaviour == "echo_token":
                body["debug"] = f"asked with {headers.get('authorization', '')} and {form}"
            return self._send(handler, 200, json.dumps(body).encode(), {})
        if self.behaviour == "trickle_headers":
            return self._trickle(handler, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Slow: "
                                 + b"." * 4096 + b"\r\nContent-Length: 2\r\n\r\n[]")  # fmt: skip
        forever = self.behaviour == "same_page_forever"
        count = int(query.get("limit") or query.get("per_page") or query.get("pageSize") or 10) if forever else None
        body, extra = self._page(url.path, query, count or self.page_items)
        if self.behaviour == "echo_token":
            for item in _items(body):
                item["echo"] = f"seen token {bearer}"
        if self.behaviour == "foreign_next" and self.foreign_url:
            extra["Link"] = f'<{self.foreign_url}{url.path}?offset={len(_items(body))}>; rel="next"'
        if forever:
            offset = int(query.get("offset") or 0) + len(_items(body))
            extra["Link"] = f'<{self.url}{url.path}?limit={count}&offset={offset}>; rel="next"'
            extra["X-Total-Count"] = str(10**9)
            if isinstance(body, dict):
                body["nextPageToken"] = f"page-{offset}"
        raw = json.dumps(body).encode()
        if self.behaviour == "deep_json":
            raw = b"[" * DEEP + b"]" * DEEP
        if self.behaviour in ENCODERS:
            name, encode = ENCODERS[self.behaviour]
            return self._send(handler, 200, encode(raw), {"Content-Encoding": name, **extra})
        if self.behaviour == "gzip_bomb":
            return self._send(handler, 200, gzip_bomb(), {"Content-Encoding": "gzip"})
        if self.behaviour in ("huge_page", "huge_declared"):
            return self._huge(handler, declared=self.behaviour == "huge_declared")
        if self.behaviour == "trickle":
            head = _head(200, {"Content-Type": "application/json", "Content-Length": str(len(raw)), **extra})
            return self._trickle(handler, raw, head=head)
        if self.behaviour == "drop_mid_body":
            head = _head(200, {"Content-Type": "application/json", "Content-Length": str(len(raw))})
            with suppress(OSError):
                handler.wfile.write(head + raw[: len(raw) // 2])
                handler.wfile.flush()
                handler.connection.shutdown(socket.SHUT_RDWR)
            handler.close_connection = True
            return None
        return self._send(handler, 200, raw, extra)

    def _page(self, path: str, query: dict[str, str], count: int) -> tuple[object, dict[str, str]]:
        """A normal page of ``count`` items in the dialect the path names."""
        if "/ims/oneroster/" in path:
            collection = path.rstrip("/").rsplit("/", 1)[-1]
            items = [{"sourcedId": f"{collection}-{i}", "status": "active", "title": f"{collection} {i}",
                      "course": {"sourcedId": "course-1"}} for i in range(count)]  # fmt: skip
            return {collection: items}, {"X-Total-Count": str(count)}
        if "/v1/courses" in path and "/api/v1/" not in path:  # Google Classroom (Canvas is /api/v1/...)
            return {"courses": [{"id": f"gc-{i}", "name": f"Course {i}"} for i in range(count)]}, {}
        if path.endswith("/contexts"):  # LTI: the claims a tool keeps from its launches
            root = self.url + path.removesuffix("/contexts")
            return [{"id": f"ctx-{i}", AGS_CLAIM: {"lineitems": f"{root}/{i}/lineitems"},
                     NRPS_CLAIM: {"context_memberships_url": f"{root}/{i}/memberships"}}
                    for i in range(count)], {}  # fmt: skip
        if path.startswith("/lms/"):  # Unified: course objects as the roster pipeline reads them
            return [{"id": f"crs-{i}", "name": f"Course {i}", "is_active": True, "created_at": "2026-08-01T00:00:00Z",
                     "updated_at": "2026-08-01T00:00:00Z", "student_ids": [f"stu-{i}", f"stu-{i + 1}"]}
                    for i in range(count)], {}  # fmt: skip
        return [{"id": i, "name": f"Course {i}", "sis_course_id": f"crs-{i}"} for i in range(count)], {}

    def _send(self, handler: _Handler, status: int, raw: bytes, headers: dict[str, str]) -> None:
        head = _head(status, {"Content-Type": "application/json", "Content-Length": str(len(raw)), **headers})
        with suppress(OSError):  # the client may hang up early: that is what a bounded client does
            handler.wfile.write(head)
            for start in range(0, len(raw), 1 << 16):
                handler.wfile.write(raw[start : start + (1 << 16)])
            handler.wfile.flush()

    def _trickle(self, handler: _Handler, raw: bytes, head: bytes = b"") -> None:
        with suppress(OSError):
            handler.wfile.write(head)
            handler.wfile.flush()
            for position in range(len(raw)):
                if self._stopping.wait(self.trickle_seconds):
                    break
                handler.wfile.write(raw[position : position + 1])
                handler.wfile.flush()
        handler.close_connection = True

    def _huge(self, handler: _Handler, declared: bool) -> None:
        """A valid JSON array of HUGE_MB: one item per MB, each with a 1 MB string, written 1 MB at a time."""
        filler = "x" * ((1 << 20) - 64)
        parts = [b"["] + [json.dumps({"id": i, "name": filler}).encode() + (b"," if i < HUGE_MB - 1 else b"")
                          for i in range(HUGE_MB)] + [b"]"]  # fmt: skip
        size = sum(map(len, parts))
        framing = {"Content-Length": str(size)} if declared else {"Transfer-Encoding": "chunked"}
        with suppress(OSError):
            handler.wfile.write(_head(200, {"Content-Type": "application/json", **framing}))
            for part in parts:
                if self._stopping.is_set():
                    break
                handler.wfile.write(part if declared else b"%x\r\n%s\r\n" % (len(part), part))
            if not declared:
                handler.wfile.write(b"0\r\n\r\n")
            handler.wfile.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.owner.answer(self, "GET")  # type: ignore[attr-defined]

    def do_POST(self) -> None:  # noqa: N802
        self.server.owner.answer(self, "POST")  # type: ignore[attr-defined]

    def do_PUT(self) -> None:  # noqa: N802
        self.server.owner.answer(self, "PUT")  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read ``HostileServer.requests`` instead."""


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _items(body: object) -> list[dict]:
    if isinstance(body, list):
        return body
    return next((v for v in body.values() if isinstance(v, list)), []) if isinstance(body, dict) else []


@contextmanager
def hostile(behaviour: str = "ok", **options: object) -> Iterator[HostileServer]:
    with HostileServer(behaviour, **options) as server:  # type: ignore[arg-type]
        yield server
