"""Client for a OneRoster 1.2 SIS: OAuth2 client credentials, Link-header paging, gradebook reads and writes.

Facts from provider-apis.md §2: tokens come from a client-credentials grant (Basic auth, form body, ``scope``) and
expire (``expires_in``); lists page by ``limit``/``offset`` and announce the next page in ``Link`` (followed as
given, never rebuilt) and the size in ``X-Total-Count``, which is checked at the end so a listing cut short is an
error, not a smaller gradebook; errors carry ``imsx_StatusInfo``; 429 means ``server_busy``. Writes: ``PUT
/results/{id}`` upserts; ``POST /results`` may answer 409 on an existing result (some SIS gradebooks), which the
caller resolves with a PUT.

The client secret and tokens travel only in headers; nothing logged, raised or returned contains them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import tenacity

from lms_pipeline.clients.errors import LmsAuthError, LmsFetchError, LmsPayloadError
from lms_pipeline.clients.guard import guarded_transport
from lms_pipeline.clients.http import FetchStats, RequestTarget, RetrySettings, get_with_retries, server_text

logger = logging.getLogger(__name__)

SCOPE_ROOT = "https://purl.imsglobal.org/spec/or/v1p2/scope/"
READ_SCOPES = ("roster-core.readonly", "gradebook.readonly")
WRITE_SCOPE = "gradebook.createput"
SERVICES = {"rostering": "/ims/oneroster/rostering/v1p2", "gradebook": "/ims/oneroster/gradebook/v1p2"}
WRITE_RETRY_STATUS = frozenset({429, 502, 503, 504})  # answers that say the write was not applied
TOKEN_MARGIN_SECONDS = 10.0  # refresh a token this long before it expires


@dataclass(frozen=True)
class SisPage:
    """One list response as fetched; ``total`` is the server's X-Total-Count (None when not sent)."""

    collection: str
    offset: int
    url: str
    params: dict[str, str]
    fetched_at: datetime
    status_code: int
    items: list[dict]
    attempts: int
    total: int | None
    next_url: str | None  # Link rel="next", as given


@dataclass(frozen=True)
class WriteResponse:
    """A write's answer: kept whole for the sync log (status, the SIS's description on failure)."""

    method: str
    url: str
    status_code: int
    body: dict | None
    description: str | None  # imsx_description of an error body


class OneRosterClient:
    """One SIS tenant. ``scopes`` are asked for at token time; add ``gradebook.createput`` only to write."""

    def __init__(
        self,
        sis_id: str,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        token_url: str | None = None,
        scopes: tuple[str, ...] = READ_SCOPES,
        transport: httpx.BaseTransport | None = None,
        retry: RetrySettings = RetrySettings(),  # noqa: B008 (frozen, so sharing the default is safe)
        page_size: int = 100,
        headers: Mapping[str, str] | None = None,
        max_pages: int = 10_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sis_id, self.retry, self.page_size, self.max_pages = sis_id, retry, min(page_size, 100), max_pages
        self.stats = FetchStats()
        self._credentials = (client_id, client_secret)
        self._token_url = token_url or f"{base_url.rstrip('/')}/oauth/token"
        self._scopes = scopes
        self._token: str | None = None
        self._expires = 0.0
        self._sleep = sleep
        self.token_requests = 0
        merged = httpx.Headers(headers)
        merged["Accept"] = "application/json"
        guarded = guarded_transport(sis_id, (base_url, self._token_url), retry, client_secret, transport)
        self._http = httpx.Client(base_url=base_url, transport=guarded, headers=merged,
                                  timeout=httpx.Timeout(retry.timeout))  # fmt: skip

    def __repr__(self) -> str:
        return f"OneRosterClient(sis_id={self.sis_id!r}, base_url={str(self._http.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OneRosterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- auth ------------------------------------------------------------------------------------------------
    def _authorize(self, force: bool = False) -> None:
        if not force and self._token and time.monotonic() < self._expires - TOKEN_MARGIN_SECONDS:
            return
        self.token_requests += 1
        response = self._send(
            "POST",
            self._token_url,
            auth=httpx.BasicAuth(*self._credentials),
            data={"grant_type": "client_credentials", "scope": " ".join(SCOPE_ROOT + s for s in self._scopes)},
        )
        if response.status_code != 200:
            raise LmsAuthError(
                f"SIS {self.sis_id!r}: token request to {self._token_url} failed with HTTP {response.status_code}"
                f"{_description(response, self._credentials[1])}; check the client id and secret",
                connection_id=self.sis_id, endpoint="oauth/token", status=response.status_code,
            )  # fmt: skip
        body = response.json()
        self._token = body["access_token"]
        self._expires = time.monotonic() + float(body.get("expires_in", 3600))
        self._http.headers["Authorization"] = f"Bearer {self._token}"

    def _with_auth(self, call: Callable[[], httpx.Response | tuple]) -> httpx.Response | tuple:
        """Run ``call`` with a fresh enough token; on a 401 (expired early, revoked) get a new one, once."""
        self._authorize()
        try:
            return call()
        except LmsAuthError as err:
            if err.status != 401:
                raise
        self._authorize(force=True)
        return call()

    # ---- reads -----------------------------------------------------------------------------------------------
    def iter_pages(self, service: str, collection: str, params: Mapping[str, str] | None = None) -> Iterator[SisPage]:
        """Every page of a collection, following ``Link rel="next"`` to the end; the items read must add up to
        the first page's X-Total-Count, or the listing is incomplete and this raises."""
        url = f"{SERVICES[service]}/{collection}"
        sent: dict[str, str] = {"limit": str(self.page_size), "offset": "0", **(params or {})}
        read, total = 0, None
        for _ in range(self.max_pages):
            page = self._get_page(collection, url, sent, read)
            total = page.total if total is None else total
            read += len(page.items)
            yield page
            if page.next_url is None:
                if total is not None and read != total:
                    raise LmsPayloadError(
                        f"SIS {self.sis_id!r}: GET {url} ended after {read} {collection} but X-Total-Count said "
                        f"{total}: the listing is incomplete", connection_id=self.sis_id, endpoint=collection,
                    )  # fmt: skip
                return
            url, sent = page.next_url, {}
        raise LmsFetchError(f"SIS {self.sis_id!r}: GET {SERVICES[service]}/{collection}: more than {self.max_pages} "
                            "pages (max_pages)", connection_id=self.sis_id, endpoint=collection)  # fmt: skip

    def _get_page(self, collection: str, url: str, params: dict[str, str], offset: int) -> SisPage:
        target = RequestTarget(self.sis_id, collection, url, offset)

        def call() -> tuple[httpx.Response, int]:
            return get_with_retries(self._http, target, params, self.retry, self.stats, sleep=self._sleep,
                                    secret=self._token)  # fmt: skip

        response, attempts = self._with_auth(call)
        body = _json(response, target, self._token)
        items = body.get(collection) if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise target.error(LmsPayloadError, f'answered without a "{collection}" array of objects',
                               status=response.status_code)  # fmt: skip
        total = response.headers.get("X-Total-Count")
        self.stats.pages += 1
        self.stats.items += len(items)
        return SisPage(collection, offset, str(response.request.url), dict(params), datetime.now(UTC),
                       response.status_code, items, attempts, int(total) if total and total.isdigit() else None,
                       response.links.get("next", {}).get("url"))  # fmt: skip

    def find_result(self, line_item: str, student: str) -> dict | None:
        """The result (any status) of one (line item, student) pair, found with a two-predicate filter."""
        filter_ = f"lineItem.sourcedId='{line_item}' AND student.sourcedId='{student}'"
        found = [r for page in self.iter_pages("gradebook", "results", {"filter": filter_}) for r in page.items]
        return found[0] if found else None

    # ---- writes ----------------------------------------------------------------------------------------------
    def put_result(self, sourced_id: str, result: dict) -> WriteResponse:
        return self._write("PUT", f"{SERVICES['gradebook']}/results/{sourced_id}", {"result": result})

    def post_result(self, result: dict) -> WriteResponse:
        return self._write("POST", f"{SERVICES['gradebook']}/results", {"result": result})

    def _send(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        """One non-GET request, retried only on answers that mean it was not applied (429, 502-504), with the
        same bounded backoff as reads; the last answer is returned whatever it is."""

        def send() -> httpx.Response:
            self.stats.requests += 1
            response = self._http.request(method, url, **kwargs)
            if response.status_code == 429:
                self.stats.throttled += 1
            return response

        return tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda r: r.status_code in WRITE_RETRY_STATUS),
            wait=tenacity.wait_random_exponential(multiplier=self.retry.base_delay, max=self.retry.max_delay),
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            sleep=self._sleep,
            before_sleep=lambda _: setattr(self.stats, "retries", self.stats.retries + 1),
            retry_error_callback=lambda state: state.outcome.result(),
        )(send)

    def _write(self, method: str, url: str, body: dict) -> WriteResponse:
        """Send one write; a 401 re-authorizes once. Any other answer (409 included) is returned for the caller
        to act on and log."""

        self._authorize()
        response = self._send(method, url, json=body)
        if response.status_code == 401:
            self._authorize(force=True)
            response = self._send(method, url, json=body)
        try:
            parsed = response.json() if response.content else None
        except ValueError:
            parsed = None
        payload = parsed if isinstance(parsed, dict) else None
        failure = None if 200 <= response.status_code < 300 else _description(response, self._token)[2:] or None
        return WriteResponse(method, url, response.status_code, payload, failure)


def _json(response: httpx.Response, target: RequestTarget, secret: str | None) -> object:
    try:
        return response.json()
    except ValueError:
        snippet = server_text(response.text, secret)
        raise target.error(LmsPayloadError, f"answered HTTP {response.status_code} with a body that is not JSON: "
                           f"{snippet!r}", status=response.status_code) from None  # fmt: skip


def _description(response: httpx.Response, secret: str | None) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    text = body.get("imsx_description") if isinstance(body, dict) else None
    return f": {server_text(str(text), secret)}" if text else ""
