"""The safety layer under every client's HTTP: what any server, however broken or hostile, can make a client do.

- Requests go only to the configured origins (the API root, and the token URL for OAuth): a next link to another
  host is refused before a byte, and the token, is sent; so is a URL holding ``user:password@``.
- Each attempt has a total deadline, body included (``RetrySettings.deadline``).
- An answer is read up to ``RetrySettings.max_response_bytes``, counted on the wire and again after gzip/deflate
  decoding, which is done here a chunk at a time so a bomb stops at the cap instead of inflating.
- Every credential the client sent (bearer tokens, an OAuth client secret) is scrubbed from everything handed
  back: bodies that become stored pages, headers such as ``Link``, and so the URLs and error texts built from them.
- JSON nested too deep to parse is a clear error naming the connection and URL, not a bare ``RecursionError``.

Hand-written because httpx has none of it: its timeouts bound each read, not the request, so a body trickling one
byte at a time never times out; it inflates gzip without a bound (a 2 MB body took 6.5 GB); it sends the client's
headers to whatever URL it is given. Clients build their transport with ``guarded_transport``.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from contextlib import suppress
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import httpcore
import httpx

from lms_pipeline.providers.transport.errors import LmsPayloadError, LmsRefusedRequestError, LmsUnsafeResponseError
from lms_pipeline.providers.transport.retry import RetrySettings

# Only what this module decodes itself: a server sending another encoding is refused, never passed on undecoded.
ACCEPT_ENCODING = "gzip, deflate"
REDACTED = "[token]"  # what a scrubbed credential reads as (any kind: bearer token, client secret)
MIN_SECRET_LENGTH = 8  # a shorter "secret" would scrub ordinary text out of every page; no real credential is one
MB = 1 << 20
# Response headers that describe the wire form of a body this module has already read and decoded.
WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})

_deadline: ContextVar[float | None] = ContextVar("lms_request_deadline", default=None)


def guarded_transport(
    connection_id: str,
    urls: str | Sequence[str],
    retry: RetrySettings,
    secrets: str | Iterable[str | None] | None,
    inner: httpx.BaseTransport | None = None,
) -> GuardedTransport:
    """The transport a client of ``connection_id`` sends through: only to the origins of ``urls`` (its base URL,
    plus a token URL), bounded by ``retry``'s deadline and size cap, scrubbing ``secrets`` and every credential it
    sends. ``inner`` (a test's transport) replaces the real HTTP transport under it."""
    return GuardedTransport(connection_id, [urls] if isinstance(urls, str) else urls, retry,
                            [secrets] if isinstance(secrets, str) else secrets or (), inner)  # fmt: skip


class GuardedResponse(httpx.Response):
    """An answer read whole, decoded, bounded and scrubbed by ``GuardedTransport``."""

    owner = ""  # "connection 'x'", for errors
    connection_id = ""

    def json(self, **kwargs: Any) -> Any:
        try:
            return super().json(**kwargs)
        except RecursionError:
            request = self.request
            detail = (f"answered JSON nested deeper than Python's parser goes (about {sys.getrecursionlimit()} "
                      "levels); no API page nests like that, so it was refused")  # fmt: skip
            raise LmsUnsafeResponseError(
                f"{self.owner}: {request.method} {request.url} {detail}", detail=detail,
                connection_id=self.connection_id, endpoint=request.url.path, status=self.status_code,
            ) from None  # fmt: skip


class GuardedTransport(httpx.BaseTransport):
    """See the module docstring. One per client; not shared across connections."""

    def __init__(
        self,
        connection_id: str,
        urls: Sequence[str],
        retry: RetrySettings,
        secrets: Iterable[str | None],
        inner: httpx.BaseTransport | None,
    ) -> None:
        self.connection_id = connection_id
        self.owner = f"connection {connection_id!r}"
        self._origins: dict[tuple[str, str, int | None], str] = {}
        for url in urls:
            parsed = self._configured(url)
            self._origins[_origin_key(parsed)] = _origin(parsed)
        self._deadline = retry.deadline
        self._cap = retry.max_response_bytes
        self._secrets = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        self._inner = inner or _deadline_http_transport()

    def close(self) -> None:
        self._inner.close()

    # ---- requests ---------------------------------------------------------------------------------------------
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.userinfo:
            raise self._refused(request, "holds credentials (user:password@) in its URL; not sent")
        if _origin_key(url) not in self._origins:
            allowed = ", ".join(sorted(self._origins.values()))
            raise self._refused(request, f"leads to another origin ({_origin(url)}), not this connection's "
                                f"({allowed}); refused before sending, so the token did not go there")  # fmt: skip
        secrets = self._secrets | _sent_credentials(request.headers)
        request.headers["Accept-Encoding"] = ACCEPT_ENCODING
        deadline = time.monotonic() + self._deadline
        reset = _deadline.set(deadline)
        received = [0]
        try:
            response = self._inner.handle_request(request)
            content = self._read(request, response, deadline, received)
        except httpx.TimeoutException:
            if time.monotonic() < deadline - 0.01:
                raise  # an ordinary timeout of one read: retried by get_with_retries
            raise self._too_slow(request, received[0]) from None
        finally:
            _deadline.reset(reset)
        forms = _echoed_forms(secrets)
        headers = [(k, _scrub(v, forms)) for k, v in response.headers.multi_items() if k.lower() not in WIRE_HEADERS]
        extensions = {k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")}
        answer = GuardedResponse(response.status_code, headers=headers, content=_scrub(content, forms),
                                 request=request, extensions=extensions)  # fmt: skip
        answer.owner, answer.connection_id = self.owner, self.connection_id
        return answer

    def _read(self, request: httpx.Request, response: httpx.Response, deadline: float, received: list[int]) -> bytes:
        """The whole body, decoded; refused once it passes the size cap on the wire or decoded, or the deadline."""
        try:
            try:  # read already by the transport under this one (a test's MockTransport, another guard): decoded
                content = response.content
            except httpx.ResponseNotRead:
                content = None
            if content is not None:
                if len(content) > self._cap:
                    raise self._too_large(request, f"held {len(content) / MB:.1f} MB", "unused")
                return content
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self._cap:
                raise self._too_large(request, f"declared {int(declared) / MB:.1f} MB (Content-Length)", "unread")
            inflater = _Inflater.for_encoding(response.headers.get("Content-Encoding", ""))
            if inflater is False:
                raise self._unsafe(request, f"answered with Content-Encoding {response.headers['Content-Encoding']!r}"
                                   f", which this client did not ask for ({ACCEPT_ENCODING})")  # fmt: skip
            body = bytearray()
            for chunk in response.iter_raw():  # as sent (compressed), so both sizes are counted
                received[0] += len(chunk)
                if received[0] > self._cap:
                    raise self._too_large(request, "sent more than that (before decompression)", "stopped there")
                body += inflater.inflate(chunk, self._cap - len(body)) if inflater else chunk
                if len(body) > self._cap:
                    raise self._too_large(request, "inflated past it", "stopped there")
                if time.monotonic() > deadline:  # checked here too for transports that do not clamp reads
                    raise self._too_slow(request, received[0])
            if inflater:
                body += inflater.finish(self._cap - len(body))
                if len(body) > self._cap:
                    raise self._too_large(request, "inflated past it", "stopped there")
            return bytes(body)
        except zlib.error as exc:
            raise LmsPayloadError(f"{self.owner}: {request.method} {request.url} answered a body that does not "
                                  f"decode as {response.headers.get('Content-Encoding')}: {exc}",
                                  connection_id=self.connection_id, endpoint=request.url.path) from None  # fmt: skip
        finally:
            response.close()

    # ---- errors -----------------------------------------------------------------------------------------------
    def _configured(self, url: str) -> httpx.URL:
        """A configured URL, refused (never quoted: it may hold a secret) when it could leak or mislead."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            parsed = None
        problem = (
            "is not a valid http(s) URL" if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host
            else "holds credentials (user:password@); put secrets in the environment, never in a URL"
            if parsed.userinfo else "has a query string or fragment, which would be silently dropped"
            if parsed.query or parsed.fragment else None
        )  # fmt: skip
        if problem:
            raise LmsRefusedRequestError(f"{self.owner}: the configured URL {problem}", detail=problem,
                                         connection_id=self.connection_id, endpoint="base_url")  # fmt: skip
        return parsed  # type: ignore[return-value]

    def _refused(self, request: httpx.Request, detail: str) -> LmsRefusedRequestError:
        url = request.url.copy_with(username=None, password=None) if request.url.userinfo else request.url
        return LmsRefusedRequestError(f"{self.owner}: {request.method} {url} {detail}", detail=detail,
                                      connection_id=self.connection_id, endpoint=request.url.path)  # fmt: skip

    def _unsafe(self, request: httpx.Request, detail: str) -> LmsUnsafeResponseError:
        return LmsUnsafeResponseError(f"{self.owner}: {request.method} {request.url} {detail}", detail=detail,
                                      connection_id=self.connection_id, endpoint=request.url.path)  # fmt: skip

    def _too_large(self, request: httpx.Request, how: str, what: str) -> LmsUnsafeResponseError:
        return self._unsafe(request, f"answered more than the {self._cap / MB:g} MB cap (retry.max_response_mb): "
                            f"the body {how}; refused, {what}, nothing of it kept")  # fmt: skip

    def _too_slow(self, request: httpx.Request, received: int) -> LmsUnsafeResponseError:
        detail = (f"was still answering at its {self._deadline:g}s deadline (retry.request_deadline_seconds; "
                  f"{received} body bytes had arrived); cut off")  # fmt: skip
        return self._unsafe(request, detail)


class _Inflater:
    """gzip or deflate decoded a chunk at a time, never producing more than the room left under the cap (+1 byte,
    so going over is seen), however much the input would inflate to."""

    def __init__(self, wbits: int, deflate: bool) -> None:
        self._z = zlib.decompressobj(wbits)
        self._deflate, self._started = deflate, False

    @classmethod
    def for_encoding(cls, header: str) -> _Inflater | None | bool:
        """An inflater for the header's encoding, None for none, False for one this module does not decode."""
        encoding = header.strip().lower()
        if encoding in ("", "identity"):
            return None
        if encoding in ("gzip", "x-gzip"):
            return cls(zlib.MAX_WBITS | 16, deflate=False)
        if encoding == "deflate":
            return cls(zlib.MAX_WBITS, deflate=True)
        return False

    def inflate(self, chunk: bytes, room: int) -> bytes:
        try:
            out = [self._z.decompress(chunk, room + 1)]
        except zlib.error:
            if not (self._deflate and not self._started):
                raise
            # "deflate" is often sent raw, without the zlib wrapper RFC 9110 asks for (httpx decodes both ways too).
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            out = [self._z.decompress(chunk, room + 1)]
        self._started = True
        size = len(out[0])
        while self._z.unconsumed_tail and size <= room:  # max_length left input behind: go on, still bounded
            out.append(self._z.decompress(self._z.unconsumed_tail, room + 1 - size))
            size += len(out[-1])
        return b"".join(out)

    def finish(self, room: int) -> bytes:
        return self._z.flush(room + 1) if room >= 0 else b""


# ---- secrets ------------------------------------------------------------------------------------------------
def _sent_credentials(headers: httpx.Headers) -> set[str]:
    """The credentials a request carries: a bearer token, or Basic auth's password (an OAuth client secret) and
    its encoded form. Only this request's: an answer is scrubbed of what was sent to get it (and of the
    configured secrets), never of a token an OAuth server is now issuing."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    found = {value} if scheme.lower() in ("bearer", "basic") else set()
    if scheme.lower() == "basic":
        with suppress(ValueError):  # not base64 or not text: nothing more to scrub than the value itself
            found.add(base64.b64decode(value).decode().partition(":")[2])
    return {s for s in found if len(s) >= MIN_SECRET_LENGTH}


def _echoed_forms(secrets: set[str]) -> list[bytes]:
    """Each secret as a server may echo it: verbatim, JSON-escaped (``/`` as ``\\/`` too), percent-encoded.
    Longest first, so a secret containing another is scrubbed whole."""
    forms = set()
    for secret in secrets:
        escaped = json.dumps(secret)[1:-1]
        forms |= {secret, escaped, escaped.replace("/", "\\/"), quote(secret, safe="")}
    return sorted((f.encode() for f in forms), key=len, reverse=True)


def _scrub(content: bytes | str, forms: list[bytes]) -> Any:
    """``content`` with every form replaced by REDACTED; bytes in, bytes out, str in, str out."""
    if isinstance(content, str):
        return _scrub(content.encode("utf-8", "surrogateescape"), forms).decode("utf-8", "surrogateescape")
    for form in forms:
        content = content.replace(form, REDACTED.encode())
    return content


# ---- the deadline on the wire ---------------------------------------------------------------------------------
def _clamp(timeout: float | None, kind: type[Exception]) -> float | None:
    """The socket timeout for one operation: the configured one, cut to what is left of the request's deadline."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise kind("the request deadline has passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write waits no longer than the request's deadline allows, so headers
    or a body trickling in a byte at a time end at the deadline (httpcore times each operation on its own)."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:  # fmt: skip
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname,
                                                     _clamp(timeout, httpcore.ConnectTimeout)))  # fmt: skip

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:  # fmt: skip
        stream = self._inner.connect_tcp(host, port, _clamp(timeout, httpcore.ConnectTimeout), local_address,
                                         socket_options)  # fmt: skip
        return _DeadlineStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:  # fmt: skip
        stream = self._inner.connect_unix_socket(path, _clamp(timeout, httpcore.ConnectTimeout), socket_options)
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _deadline_http_transport() -> httpx.HTTPTransport:
    """httpx's own transport over a connection pool whose sockets keep the request deadline. httpx takes no
    network backend, so its pool is rebuilt with ours and httpx's defaults (limits, TLS context)."""
    transport = httpx.HTTPTransport()
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's DEFAULT_LIMITS
    transport._pool = httpcore.ConnectionPool(  # noqa: SLF001 (the one way to give httpx a network backend)
        ssl_context=httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=_DeadlineBackend(),
    )
    return transport


def _origin_key(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host.lower(), url.port or default


def _origin(url: httpx.URL) -> str:
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}" + (f":{url.port}" if url.port else "")
