"""How the simulated SIS plants its disagreements with the LMS world, by hashing ids (zlib.crc32, so each choice is
stable across days and independent of the order asked): which students it lacks or knows by another email, which line
items it lacks, renames or grades by letter, and how an LMS grade string reads as a percent and a letter, computed
independently of the pipeline's SQL."""

from __future__ import annotations

import zlib
from datetime import datetime
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Protocol


class Scheme(Protocol):
    """What the SIS needs of a grading scheme (transforms.grades.GradingScheme has it)."""

    cutoffs: list[tuple[str, float]]
    precision: int
    rounding: str


def crc(key: str) -> int:
    return zlib.crc32(key.encode())


def student_number(lms_id: str) -> int | None:
    return int(lms_id[4:]) if lms_id.startswith("stu-") and lms_id[4:].isdigit() else None


def sis_user_id(number: int) -> str:
    return f"usr-{number:05d}"


def line_item_id(content_id: str) -> str:
    return f"li-{content_id}"


def result_id(line_item: str, user: str) -> str:
    return f"res-{line_item}-{user}"


def student_fate(number: int) -> str:
    """in_sis | not_in_sis | other_email (needs a mapping row) | duplicate (two SIS records share the email)."""
    kind = crc(f"user|{number}") % 40
    return {0: "not_in_sis", 1: "other_email", 2: "duplicate"}.get(kind, "in_sis")


def course_has_class(course_number: int) -> bool:
    return course_number % 15 != 7


def line_item_kind(content_id: str) -> str:
    """none | renamed (needs a mapping row) | letter | points20 | points100."""
    kind = crc(f"li|{content_id}") % 12
    if kind == 0:
        return "none"
    if kind == 1:
        return "renamed"
    if kind == 2:
        return "letter"
    return "points20" if kind % 5 == 0 else "points100"


def parse_percent(raw: str) -> Decimal | None:
    """The percent an LMS grade string means (independently of the pipeline's SQL): "87", "84.5%", "17/20"."""
    text = raw.strip()
    try:
        if text.endswith("%"):
            return Decimal(text[:-1].strip())
        if "/" in text:
            top, bottom = (Decimal(p.strip()) for p in text.split("/", 1))
            return (top * 100 / bottom).quantize(Decimal("0.000001")) if bottom > 0 else None
        return Decimal(text)
    except ArithmeticError:
        return None


def letter_for(percent: Decimal, scheme: Scheme) -> str:
    """Canvas's rule at the scheme's precision: the highest lower bound <= the rounded percent, else the lowest."""
    step = Decimal(1).scaleb(-scheme.precision)
    rounded = percent.quantize(step, rounding=ROUND_FLOOR if scheme.rounding == "floor" else ROUND_HALF_UP)
    qualifying = [(Decimal(str(b)), letter) for letter, b in scheme.cutoffs if Decimal(str(b)) <= rounded]
    return max(qualifying)[1] if qualifying else min((Decimal(str(b)), letter) for letter, b in scheme.cutoffs)[1]


def other_letter(letter: str, scheme: Scheme) -> str:
    letters = [name for name, _ in scheme.cutoffs]
    k = letters.index(letter)
    return letters[k + 1] if k + 1 < len(letters) else letters[k - 1]


def stamp_of(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def moment_of(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
