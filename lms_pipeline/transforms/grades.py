"""Grade strings as LMSs emit them -> a tri-state score; percentages -> letters with a course's own scheme.

Two failures of existing tools shape this module (peers-and-user-pains.md §16-17):

* zero, ungraded and missing get conflated. Here a grade is one of ``graded`` (with a percent or a letter),
  ``excused``, ``incomplete``, ``ungraded`` (the field is there and empty), ``missing`` (no grade field at all) or
  ``unparseable`` (kept verbatim, flagged, never dropped). A parsed 0 is a graded 0.
* rounding at cutoffs flips letters. Numbers are parsed from their text straight into DECIMAL (no binary float in
  between), fractions are computed in DOUBLE and fixed to 6 decimals, then each scheme declares its precision and
  rounding rule (``half_up``: half away from zero, or ``floor``) and a letter is the one with the highest lower
  bound <= the rounded percent (Canvas's rule, docs/providers.md §4.7); a negative percent gets the lowest.

There is no universal default scheme: a course without one gets no letter, and says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lms_pipeline import statements

SQL = statements.load(Path(__file__).with_suffix(".sql"))

GRADE_STATUSES = ["graded", "excused", "incomplete", "ungraded", "missing", "unparseable"]


class GradingScheme(BaseModel):
    """A course's letter scheme: ordered cutoffs (lower bounds in percent), the precision a percent is rounded to
    before the lookup, and the rounding rule. Example: A >= 90, B >= 80, ..., F >= 0, 2 decimals, half_up."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    cutoffs: list[tuple[str, float]] = Field(min_length=1, description="(letter, lower bound %) from highest")
    precision: int = Field(2, ge=0, le=6, description="decimals of the percent before the letter lookup")
    rounding: Literal["half_up", "floor"] = "half_up"

    @model_validator(mode="after")
    def _ordered(self) -> GradingScheme:
        bounds = [bound for _, bound in self.cutoffs]
        letters = [letter for letter, _ in self.cutoffs]
        if any(b >= a for a, b in zip(bounds, bounds[1:], strict=False)):
            raise ValueError(f"scheme {self.name!r}: cutoffs must strictly decrease, got {bounds}")
        if len(set(letters)) != len(letters):
            raise ValueError(f"scheme {self.name!r}: a letter appears twice in {letters}")
        if bounds[-1] != 0:
            raise ValueError(f"scheme {self.name!r}: the lowest cutoff must be 0 so every score has a letter")
        return self


def parse_grades(grades: pd.DataFrame) -> pd.DataFrame:
    """Add ``grade_status``, ``percent`` (float, exact to 6 decimals) and ``letter_given`` to ``grades``, which
    needs ``raw_grade`` (text or null) and ``points_possible`` (number or null). Set-based; every row is kept."""
    with duckdb.connect() as conn:
        conn.register("grades", grades.assign(_row=range(len(grades))))
        out = conn.execute(SQL["parse"]).df()
    out["percent"] = out["percent"].astype("float64")
    return out


def scheme_frame(schemes: dict[str, GradingScheme]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "scheme": key,
                "letter": letter,
                "lower_bound": bound,
                "rank": rank,
                "precision": s.precision,
                "rounding": s.rounding,
            }
            for key, s in schemes.items()
            for rank, (letter, bound) in enumerate(s.cutoffs)
        ],  # fmt: skip
        columns=["scheme", "letter", "lower_bound", "rank", "precision", "rounding"],
    ).astype({"scheme": str, "letter": str, "lower_bound": float, "rank": int, "precision": int, "rounding": str})


def to_letters(scored: pd.DataFrame, schemes: dict[str, GradingScheme]) -> pd.DataFrame:
    """Add ``rounded_percent`` and ``letter`` to ``scored`` (columns ``scheme`` and ``percent``) with each row's
    own scheme; a row whose scheme is null or unknown gets neither (no universal default)."""
    with duckdb.connect() as conn:
        conn.register("scored", scored.assign(_row=range(len(scored))))
        conn.register("schemes", scheme_frame(schemes))
        out = conn.execute(SQL["letter"]).df()
    out["rounded_percent"] = out["rounded_percent"].astype("float64")
    return out
