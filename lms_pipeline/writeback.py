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

import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime

import httpx
import pandas as pd

from lms_pipeline.providers.http import LmsAuthError, LmsClientError
from lms_pipeline.providers.oneroster.client import FilterValueError, OneRosterClient
from lms_pipeline.schemas import validate
from lms_pipeline.warehouse import Warehouse, table
from lms_pipeline.writeback_rules import (
    WRITABLE,
    Candidate,
    Decision,
    PastWrite,
    Refused,
    candidates,
    decide,
    holds,
    identity_problem,
    is_own_write,
    minted_result_id,
    past_writes,
    previous,
    when_text,
)

WRITE_SUCCESS = frozenset({201, 200, 204})  # 201 is the spec's (§9.1); 200 and 204 are vendor variants
BATCH = 20  # rows looked up and decided before their writes are journaled and sent
MAX_CONNECTION_FAILURES = 5  # consecutive rows failing to reach the SIS: it is down, stop asking
LOG_COLUMNS = ("operation_id", "phase", "attempted_at", "row_key", "lms_student_id", "sis_student_id",
               "sis_line_item_id", "sis_result_id", "method", "http_status", "score_status_written", "score_written",
               "text_score_written", "previous_score", "previous_text_score", "previous_modified_at", "outcome",
               "detail")  # fmt: skip


@dataclass
class Summary:
    """What a sync did: outcome rows by outcome, and why it stopped early (if it did)."""

    outcomes: Counter = field(default_factory=Counter)
    stopped: str | None = None
    not_attempted: int = 0

    @property
    def failed(self) -> int:
        return self.outcomes["failed"]


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
            detail = (f"SIS {self.sis!r} holds the value run {past.run_id} wrote at {when_text(past.attempted_at)}; "
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


def write_back_day(
    store: Warehouse,
    open_client: Callable[[], AbstractContextManager[OneRosterClient]],
    sis_id: str,
    connection_id: str,
    day: date,
    run_id: str,
    *,
    dry_run: bool,
) -> tuple[Summary, int]:
    """Write the day's differing LMS grades (``grade_discrepancies`` rows the LMS should win, with a grade or an
    excuse) to the SIS, journaling into ``grade_sync_log`` as it goes; the journal is published even when a write
    raises, so the analysts' copy shows every attempt. Returns the summary and how many rows were candidates."""
    report = store.read_partition("grade_discrepancies", connection_id, day)
    todo = report[report["status"].isin(WRITABLE) & report["lms_grade_status"].isin(["graded", "excused"])]
    part = {"connection_id": connection_id, "snapshot_date": pd.Timestamp(day), "run_id": run_id, "sis_id": sis_id,
            "dry_run": dry_run}  # fmt: skip

    def append(rows: list[dict]) -> None:
        frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS)).assign(**part)
        store.append("grade_sync_log", validate("grade_sync_log", frame))

    past = past_writes(store.query(
        f"SELECT * FROM {table('grade_sync_log')} WHERE connection_id = ? AND sis_id = ? AND phase IS NOT NULL",
        [connection_id, sis_id]))  # fmt: skip
    journal = Journal(append, clock=lambda: datetime.now(UTC))
    try:
        with open_client() as client:
            summary = WriteBack(client, journal, dry_run=dry_run, past=past).run(candidates(todo.to_dict("records")))
    finally:
        if journal.summary.outcomes:
            store.publish_partition(connection_id, day, ["grade_sync_log"])
    return summary, len(todo)
