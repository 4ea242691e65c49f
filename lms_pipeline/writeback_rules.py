"""The rules of the write-back, as pure functions of a discrepancy row, what the SIS holds and what the journal says:
which value to write (desired_fields), at which id a new result is created (minted_result_id), whose result a found
one is (identity_problem), whether the SIS already holds it or holds the registrar's newer value (decide,
is_own_write), and what past writes the journal shows (past_writes). The runner that applies them is writeback.py."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from lms_pipeline.providers.oneroster.client import result_pair

WRITABLE = ("missing_in_sis", "score_mismatch")


# A Result allows no other properties (§9.1): a PUT body carries only these.
RESULT_FIELDS = ("sourcedId", "status", "dateLastModified", "metadata", "lineItem", "student", "class", "scoreScale",
                 "scoreStatus", "score", "textScore", "scoreDate", "comment", "learningObjectiveSet", "inProgress",
                 "incomplete", "late", "missing")  # fmt: skip


REF_FIELDS = ("lineItem", "student", "class", "scoreScale")


CLOCK_SKEW = timedelta(minutes=5)  # the SIS's clock may trail ours: its modification time of our write may too


@dataclass(frozen=True)
class Candidate:
    """One discrepancy row to write: who, where, what the LMS grade asks for, and when the LMS graded it."""

    row_key: str
    lms_student_id: str
    sis_student_id: str
    sis_line_item_id: str
    sis_result_id: str | None
    desired: dict
    graded_at: datetime | None

    @property
    def pair(self) -> tuple[str, str]:
        return self.sis_line_item_id, self.sis_student_id

    @classmethod
    def from_row(cls, row: Mapping) -> Candidate:
        """A grade_discrepancies row as a candidate; ValueError when its LMS value cannot be written."""
        return cls(
            row_key=row["row_key"], lms_student_id=row["lms_student_id"], sis_student_id=row["sis_student_id"],
            sis_line_item_id=row["sis_line_item_id"], sis_result_id=as_text(row.get("sis_result_id")),
            desired=desired_fields(row), graded_at=parse_moment(row.get("lms_graded_at")),
        )  # fmt: skip


@dataclass(frozen=True)
class PastWrite:
    """This pipeline's latest write of a pair that may be in the SIS, from the journal. ``state``: ``landed``
    (answered 2xx, or confirmed later), ``unanswered`` (the run ended or the connection failed before its answer
    was read), or ``not_landed`` once a reconciliation found the SIS without it."""

    operation_id: str
    run_id: str
    row_key: str
    lms_student_id: str
    sis_student_id: str
    sis_line_item_id: str
    sis_result_id: str
    values: dict
    attempted_at: datetime
    state: str


@dataclass(frozen=True)
class Decision:
    """What to do with one result: an ``outcome`` and nothing to send, or ``body`` to PUT at ``result_id``."""

    outcome: str | None
    detail: str | None = None
    result_id: str | None = None
    body: dict | None = None
    creates: bool = False


def desired_fields(row: Mapping) -> dict:
    """The result fields the LMS grade asks for: points on the line item's scale, a letter, or exempt."""
    if row["lms_grade_status"] == "excused":
        return {"scoreStatus": "exempt"}
    if bool(row["letter_scale"]):
        letter = as_text(row.get("lms_letter"))
        if letter is None:
            raise ValueError("letter line item, but the LMS grade has no letter (no grading scheme for the course)")
        return {"scoreStatus": "fully graded", "textScore": letter}
    percent, top = as_number(row.get("lms_percent")), as_number(row.get("sis_result_max"))
    if percent is None or top is None:
        raise ValueError(f"cannot put the LMS percent {percent} on the line item's scale (resultValueMax {top})")
    return {"scoreStatus": "fully graded", "score": round(percent * top / 100, 2)}


def minted_result_id(sis_id: str, line_item: str, student: str) -> str:
    """The sourcedId this pipeline creates a pair's result at: the same on every run, so a retried create after a
    crash lands on the result it may already have made instead of a second one."""
    return "lmsp-" + hashlib.sha256(f"{sis_id}\x1f{line_item}\x1f{student}".encode()).hexdigest()[:24]


def identity_problem(result: dict, line_item: str, student: str, sourced_id: str | None = None) -> str | None:
    """Why ``result`` is not provably the (line item, student) result asked for; None when it is."""
    got = result.get("sourcedId")
    if sourced_id is not None and got != sourced_id:
        return f"GET /results/{sourced_id} answered result {got!r}"
    got_item, got_student = result_pair(result)
    if got_student != student:
        return f"result {got!r} belongs to student {got_student!r}, not {student!r}"
    if got_item != line_item:
        return f"result {got!r} is for line item {got_item!r}, not {line_item!r}"
    return None


def holds(result: dict, values: Mapping) -> bool:
    """The result is active and carries ``values`` (scoreStatus and score or textScore)."""
    return result.get("status") == "active" and all(result.get(k) == v for k, v in values.items())


def is_own_write(result: dict, past: PastWrite | None) -> bool:
    """The SIS holds what this pipeline wrote, modified no earlier than the write was journaled (within the skew)."""
    if past is None or past.state == "not_landed" or not holds(result, past.values):
        return False
    modified = parse_moment(result.get("dateLastModified"))
    return modified is not None and modified >= past.attempted_at - CLOCK_SKEW


def decide(
    current: dict | None,
    candidate: Candidate,
    *,
    new_id: str,
    own: PastWrite | None,
    now: datetime,
    ref: Callable[[str, str], dict],
    found: str = "",
) -> Decision:
    """Compare-and-set for one proven result (``current``, None when the pair has none): what to write, if anything.

    ``ref(field, sourcedId)`` builds a whole GUIDRef; ``found`` says how the result was looked up, for the log.
    """
    if current is None:
        body = {"sourcedId": new_id, "status": "active", "dateLastModified": stamp_text(now),
                "lineItem": ref("lineItem", candidate.sis_line_item_id),
                "student": ref("student", candidate.sis_student_id), **candidate.desired,
                "scoreDate": now.date().isoformat()}  # fmt: skip
        detail = join_parts(f"no result for the pair{found}", "created at a minted id")
        return Decision(None, detail, new_id, body, True)
    if holds(current, candidate.desired):
        return Decision("already_current", found.removeprefix("; ") or None)
    modified = parse_moment(current.get("dateLastModified"))
    newer = (current.get("status") == "active" and candidate.graded_at is not None and modified is not None
             and modified > candidate.graded_at)  # fmt: skip
    detail = None
    if newer and is_own_write(current, own):
        detail = f"the SIS value is this pipeline's write of {when_text(own.attempted_at)}, not a registrar's"
    elif newer:
        return Decision("skipped_sis_newer", "SIS result modified after the LMS grade: kept")
    body = {k: v for k, v in current.items() if k in RESULT_FIELDS}
    body.update({key: ref(key, body[key]["sourcedId"]) for key in REF_FIELDS if isinstance(body.get(key), dict)})
    body.update(candidate.desired, status="active", dateLastModified=stamp_text(now), scoreDate=now.date().isoformat())
    return Decision(None, join_parts(detail, found.removeprefix("; ") or None), current["sourcedId"], body, False)


def past_writes(log: pd.DataFrame) -> dict[tuple[str, str], PastWrite]:
    """The latest write of each (line item, student) pair in grade_sync_log rows (of one SIS) that may have landed,
    and its state; dry runs and writes the SIS refused are passed over."""
    if log.empty:
        return {}
    real = log[~log["dry_run"].astype(bool)]
    outcomes: dict[str, list[tuple[str, object]]] = {}
    for row in real[real["phase"] == "outcome"].itertuples():
        outcomes.setdefault(row.operation_id, []).append((row.outcome, row.http_status))
    out: dict[tuple[str, str], PastWrite] = {}
    for row in real[real["phase"] == "intent"].sort_values("attempted_at").itertuples():
        ends = outcomes.get(row.operation_id, [])
        if any(o in ("created", "updated", "confirmed") for o, _ in ends):
            state = "landed"
        elif any(o in ("not_applied", "conflict") or (o == "failed" and pd.notna(h)) for o, h in ends):
            continue  # the SIS answered, and not with success: nothing was applied, an earlier write still stands
        else:
            state = "unanswered"  # no outcome, or a connection that failed before the answer
        values = {"scoreStatus": row.score_status_written, "score": as_number(row.score_written),
                  "textScore": as_text(row.text_score_written)}  # fmt: skip
        out[(row.sis_line_item_id, row.sis_student_id)] = PastWrite(
            row.operation_id, row.run_id, row.row_key, row.lms_student_id, row.sis_student_id, row.sis_line_item_id,
            row.sis_result_id, {k: v for k, v in values.items() if v is not None},
            pd.Timestamp(row.attempted_at).to_pydatetime(), state,
        )  # fmt: skip
    return out


def previous(result: dict | None) -> dict:
    """The log's ``previous_*`` columns: the SIS value a write replaced (or would have)."""
    result = result or {}
    return {"previous_score": as_number(result.get("score")), "previous_text_score": as_text(result.get("textScore")),
            "previous_modified_at": parse_moment(result.get("dateLastModified"))}  # fmt: skip


@dataclass(frozen=True)
class Refused:
    """A discrepancy row that cannot become a candidate (its LMS value cannot be written), and why."""

    row_key: str
    lms_student_id: str
    sis_student_id: str
    sis_line_item_id: str
    sis_result_id: str | None
    problem: str

    @classmethod
    def from_row(cls, row: Mapping, problem: str) -> Refused:
        return cls(row["row_key"], row["lms_student_id"], row["sis_student_id"], row["sis_line_item_id"],
                   as_text(row.get("sis_result_id")), problem)  # fmt: skip


def candidates(rows: Iterable[Mapping]) -> list[Candidate | Refused]:
    """Discrepancy rows to write, each a Candidate, or Refused with the reason its value cannot be written."""
    out: list[Candidate | Refused] = []
    for row in rows:
        try:
            out.append(Candidate.from_row(row))
        except ValueError as err:
            out.append(Refused.from_row(row, str(err)))
    return out


def when_text(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def stamp_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_moment(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO string or a timestamp; None when absent or unreadable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    stamp = pd.to_datetime(value, utc=True, errors="coerce")
    return None if pd.isna(stamp) else stamp.to_pydatetime()


def as_text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)


def as_number(value: object) -> float | None:
    if value is None or value is pd.NA or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def join_parts(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None
