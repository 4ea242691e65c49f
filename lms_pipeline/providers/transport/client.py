"""What every provider client is made of before its own paging rules: one ``httpx.Client`` whose transport is the
guard (origins, deadline, size caps, scrubbing) under the connection's request budget, bearer headers that extra
headers cannot replace, and the close / ``with`` / repr every client needs."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Self

import httpx

from lms_pipeline.providers.transport.budget import BudgetTransport, RequestBudget
from lms_pipeline.providers.transport.guard import guarded_transport
from lms_pipeline.providers.transport.retry import RetrySettings


def bearer_headers(token: str, extra: Mapping[str, str] | None = None) -> httpx.Headers:
    """``extra``, then the bearer token and JSON ``Accept`` set last, so no extra header can replace them."""
    headers = httpx.Headers(extra)
    headers["Authorization"] = f"Bearer {token}"
    headers["Accept"] = "application/json"
    return headers


class ProviderHttpClient:
    """The shared half of a provider client: ``_open`` builds the budgeted, guarded transport once; ``close`` and
    ``with`` release every httpx client the subclass opened (``_clients``)."""

    connection_id: str
    budget: RequestBudget

    def _budgeted(
        self,
        base_url: str,
        token: str,
        retry: RetrySettings,
        transport: httpx.BaseTransport | None,
        *,
        max_concurrent_requests: int,
        sleep: Callable[[float], None] = time.sleep,
        headroom: Callable[[httpx.Response], int | None] | None = None,
        wrap: Callable[[httpx.BaseTransport], httpx.BaseTransport] | None = None,
    ) -> BudgetTransport:
        """The transport chain of a connection: caller's (tests) or httpx's, under the guard, optionally wrapped
        (a provider's own header reading), under the request budget this client keeps as ``budget``."""
        guarded = guarded_transport(self.connection_id, base_url, retry, token, transport)
        self.budget = RequestBudget(self.connection_id, max_concurrent_requests, retry, headroom=headroom, sleep=sleep)
        return BudgetTransport(wrap(guarded) if wrap else guarded, self.budget)

    def _clients(self) -> list[httpx.Client]:
        http = self._http  # type: ignore[attr-defined]
        return list(http.values()) if isinstance(http, dict) else [http]

    def _base_url(self) -> str:
        return str(self._clients()[0].base_url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(connection_id={self.connection_id!r}, base_url={self._base_url()!r})"

    def close(self) -> None:
        for client in self._clients():
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
