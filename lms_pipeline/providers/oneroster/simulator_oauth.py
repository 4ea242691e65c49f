"""What both OneRoster simulators share (the rostering service and the SIS gradebook): imsx error bodies, the OAuth2
client-credentials token endpoint and the bearer check (docs/providers.md §2.2), and the request helpers."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Mapping
from datetime import date
from urllib.parse import parse_qs
from wsgiref.types import WSGIEnvironment

from lms_pipeline.simulator.common import origin, parse_as_of

SCOPE_ROOT = "https://purl.imsglobal.org/spec/or/v1p2/scope/"


class ImsxError(Exception):
    """Ends a request with OneRoster's ``imsx_StatusInfo`` body (§2.9)."""

    def __init__(self, status: int, minor: str, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status, self.minor, self.description, self.headers = status, minor, description, headers or {}

    def body(self) -> bytes:
        return json.dumps(self.payload()).encode()

    def payload(self) -> dict:
        return {
            "imsx_codeMajor": "failure", "imsx_severity": "error", "imsx_description": self.description,
            "imsx_CodeMinor": {"imsx_codeMinorField": [
                {"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": self.minor}]},
        }  # fmt: skip


class TokenIssuer:
    """Access tokens of a client-credentials grant, per tenant (a connection or an SIS): issued against the tenant's
    (client id, secret) with the scopes asked, checked on every request, expiring after their ttl."""

    def __init__(self, credentials: Mapping[str, tuple[str, str]]) -> None:
        self._credentials = dict(credentials)  # tenant -> (client_id, client_secret)
        self._tokens: dict[str, tuple[str, float, frozenset[str]]] = {}  # token -> (tenant, expires, scopes)
        self._lock = threading.Lock()

    def issue(self, tenant: str, environ: WSGIEnvironment, ttl: float) -> dict:
        """The token endpoint: Basic auth with the tenant's client credentials, a form body with the grant type."""
        client_id, secret = self._credentials.get(tenant, ("", ""))
        expected = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        if not client_id or environ.get("HTTP_AUTHORIZATION") != expected:
            raise ImsxError(401, "unauthorisedrequest", "invalid client credentials")
        form = parse_qs(read_body(environ).decode(), keep_blank_values=True)
        if form.get("grant_type") != ["client_credentials"]:
            raise ImsxError(400, "invaliddata", "grant_type must be client_credentials")
        scopes = frozenset(s.removeprefix(SCOPE_ROOT) for value in form.get("scope", []) for s in value.split() if s)
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (tenant, time.monotonic() + ttl, scopes)
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(ttl),
                "scope": " ".join(SCOPE_ROOT + s for s in sorted(scopes))}  # fmt: skip

    def authorize(self, tenant: str, environ: WSGIEnvironment) -> frozenset[str]:
        """The scopes of the request's bearer token, or a 401 (missing, another tenant's, expired)."""
        header = environ.get("HTTP_AUTHORIZATION", "")
        with self._lock:
            grant = self._tokens.get(header.removeprefix("Bearer ")) if header.startswith("Bearer ") else None
        if grant is None or grant[0] != tenant:
            raise ImsxError(401, "unauthorisedrequest", "missing or invalid access token")
        if grant[1] <= time.monotonic():
            raise ImsxError(401, "unauthorisedrequest", "access token expired")
        return grant[2]

    def expire_all(self) -> None:
        """Make every issued token expire now (tests of a client's refresh)."""
        with self._lock:
            self._tokens = {t: (tenant, 0.0, scopes) for t, (tenant, _, scopes) in self._tokens.items()}

    def issued(self) -> list[str]:
        with self._lock:
            return list(self._tokens)


def read_body(environ: WSGIEnvironment) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(length) if length > 0 else b""


def int_param(params: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return int(params[name][0]) if name in params else default
    except ValueError:
        raise ImsxError(400, "invaliddata", f"{name} must be an integer") from None


def as_of_day(value: str | None) -> date | None:
    try:
        return parse_as_of(value)
    except ValueError as err:
        raise ImsxError(400, "invaliddata", str(err)) from None


def request_base_url(environ: WSGIEnvironment) -> str:
    return f"{origin(environ)}{environ.get('PATH_INFO', '')}"
