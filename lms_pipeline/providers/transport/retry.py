"""One GET with retries: full-jitter exponential backoff, Retry-After honoured, bounded in attempts and wait.

Retrying is tenacity's job; what is ours is the policy (which answers are worth another try, how long to wait)
and the accounting the pipeline reports as run metadata.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import NoReturn

import httpx
import tenacity

from lms_pipeline.providers.transport.errors import (
    LmsAuthError,
    LmsClientError,
    LmsFetchError,
    LmsRefusedRequestError,
    LmsUnsafeResponseError,
)

logger = logging.getLogger(__name__)

# The statuses Unified.to's own SDK retries (docs/providers.md §1.5): throttling and upstream/server trouble.
# 501 is not among them: a Unified.to integration answers 501 for an object it does not support.
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
AUTH_STATUS = frozenset({401, 403})
SERVER_TEXT_LIMIT = 200


@dataclass(frozen=True)
class RetrySettings:
    """Retry policy for one request. Waits are capped per wait and in total, so a run cannot hang on one page."""

    max_attempts: int = 5  # total attempts per request
    base_delay: float = 0.5  # first backoff window (s); doubles each retry, full jitter within it
    max_delay: float = 30.0  # cap on one wait, also on a Retry-After value
    max_total_wait: float = 120.0  # per request: give up when the next wait would take the sum past this
    timeout: float = 30.0  # httpx connect/read/write/pool timeout, each on its own (httpx times single reads)
    deadline: float = 120.0  # one attempt in total, body included (transport.guard)
    max_response_bytes: int = 32 << 20  # one answer, before and after decompression (transport.guard)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if min(self.base_delay, self.max_delay, self.max_total_wait) < 0 or min(self.timeout, self.deadline) <= 0:
            raise ValueError(f"delays must be >= 0 and the timeout and deadline > 0: {self}")
        if self.max_response_bytes < 1:
            raise ValueError(f"max_response_bytes must be at least 1, got {self.max_response_bytes}")


@dataclass
class FetchStats:
    """Counters over every request of one client, reported by the pipeline as run metadata. A client's workers
    share one (``transport.budget``), so counts change only through ``add``, under a lock: ``+=`` on an
    attribute is a read and a write, and two threads between them lose one."""

    requests: int = 0  # HTTP requests sent, retried ones included
    retries: int = 0
    throttled: int = 0  # 429 answers
    server_errors: int = 0  # retryable 5xx answers (a 501 'not supported' is an answer, not an error)
    transport_errors: int = 0  # timeouts, refused or dropped connections
    pages: int = 0
    items: int = 0
    wait_seconds: float = 0.0  # time spent waiting between attempts

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # not a field: asdict() and fields() see the counters only

    def add(self, **counts: float) -> None:
        """Add to the named counters at once (``stats.add(pages=1, items=37)``)."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["wait_seconds"] = round(self.wait_seconds, 3)
        return out


@dataclass(frozen=True)
class RequestTarget:
    """What one request is for, in the words every error and retry log line uses."""

    connection_id: str
    endpoint: str
    path: str
    offset: int | None = None

    def describe(self) -> str:
        at = f" at offset {self.offset}" if self.offset is not None else ""
        return f"connection {self.connection_id!r}: GET {self.path}{at}"

    def error(self, cls: type[LmsClientError], detail: str, status: int | None = None) -> LmsClientError:
        return cls(f"{self.describe()} {detail}", connection_id=self.connection_id, endpoint=self.endpoint,
                   offset=self.offset, status=status)  # fmt: skip


class RepeatedPages:
    """The items of one listing's pages, so a server that ignores the cursor (offset, page token, next link) is
    stopped at its first repeated page instead of being read until ``max_pages``: a page whose items are exactly
    an earlier page's while the listing says more follow would come back forever (a 7,844-request loop was seen).
    Empty pages are not compared: Google lists them, with a token, mid-listing (docs/providers.md §5)."""

    def __init__(self) -> None:
        self._first_index: dict[bytes, int] = {}

    def repeats(self, items_text: str, index: int) -> int | None:
        """The index of the earlier page with the same items, or None (also for an empty page)."""
        if items_text.strip() in ("", "[]", "{}"):
            return None
        digest = hashlib.sha256(items_text.encode()).digest()
        earlier = self._first_index.setdefault(digest, index)
        return earlier if earlier != index else None


def server_text(text: str, secret: str | None) -> str:
    """Server-provided text made fit for an error message: truncated, and scrubbed of the token in case the
    server echoes request headers back."""
    text = text if len(text) <= SERVER_TEXT_LIMIT else text[:SERVER_TEXT_LIMIT] + "…"
    return text.replace(secret, "[token]") if secret else text


def retry_after_seconds(response: httpx.Response | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    value = response.headers.get("Retry-After") if response is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def get_with_retries(
    client: httpx.Client,
    target: RequestTarget,
    params: Mapping[str, object],
    settings: RetrySettings,
    stats: FetchStats,
    *,
    sleep: Callable[[float], None] = time.sleep,
    secret: str | None = None,
) -> tuple[httpx.Response, int]:
    """GET ``target.path``; return the 2xx response and the attempts it took.

    Retries RETRYABLE_STATUS answers and transport errors; raises LmsAuthError on 401/403 and LmsFetchError on
    any other failure, at once when retrying cannot help, else once attempts or the wait budget run out.
    ``secret`` (the token) is scrubbed from any server text quoted in an error.
    """
    attempts = 0
    backoff = tenacity.wait_random_exponential(multiplier=settings.base_delay, max=settings.max_delay)

    def attempt() -> httpx.Response:
        nonlocal attempts
        attempts += 1
        stats.add(requests=1)
        try:
            response = client.get(target.path, params=params or None)  # {} would drop a Link URL's query
        except httpx.TransportError:
            stats.add(transport_errors=1)
            raise
        except (LmsRefusedRequestError, LmsUnsafeResponseError) as err:
            # The guard refused the request or its answer (transport.guard); not retried. Its message
            # names the URL; this one names the request as every other error of this listing does.
            raise target.error(type(err), err.detail, status=err.status) from None
        if response.status_code == 429:
            stats.add(throttled=1)
        elif response.status_code in RETRYABLE_STATUS:
            stats.add(server_errors=1)
        return response

    def wait(state: tenacity.RetryCallState) -> float:
        # Unified.to documents no Retry-After (§1.5), but upstream LMSs passing their 429s through may send one.
        hinted = retry_after_seconds(_response(state))
        return min(hinted, settings.max_delay) if hinted is not None else backoff(state)

    def stop(state: tenacity.RetryCallState) -> bool:
        # tenacity computes the upcoming wait before asking whether to stop, so the budget check is exact.
        over_budget = state.idle_for + state.upcoming_sleep > settings.max_total_wait
        return state.attempt_number >= settings.max_attempts or over_budget

    def before_sleep(state: tenacity.RetryCallState) -> None:
        stats.add(retries=1, wait_seconds=state.upcoming_sleep)
        logger.info("%s: %s; retrying in %.2fs (attempt %d of %d)", target.describe(), _outcome(state),
                    state.upcoming_sleep, state.attempt_number + 1, settings.max_attempts)  # fmt: skip

    def give_up(state: tenacity.RetryCallState) -> NoReturn:
        budget = (
            ""
            if state.attempt_number >= settings.max_attempts
            else f"; waiting {state.upcoming_sleep:.1f}s more would pass the {settings.max_total_wait:g}s budget"
        )
        response = _response(state)
        raise target.error(
            LmsFetchError,
            f"failed after {attempts} attempts (last: {_outcome(state)}{budget})",
            status=response.status_code if response is not None else None,
        ) from (state.outcome.exception() if state.outcome else None)

    response = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(httpx.TransportError)
        | tenacity.retry_if_result(lambda r: r.status_code in RETRYABLE_STATUS),
        wait=wait,
        stop=stop,
        sleep=sleep,
        before_sleep=before_sleep,
        retry_error_callback=give_up,
    )(attempt)
    _raise_for_status(response, target, attempts, secret)
    return response, attempts


def _response(state: tenacity.RetryCallState) -> httpx.Response | None:
    outcome = state.outcome
    return outcome.result() if outcome is not None and not outcome.failed else None


def _outcome(state: tenacity.RetryCallState) -> str:
    """The last attempt's result as a message fragment: ``HTTP 503`` or ``ReadTimeout: timed out``."""
    response = _response(state)
    if response is not None:
        return f"HTTP {response.status_code}"
    error = state.outcome.exception() if state.outcome is not None else None
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _raise_for_status(response: httpx.Response, target: RequestTarget, attempts: int, secret: str | None) -> None:
    """Refuse any non-2xx answer retrying cannot fix. A 3xx is refused, not followed: list endpoints do not
    redirect, so one means a wrong base_url."""
    status = response.status_code
    if 200 <= status < 300:
        return
    cls, hint = (LmsAuthError, "; check the token and its access") if status in AUTH_STATUS else (LmsFetchError, "")
    raise target.error(
        cls,
        f"failed with HTTP {status} on attempt {attempts} (not retried{hint}){_server_message(response, secret)}",
        status=status,
    )


def _server_message(response: httpx.Response, secret: str | None) -> str:
    """``: <message>`` from a JSON error body such as Unified.to's ``{"message": ...}``, else nothing."""
    try:
        body = response.json()
    except ValueError:
        return ""
    # Unified.to says {"message": ...}; OneRoster's imsx_StatusInfo says {"imsx_description": ...}.
    message = (body.get("message") or body.get("imsx_description")) if isinstance(body, dict) else None
    return f": {server_text(str(message), secret)}" if message else ""
