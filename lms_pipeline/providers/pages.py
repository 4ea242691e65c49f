"""Raw pages as rows: the one function every raw-page table is written with (``page_rows``), the frame a normalizer
registers (``page_frame``), and the error that lists the first problems a contract query finds (each dialect keeps
its own error class and wording)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path

import duckdb
import pandas as pd

from lms_pipeline import statements
from lms_pipeline.providers.base import RawPage

SHOWN_PROBLEMS = 5
PROBLEM_ORDER = "endpoint, course_id, page_index, position"


def page_rows(pages: Sequence[RawPage]) -> pd.DataFrame:
    """The columns every raw-page table stores of its pages (the partition, run and purpose columns are the
    caller's): what was asked, what came back, when, and in how many attempts."""
    return pd.DataFrame(
        {
            "endpoint": pd.Series([p.endpoint for p in pages], dtype=str),
            "course_id": pd.Series([None if p.course_id is None else str(p.course_id) for p in pages], dtype=object),
            "page_index": pd.Series([p.page_index for p in pages], dtype="int64"),
            "page_offset": pd.Series([p.offset for p in pages], dtype="int64"),
            "url": pd.Series([p.url for p in pages], dtype=object),
            "request_params": pd.Series(
                [json.dumps(dict(p.params), sort_keys=True, default=str) for p in pages], dtype=str
            ),  # fmt: skip
            "fetched_at": pd.to_datetime([p.fetched_at for p in pages], utc=True),
            "status_code": pd.Series([p.status for p in pages], dtype="int64"),
            "attempts": pd.Series([p.attempts for p in pages], dtype="int64"),
            "item_count": pd.Series([len(p.items) for p in pages], dtype="int64"),
            "payload": pd.Series([p.payload for p in pages], dtype=str),
            "total_count": pd.Series([p.total for p in pages], dtype="Int64"),
        }
    )


def page_frame(
    pages: pd.DataFrame | Iterable[RawPage | Mapping], columns: list[str], dtypes: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Raw pages (as a client returns them, dicts with their fields, or a stored frame with their columns) as a frame
    of ``columns``, cast to ``dtypes`` so DuckDB sees the same types whether or not a page left a column empty."""
    if not isinstance(pages, pd.DataFrame):
        pages = pd.DataFrame([_fields(p) for p in pages], columns=columns)
    frame = pages[columns]
    return frame.astype(dict(dtypes)) if dtypes else frame


def _fields(page: RawPage | Mapping) -> Mapping:
    if not isinstance(page, RawPage):
        return page
    return {f.name: getattr(page, f.name) for f in fields(page) if f.name != "items"} | {"params": dict(page.params)}


def register_pages(conn: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> None:
    """``frame`` as the view ``pages``, with the macro ``json_list_problem(status, payload)`` (``pages.sql``) that
    every listing of a JSON array checks its pages with."""
    conn.register("pages", frame)
    conn.execute(statements.load(Path(__file__).with_name("pages.sql"))["json_list_problem"])


def page_problem(endpoint: str, course: object, index: object, url: object, position: object, problem: str) -> str:
    """One problem row as a line: the listing, page and URL, then the item when the problem is an item's."""
    return (
        f"{endpoint} page {index}" + (f" of course {course}" if course is not None else "") + f" (GET {url}): "
        + (f"item {position} {problem}" if position is not None else problem)
    )  # fmt: skip


def raise_on_problems(
    conn: duckdb.DuckDBPyConnection,
    problems_sql: str,
    error_cls: Callable[[str], Exception],
    prefix: str = "",
    shown: int = SHOWN_PROBLEMS,
    *,
    label: str = "",
    line: Callable[..., str] = page_problem,
    order_by: str = PROBLEM_ORDER,
) -> None:
    """Raise ``error_cls("{prefix}{n} malformed {label}page(s) or item(s):" + the first ``shown`` lines)`` when
    ``problems_sql`` yields rows with a non-null ``problem``; each row becomes a line through ``line``."""
    found = f"SELECT * FROM ({problems_sql}) WHERE problem IS NOT NULL"
    total = conn.execute(f"SELECT count(*) FROM ({found})").fetchone()[0]  # type: ignore[index]
    if not total:
        return
    rows = conn.execute(f"{found} ORDER BY {order_by} LIMIT {shown}").fetchall()
    lines = [line(*row) for row in rows]
    more = f"\n  ... and {total - shown} more" if total > shown else ""
    raise error_cls(f"{prefix}{total} malformed {label}page(s) or item(s):\n  " + "\n  ".join(lines) + more)
