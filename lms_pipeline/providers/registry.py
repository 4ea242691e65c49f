"""The providers by name: the only place a provider is looked up.

Adding a provider is a folder ``providers/<folder>/`` whose ``provider.py`` defines ``PROVIDER`` (see
``base.Provider``), plus its folder's name in ``FOLDERS`` below.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from lms_pipeline.providers.base import GradeSource, Provider, matrix_header, matrix_row

if TYPE_CHECKING:
    from lms_pipeline.config import ConnectionConfig

FOLDERS = ("unified", "canvas", "oneroster", "classroom", "lti_ags")
PROVIDERS: dict[str, Provider] = {
    p.name: p for p in (import_module(f"{__package__}.{folder}.provider").PROVIDER for folder in FOLDERS)
}


def provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise KeyError(f"no provider {name!r}; known: {', '.join(PROVIDERS)}") from None


def connection_providers() -> list[Provider]:
    """The providers a connection may name in ``provider:`` (those with an options model)."""
    return [p for p in PROVIDERS.values() if p.options is not None]


def grade_provider(conn: ConnectionConfig) -> Provider | None:
    """The provider a connection's LMS grades are read from: its own (``grades.source: native``) or the one its
    ``grades.source`` names (``lti_ags``); None without ``grades``."""
    if conn.grades is None:
        return None
    return provider(conn.provider if conn.grades.source == "native" else conn.grades.source)


def grade_source(conn: ConnectionConfig) -> GradeSource | None:
    found = grade_provider(conn)
    return found.grades if found is not None else None


def markdown_table() -> str:
    """The capability matrix of docs/providers.md."""
    return "\n".join([matrix_header(), *(matrix_row(p.capabilities) for p in PROVIDERS.values())])
