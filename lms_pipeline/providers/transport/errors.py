"""Client errors. Each message names the connection, the request and the offset, and never the token."""

from __future__ import annotations


class LmsClientError(Exception):
    """Base: something about talking to one LMS connection went wrong.

    The fields repeat what the message says so callers can branch (e.g. on ``status``) without parsing text.
    """

    def __init__(
        self,
        message: str,
        *,
        connection_id: str,
        endpoint: str,
        offset: int | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.connection_id = connection_id
        self.endpoint = endpoint
        self.offset = offset
        self.status = status

    def __reduce__(self) -> tuple:
        # The keyword-only fields are not in ``args``: without this, unpickling (e.g. across processes) fails.
        fields = {"connection_id": self.connection_id, "endpoint": self.endpoint, "offset": self.offset,
                  "status": self.status}  # fmt: skip
        return _rebuild, (type(self), str(self), fields)


def _rebuild(cls: type[LmsClientError], message: str, fields: dict) -> LmsClientError:
    return cls(message, **fields)


class LmsFetchError(LmsClientError):
    """A request failed for good: retries exhausted, or a status that retrying cannot fix."""


class LmsAuthError(LmsFetchError):
    """401/403: the token is missing, wrong or lacks permission. Not retried."""


class LmsPayloadError(LmsClientError):
    """The body is not what the API promises (not JSON, not an array of objects)."""


class _Detailed(LmsClientError):
    """An error raised below the client (``transport.guard``): its message names the URL, and ``detail``
    (the message without ``<who>: <METHOD> <url>``) lets ``get_with_retries`` restate it for the request it was
    making. After pickling, ``detail`` is the whole message."""

    def __init__(self, message: str, *, detail: str | None = None, **fields: object) -> None:
        super().__init__(message, **fields)  # type: ignore[arg-type]
        self.detail = detail or message


class LmsRefusedRequestError(_Detailed):
    """A request the client will not send: its URL leaves the configured origins (a next link to another host
    would carry the token there) or holds credentials (``user:password@``). Refused before any byte is sent."""


class LmsUnsafeResponseError(_Detailed, LmsPayloadError):
    """An answer broke a bound the client keeps whatever the server does: larger than ``max_response_mb`` before
    or after decompression, still arriving at ``request_deadline_seconds``, or JSON nested too deep to parse. Not
    retried: the same server would most likely answer the same way again."""
