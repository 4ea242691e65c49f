"""Client for a OneRoster 1.2 SIS: OAuth2 client credentials, Link-header paging, gradebook reads and writes.

Facts from docs/providers.md §2 and §9.1: tokens come from a client-credentials grant (Basic auth, form body,
``scope``) and expire (``expires_in``); lists page by ``limit``/``offset`` and announce the next page in ``Link``
(followed as given, never rebuilt, and only on the SIS's own origin: the token goes with it and may carry write
scope) and the size in ``X-Total-Count``, which is checked at the end so a listing cut short is an error, not a
smaller gradebook; errors carry ``imsx_StatusInfo``; 429 means ``server_busy``. Writes: ``PUT /results/{id}``
creates or replaces a result at a caller-chosen id and answers 201 with no body (200 and 204 are vendor variants);
OneRoster 1.2 has no ``POST /results``. ``filter`` is a vendor's option (§9.1): a lookup returns what the SIS
answered, and the caller checks every result of it.

The client secret and tokens travel only in headers; nothing logged, raised or returned contains them.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
import tenacity

from lms_pipeline.providers.base import RawPage
from lms_pipeline.providers.http import (
    FetchStats,
    LmsAuthError,
    LmsFetchError,
    LmsPayloadError,
    RequestTarget,
    RetrySettings,
    get_with_retries,
    guarded_transport,
    server_text,
)

logger = logging.getLogger(__name__)

SCOPE_ROOT = "https://purl.imsglobal.org/spec/or/v1p2/scope/"
READ_SCOPES = ("roster-core.readonly", "gradebook.readonly")
WRITE_SCOPE = "gradebook.createput"
SERVICES = {"rostering": "/ims/oneroster/rostering/v1p2", "gradebook": "/ims/oneroster/gradebook/v1p2"}
WRITE_RETRY_STATUS = frozenset({429, 502, 503, 504})  # answers that say the write was not applied
TOKEN_MARGIN_SECONDS = 10.0  # refresh a token this long before it expires
# GUIDRef field -> (its fixed type, the service and collection its href points into) (§9.1).
REFS = {
    "lineItem": ("lineItem", "gradebook", "lineItems"),
    "student": ("user", "rostering", "users"),
    "class": ("class", "rostering", "classes"),
    "scoreScale": ("scoreScale", "gradebook", "scoreScales"),
}


class FilterValueError(ValueError):
    """A value the OneRoster filter grammar cannot carry: it has no escape for a quote inside a quoted value."""


@dataclass(frozen=True)
class WriteResponse:
    """A write's answer: kept whole for the sync log (status, the SIS's description on failure)."""

    method: str
    url: str
    status_code: int
    body: dict | None
    description: str | None  # imsx_description of an error body


@dataclass(frozen=True)
class PairLookup:
    """The results a lookup for one (line item, student) pair got back: ``matches`` are those of the pair,
    ``listed`` how many the SIS returned in all (more than the matches: it ignored the filter)."""

    matches: list[dict]
    listed: int


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
        self._auth_lock = threading.Lock()  # readers share a client across threads: one token request at a time
        self._renewed_at = 0.0
        self._sleep = sleep
        self.token_requests = 0
        merged = httpx.Headers(headers)
        merged["Accept"] = "application/json"
        guarded = guarded_transport(sis_id, (base_url, self._token_url), retry, client_secret, transport)
        self._http = httpx.Client(base_url=base_url, transport=guarded, headers=merged,
                                  timeout=httpx.Timeout(retry.timeout))  # fmt: skip

    def __repr__(self) -> str:
        return f"OneRosterClient(sis_id={self.sis_id!r}, base_url={str(self._http.base_url)!r})"

    def href(self, service: str, collection: str, sourced_id: str) -> str:
        """The absolute URL of one object on this SIS (a GUIDRef's ``href``)."""
        return f"{str(self._http.base_url).rstrip('/')}{SERVICES[service]}/{collection}/{quote(sourced_id, safe='')}"

    def ref(self, field: str, sourced_id: str) -> dict:
        """A whole GUIDRef ``{href, sourcedId, type}`` for a Result's ``field`` (§9.1: all three are required)."""
        kind, service, collection = REFS[field]
        return {"href": self.href(service, collection, sourced_id), "sourcedId": sourced_id, "type": kind}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OneRosterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- auth ------------------------------------------------------------------------------------------------
    def _authorize(self, force: bool = False, sent_at: float | None = None) -> None:
        """Get a token unless a fresh one is held; ``force``: a new one even so, unless another thread got one
        after ``sent_at`` (when the refused request was sent), so one expiry costs one token request."""
        with self._auth_lock:
            if force and sent_at is not None and self._renewed_at > sent_at:
                return
            if not force and self._token and time.monotonic() < self._expires - TOKEN_MARGIN_SECONDS:
                return
            self._request_token()

    def _request_token(self) -> None:
        self.token_requests += 1
        response = self._send(
            "POST",
            "oauth/token",
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
        self._renewed_at = time.monotonic()
        self._expires = self._renewed_at + float(body.get("expires_in", 3600))
        self._http.headers["Authorization"] = f"Bearer {self._token}"

    def _with_auth(self, call: Callable[[], httpx.Response | tuple]) -> httpx.Response | tuple:
        """Run ``call`` with a fresh enough token; on a 401 (expired early, revoked) get a new one, once."""
        self._authorize()
        sent_at = time.monotonic()
        try:
            return call()
        except LmsAuthError as err:
            if err.status != 401:
                raise
        self._authorize(force=True, sent_at=sent_at)
        return call()

    # ---- reads -----------------------------------------------------------------------------------------------
    def iter_pages(self, service: str, collection: str, params: Mapping[str, str] | None = None) -> Iterator[RawPage]:
        """Every page of a collection, following ``Link rel="next"`` to the end; the items read must add up to
        the first page's X-Total-Count, or the listing is incomplete and this raises."""
        url = f"{SERVICES[service]}/{collection}"
        sent: dict[str, str] = {"limit": str(self.page_size), "offset": "0", **(params or {})}
        read, total, seen = 0, None, set()
        for index in range(self.max_pages):
            page = self._get_page(collection, url, sent, read, index)
            total = page.total if total is None else total
            read += len(page.items)
            ids = {item.get("sourcedId") for item in page.items}
            if page.next_url is not None and page.items and ids <= seen:
                # A SIS that ignores offset serves the same page behind every next link: stop at once, not at
                # max_pages (a listing that never ends; docs/providers.md §9.4 describes the same in Unified terms).
                raise LmsPayloadError(
                    f"SIS {self.sis_id!r}: GET {page.url} answered {len(page.items)} {collection} all already read "
                    "in this listing, with a next link: the SIS repeats pages (it ignores offset), so paging would "
                    "never end", connection_id=self.sis_id, endpoint=collection,
                )  # fmt: skip
            seen |= ids
            yield page
            self._check_origin(collection, page.next_url)
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

    def _get_page(self, collection: str, url: str, params: dict[str, str], offset: int, index: int) -> RawPage:
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
        self.stats.add(pages=1, items=len(items))
        # The page keeps its records, not OneRoster's envelope ({"users": [...]}): every reader of the stored page
        # (the roster normalizer, the reconciliation) reads an array.
        return RawPage(collection, dict(response.request.url.params), response.status_code, json.dumps(items), items,
                       datetime.now(UTC), page_index=index, offset=offset, attempts=attempts,
                       url=str(response.request.url), total=int(total) if total and total.isdigit() else None,
                       next_url=response.links.get("next", {}).get("url"))  # fmt: skip

    def _check_origin(self, collection: str, next_url: str | None) -> None:
        """Refuse a next-page link to another origin: the bearer token would go with the request."""
        if next_url is None:
            return
        wanted, given = self._http.base_url, self._http.base_url.join(next_url)
        if (given.scheme, given.host, given.port) != (wanted.scheme, wanted.host, wanted.port):
            raise LmsPayloadError(
                f"SIS {self.sis_id!r}: GET {collection}: the next-page Link points to {given.scheme}://{given.host}"
                f"{f':{given.port}' if given.port else ''}, not the SIS's own origin; not followed (the access "
                "token would go with it)", connection_id=self.sis_id, endpoint=collection,
            )  # fmt: skip

    def get_result(self, sourced_id: str) -> dict | None:
        """``GET /results/{sourcedId}``: the result as the SIS holds it (any status), None on 404."""
        path = f"{SERVICES['gradebook']}/results/{quote(sourced_id, safe='')}"
        target = RequestTarget(self.sis_id, "results", path)

        def call() -> tuple[httpx.Response, int]:
            return get_with_retries(self._http, target, {}, self.retry, self.stats, sleep=self._sleep,
                                    secret=self._token)  # fmt: skip

        try:
            response, _ = self._with_auth(call)
        except LmsFetchError as err:
            if err.status == 404:
                return None
            raise
        body = _json(response, target, self._token)
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, dict):
            raise target.error(LmsPayloadError, 'answered without a "result" object', status=response.status_code)
        return result

    def find_pair(self, line_item: str, student: str) -> PairLookup:
        """Every result (any status) of one (line item, student) pair: a listing filtered on both, read to the end,
        of which only the results whose own references name the pair are kept (a SIS may ignore ``filter``)."""
        expression = filter_expression(self.sis_id, {"lineItem.sourcedId": line_item, "student.sourcedId": student})
        listed, matches = 0, []
        for page in self.iter_pages("gradebook", "results", {"filter": expression}):
            listed += len(page.items)
            matches += [r for r in page.items if result_pair(r) == (line_item, student)]
        return PairLookup(matches, listed)

    # ---- writes ----------------------------------------------------------------------------------------------
    def put_result(self, sourced_id: str, result: dict) -> WriteResponse:
        """``PUT /results/{sourcedId}``: create or replace (§9.1). A transport error raises LmsFetchError saying
        the write may or may not have been applied: only the SIS knows, and the caller's journal asks it later."""
        return self._write("PUT", f"{SERVICES['gradebook']}/results/{quote(sourced_id, safe='')}", {"result": result})

    def _send(self, method: str, endpoint: str, url: str, **kwargs: object) -> httpx.Response:
        """One non-GET request, retried only on answers that mean it was not applied (429, 502-504), with the
        same bounded backoff as reads; the last answer is returned whatever it is. A transport error (refused,
        dropped, timed out) is not retried: the request may have been applied."""

        def send() -> httpx.Response:
            self.stats.add(requests=1)
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError as err:
                self.stats.add(transport_errors=1)
                raise LmsFetchError(
                    f"SIS {self.sis_id!r}: {method} {url}: the connection failed before an answer was read "
                    f"({type(err).__name__}: {server_text(str(err), self._token)}); the SIS may or may not have "
                    "applied it", connection_id=self.sis_id, endpoint=endpoint,
                ) from err  # fmt: skip
            if response.status_code == 429:
                self.stats.add(throttled=1)
            return response

        return tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda r: r.status_code in WRITE_RETRY_STATUS),
            wait=tenacity.wait_random_exponential(multiplier=self.retry.base_delay, max=self.retry.max_delay),
            stop=tenacity.stop_after_attempt(self.retry.max_attempts),
            sleep=self._sleep,
            before_sleep=lambda _: self.stats.add(retries=1),
            retry_error_callback=lambda state: state.outcome.result(),
        )(send)

    def _write(self, method: str, url: str, body: dict) -> WriteResponse:
        """Send one write; a 401 re-authorizes once. Any other answer (409 included) is returned for the caller
        to act on and log."""

        self._authorize()
        response = self._send(method, "results", url, json=body)
        if response.status_code == 401:
            self._authorize(force=True)
            response = self._send(method, "results", url, json=body)
        try:
            parsed = response.json() if response.content else None
        except ValueError:
            parsed = None
        payload = parsed if isinstance(parsed, dict) else None
        failure = None if 200 <= response.status_code < 300 else _description(response, self._token)[2:] or None
        return WriteResponse(method, url, response.status_code, payload, failure)


def result_pair(result: dict) -> tuple[object, object]:
    """(line item, student) sourcedIds a result names itself, whatever the shape (None where one is missing)."""
    refs = [result.get(key) for key in ("lineItem", "student")]
    return tuple(ref.get("sourcedId") if isinstance(ref, dict) else None for ref in refs)


def filter_expression(sis_id: str, predicates: Mapping[str, str]) -> str:
    """``field='value' AND ...`` for a OneRoster ``filter`` (§2.4: values single-quoted, at most two predicates).

    The grammar has no escape for a quote inside a value, and servers split the expression on `` AND ``/`` OR ``:
    a value holding either (or a control character) cannot be carried, and is refused rather than spliced in.
    """
    if not 1 <= len(predicates) <= 2:
        raise FilterValueError(f"SIS {sis_id!r}: a OneRoster filter takes one or two predicates, got {len(predicates)}")
    for field, value in predicates.items():
        cause = ("contains a single quote" if "'" in value else "contains ' AND ' or ' OR '"
                 if re.search(r"\s(AND|OR)\s", value) else "contains a control character"
                 if any(ord(c) < 32 for c in value) else "is empty" if not value else None)  # fmt: skip
        if cause:
            raise FilterValueError(f"SIS {sis_id!r}: filter {field}: the value {value!r} {cause}; the OneRoster "
                                   "filter grammar cannot carry it, so no lookup was sent")  # fmt: skip
    return " AND ".join(f"{field}='{value}'" for field, value in predicates.items())


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
