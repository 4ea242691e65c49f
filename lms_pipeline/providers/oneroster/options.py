"""Options of a OneRoster 1.2 rostering connection (``options:`` in the connections file)."""

from __future__ import annotations

from pydantic import Field, field_validator

from lms_pipeline.providers.options import CommonOptions, http_url


class OneRosterOptions(CommonOptions):
    """OneRoster 1.2 rostering (§2): OAuth2 client credentials (the secret in ``token_env``), limit/offset pages."""

    client_id: str = Field(min_length=1, description="OAuth2 client id (not a secret; the secret is in token_env)")
    token_url: str | None = Field(None, description="default {base_url}/oauth/token")

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str | None) -> str | None:
        return http_url(value)
