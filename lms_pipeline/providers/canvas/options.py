"""Options of a Canvas REST connection (``options:`` in the connections file)."""

from __future__ import annotations

from pydantic import Field

from lms_pipeline.providers.options import CommonOptions


class CanvasOptions(CommonOptions):
    """Canvas REST (docs/providers.md §4, §9.3): the account's course listing, Link-header pages, per_page up to 100,
    explicit enrollment states."""

    account_id: str = Field(
        "self",
        pattern=r"^(self|[0-9]+|sis_account_id:[^/?#\s]+)$",
        description="the account whose courses are mirrored (GET /api/v1/accounts/:account_id/courses): self = the "
        "domain's root account (default), an account id, or sis_account_id:<id>; the token's user needs the "
        "account permission read_course_list there",
    )
