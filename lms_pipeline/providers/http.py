"""The HTTP layer every provider client is built on, in one import: what a client may use of ``transport/``.

- ``transport/retry.py``: one GET with retries (``get_with_retries``), the policy (``RetrySettings``), the counters
  reported as run metadata (``FetchStats``), how a request is named in errors (``RequestTarget``), the stop at a
  page that repeats an earlier one (``RepeatedPages``).
- ``transport/guard.py``: the transport under every client (``guarded_transport``): configured origins only, a
  deadline per request, a size cap before and after decoding, every credential scrubbed from what comes back.
- ``transport/budget.py``: a connection's request budget (``RequestBudget``, ``BudgetTransport``) and the runner
  every per-course scan reads its listings with (``run_bounded``).
- ``transport/client.py``: what every client is made of (``ProviderHttpClient``: the guarded, budgeted transport,
  close and ``with``; ``bearer_headers``).
- ``transport/errors.py``: the errors a client raises, each naming the connection, the request and the cause.

A provider folder imports this module and ``providers/base.py``, nothing else of the pipeline.
"""

from lms_pipeline.providers.transport.budget import BudgetTransport, RequestBudget, ScanCancelled, run_bounded
from lms_pipeline.providers.transport.client import ProviderHttpClient, bearer_headers
from lms_pipeline.providers.transport.errors import (
    LmsAuthError,
    LmsClientError,
    LmsFetchError,
    LmsPayloadError,
    LmsRefusedRequestError,
    LmsUnsafeResponseError,
)
from lms_pipeline.providers.transport.guard import guarded_transport
from lms_pipeline.providers.transport.retry import (
    FetchStats,
    RepeatedPages,
    RequestTarget,
    RetrySettings,
    get_with_retries,
    retry_after_seconds,
    server_text,
)

__all__ = [
    "BudgetTransport",
    "FetchStats",
    "LmsAuthError",
    "LmsClientError",
    "LmsFetchError",
    "LmsPayloadError",
    "LmsRefusedRequestError",
    "LmsUnsafeResponseError",
    "ProviderHttpClient",
    "RepeatedPages",
    "RequestBudget",
    "RequestTarget",
    "RetrySettings",
    "ScanCancelled",
    "bearer_headers",
    "get_with_retries",
    "guarded_transport",
    "retry_after_seconds",
    "run_bounded",
    "server_text",
]
