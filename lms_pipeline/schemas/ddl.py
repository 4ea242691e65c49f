"""The DuckDB columns of every table, generated from its pandera model: one source of truth for the names, the
types and the nullability of what is stored.

A column's type follows its pandas dtype (text, integer, double, boolean, a day, a UTC instant); ``sql`` in the
field's metadata names it where the dtype does not say it (JSON bodies, a BIGINT total, a compression setting).
"""

from __future__ import annotations

from typing import NamedTuple

from lms_pipeline.schemas.models import MODELS

# pandas dtype (as pandera prints it) -> DuckDB type
TYPES = {
    "str": "VARCHAR",
    "int64": "INTEGER",
    "Int64": "INTEGER",
    "float64": "DOUBLE",
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "datetime64[ns]": "DATE",
    "datetime64[us, UTC]": "TIMESTAMPTZ",
}


class Column(NamedTuple):
    name: str
    type: str  # the DuckDB type, with a compression setting where the model asks for one
    not_null: bool

    def sql(self) -> str:
        return f"{self.name} {self.type}" + (" NOT NULL" if self.not_null else "")


def columns(table: str) -> list[Column]:
    """The table's columns in its model's order."""
    out = []
    for name, spec in MODELS[table].to_schema().columns.items():
        declared = (spec.metadata or {}).get("sql")
        kind = declared or TYPES.get(str(spec.dtype))
        if kind is None:
            raise TypeError(f"{table}.{name}: no DuckDB type for dtype {spec.dtype}; declare one (metadata 'sql')")
        out.append(Column(name, kind, not spec.nullable))
    return out


def create_table(qualified: str, table: str) -> str:
    return f"CREATE TABLE IF NOT EXISTS {qualified} ({', '.join(c.sql() for c in columns(table))})"
