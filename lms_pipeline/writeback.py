"""The rules of the opt-in grade write-back to a OneRoster 1.2 gradebook, apart from Dagster (docs/operators.md).

For each discrepancy row where the LMS grade should win (``missing_in_sis``, ``score_mismatch``):

* **Identity.** The SIS result is found by exact lookup: ``GET /results/{sourcedId}`` when the reconciliation knew
  the result, else a listing filtered on the pair, of which only results naming both the line item and the student
  count (the spec leaves ``filter`` to the vendor, docs/providers.md §9.1, and some return every result). What came
  back must name the row's student and line item; when it does not, or the pair has several results, nothing is
  written (``identity_unproven``, the reason in ``detail``).
* **Compare-and-set.** A result already holding the LMS value is ``already_current``; an active result modified
  after the LMS grade is the registrar's and is kept (``skipped_sis_newer``), unless the journal shows that value
  and time are this pipeline's own write. A PUT keeps the result's other fields (late, missing, comment).
* **Creation.** ``PUT /results/{id}`` at an id minted from (SIS, line item, student), so a re-run after a crash PUTs
  the same id and cannot duplicate (OneRoster 1.2 has no ``POST /results``). 201 with no body is the spec's success;
  200 and 204 are accepted vendor variants; a 409 (vendor) is journaled as ``conflict`` and the pair read again.
* **Journal** (grade_sync_log; its outcomes are schemas.SYNC_OUTCOMES). Before each write an ``intent`` row
  (outcome ``pending``), stored in the warehouse before the write is sent; after it an ``outcome`` row with the same
  ``operation_id``. Rows are looked up in batches whose journal rows are stored together (one DuckDB append per
  batch, not per row), so a crash leaves every attempted write visible and loses at most one batch of outcomes. A
  later run reconciles an intent whose answer was never read with the SIS (``confirmed`` when the SIS holds its
  value, else ``not_applied``). Every per-row error is a ``failed`` row naming the SIS.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd

from lms_pipeline.providers.http import LmsAuthError, LmsClientError
from lms_pipeline.providers.oneroster.client import FilterValueError, OneRosterClient, result_pair

WRITABLE = ("missing_in_sis", "score_mismatch")
WRITE_SUCCESS = frozenset({201, 200, 204})  # 201 is the spec's (§9.1); 200 and 204 are vendor variants
# A Result allows no other properties (§9.1): a PUT body carries only these.
RESULT_FIELDS = ("sourcedId", "status", "dateLastModified", "metadata", "lineItem", "student", "class", "scoreScale",
                 "scoreStatus", "score", "textScore", "scoreDate", "comment", "learningObjectiveSet", "inProgress",
                 "incomplete", "late", "missing")  # fmt: skip
REF_FIELDS = ("lineItem", "student", "class", "scoreScale")
BATCH = 20  # rows looked up and decided before their writes are journaled and sent
CLOCK_SKEW = timedelta(minutes=5)  # the SIS's clock may trail ours: its modification time of our write may too
MAX_CONNECTION_FAILURES = 5  # consecutive rows failing to reach the SIS: it is down, stop asking
LOG_COLUMNS = ("operation_id", "phase", "attempted_at", "row_key", "lms_student_id", "sis_student_id",
               "sis_line_item_id", "sis_result_id", "method", "http_status", "score_status_written", "score_written",
               "text_score_written", "previous_score", "previous_text_score", "previous_modified_at", "outcome",
               "detail")  # fmt: skip


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
            sis_line_item_id=row["sis_line_item_id"], sis_result_id=_text(row.get("sis_result_id")),
            desired=desired_fields(row), graded_at=_moment(row.get("lms_graded_at")),
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


@dataclass
class Summary:
    """What a sync did: outcome rows by outcome, and why it stopped early (if it did)."""

    outcomes: Counter = field(default_factory=Counter)
    stopped: str | None = None
    not_attempted: int = 0

    @property
    def failed(self) -> int:
        return self.outcomes["failed"]


def desired_fields(row: Mapping) -> dict:
    """The result fields the LMS grade asks for: points on the line item's scale, a letter, or exempt."""
    if row["lms_grade_status"] == "excused":
        return {"scoreStatus": "exempt"}
    if bool(row["letter_scale"]):
        letter = _text(row.get("lms_letter"))
        if letter is None:
            raise ValueError("letter line item, but the LMS grade has no letter (no grading scheme for the course)")
        return {"scoreStatus": "fully graded", "textScore": letter}
    percent, top = _number(row.get("lms_percent")), _number(row.get("sis_result_max"))
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
    modified = _moment(result.get("dateLastModified"))
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
        body = {"sourcedId": new_id, "status": "active", "dateLastModified": _stamp(now),
                "lineItem": ref("lineItem", candidate.sis_line_item_id),
                "student": ref("student", candidate.sis_student_id), **candidate.desired,
                "scoreDate": now.date().isoformat()}  # fmt: skip
        return Decision(None, _join(f"no result for the pair{found}", "created at a minted id"), new_id, body, True)
    if holds(current, candidate.desired):
        return Decision("already_current", found.removeprefix("; ") or None)
    modified = _moment(current.get("dateLastModified"))
    newer = (current.get("status") == "active" and candidate.graded_at is not None and modified is not None
             and modified > candidate.graded_at)  # fmt: skip
    detail = None
    if newer and is_own_write(current, own):
        detail = f"the SIS value is this pipeline's write of {_when(own.attempted_at)}, not a registrar's"
    elif newer:
        return Decision("skipped_sis_newer", "SIS result modified after the LMS grade: kept")
    body = {k: v for k, v in current.items() if k in RESULT_FIELDS}
    body.update({key: ref(key, body[key]["sourcedId"]) for key in REF_FIELDS if isinstance(body.get(key), dict)})
    body.update(candidate.desired, status="active", dateLastModified=_stamp(now), scoreDate=now.date().isoformat())
    return Decision(None, _join(detail, found.removeprefix("; ") or None), current["sourcedId"], body, False)


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
        values = {"scoreStatus": row.score_status_written, "score": _number(row.score_written),
                  "textScore": _text(row.text_score_written)}  # fmt: skip
        out[(row.sis_line_item_id, row.sis_student_id)] = PastWrite(
            row.operation_id, row.run_id, row.row_key, row.lms_student_id, row.sis_student_id, row.sis_line_item_id,
            row.sis_result_id, {k: v for k, v in values.items() if v is not None},
            pd.Timestamp(row.attempted_at).to_pydatetime(), state,
        )  # fmt: skip
    return out


class Journal:
    """grade_sync_log rows, kept until ``flush`` hands them to ``sink`` (the warehouse) in one append. The sync
    flushes before it sends any write, so every write's intent is stored before the SIS sees it, and again after
    each batch of writes, so a crash loses at most one batch of outcomes (the next run asks the SIS for them)."""

    def __init__(self, sink: Callable[[list[dict]], None], clock: Callable[[], datetime]) -> None:
        self.sink, self.clock = sink, clock
        self.summary = Summary()
        self._rows: list[dict] = []

    def add(self, phase: str, operation_id: str, outcome: str, who: Candidate | PastWrite | Refused,
            **fields: object) -> None:  # fmt: skip
        values = getattr(who, "desired", None) or getattr(who, "values", None) or {}
        row = {column: None for column in LOG_COLUMNS}
        row.update(operation_id=operation_id, phase=phase, attempted_at=self.clock(), row_key=who.row_key,
                   lms_student_id=who.lms_student_id, sis_student_id=who.sis_student_id,
                   sis_line_item_id=who.sis_line_item_id, score_status_written=values.get("scoreStatus"),
                   score_written=values.get("score"), text_score_written=values.get("textScore"), outcome=outcome,
                   **fields)  # fmt: skip
        self._rows.append(row)
        if phase == "outcome":
            self.summary.outcomes[outcome] += 1

    def flush(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self.sink(rows)


def previous(result: dict | None) -> dict:
    """The log's ``previous_*`` columns: the SIS value a write replaced (or would have)."""
    result = result or {}
    return {"previous_score": _number(result.get("score")), "previous_text_score": _text(result.get("textScore")),
            "previous_modified_at": _moment(result.get("dateLastModified"))}  # fmt: skip


@dataclass(frozen=True)
class _Plan:
    """A write decided and journaled as an intent, not sent yet."""

    candidate: Candidate
    current: dict | None
    decision: Decision
    operation_id: str
    after_conflict: bool


class WriteBack:
    """One sync of candidates to one SIS through ``client``, journaled to ``journal``.

    Rows go in batches of BATCH: look up and decide each (reads only), store the batch's journal rows (the intents
    of its writes among them), send its writes, store their outcomes. A crash leaves every write sent with its
    intent stored; the window between a result's lookup and its PUT is one batch of writes at most (OneRoster has
    no conditional PUT to close it).
    """

    def __init__(
        self,
        client: OneRosterClient,
        journal: Journal,
        *,
        dry_run: bool,
        past: Mapping[tuple[str, str], PastWrite] | None = None,
    ) -> None:
        self.client, self.journal, self.dry_run = client, journal, dry_run
        self.past = dict(past or {})
        self.sis = client.sis_id
        self._unreachable = 0

    def run(self, candidates: Iterable[Candidate | Refused]) -> Summary:
        """Sync every candidate, then reconcile the unanswered writes of pairs no candidate reached. Stops early
        only when the SIS refuses the credentials or cannot be reached for several rows in a row."""
        queue: deque[tuple[Candidate | Refused, bool]] = deque((c, False) for c in candidates)
        reached = {c.pair for c, _ in queue if isinstance(c, Candidate)}
        summary = self.journal.summary
        try:
            for _ in range(2 * len(queue) + 1):  # each row once, plus at most one retry after a 409
                if not queue:
                    break
                batch = [queue.popleft() for _ in range(min(BATCH, len(queue)))]
                plans: list[_Plan] = []
                for index, (item, after_conflict) in enumerate(batch):
                    if isinstance(item, Refused):
                        self._failed(item, _new_op(), f"SIS {self.sis!r}: {item.problem}")
                    elif self._stop(self._row(item, lambda c=item, a=after_conflict, p=plans: self._plan(c, a, p))):
                        summary.not_attempted = len(queue) + len(batch) - index - 1 + len(plans)
                        self._unsent(plans)
                        return summary
                self.journal.flush()  # every intent of the batch is stored before its write is sent
                for index, plan in enumerate(plans):
                    if self._stop(self._row(plan.candidate, lambda p=plan: self._send(p, queue))):
                        summary.not_attempted = len(queue) + len(plans) - index - 1
                        self._unsent(plans[index + 1 :])
                        return summary
                self.journal.flush()
            if not self.dry_run:
                for pair, past in list(self.past.items()):
                    if pair not in reached and past.state == "unanswered":
                        self._row(past, lambda p=past: self._reconcile(p, self.client.get_result(p.sis_result_id)))
            return summary
        finally:
            self.journal.flush()

    def _stop(self, unreachable: BaseException | None) -> bool:
        """Count rows in a row that could not reach the SIS; True (and the reason noted) when it is time to stop."""
        self._unreachable = self._unreachable + 1 if unreachable else 0
        if isinstance(unreachable, LmsAuthError) or self._unreachable >= MAX_CONNECTION_FAILURES:
            self.journal.summary.stopped = (f"stopped after {self._unreachable} row(s) in a row could not reach it "
                                            f"({unreachable})")  # fmt: skip
            return True
        return False

    def _unsent(self, plans: list[_Plan]) -> None:
        """Close the intents of writes the stopped loop never sent."""
        for plan in plans:
            self.journal.add("outcome", plan.operation_id, "not_applied", plan.candidate, method="PUT",
                             sis_result_id=plan.decision.result_id, detail=f"SIS {self.sis!r}: not sent: the sync "
                             "stopped before it", **previous(plan.current))  # fmt: skip

    # ---- one row ---------------------------------------------------------------------------------------------
    def _row(self, who: Candidate | PastWrite, step: Callable[[], None]) -> BaseException | None:
        """Run one row's step; any error becomes its ``failed`` row, naming the SIS. Returns the error when the SIS
        could not be reached at all (a connection failure, or credentials it refused), else None."""
        try:
            step()
        except _NoAnswer as err:  # the PUT was sent: its intent ends failed, the SIS may still have applied it
            self._failed(who, err.operation_id, str(err.__cause__), err.result_id)
            return err.__cause__ if _unreachable(err.__cause__) else None
        except (LmsClientError, FilterValueError, httpx.HTTPError, ValueError, KeyError, TypeError) as err:
            self._failed(who, _new_op(), _named(self.sis, err))
            return err if _unreachable(err) else None
        return None

    def _plan(self, candidate: Candidate, after_conflict: bool, plans: list[_Plan]) -> None:
        """Look up and decide one row: journal its outcome, or its intent and add the write to ``plans``."""
        past = self.past.get(candidate.pair)
        current, found, problem = self._lookup(candidate)
        if problem is not None:
            detail = f"SIS {self.sis!r}: {problem}; nothing written"
            self.journal.add("outcome", _new_op(), "identity_unproven", candidate, detail=detail,
                             sis_result_id=candidate.sis_result_id)  # fmt: skip
            return
        if past is not None and past.state == "unanswered" and not self.dry_run:
            confirmed = self._reconcile(past, current, candidate)
            if confirmed and holds(current, candidate.desired):
                return  # the confirmation is this row's outcome: the SIS already holds the LMS value
            past = self.past[candidate.pair]
        decision = decide(current, candidate, new_id=minted_result_id(self.sis, *candidate.pair), own=past,
                          now=self.journal.clock(), ref=self.client.ref, found=found)  # fmt: skip
        result_id = decision.result_id or (current or {}).get("sourcedId")
        if decision.outcome is not None or self.dry_run:
            outcome, method = (decision.outcome, None) if decision.outcome else ("would_write", "PUT")
            self.journal.add("outcome", _new_op(), outcome, candidate, method=method, sis_result_id=result_id,
                             detail=decision.detail, **previous(current))  # fmt: skip
            return
        plan = _Plan(candidate, current, decision, _new_op(), after_conflict)
        verb = "create" if decision.creates else "replace"
        self.journal.add("intent", plan.operation_id, "pending", candidate, method="PUT", sis_result_id=result_id,
                         detail=f"{verb} result {result_id}", **previous(current))  # fmt: skip
        plans.append(plan)

    def _lookup(self, candidate: Candidate) -> tuple[dict | None, str, str | None]:
        """(the pair's result or None, how it was found, why its identity is unproven or None)."""
        line_item, student = candidate.pair
        found = ""
        if candidate.sis_result_id is not None:
            current = self.client.get_result(candidate.sis_result_id)
            if current is not None:
                return current, "", identity_problem(current, line_item, student, candidate.sis_result_id)
            found = f"; result {candidate.sis_result_id} is gone from the SIS"
        lookup = self.client.find_pair(line_item, student)
        if lookup.listed > len(lookup.matches):
            found += (f"; the SIS ignored the filter: it listed {lookup.listed} results, {len(lookup.matches)} of "
                      "them for this pair")  # fmt: skip
        if len(lookup.matches) > 1:
            ids = ", ".join(sorted(str(r.get("sourcedId")) for r in lookup.matches))
            return None, found, f"{len(lookup.matches)} results for line item {line_item} and student {student} ({ids})"
        current = lookup.matches[0] if lookup.matches else None
        return current, found, None if current is None else identity_problem(current, line_item, student)

    def _send(self, plan: _Plan, queue: deque) -> None:
        """PUT one planned write and journal its outcome; after a 409 on a create the row goes back in the queue
        to be looked up again (once)."""
        decision, candidate = plan.decision, plan.candidate
        sent = {"method": "PUT", "sis_result_id": decision.result_id, **previous(plan.current)}
        try:
            answer = self.client.put_result(decision.result_id, decision.body)
        except LmsClientError as err:
            raise _NoAnswer(plan.operation_id, decision.result_id) from err
        if answer.status_code in WRITE_SUCCESS:
            outcome = "created" if decision.creates else "updated"
            self.journal.add("outcome", plan.operation_id, outcome, candidate, http_status=answer.status_code,
                             detail=decision.detail, **sent)  # fmt: skip
            return
        detail = f"SIS {self.sis!r}: PUT answered HTTP {answer.status_code}" + (
            f": {answer.description}" if answer.description else "")  # fmt: skip
        if answer.status_code == 409 and decision.creates and not plan.after_conflict:
            # A vendor's refusal of a second result for the pair (the spec has no 409, §2.8): one was created since
            # the lookup. Read the pair again and decide on what is there now.
            self.journal.add("outcome", plan.operation_id, "conflict", candidate, http_status=409, detail=detail,
                             **sent)  # fmt: skip
            queue.appendleft((candidate, True))
            return
        self.journal.add("outcome", plan.operation_id, "failed", candidate, http_status=answer.status_code,
                         detail=detail, **sent)  # fmt: skip

    def _reconcile(self, past: PastWrite, current: dict | None, candidate: Candidate | None = None) -> bool:
        """Close an intent whose answer was never read: True when the SIS holds what it wrote (``confirmed``)."""
        extra = {"method": "PUT", "sis_result_id": past.sis_result_id, **previous(current)}
        landed = current is not None and current.get("sourcedId") == past.sis_result_id and is_own_write(current, past)
        if landed:
            detail = (f"SIS {self.sis!r} holds the value run {past.run_id} wrote at {_when(past.attempted_at)}; "
                      "its answer had not been read")  # fmt: skip
        else:
            detail = f"SIS {self.sis!r} does not hold the value run {past.run_id} tried to write: it did not land"
        self.journal.add("outcome", past.operation_id, "confirmed" if landed else "not_applied", candidate or past,
                         detail=detail, **extra)  # fmt: skip
        self.past[(past.sis_line_item_id, past.sis_student_id)] = replace(
            past, state="landed" if landed else "not_landed"
        )
        return landed

    def _failed(
        self, who: Candidate | PastWrite | Refused, operation_id: str, detail: str, result_id: str | None = None
    ) -> None:
        self.journal.add("outcome", operation_id, "failed", who, detail=detail,
                         sis_result_id=result_id or who.sis_result_id, method="PUT" if result_id else None)  # fmt: skip


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
                   _text(row.get("sis_result_id")), problem)  # fmt: skip


def candidates(rows: Iterable[Mapping]) -> list[Candidate | Refused]:
    """Discrepancy rows to write, each a Candidate, or Refused with the reason its value cannot be written."""
    out: list[Candidate | Refused] = []
    for row in rows:
        try:
            out.append(Candidate.from_row(row))
        except ValueError as err:
            out.append(Refused.from_row(row, str(err)))
    return out


class _NoAnswer(Exception):
    """A PUT got no answer: its intent's operation ends ``failed`` (the SIS may still have applied it)."""

    def __init__(self, operation_id: str, result_id: str) -> None:
        super().__init__(operation_id)
        self.operation_id, self.result_id = operation_id, result_id


def _unreachable(err: BaseException | None) -> bool:
    """The SIS refused the credentials, or the connection failed before any answer."""
    return isinstance(err, LmsAuthError) or isinstance(getattr(err, "__cause__", None), httpx.TransportError)


def _named(sis: str, err: BaseException) -> str:
    text = str(err)
    return text if f"SIS {sis!r}" in text else f"SIS {sis!r}: {type(err).__name__}: {text}"


def _new_op() -> str:
    return uuid.uuid4().hex


def _join(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None


def _when(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _moment(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO string or a timestamp; None when absent or unreadable."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    stamp = pd.to_datetime(value, utc=True, errors="coerce")
    return None if pd.isna(stamp) else stamp.to_pydatetime()


def _text(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA else str(value)


def _number(value: object) -> float | None:
    if value is None or value is pd.NA or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
