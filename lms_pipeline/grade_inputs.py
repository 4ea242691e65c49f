"""The analyst-edited inputs of grade reconciliation: the mapping files (CSV) and the grading-scheme file (YAML).

A mapping row says what automatic matching cannot (a student known to the SIS under another email, a line item
titled differently from its LMS content); rows win over automatic matches. Errors name the file, the line and the
problem, and are raised before anything is written, so a bad edit never changes stored tables.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lms_pipeline.transforms.grades import GradingScheme

if TYPE_CHECKING:
    from lms_pipeline.config import SisConfig

STUDENT_MAP_COLUMNS = ("lms_connection_id", "lms_user_id", "sis_user_id")
ASSIGNMENT_MAP_COLUMNS = ("lms_connection_id", "lms_course_id", "lms_content_id", "sis_line_item_id")


class GradeInputError(ValueError):
    """A mapping or scheme file is wrong; the message says which file, which line and what."""


def read_mapping(path: Path, columns: tuple[str, ...], key: tuple[str, ...], target: str) -> pd.DataFrame:
    """A mapping CSV with a ``line`` column (its line in the file). Every value is required; ``key`` is unique,
    and so is ``target`` within a connection (two LMS ids on one SIS id would make the reverse match a guess)."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, comment="#")
    except FileNotFoundError:
        raise GradeInputError(f"{path}: mapping file not found") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise GradeInputError(f"{path}: not a readable CSV: {exc}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise GradeInputError(f"{path}, line 1: missing column(s) {', '.join(missing)} (expected {', '.join(columns)})")
    frame = frame[list(columns)].apply(lambda s: s.str.strip())
    frame["line"] = _line_numbers(path)[: len(frame)]
    for column in columns:
        empty = frame[frame[column] == ""]
        if len(empty):
            raise GradeInputError(f"{path}, line {empty['line'].iloc[0]}: empty value in column {column}")
    for cols, what in ((list(key), "key"), (["lms_connection_id", target], target)):
        dupes = frame[frame.duplicated(cols, keep=False)]
        if len(dupes):
            first, second = dupes["line"].iloc[0], dupes["line"].iloc[1]
            values = ", ".join(f"{c}={dupes[c].iloc[1]!r}" for c in cols)
            raise GradeInputError(f"{path}, line {second}: duplicate {what} ({values}) first given on line {first}")
    return frame


def _line_numbers(path: Path) -> list[int]:
    """The file line of each data row (pandas skips comment and blank lines, so count them the same way)."""
    lines = path.read_text().splitlines()
    data = [n for n, text in enumerate(lines, start=1) if text.strip() and not text.lstrip().startswith("#")]
    return data[1:]  # the first is the header


def check_known(frame: pd.DataFrame, path: Path, column: str, known: Iterable[str], what: str) -> None:
    """Refuse a row naming an id the other system does not have (a typo would otherwise silently map nothing)."""
    known_ids = set(known)
    unknown = frame[~frame[column].isin(known_ids)]
    if len(unknown):
        row = unknown.iloc[0]
        raise GradeInputError(f"{path}, line {row['line']}: {what} {row[column]!r} ({column}) does not exist")


class _SchemeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schemes: dict[str, dict] = Field(min_length=1)
    courses: dict[str, dict[str, str]] = Field(default_factory=dict)


def load_schemes(path: Path, connection_id: str) -> tuple[dict[str, GradingScheme], dict[str, str]]:
    """(scheme name -> scheme, course id -> scheme name) for one connection; ``"*"`` is the connection's scheme
    for courses without their own line. Explicit per connection: there is no universal default."""
    try:
        raw = yaml.safe_load(path.read_text())
        parsed = _SchemeFile.model_validate(raw)
    except FileNotFoundError:
        raise GradeInputError(f"{path}: grading-scheme file not found") from None
    except yaml.YAMLError as exc:
        raise GradeInputError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise GradeInputError(f"{path}: {_first_error(exc)}") from None
    schemes = {}
    for name, body in parsed.schemes.items():
        try:
            schemes[name] = GradingScheme.model_validate({"name": name, **body})
        except ValidationError as exc:
            raise GradeInputError(f"{path}: scheme {name!r}: {_first_error(exc)}") from None
    courses = parsed.courses.get(connection_id, {})
    unknown = sorted({s for s in courses.values() if s not in schemes})
    if unknown:
        raise GradeInputError(f"{path}: courses of {connection_id!r} name unknown scheme(s) {unknown}")
    return schemes, dict(courses)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(file)"
    return f"field '{where}': {err['msg']}"


def course_schemes(courses: Iterable[str], assignment: dict[str, str]) -> pd.DataFrame:
    """course_id -> scheme (null when neither the course nor ``"*"`` has one)."""
    ids = sorted(set(courses))
    return pd.DataFrame({"course_id": ids, "scheme": [assignment.get(c, assignment.get("*")) for c in ids]},
                        dtype=object)  # fmt: skip


def mapping_inputs(sis: SisConfig, connection_id: str, sis_data: dict[str, pd.DataFrame], students: pd.DataFrame,
                   grades: pd.DataFrame, contents: pd.DataFrame) -> tuple:  # fmt: skip
    """The mapping-file rows of one connection, checked against both systems, and its grading schemes: (student
    map, assignment map, schemes, the course -> scheme assignment, how many rows were set aside as stale).

    SIS ids must exist: the SIS is listed in full (``sis_data``: its users and lineItems), so an unknown one is a
    typo and raises ``GradeInputError``. A row for an LMS user or content not seen today (in ``students`` or
    ``grades``, ``contents`` or ``grades``) is stale: the student left, the course ended, a dialect may list only
    users with grades. It is set aside and counted, not an error.
    """
    s_path, a_path = sis.path("student_map"), sis.path("assignment_map")
    student_map = read_mapping(s_path, STUDENT_MAP_COLUMNS, ("lms_connection_id", "lms_user_id"), "sis_user_id")
    assignment_key = ("lms_connection_id", "lms_course_id", "lms_content_id")
    assignment_map = read_mapping(a_path, ASSIGNMENT_MAP_COLUMNS, assignment_key, "sis_line_item_id")
    student_map = student_map[student_map["lms_connection_id"] == connection_id]
    assignment_map = assignment_map[assignment_map["lms_connection_id"] == connection_id]
    check_known(student_map, s_path, "sis_user_id", sis_data["users"]["sourced_id"], f"SIS {sis.id} user")
    seen_users = set(students["student_id"]) | set(grades["student_id"])
    live_students = student_map["lms_user_id"].isin(seen_users)
    known = set(zip(contents["course_id"], contents["content_id"], strict=True))
    known |= set(zip(grades["course_id"], grades["content_id"], strict=True))
    pairs = zip(assignment_map["lms_course_id"], assignment_map["lms_content_id"], strict=True)
    live_items = [pair in known for pair in pairs]
    stale = int((~live_students).sum() + len(assignment_map) - sum(live_items))
    # A boolean Series, not the list: ``frame[[]]`` (no rows in the file) would select no columns.
    live_items = pd.Series(live_items, index=assignment_map.index, dtype=bool)
    student_map, assignment_map = student_map[live_students], assignment_map[live_items]
    check_known(assignment_map, a_path, "sis_line_item_id", sis_data["lineItems"]["sourced_id"],
                f"SIS {sis.id} line item")  # fmt: skip
    schemes, assignment = load_schemes(sis.path("grading_schemes"), connection_id)
    return student_map.drop(columns="line"), assignment_map.drop(columns="line"), schemes, assignment, stale
