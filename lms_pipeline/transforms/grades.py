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

from typing import Literal

import duckdb
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

GRADE_STATUSES = ["graded", "excused", "incomplete", "ungraded", "missing", "unparseable"]

_NUMBER = r"([+-]?\d+(?:\.\d+)?)"
_PARSE_SQL = rf"""
WITH cleaned AS (
    SELECT *, upper(trim(raw_grade)) AS g FROM grades
)
SELECT * EXCLUDE (g),
    CASE
        WHEN raw_grade IS NULL THEN 'missing'
        WHEN g = '' THEN 'ungraded'
        WHEN g IN ('EX', 'EXCUSED', 'EXEMPT') THEN 'excused'
        WHEN g IN ('I', 'INC', 'INCOMPLETE') THEN 'incomplete'
        WHEN regexp_full_match(g, '{_NUMBER}\s*%') THEN 'graded'
        WHEN regexp_full_match(g, '{_NUMBER}\s*/\s*{_NUMBER}')
             AND TRY_CAST(regexp_extract(g, '/\s*{_NUMBER}', 1) AS DECIMAL(18, 6)) > 0 THEN 'graded'
        WHEN regexp_full_match(g, '{_NUMBER}') AND (points_possible IS NULL OR points_possible > 0) THEN 'graded'
        WHEN regexp_full_match(g, '[A-F][+-]?') THEN 'graded'
        ELSE 'unparseable'
    END AS grade_status,
    CASE
        WHEN regexp_full_match(g, '{_NUMBER}\s*%')
            THEN CAST(regexp_extract(g, '{_NUMBER}', 1) AS DECIMAL(18, 6))
        WHEN regexp_full_match(g, '{_NUMBER}\s*/\s*{_NUMBER}')
             AND TRY_CAST(regexp_extract(g, '/\s*{_NUMBER}', 1) AS DECIMAL(18, 6)) > 0
            THEN CAST(round(CAST(regexp_extract(g, '^{_NUMBER}', 1) AS DOUBLE) * 100
                            / CAST(regexp_extract(g, '/\s*{_NUMBER}', 1) AS DOUBLE), 6) AS DECIMAL(18, 6))
        WHEN regexp_full_match(g, '{_NUMBER}') AND points_possible > 0
            THEN CAST(round(CAST(g AS DOUBLE) * 100 / points_possible, 6) AS DECIMAL(18, 6))
        WHEN regexp_full_match(g, '{_NUMBER}') AND points_possible IS NULL
            THEN CAST(g AS DECIMAL(18, 6))  -- a bare number without points possible is a percent
    END AS percent,
    CASE WHEN regexp_full_match(g, '[A-F][+-]?') THEN g END AS letter_given
FROM cleaned
"""


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
        out = conn.execute(f"SELECT * EXCLUDE (_row) FROM ({_PARSE_SQL}) ORDER BY _row").df()
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


_LETTER_SQL = """
WITH cutoffs AS (
    SELECT scheme, letter, CAST(lower_bound AS DECIMAL(18, 6)) AS lower_bound, rank, precision, rounding
    FROM schemes
), rounded AS (
    SELECT s.*, c.precision, c.rounding,
        CASE WHEN s.percent IS NULL THEN NULL
             WHEN c.rounding = 'floor'
                 THEN floor(CAST(s.percent AS DECIMAL(18, 6)) * pow(10, c.precision)::DECIMAL(18, 0))
                      / pow(10, c.precision)::DECIMAL(18, 0)
             ELSE round(CAST(s.percent AS DECIMAL(18, 6)) * pow(10, c.precision)::DECIMAL(18, 0), 0)
                  / pow(10, c.precision)::DECIMAL(18, 0)
        END AS rounded_percent
    FROM scored s
    LEFT JOIN (SELECT DISTINCT scheme, precision, rounding FROM cutoffs) c USING (scheme)
)
SELECT r.* EXCLUDE (precision, rounding),
    CASE WHEN r.rounded_percent IS NULL OR r.precision IS NULL THEN NULL
         ELSE coalesce(
             (SELECT c.letter FROM cutoffs c WHERE c.scheme = r.scheme AND c.lower_bound <= r.rounded_percent
              ORDER BY c.lower_bound DESC LIMIT 1),
             (SELECT c.letter FROM cutoffs c WHERE c.scheme = r.scheme ORDER BY c.lower_bound LIMIT 1))
    END AS letter
FROM rounded r
"""


def to_letters(scored: pd.DataFrame, schemes: dict[str, GradingScheme]) -> pd.DataFrame:
    """Add ``rounded_percent`` and ``letter`` to ``scored`` (columns ``scheme`` and ``percent``) with each row's
    own scheme; a row whose scheme is null or unknown gets neither (no universal default)."""
    with duckdb.connect() as conn:
        conn.register("scored", scored.assign(_row=range(len(scored))))
        conn.register("schemes", scheme_frame(schemes))
        out = conn.execute(f"SELECT * EXCLUDE (_row) FROM ({_LETTER_SQL}) ORDER BY _row").df()
    out["rounded_percent"] = out["rounded_percent"].astype("float64")
    return out
