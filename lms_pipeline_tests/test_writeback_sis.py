"""The write-back loop (lms_pipeline.writeback.WriteBack) against the SIS simulator over real HTTP on 127.0.0.1, one
vendor deviation at a time, its journal kept in memory as the warehouse would receive it (flush by flush)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from lms_pipeline.providers.oneroster.client import READ_SCOPES, WRITE_SCOPE, OneRosterClient
from lms_pipeline.providers.oneroster.sis_simulator import SisSimulatorApp
from lms_pipeline.providers.oneroster.sis_world import SisSpec, SisWorld
from lms_pipeline.simulator import World, WorldSpec
from lms_pipeline.simulator.server import Router, serve_in_thread
from lms_pipeline.writeback import MAX_CONNECTION_FAILURES, Journal, WriteBack
from lms_pipeline.writeback_rules import Candidate, minted_result_id, past_writes
from lms_pipeline_tests.test_sis_oneroster import FAST, SCHEME, SECRET

DAY = date(2026, 9, 8)


@dataclass
class Sis:
    base: str
    app: SisSimulatorApp
    world: SisWorld

    def client(self, secret: str = SECRET) -> OneRosterClient:
        return OneRosterClient("sis1", self.base, "client-1", secret, scopes=READ_SCOPES + (WRITE_SCOPE,),
                               headers={"X-Simulated-Date": DAY.isoformat()}, retry=FAST, page_size=50)  # fmt: skip

    def puts(self) -> list[str]:
        return [e["path"].rsplit("/", 1)[1] for e in self.app.request_log if e["method"] == "PUT"]

    def result(self, sourced_id: str) -> dict | None:
        return next((r for r in self.world.results(DAY) if r["sourcedId"] == sourced_id), None)


class Recorder:
    """The journal's sink: each flush as the warehouse would get it."""

    def __init__(self) -> None:
        self.flushes: list[list[dict]] = []

    def __call__(self, rows: list[dict]) -> None:
        self.flushes.append(list(rows))

    @property
    def rows(self) -> list[dict]:
        return [row for flush in self.flushes for row in flush]

    def outcomes(self) -> dict[str, str]:
        """row_key -> its last outcome."""
        return {r["row_key"]: r["outcome"] for r in self.rows if r["phase"] == "outcome"}

    def as_log(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows).assign(dry_run=False, run_id="earlier-run")


@pytest.fixture(scope="module")
def lms_world() -> World:
    return World(WorldSpec("wb-sis-lms", seed=4, n_courses=12, n_students=300))


@pytest.fixture
def sis(lms_world: World) -> Iterator[Sis]:
    world = SisWorld(SisSpec("sis1"), lms_world, lambda _: SCHEME)
    app = SisSimulatorApp([world], {"sis1": ("client-1", SECRET)})
    with serve_in_thread(Router({"sis": app})) as base_url:
        yield Sis(f"{base_url}/sis/sis1", app, world)


def updates(world: SisWorld, n: int) -> list[Candidate]:
    """Rows whose LMS grade (newer than the SIS result) differs from an active points result."""
    items = {li["sourcedId"]: li for li in world.line_items(DAY)}
    picked = [r for r in world.results(DAY) if r["status"] == "active" and r.get("score") is not None][:n]
    return [Candidate(f"lms|update|{r['sourcedId']}", f"stu-{r['student']['sourcedId'][4:]}",
                      r["student"]["sourcedId"], r["lineItem"]["sourcedId"], r["sourcedId"],
                      {"scoreStatus": "fully graded",
                       "score": items[r["lineItem"]["sourcedId"]]["resultValueMax"] / 2 + 0.25},
                      pd.Timestamp(r["dateLastModified"]).to_pydatetime() + timedelta(hours=1))
            for r in picked]  # fmt: skip


def creations(world: SisWorld, n: int) -> list[Candidate]:
    """Rows for (line item, student) pairs the SIS has no result for."""
    taken = {(r["lineItem"]["sourcedId"], r["student"]["sourcedId"]) for r in world.results(DAY)}
    item = next(li for li in world.line_items(DAY) if li.get("resultValueMax"))
    users = [u["sourcedId"] for u in world.users(DAY) if (item["sourcedId"], u["sourcedId"]) not in taken][:n]
    return [Candidate(f"lms|create|{u}", f"stu-{u[4:]}", u, item["sourcedId"], None,
                      {"scoreStatus": "fully graded", "score": 1.5}, datetime(2026, 9, 8, tzinfo=UTC))
            for u in users]  # fmt: skip


def sync(sis: Sis, todo: list, *, dry_run: bool = False, past: pd.DataFrame | None = None, secret: str = SECRET):  # noqa: ANN201
    recorder = Recorder()
    with sis.client(secret) as c:
        journal = Journal(recorder, clock=lambda: datetime.now(UTC))
        summary = WriteBack(c, journal, dry_run=dry_run, past=past_writes(past) if past is not None else {}).run(todo)
    return recorder, summary


@pytest.mark.parametrize("put_status", [200, 204])
def test_a_put_answered_200_or_204_by_a_vendor_is_a_success(sis: Sis, put_status: int) -> None:
    sis.world.switch(put_status=put_status)
    todo = updates(sis.world, 3) + creations(sis.world, 3)
    recorder, summary = sync(sis, todo)
    assert summary.outcomes == Counter(updated=3, created=3)
    assert {r["http_status"] for r in recorder.rows if r["phase"] == "outcome"} == {put_status}
    for c in todo:
        result = sis.result(c.sis_result_id or minted_result_id("sis1", *c.pair))
        assert result["score"] == c.desired["score"] and result["student"]["sourcedId"] == c.sis_student_id


def test_every_intent_is_stored_before_the_sis_receives_its_write(sis: Sis) -> None:
    recorder, seen = Recorder(), []

    def check(world: SisWorld, sourced_id: str | None, body: object) -> None:
        seen.append(any(r["phase"] == "intent" and r["sis_result_id"] == sourced_id for r in recorder.rows))

    sis.app.before_write = check
    todo = updates(sis.world, 25) + creations(sis.world, 25)  # more than one batch
    with sis.client() as c:
        summary = WriteBack(c, Journal(recorder, clock=lambda: datetime.now(UTC)), dry_run=False).run(todo)
    assert summary.outcomes == Counter(updated=25, created=25)
    assert len(seen) == 50 and all(seen)
    assert len(recorder.flushes) >= 4  # intents before each batch's writes, outcomes after them


def test_a_409_on_create_is_journaled_and_the_pair_read_again_so_the_registrars_result_is_kept(sis: Sis) -> None:
    """The spec has no 409 (§9.1); some gradebooks refuse a second result for a pair. Here a registrar enters a
    grade between the write-back's lookup and its PUT."""
    sis.world.switch(conflict_on_duplicate=True)
    [row] = creations(sis.world, 1)
    registrar = {"sourcedId": "registrar-1", "status": "active", "lineItem": {"sourcedId": row.sis_line_item_id,
                 "type": "lineItem"}, "student": {"sourcedId": row.sis_student_id, "type": "user"},
                 "scoreStatus": "fully graded", "score": 9.0, "scoreDate": "2026-09-08",
                 "dateLastModified": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip

    def registrar_enters_a_grade(world: SisWorld, sourced_id: str | None, body: object) -> None:
        if sis.result("registrar-1") is None:
            world.write(registrar)

    sis.app.before_write = registrar_enters_a_grade
    recorder, summary = sync(sis, [row])
    assert [(r["phase"], r["outcome"]) for r in recorder.rows] == [
        ("intent", "pending"), ("outcome", "conflict"), ("outcome", "skipped_sis_newer")]  # fmt: skip
    assert recorder.rows[1]["http_status"] == 409 and "registrar-1" in recorder.rows[1]["detail"]
    assert sis.result("registrar-1")["score"] == 9.0 and sis.result(minted_result_id("sis1", *row.pair)) is None
    assert summary.failed == 0


def test_a_write_lost_on_a_dropped_connection_is_written_again_once_and_its_intent_closed(sis: Sis) -> None:
    sis.world.switch(drop_after_writes=1, drop_applies_write=False)
    todo = updates(sis.world, 2)
    first, summary = sync(sis, todo)
    assert summary.failed == 1 and first.outcomes() == {todo[0].row_key: "updated", todo[1].row_key: "failed"}
    failed = next(r for r in first.rows if r["outcome"] == "failed")
    assert "SIS 'sis1'" in failed["detail"] and "may or may not have applied it" in failed["detail"]
    assert failed["http_status"] is None and sis.result(todo[1].sis_result_id)["score"] != todo[1].desired["score"]

    sis.world.switch()
    before = len(sis.puts())
    second, summary = sync(sis, todo, past=first.as_log())
    assert sis.puts()[before:] == [todo[1].sis_result_id]  # only the lost write, once
    closing = [r for r in second.rows if r["operation_id"] == failed["operation_id"]]
    assert [r["outcome"] for r in closing] == ["not_applied"]
    assert second.outcomes() == {todo[0].row_key: "already_current", todo[1].row_key: "updated"}
    assert sis.result(todo[1].sis_result_id)["score"] == todo[1].desired["score"]


def test_a_sis_that_stays_down_stops_the_sync_and_closes_the_intents_it_never_sent(sis: Sis) -> None:
    sis.world.switch(drop_after_writes=1, drops=100, drop_applies_write=False)
    todo = updates(sis.world, 15)
    recorder, summary = sync(sis, todo)
    assert len(sis.puts()) == 1 + MAX_CONNECTION_FAILURES
    assert summary.stopped and "could not reach it" in summary.stopped
    assert summary.outcomes["failed"] == MAX_CONNECTION_FAILURES
    assert summary.outcomes["not_applied"] == summary.not_attempted == 15 - 1 - MAX_CONNECTION_FAILURES
    intents = {r["operation_id"] for r in recorder.rows if r["phase"] == "intent"}
    closed = {r["operation_id"] for r in recorder.rows if r["phase"] == "outcome"}
    assert intents <= closed  # no intent is left open: each was answered, failed or never sent


def test_refused_credentials_stop_the_sync_at_the_first_row_without_repeating_the_secret(sis: Sis) -> None:
    wrong = "wrong-" + SECRET
    recorder, summary = sync(sis, updates(sis.world, 5), secret=wrong)
    assert summary.failed == 1 and summary.not_attempted == 4 and "could not reach it" in summary.stopped
    [row] = recorder.rows
    assert "SIS 'sis1'" in row["detail"] and "HTTP 401" in row["detail"]
    assert SECRET not in row["detail"] + summary.stopped and not sis.puts()


def test_a_dry_run_reads_but_sends_no_write(sis: Sis) -> None:
    todo = updates(sis.world, 3) + creations(sis.world, 2)
    recorder, summary = sync(sis, todo, dry_run=True)
    assert summary.outcomes == Counter(would_write=5) and not sis.puts()
    assert {r["phase"] for r in recorder.rows} == {"outcome"}


def test_a_lost_answer_is_confirmed_by_the_next_run_even_when_no_row_asks_for_that_pair_any_more(sis: Sis) -> None:
    """After a crash the next reconciliation may show the written grade as a match: no candidate reaches the pair,
    yet its open intent is closed by asking the SIS."""
    sis.world.switch(drop_after_writes=1, drop_applies_write=True)
    todo = updates(sis.world, 2)
    first, _ = sync(sis, todo)
    lost = next(r for r in first.rows if r["outcome"] == "failed")
    sis.world.switch()
    before = len(sis.puts())
    second, summary = sync(sis, [], past=first.as_log())
    assert len(sis.puts()) == before
    [row] = second.rows
    assert (row["operation_id"], row["outcome"], row["row_key"]) == (lost["operation_id"], "confirmed", todo[1].row_key)
    assert "holds the value run earlier-run wrote" in row["detail"] and summary.failed == 0
