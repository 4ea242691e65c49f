"""What the dialect normalizers share about raw pages: the page frame they register, and the error that lists the
first problems a contract query finds (each dialect keeps its own error class and wording)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import duckdb
import pandas as pd

SHOWN_PROBLEMS = 5
PROBLEM_ORDER = "endpoint, course_id, page_index, position"


def page_frame(
    pages: pd.DataFrame | Iterable[Mapping], columns: list[str], dtypes: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Raw pages (dicts as a client returns them, or a frame with their columns) as a frame of ``columns``, cast to
    ``dtypes`` so DuckDB sees the same types whether or not a page left a column empty."""
    frame = pages if isinstance(pages, pd.DataFrame) else pd.DataFrame(list(pages), columns=columns)
    frame = frame[columns]
    return frame.astype(dict(dtypes)) if dtypes else frame


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
