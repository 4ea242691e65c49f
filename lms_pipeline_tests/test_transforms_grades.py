"""Grade strings -> tri-state scores, and percent -> letter at every cutoff of a scheme, for both rounding rules."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from lms_pipeline.transforms.grades import GradingScheme, parse_grades, to_letters

STANDARD = GradingScheme(name="standard", precision=2, rounding="half_up",
                         cutoffs=[("A", 93), ("A-", 90), ("B+", 87), ("B", 83), ("B-", 80), ("C", 70), ("D", 60),
                                  ("F", 0)])  # fmt: skip
FLOORED = STANDARD.model_copy(update={"name": "floored", "rounding": "floor"})
WHOLE = STANDARD.model_copy(update={"name": "whole", "precision": 0})
SCHEMES = {s.name: s for s in (STANDARD, FLOORED, WHOLE)}


@pytest.mark.parametrize(
    ("raw", "points", "status", "percent", "letter"),
    [
        ("85", 100, "graded", 85.0, None),
        ("17", 20, "graded", 85.0, None),  # a bare number is points when points possible are known
        ("85", None, "graded", 85.0, None),  # ... and a percent when they are not
        ("85.5%", None, "graded", 85.5, None),
        (" 85.5 % ", 20, "graded", 85.5, None),  # a percent sign wins over points possible
        ("17/20", None, "graded", 85.0, None),
        ("0", 10, "graded", 0.0, None),  # a real zero stays a zero
        ("A-", None, "graded", None, "A-"),
        ("b+", None, "graded", None, "B+"),
        ("", 10, "ungraded", None, None),
        ("EX", 10, "excused", None, None),
        ("excused", 10, "excused", None, None),
        ("incomplete", 10, "incomplete", None, None),
        (None, 10, "missing", None, None),
        ("17/0", None, "unparseable", None, None),
        ("pass", 10, "unparseable", None, None),
        ("5", 0, "unparseable", None, None),  # points on a zero-point item cannot become a percent
    ],
)
def test_grade_strings_parse_to_a_status_and_a_percent_or_letter(raw, points, status, percent, letter) -> None:
    out = parse_grades(pd.DataFrame({"raw_grade": [raw], "points_possible": [points]}, dtype=object)).iloc[0]
    assert out["grade_status"] == status
    assert (pd.isna(out["percent"]) and percent is None) or out["percent"] == pytest.approx(percent, abs=1e-9)
    assert (out["letter_given"] if isinstance(out["letter_given"], str) else None) == letter
    assert out["raw_grade"] == raw, "the raw value is kept verbatim"


def letters(scheme: str, percents: list[float]) -> list[str]:
    frame = to_letters(pd.DataFrame({"scheme": scheme, "percent": percents}), SCHEMES)
    return frame["letter"].tolist()


@pytest.mark.parametrize(("letter", "bound", "below"), list(zip(
    [c[0] for c in STANDARD.cutoffs[:-1]], [c[1] for c in STANDARD.cutoffs[:-1]], [c[0] for c in STANDARD.cutoffs[1:]],
    strict=True)))  # fmt: skip
def test_every_cutoff_with_half_up_and_floor_rounding(letter: str, bound: float, below: str) -> None:
    # exactly on the cutoff, and the smallest step below it at the scheme's precision
    assert letters("standard", [bound, bound - 0.01]) == [letter, below]
    # half up to 2 decimals: bound - 0.005 rounds up to the bound, anything less does not
    assert letters("standard", [bound - 0.005, bound - 0.00501]) == [letter, below]
    # floor never lifts a score over a cutoff
    assert letters("floored", [bound, bound - 0.001, bound - 0.00001]) == [letter, below, below]
    # whole-number precision: bound - 0.5 rounds up, bound - 0.51 does not
    assert letters("whole", [bound - 0.5, bound - 0.51]) == [letter, below]


def test_a_fraction_at_a_cutoff_is_not_lost_to_binary_floating_point() -> None:
    parsed = parse_grades(pd.DataFrame({"raw_grade": ["89.995%", "17.999/20"], "points_possible": [None, None]}))
    scored = parsed.assign(scheme="standard")
    assert to_letters(scored, SCHEMES)["letter"].tolist() == ["A-", "A-"]  # 90.00 and 89.995 -> 90.00


def test_out_of_range_percents_and_courses_without_a_scheme() -> None:
    assert letters("standard", [-3.0, 104.0]) == ["F", "A"]
    frame = to_letters(pd.DataFrame({"scheme": [None, "unknown"], "percent": [95.0, 95.0]}), SCHEMES)
    assert frame["letter"].isna().all(), "no universal default conversion"


@pytest.mark.parametrize(
    ("cutoffs", "problem"),
    [([("A", 90), ("B", 95), ("F", 0)], "strictly decrease"), ([("A", 90), ("A", 80), ("F", 0)], "appears twice"),
     ([("A", 90), ("B", 80)], "lowest cutoff must be 0")],
)  # fmt: skip
def test_a_scheme_with_bad_cutoffs_is_refused_by_name(cutoffs: list, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        GradingScheme(name="bad", cutoffs=cutoffs)


def test_lms_grades_come_from_stored_activity_pages_keeping_every_raw_value() -> None:
    import json

    from lms_pipeline.providers.unified.grades import activity_grades

    def activity(student: str, grade: object = None, **kw: object) -> dict:
        item = {"course_id": "c1", "content_id": "k1", "student_id": student, "updated_at": "2026-09-02T10:00:00Z"}
        return item | ({} if grade is None else {"assigned_grade": grade}) | kw

    items = [activity("s1", "87"), activity("s2", ""), activity("s3"), activity("s4", "EX"), activity("s5", "pass"),
             activity("s1", "91", updated_at="2026-09-02T11:00:00Z")]  # fmt: skip
    pages = pd.DataFrame({"connection_id": "conn", "snapshot_date": pd.Timestamp("2026-09-02"), "endpoint": "activity",
                          "course_id": "c1", "page_index": [0, 1],
                          "payload": [json.dumps(items[:5]), json.dumps(items[5:])]})  # fmt: skip
    out = parse_grades(activity_grades(pages)).set_index("student_id")
    assert list(out.index) == ["s1", "s2", "s4", "s5"], "no grade field, no grade row (s3)"
    assert out.loc["s1", "raw_grade"] == "91" and out.loc["s1", "percent"] == 91, "the newest version wins"
    assert out["grade_status"].to_dict() == {"s1": "graded", "s2": "ungraded", "s4": "excused", "s5": "unparseable"}
