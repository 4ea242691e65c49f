"""Client for LTI Advantage grade reading (docs/providers.md §3): AGS 2.0 line items and results, and NRPS 2.0
memberships, which tie an LTI ``userId`` (an opaque ``sub``) to the person's SIS id (``lis_person_sourcedid``).

What this client is built around:

- Every URL is given, never built from a template: the contexts listing (a stand-in for the claims a tool stores
  from its launches) gives each context's ``lineitems`` and ``context_memberships_url``; a line item's ``id`` gives
  its results, at the line item URL with ``/results`` appended *to its path*, before any query string (line item
  ids may carry one, and ``id + "/results"`` then 404s: peers-and-user-pains.md item 18); every later page is the
  ``Link: rel="next"`` URL used verbatim, and a listing ends only when a response has none (pages may be short,
  even empty, while one follows; pylti1.3 reads only the first page and truncates silently, §3.5). A given URL is
  followed only if it shares the base URL's origin: the bearer token goes with it.
- Each request names its media type in ``Accept`` (``MEDIA_TYPES``); one httpx.Client per media type, sharing one
  transport, as ``get_with_retries`` takes no per-request headers.
- 429 (Retry-After honoured) and 5xx are retried by ``get_with_retries`` and counted; 401 raises LmsAuthError; a 403
  raises LmsAuthError naming the URL and the scope the listing needs (e.g. results without ``result.readonly``).
- The contexts' listings are read side by side up to the connection's request budget, and a 429 pauses them all
  (``clients.budget``): first every context's line items and memberships, then every line item's results.
- Raw pages are kept as fetched: ``{endpoint, course_id, page_index, url, params, status, payload, fetched_at}``;
  the token is only ever in the Authorization header, and scrubbed from any server text quoted in an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Literal, NamedTuple

import httpx

from lms_pipeline.providers.base import RawPage, sent_params
from lms_pipeline.providers.http import (
    FetchStats,
    LmsAuthError,
    LmsClientError,
    LmsPayloadError,
    ProviderHttpClient,
    RepeatedPages,
    RequestTarget,
    RetrySettings,
    get_with_retries,
    run_bounded,
    server_text,
)

logger = logging.getLogger(__name__)

Endpoint = Literal["contexts", "lineitems", "results", "memberships"]

MEDIA_TYPES: dict[Endpoint, str] = {
    "contexts": "application/json",
    "lineitems": "application/vnd.ims.lis.v2.lineitemcontainer+json",
    "results": "application/vnd.ims.lis.v2.resultcontainer+json",
    "memberships": "application/vnd.ims.lti-nrps.v2.membershipcontainer+json",
}
SCOPES: dict[Endpoint, str] = {
    "lineitems": "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
    "results": "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
    "memberships": "https://purl.imsglobal.org/spec/lti-nrps/scope/contextmembership.readonly",
}
AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"
DATE_HEADER = "X-Simulated-Date"


class LtiContext(NamedTuple):
    """One context's service URLs, as its launch claims give them."""

    course_id: str
    lineitems_url: str
    memberships_url: str


def results_url(lineitem_id: str) -> str:
    """The results URL of a line item: ``/results`` appended to the path, the query string kept after it
    (``.../lineitem?type_id=3`` -> ``.../lineitem/results?type_id=3``), as AGS specifies."""
    url = httpx.URL(lineitem_id)
    return str(url.copy_with(path=url.path.rstrip("/") + "/results"))


class LtiAgsClient(ProviderHttpClient):
    """Reads one LTI platform connection's grades and memberships. ``base_url`` is where ``contexts`` lives (the
    simulator's ``{server}/lti/{connection_id}``). One httpx transport per instance: close it, or use ``with``.
    ``max_concurrent_requests`` listings are read at once (``budget``)."""

    def __init__(
        self,
        connection_id: str,
        base_url: str,
        token: str,
        *,
        transport: httpx.BaseTransport | None = None,
        retry: RetrySettings = RetrySettings(),  # noqa: B008 (frozen, so sharing the default is safe)
        limit: int = 100,
        simulated_date: date | None = None,
        max_pages: int = 10_000,
        sleep: Callable[[float], None] = time.sleep,
        max_concurrent_requests: int = 1,
    ) -> None:
        if limit < 1 or max_pages < 1:
            raise ValueError(f"limit and max_pages must be at least 1, got {limit} and {max_pages}")
        self.connection_id = connection_id
        self.limit = limit
        self.retry = retry
        self.max_pages = max_pages
        self.stats = FetchStats()
        self._sleep = sleep
        self._token = token
        self._base = httpx.URL(base_url.rstrip("/") + "/")
        shared = self._budgeted(base_url, token, retry, transport, max_concurrent_requests=max_concurrent_requests,
                                sleep=sleep)  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}
        if simulated_date is not None:
            headers[DATE_HEADER] = simulated_date.isoformat()
        self._http = {
            endpoint: httpx.Client(
                transport=shared, headers={**headers, "Accept": media_type}, timeout=httpx.Timeout(retry.timeout)
            )
            for endpoint, media_type in MEDIA_TYPES.items()
        }

    def _base_url(self) -> str:
        return str(self._base)


    # ---- listings ---------------------------------------------------------------------------------------------
    def grade_pages(self) -> list[RawPage]:
        """The contexts listing, then every context's line items, their results and its memberships: all or
        nothing (any failure raises)."""
        pages = self.context_pages()
        contexts = contexts_of(pages, self.connection_id)
        # Results need their line items first, so two rounds, each as wide as the budget allows: every context's
        # line items and memberships, then every line item's results; then each context's pages in course_pages'
        # order.
        firsts = run_bounded([self._reader("lineitems", c.course_id, c.lineitems_url) for c in contexts]
                             + [self._reader("memberships", c.course_id, c.memberships_url) for c in contexts],
                             self.budget)  # fmt: skip
        items, members = firsts[: len(contexts)], firsts[len(contexts) :]
        ids = [lineitem_ids(listed) for listed in items]
        wanted = [(c.course_id, i) for c, listed in zip(contexts, ids, strict=True) for i in listed]
        results = iter(run_bounded([self._reader("results", c, results_url(i)) for c, i in wanted], self.budget))
        for listed, context_ids, membership in zip(items, ids, members, strict=True):
            pages += listed
            for _ in context_ids:
                pages += next(results)
            pages += membership
        return pages

    def context_pages(self) -> list[RawPage]:
        return self._listing("contexts", None, str(self._base.join("contexts")))

    def course_pages(self, context: LtiContext) -> list[RawPage]:
        """One context: its line items, each line item's results (each distinct id once), its memberships."""
        pages = self._listing("lineitems", context.course_id, context.lineitems_url)
        for lineitem_id in lineitem_ids(pages):
            pages += self._listing("results", context.course_id, results_url(lineitem_id))
        return pages + self._listing("memberships", context.course_id, context.memberships_url)

    def _reader(self, endpoint: Endpoint, course_id: str, first_url: str) -> Callable[[], list[RawPage]]:
        return lambda: self._listing(endpoint, course_id, first_url)

    # ---- paging -----------------------------------------------------------------------------------------------
    def _listing(self, endpoint: Endpoint, course_id: str | None, first_url: str) -> list[RawPage]:
        """Every page of one listing: the given URL with ``limit`` added to its query (nothing else changed),
        then the rel="next" links; bounded by max_pages, and a link back to a page already read is refused."""
        url = str(httpx.URL(first_url).copy_merge_params({"limit": self.limit}))  # another origin: the guard refuses
        pages: list[RawPage] = []
        seen: set[str] = set()
        repeated = RepeatedPages()
        for index in range(self.max_pages):
            seen.add(url)
            page, next_url = self._page(endpoint, course_id, index, url)
            pages.append(page)
            if next_url is None:
                return pages
            if next_url in seen:
                raise self._payload_error(endpoint, course_id, index, url, f"links rel=next back to {next_url}")
            if (earlier := repeated.repeats(page.payload, index)) is not None:
                raise self._payload_error(endpoint, course_id, index, url, f"repeats page {earlier} with a next "
                                          "link: the server ignores the cursor, so paging would never end")  # fmt: skip
            url = next_url
        raise RequestTarget(self.connection_id, endpoint, url).error(
            LmsClientError, f"not sent: {self.max_pages} pages read (max_pages) and the listing still had a next link"
        )

    def _page(self, endpoint: Endpoint, course_id: str | None, index: int, url: str) -> tuple[RawPage, str | None]:
        target = RequestTarget(self.connection_id, endpoint, url)
        try:
            # params=None: the URL already holds its query, and httpx would replace it with an empty mapping's.
            response, attempts = get_with_retries(self._http[endpoint], target, None, self.retry, self.stats,  # type: ignore[arg-type]
                                                  sleep=self._sleep, secret=self._token)  # fmt: skip
        except LmsAuthError as err:
            if err.status != 403 or endpoint not in SCOPES:
                raise
            raise LmsAuthError(f"{err}; reading {endpoint} needs the scope {SCOPES[endpoint]}",
                               connection_id=self.connection_id, endpoint=endpoint, status=403) from None  # fmt: skip
        items = self._items(endpoint, course_id, index, response)
        self.stats.add(pages=1, items=len(items))
        logger.debug("%s: %d items in %d attempt(s)", target.describe(), len(items), attempts)
        link = response.links.get("next")
        next_url = None
        if link is not None:
            joined = response.request.url.join(link["url"])
            next_url = str(joined)
        page = RawPage(endpoint, sent_params(response.request.url), response.status_code, response.text, items,
                       datetime.now(UTC), page_index=index, attempts=attempts, course_id=course_id,
                       url=str(response.request.url))  # fmt: skip
        return page, next_url

    def _items(self, endpoint: Endpoint, course_id: str | None, index: int, response: httpx.Response) -> list[dict]:
        """The page's items, refusing a body that is not the endpoint's container: a JSON array of objects, or for
        memberships an object whose ``members`` is one; line items and contexts need their ids."""
        url = str(response.request.url)

        def refuse(detail: str) -> LmsPayloadError:
            return self._payload_error(endpoint, course_id, index, url, detail)

        try:
            body = response.json()
        except ValueError:
            snippet = server_text(response.text, self._token)
            raise refuse(f"answered HTTP {response.status_code} with a body that is not JSON: {snippet!r}") from None
        items = body
        if endpoint == "memberships":  # NRPS wraps the members: {"id", "context", "members": [...]}
            items = body.get("members") if isinstance(body, dict) else None
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            shape = "an object with a members list" if endpoint == "memberships" else "a list"
            raise refuse(f"answered a JSON {type(body).__name__} that is not {shape} of objects")
        for position, item in enumerate(items):
            if endpoint == "lineitems" and not isinstance(item.get("id"), str):
                raise refuse(f"item {position} is a line item without a string id")
            if endpoint == "contexts" and _claims(item) is None:
                raise refuse(f"item {position} is a context without an id, lineitems and context_memberships_url")
        return items

    def _payload_error(
        self, endpoint: Endpoint, course_id: str | None, index: int | None, url: str, detail: str
    ) -> LmsPayloadError:
        where = endpoint if index is None else f"{endpoint} page {index}"
        where += f" of course {course_id}" if course_id is not None else ""
        return LmsPayloadError(f"connection {self.connection_id!r}: GET {url} ({where}) {detail}",
                               connection_id=self.connection_id, endpoint=endpoint)  # fmt: skip


def _claims(item: dict) -> LtiContext | None:
    """A context item's service URLs; None when a part is missing."""
    ags, nrps = item.get(AGS_CLAIM), item.get(NRPS_CLAIM)
    parts = (
        item.get("id"),
        ags.get("lineitems") if isinstance(ags, dict) else None,
        nrps.get("context_memberships_url") if isinstance(nrps, dict) else None,
    )
    return LtiContext(*parts) if all(isinstance(p, str) for p in parts) else None  # type: ignore[arg-type]


def contexts_of(pages: Sequence[RawPage], connection_id: str) -> list[LtiContext]:
    """The contexts on the contexts pages, in listing order, each once (the client checked every item)."""
    found: dict[str, LtiContext] = {}
    for page in pages:
        if page.endpoint == "contexts":
            for item in page.items:
                context = _claims(item)
                if context is None:
                    detail = f"GET {page.url} holds a context without its service URLs"
                    raise LmsPayloadError(f"connection {connection_id!r}: {detail}", connection_id=connection_id,
                                          endpoint="contexts")  # fmt: skip
                found.setdefault(context.course_id, context)
    return list(found.values())


def lineitem_ids(pages: Sequence[RawPage]) -> list[str]:
    """The distinct line item ids on the line items pages, in listing order."""
    ids = {item["id"]: None for p in pages if p.endpoint == "lineitems" for item in p.items}
    return list(ids)
