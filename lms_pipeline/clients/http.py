"""One GET with retries: exponential backoff with jitter, Retry-After honoured, bounded in attempts and time.

Retrying is tenacity's job; what is ours is the policy (which statuses, how long) and the accounting the
pipeline reports as run metadata.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime

import httpx
import tenacity

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_wait: float = 120.0
    timeout: float = 30.0


@dataclass
class FetchStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    pages: int = 0
    items: int = 0
    wait_seconds: float = 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["wait_seconds"] = round(self.wait_seconds, 3)
        return out


class _Retryable(Exception):
    def __init__(self, response: httpx.Response | None, error: Exception | None = None) -> None:
        self.response = response
        self.error = error


def retry_after_seconds(response: httpx.Response | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), None when absent or unreadable."""
    value = response.headers.get("Retry-After") if response is not None else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def get_with_retries(
    client: httpx.Client,
    url: str,
    params: Mapping[str, object],
    settings: RetrySettings,
    stats: FetchStats,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[httpx.Response, int]:
    """GET ``url``; return the final non-retryable response and the attempts it took.

    Raises ``tenacity.RetryError`` (wrapping the last ``_Retryable``) when attempts or the wait budget run out.
    """
    backoff = tenacity.wait_exponential_jitter(initial=settings.base_delay, max=settings.max_delay)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        hinted = retry_after_seconds(exc.response) if isinstance(exc, _Retryable) else None
        delay = min(hinted, settings.max_delay) if hinted is not None else backoff(state)
        stats.retries += 1
        stats.wait_seconds += delay
        return delay

    def stop_on_budget(state: tenacity.RetryCallState) -> bool:
        return state.attempt_number >= settings.max_attempts or stats.wait_seconds >= settings.max_total_wait

    def attempt() -> httpx.Response:
        stats.requests += 1
        try:
            response = client.get(url, params=params)
        except httpx.TransportError as exc:
            stats.transport_errors += 1
            raise _Retryable(None, exc) from None
        if response.status_code == 429:
            stats.throttled += 1
        elif response.status_code in RETRYABLE_STATUS:  # 5xx worth retrying; 501 means 'not supported'
            stats.server_errors += 1
        if response.status_code in RETRYABLE_STATUS:
            raise _Retryable(response)
        return response

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(_Retryable),
        wait=wait,
        stop=stop_on_budget,
        sleep=sleep,
        reraise=False,
    )
    response = retrying(attempt)
    return response, retrying.statistics.get("attempt_number", 1)
