"""Named SQL statements kept in ``.sql`` files beside the transform that runs them, executed with bound parameters.

A file holds statements, each introduced by a ``-- name: <name>`` line (the aiosql convention, without the library).
Values reach a statement only as named parameters (``$connection_id``): ``run`` binds the ones the statement uses, so
one mapping of the partition's values serves every statement and nothing is ever spliced into SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import duckdb

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_PARAM = re.compile(r"\$([a-z_][a-z0-9_]*)")


@cache
def load(path: Path) -> dict[str, str]:
    """The named statements of one ``.sql`` file (read once per process)."""
    text = path.read_text()
    marks = list(_NAME.finditer(text))
    if not marks:
        raise ValueError(f"{path}: no '-- name: <name>' statement")
    return {
        mark.group(1): text[mark.end() : marks[i + 1].start() if i + 1 < len(marks) else len(text)].strip().rstrip(";")
        for i, mark in enumerate(marks)
    }


def run(conn: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, object]) -> duckdb.DuckDBPyConnection:
    """Execute ``sql`` with the named parameters it uses, taken from ``params`` (a missing one is an error)."""
    used = dict.fromkeys(_PARAM.findall(sql))
    missing = [name for name in used if name not in params]
    if missing:
        raise KeyError(f"statement needs parameter(s) {missing}: {sql[:80]!r}...")
    return conn.execute(sql, {name: params[name] for name in used})
