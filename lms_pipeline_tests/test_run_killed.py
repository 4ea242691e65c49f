"""A real Dagster run killed with SIGKILL while it writes leaves every partition whole, and the next run repairs it.

An OOM kill or ``kill -9`` gives a run no chance to roll back: what protects the warehouse is that each asset
replaces its partition in one DuckDB transaction. Here the run is the ``dagster asset materialize`` CLI for the roster
group (the progress assets would read 6,000 courses one by one), with the in-process executor so that the run process
itself is the writer (and a run costs one Python start, not one per step). It is killed at moments chosen from what
it does on disk, not by sleeping:

- the warehouse file lock is held after the sync plan was logged and no WAL exists: the raw pages are being
  inserted, not yet committed;
- the WAL exists: a commit (raw pages, then rosters and edges) is being written, or, once the WAL has stopped
  growing for a moment, finished and being checkpointed into the database file;
- a staging folder of the analysts' copy exists: a day's new version is being written, before its link is swapped.

At each moment the whole process group is frozen (SIGSTOP), the moment is checked again, then the group is killed
(SIGKILL). If the window was missed (2 cores, other work running), the moment is tried again with a fresh run.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import BinaryIO

import pytest

from lms_pipeline.published import files_root
from lms_pipeline_tests.dagster_processes import (
    BIN,
    MODULE,
    DagsterSandbox,
    ProcessGroups,
    Started,
    lock_holders,
    marked_processes,
    partition_digest,
    process_groups,
    query,
    stored_edges,
    wait_for,
)

CONNECTION = "big-district"
DAY_1, DAY_2 = date(2026, 9, 1), date(2026, 9, 2)
# Big enough that each write holds the lock ~0.1 s (measured), small enough that a run takes ~12 s on 2 cores.
WORLD = {"seed": 7, "n_courses": 6000, "n_students": 50_000, "missing_timestamps_share": 0}
IN_PROCESS = '{"execution": {"config": {"in_process": {}}}}'
# Tables written together in one transaction, in the order the run writes them.
RAW = ("raw_course_pages", "sync_log")
ROSTER = ("course_rosters", "course_student_edges", "class_student_edges")
CHANGES = ("enrollment_changes", "enrollment_change_sets")
TABLES = RAW + ROSTER + CHANGES
ATTEMPTS = 3
POLL_SECONDS = 0.0005


class Disk:
    """What the run is doing, seen from outside: the writer lock, DuckDB's WAL, the publish staging folder."""

    def __init__(self, sandbox: DagsterSandbox) -> None:
        self.lock = Path(f"{sandbox.db}.lock")
        self.wal = Path(f"{sandbox.db}.wal")
        self.root = sandbox.root
        self.publish_staging = files_root(sandbox.db) / "staging"
        self._wal_size: tuple[int, float] | None = None  # (size, since when) while the WAL does not grow
        self._left_over: set[Path] = set()

    def new_run(self) -> None:
        """Forget what earlier runs left behind: a publish killed before its rename leaves its staging folder."""
        self._wal_size = None
        self._left_over = set(self._staging())

    def _staging(self) -> list[Path]:
        return list(self.publish_staging.glob("*")) if self.publish_staging.exists() else []

    def wal_paused(self) -> bool:
        """The WAL exists and has not grown for 5 ms while the lock is held: later in the commit than
        ``committing`` usually hits, or already in the checkpoint that folds it into the database file on close."""
        size = self._wal_bytes() if self.locked() else 0
        now = time.monotonic()
        if not size or self._wal_size is None or self._wal_size[0] != size:
            self._wal_size = (size, now) if size else None
            return False
        return now - self._wal_size[1] >= 0.005

    def _wal_bytes(self) -> int:
        try:
            return self.wal.stat().st_size
        except FileNotFoundError:
            return 0

    def locked(self) -> bool:
        return bool(lock_holders(self.lock))

    def writing_uncommitted(self) -> bool:
        return self.locked() and not self.wal.exists()

    def committing(self) -> bool:
        return self.wal.exists() and self.locked()

    def publishing(self) -> bool:
        return self.locked() and bool(set(self._staging()) - self._left_over)


@dataclass(frozen=True)
class KillPoint:
    name: str
    after: str  # run log text that precedes the moment, so an earlier lock episode is not mistaken for it
    moment: Callable[[Disk], bool]
    until: str | None = None  # run log text that follows it: once logged, the moment has passed


# raw_course_pages logs its sync plan ("<partition>: full sync: ...") before fetching; its next lock is the write.
SYNC_PLANNED = f"{CONNECTION}|{DAY_2}: "
ROSTER_STEP = 'Started execution of step "roster_snapshot"'
CHANGE_STEP = 'Started execution of step "enrollment_change_set"'
KILL_POINTS = [
    KillPoint("raw pages inserted, not committed", SYNC_PLANNED, Disk.writing_uncommitted, ROSTER_STEP),
    KillPoint("raw pages committing", SYNC_PLANNED, Disk.committing, ROSTER_STEP),
    KillPoint("raw pages committing, WAL paused", SYNC_PLANNED, Disk.wal_paused, ROSTER_STEP),
    KillPoint("rosters and edges committing", ROSTER_STEP, Disk.committing, CHANGE_STEP),
    KillPoint("analyst copy being published", CHANGE_STEP, Disk.publishing),
]


class LogWatch:
    """Which of some texts the run's log holds so far, reading only what was appended since the last look."""

    def __init__(self, log: BinaryIO, texts: list[str]) -> None:
        self.log, self.tail = log, b""
        self.pending = {text.encode() for text in texts}
        self.seen: set[str] = set()

    def update(self) -> set[str]:
        window = self.tail + self.log.read()
        found = {text for text in self.pending if text in window}
        self.pending -= found
        self.seen |= {text.decode() for text in found}
        self.tail = window[-max((len(t) for t in self.pending), default=0) :] if self.pending else b""
        return self.seen


def snapshot(db: Path, day: date) -> dict[str, tuple[int, str]]:
    return {name: partition_digest(db, name, CONNECTION, day) for name in TABLES}


def published_digest(sandbox: DagsterSandbox) -> list[dict[str, tuple[int, str]]]:
    return [snapshot(sandbox.published, day) for day in (DAY_1, DAY_2)]


def materialize(day: date) -> list[str]:
    return [str(BIN / "dagster"), "asset", "materialize", "-m", MODULE, "--select", "group:roster",
            "--partition", f"{CONNECTION}|{day}", "--config-json", IN_PROCESS]  # fmt: skip


def kill_at(groups: ProcessGroups, run: Started, point: KillPoint, disk: Disk, timeout: float = 180) -> bool:
    """Kill the run's process group at ``point``; True if it was frozen inside the moment, False if the run ended
    or the moment passed first. Either way the run is dead afterwards."""
    hit = False
    deadline = time.monotonic() + timeout
    with run.log.open("rb") as handle:
        log = LogWatch(handle, [point.after] + ([point.until] if point.until else []))
        for _ in range(int(timeout / POLL_SECONDS)):
            seen = log.update()
            if point.until in seen or run.proc.poll() is not None or time.monotonic() > deadline:
                break
            if point.after in seen and point.moment(disk):
                groups.signal_group(run, signal.SIGSTOP)
                # Still inside the moment once frozen, and still in the step it belongs to?
                hit = point.moment(disk) and point.until not in log.update()
                break
            time.sleep(POLL_SECONDS)
    groups.kill(run)
    assert wait_for(lambda: not marked_processes(groups.sandbox.marker), 15, "the killed run's processes to exit")
    return hit


def assert_whole(sandbox: DagsterSandbox, before: dict[str, tuple[int, str]], truth: set, point: str) -> dict:
    """Every transaction group of DAY_2 is either as it was before the run or complete; returns the digests."""
    after = snapshot(sandbox.db, DAY_2)
    raw_rows = query(
        sandbox.db,
        "SELECT endpoint, sum(item_count) FROM lms.raw_course_pages WHERE connection_id = ? AND snapshot_date = ? "
        "GROUP BY 1",
        [CONNECTION, DAY_2],
    )
    sync = query(
        sandbox.db,
        "SELECT courses_listed, classes_listed FROM lms.sync_log WHERE connection_id = ? AND snapshot_date = ?",
        [CONNECTION, DAY_2],
    )
    if any(after[t] != before[t] for t in RAW):
        listed = dict(raw_rows)
        assert len(sync) == 1 and (listed.get("course", 0), listed.get("class", 0)) == sync[0], (
            f"{point}: raw pages {listed} do not add up to their sync_log row {sync}"
        )
    if any(after[t] != before[t] for t in ROSTER):
        assert stored_edges(sandbox.db, CONNECTION, DAY_2) == truth, f"{point}: edges differ from the truth"
        assert after["course_rosters"][0] > 0, f"{point}: edges stored without their course_rosters"
    if any(after[t] != before[t] for t in CHANGES):
        change_set = query(
            sandbox.db,
            "SELECT current_edges, added + dropped FROM lms.enrollment_change_sets "
            "WHERE connection_id = ? AND snapshot_date = ?",
            [CONNECTION, DAY_2],
        )
        assert change_set == [(len(truth), after["enrollment_changes"][0])], (
            f"{point}: change set {change_set} does not match its {after['enrollment_changes'][0]} change rows"
        )
    return after


@pytest.mark.timeout(900)
def test_sigkill_of_a_real_run_while_it_writes_leaves_partitions_whole_and_the_next_run_succeeds(
    tmp_path: Path,
) -> None:
    sandbox = DagsterSandbox(
        tmp_path,
        DAY_1,
        [{"id": CONNECTION, "provider": "unified", "token_env": "LMS_TEST_TOKEN_KILLED",
          "options": {"full_scan_every_days": 1}, "simulator": WORLD}],
    )  # fmt: skip
    disk = Disk(sandbox)
    truth_1, truth_2 = sandbox.true_edges(CONNECTION, DAY_1), sandbox.true_edges(CONNECTION, DAY_2)
    with process_groups(sandbox) as groups:
        first = groups.run("day1", materialize(DAY_1), timeout=300)
        assert first.proc.returncode == 0, first.tail()
        assert stored_edges(sandbox.db, CONNECTION, DAY_1) == truth_1
        day_1 = snapshot(sandbox.db, DAY_1)
        published_before = published_digest(sandbox)
        outcomes: list[str] = []

        for point in KILL_POINTS:
            for attempt in range(ATTEMPTS):
                before = snapshot(sandbox.db, DAY_2)
                disk.new_run()
                run = groups.start(f"kill{KILL_POINTS.index(point)}-{attempt}", materialize(DAY_2))
                hit = kill_at(groups, run, point, disk)
                # The file opens (DuckDB replays or drops the WAL) and nothing else was touched.
                assert snapshot(sandbox.db, DAY_1) == day_1, f"{point.name}: day 1 changed"
                after = assert_whole(sandbox, before, truth_2, point.name)
                published = published_digest(sandbox)  # the analysts' copy still opens
                changed = [g[0] for g in (RAW, ROSTER, CHANGES) if any(after[t] != before[t] for t in g)]
                outcomes.append(f"{point.name} (run {attempt + 1}): {'frozen inside' if hit else 'missed'}, "
                                f"changed: {', '.join(changed) or 'nothing'}")  # fmt: skip
                if not hit:
                    published_before = published
                    continue
                if point is KILL_POINTS[0]:
                    assert all(after[t] == before[t] for t in RAW), "an uncommitted write became visible"
                if point is KILL_POINTS[-1]:
                    assert published == published_before, "a killed publish changed the analysts' copy"
                    assert stored_edges(sandbox.db, CONNECTION, DAY_2) == truth_2
                break
            else:
                pytest.fail(f"{ATTEMPTS} runs never froze inside the moment {point.name!r}")

        print("\n".join(outcomes))  # shown with -s or on failure: which moments were hit
        rerun = groups.run("rerun", materialize(DAY_2), timeout=300)
        assert rerun.proc.returncode == 0, rerun.tail()
        assert stored_edges(sandbox.db, CONNECTION, DAY_2) == truth_2
        assert snapshot(sandbox.db, DAY_1) == day_1
        assert query(
            sandbox.published,
            "SELECT count(*) FROM lms.course_student_edges WHERE connection_id = ? AND snapshot_date = ?",
            [CONNECTION, DAY_2],
        ) == [(len(truth_2),)]
        leftovers = list((files_root(sandbox.db) / "staging").glob("*"))
        assert not leftovers, f"the killed publish's staging folders were never cleaned up: {leftovers}"
