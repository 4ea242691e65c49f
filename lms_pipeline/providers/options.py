"""The connection options every provider has, and the pieces of its options model a provider builds on."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

from lms_pipeline.providers.http import RetrySettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class Strict(BaseModel):
    """A settings model: unknown keys are refused (a typo is an error, not a silent default) and values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryOptions(Strict):
    """How one connection's requests are retried and bounded (``providers.http.RetrySettings``)."""

    max_attempts: int = Field(8, ge=1, le=20)
    base_delay_seconds: float = Field(1.0, ge=0, le=60)
    max_delay_seconds: float = Field(30.0, ge=0, le=600)
    max_total_wait_seconds: float = Field(120.0, ge=0, le=3600)
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="per connect, read or write")
    request_deadline_seconds: float = Field(
        120.0, gt=0, le=3600, description="one request, body included: a body that trickles in is cut off here"
    )
    max_response_mb: float = Field(
        32.0, gt=0, le=1024, description="largest answer read, before and after gzip/deflate decoding"
    )

    def settings(self) -> RetrySettings:
        return RetrySettings(
            max_attempts=self.max_attempts,
            base_delay=self.base_delay_seconds,
            max_delay=self.max_delay_seconds,
            max_total_wait=self.max_total_wait_seconds,
            timeout=self.timeout_seconds,
            deadline=self.request_deadline_seconds,
            max_response_bytes=int(self.max_response_mb * (1 << 20)),
        )


class CommonOptions(Strict):
    """Options every provider dialect has; a provider's own options model extends it."""

    page_size: int = Field(100, ge=1, le=100, description="limit per page; the APIs cap it at 100")
    fetch_classes: bool = Field(True, description="also list classes (sections) for class-level rosters")
    max_drop_share: float = Field(
        0.2, gt=0, le=1, description="a change set dropping more than this share of edges is held"
    )
    simulated_clock: bool | None = Field(
        None,
        description="send the partition date to a simulator (X-Simulated-Date); default: on for the embedded "
        "simulator, off for a base_url. Off means the connection is live: it only knows today's rosters.",
    )
    retry: RetryOptions = RetryOptions()
    max_concurrent_requests: int = Field(
        4,
        ge=1,
        le=16,
        description="requests of this connection in flight at once: per-course listings (rosters, sections, "
        "grades, progress) are read side by side up to this budget; a throttled answer pauses all of them",
    )


def http_url(value: str | None) -> str | None:
    """An API root, refused unless it is a plain http(s) URL. The messages never quote the value: it may hold a
    password or a token, which would then reach errors and logs."""
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a port out of range or not a number)
    except ValueError:
        raise ValueError("is not a valid URL (check the brackets of an IPv6 host and the port)") from None
    if "@" in parts.netloc:
        # httpx would send user:password as Basic auth instead of the bearer token, and the URL, password
        # included, would be stored with every raw page.
        raise ValueError("holds credentials (user:password@); put secrets in the environment variables the "
                         "file names, never in a URL")  # fmt: skip
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.query or value.endswith("?"):
        raise ValueError("has a query string, which the clients would silently drop; give the API root only")
    if parts.fragment or value.endswith("#"):
        raise ValueError("has a fragment (#...); give the API root only")
    return value.rstrip("/")
