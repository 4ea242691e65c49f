"""A deterministic LMS world that evolves day by day, and its ground truth.

Day 0 is built from the seed; each later day is replayed from the previous one with an RNG seeded by
(seed, connection, day), so any day's answer is the same whatever order days are asked in. The truth API returns
exactly what the HTTP API exposes: tests compare the pipeline's tables with it.
"""

from __future__ import annotations

import copy
import math
import random
import threading
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal


@dataclass(frozen=True)
class WorldSpec:
    connection_id: str
    seed: int = 0
    start_date: date = date(2026, 9, 1)
    n_courses: int = 60
    mean_roster_size: int = 25
    n_students: int = 1500
    roster_exposure: Literal["all", "mixed", "none"] = "all"
    not_exposed_share: float = 0.2
    exposure_flip_prob: float = 0.05
    roster_fields: Literal["student_ids", "students", "both", "mixed"] = "both"
    classes: Literal["none", "no_rosters", "rosters"] = "none"
    drop_prob: float = 0.02
    adds_per_course: float = 0.6
    reenrol_prob: float = 0.1
    new_courses_per_day: float = 1.0
    deactivate_prob: float = 0.01
    clear_roster_on_deactivate: float = 0.5
    remove_prob: float = 0.005
    missing_timestamps_share: float = 0.05
    supports_updated_gte: bool = True
    rate_limit_every: int = 0
    retry_after_seconds: float | None = None


@dataclass
class _Course:
    number: int
    created: datetime
    updated: datetime
    is_active: bool
    exposed: bool
    fields: str
    timestamps: bool
    n_classes: int
    students: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return f"crs-{self.number:05d}"


@dataclass
class _State:
    courses: dict[str, _Course]
    next_course: int


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small means used here, and bounded."""
    if mean <= 0:
        return 0
    limit, k, p = math.exp(-mean), 0, 1.0
    while k < 1000:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
    return k


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def student_id(n: int) -> str:
    return f"stu-{n:05d}"


def student_name(sid: str) -> tuple[str, str]:
    n = int(sid.split("-")[1])
    firsts = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jun", "Kofi", "Lea"]
    lasts = ["Li", "Okafor", "Smith", "Garcia", "Nguyen", "Kowalski", "Haddad", "Silva", "Berg", "Tanaka"]
    return firsts[n % len(firsts)], lasts[(n // len(firsts)) % len(lasts)]


class World:
    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self._days: list[_State] = []
        self._lock = threading.Lock()

    # ---- evolution -------------------------------------------------------------------------------------------
    def _rng(self, day: date) -> random.Random:
        return random.Random(f"{self.spec.seed}:{self.spec.connection_id}:{day.isoformat()}")

    def _moment(self, rng: random.Random, day: date) -> datetime:
        return datetime(day.year, day.month, day.day) + timedelta(seconds=rng.randrange(86_400))

    def _new_course(self, rng: random.Random, number: int, day: date) -> _Course:
        s = self.spec
        if s.roster_exposure == "all":
            exposed = True
        elif s.roster_exposure == "none":
            exposed = False
        else:
            exposed = rng.random() >= s.not_exposed_share
        fields = rng.choice(["student_ids", "students", "both"]) if s.roster_fields == "mixed" else s.roster_fields
        moment = self._moment(rng, day)
        size = rng.randint(max(0, s.mean_roster_size // 2), max(0, s.mean_roster_size * 3 // 2))
        pool = range(1, s.n_students + 1)
        students = {student_id(n) for n in rng.sample(pool, min(size, s.n_students))}
        return _Course(number, moment, moment, True, exposed, fields, rng.random() >= s.missing_timestamps_share,
                       rng.randint(1, 3), students)  # fmt: skip

    def _day0(self) -> _State:
        rng = self._rng(self.spec.start_date)
        courses = {}
        for n in range(1, self.spec.n_courses + 1):
            course = self._new_course(rng, n, self.spec.start_date)
            courses[course.id] = course
        return _State(courses, self.spec.n_courses + 1)

    def _advance(self, prev: _State, day: date) -> _State:
        s, rng = self.spec, self._rng(day)
        state = copy.deepcopy(prev)
        for cid in list(state.courses):
            course = state.courses[cid]
            if rng.random() < s.remove_prob:
                del state.courses[cid]
                continue
            changed = False
            if course.is_active and rng.random() < s.deactivate_prob:
                course.is_active, changed = False, True
                if rng.random() < s.clear_roster_on_deactivate:
                    course.dropped |= course.students
                    course.students = set()
            if course.is_active:
                for sid in sorted(course.students):
                    if rng.random() < s.drop_prob:
                        course.students.discard(sid)
                        course.dropped.add(sid)
                        changed = True
                for sid in sorted(course.dropped):
                    if rng.random() < s.reenrol_prob:
                        course.dropped.discard(sid)
                        course.students.add(sid)
                        changed = True
                for _ in range(_poisson(rng, s.adds_per_course)):
                    sid = student_id(rng.randint(1, s.n_students))
                    if sid not in course.students:
                        course.students.add(sid)
                        course.dropped.discard(sid)
                        changed = True
            if s.roster_exposure == "mixed":
                # Flip rates chosen so about not_exposed_share of courses are dark on any day.
                p = s.exposure_flip_prob * (s.not_exposed_share if course.exposed else 1 - s.not_exposed_share)
                if rng.random() < p:
                    course.exposed = not course.exposed
            if changed:
                course.updated = self._moment(rng, day)
        for _ in range(_poisson(rng, s.new_courses_per_day)):
            course = self._new_course(rng, state.next_course, day)
            state.courses[course.id] = course
            state.next_course += 1
        return state

    def _state(self, day: date) -> _State:
        index = max(0, (day - self.spec.start_date).days)
        with self._lock:
            if not self._days:
                self._days.append(self._day0())
            while len(self._days) <= index:
                d = self.spec.start_date + timedelta(days=len(self._days))
                self._days.append(self._advance(self._days[-1], d))
            return self._days[index]

    # ---- what the API exposes --------------------------------------------------------------------------------
    def _roster_keys(self, course: _Course, students: set[str]) -> dict:
        if not course.exposed:
            return {}
        ids = sorted(students)
        out: dict = {}
        if course.fields in ("student_ids", "both"):
            out["student_ids"] = ids
        if course.fields in ("students", "both"):
            out["students"] = [{"id": sid, "name": " ".join(student_name(sid))} for sid in ids]
        return out

    def _timestamps(self, course: _Course) -> dict:
        if not course.timestamps:
            return {}
        return {"created_at": _stamp(course.created), "updated_at": _stamp(course.updated)}

    def courses(self, day: date) -> list[dict]:
        out = []
        for course in self._state(day).courses.values():
            out.append({
                "id": course.id,
                "name": f"Course {course.number}",
                "description": f"Simulated course {course.number} of {self.spec.connection_id}",
                "is_active": course.is_active,
                **self._timestamps(course),
                "instructors": [{"id": f"ins-{course.number % 17:03d}", "name": "T. Ray"}],
                **self._roster_keys(course, course.students),
            })  # fmt: skip
        return out

    def _class_split(self, course: _Course) -> list[tuple[str, set[str]]]:
        parts = [(f"cls-{course.number:05d}-{k}", set()) for k in range(1, course.n_classes + 1)]
        for sid in course.students:
            parts[int(sid.split("-")[1]) % course.n_classes][1].add(sid)
        return parts

    def classes(self, day: date) -> list[dict]:
        if self.spec.classes == "none":
            return []
        out = []
        for course in self._state(day).courses.values():
            for class_id, members in self._class_split(course):
                item = {"id": class_id, "name": f"Section {class_id[-1]}", "course_id": course.id,
                        **self._timestamps(course)}  # fmt: skip
                if self.spec.classes == "rosters":
                    item.update(self._roster_keys(course, members))
                out.append(item)
        return out

    def students(self, day: date) -> list[dict]:
        out = []
        for n in range(1, self.spec.n_students + 1):
            sid = student_id(n)
            first, last = student_name(sid)
            out.append(
                {
                    "id": sid,
                    "name": f"{first} {last}",
                    "first_name": first,
                    "last_name": last,
                    "emails": [{"email": f"{sid}@school.example", "type": "WORK"}],
                    "updated_at": _stamp(datetime.combine(self.spec.start_date, datetime.min.time())),
                }
            )
        return out

    def true_course_edges(self, day: date) -> set[tuple[str, str]]:
        return {(c.id, s) for c in self._state(day).courses.values() if c.exposed for s in c.students}

    def true_class_edges(self, day: date) -> set[tuple[str, str, str]]:
        if self.spec.classes != "rosters":
            return set()
        return {
            (class_id, c.id, s)
            for c in self._state(day).courses.values() if c.exposed
            for class_id, members in self._class_split(c) for s in members
        }  # fmt: skip

    def roster_status(self, day: date) -> dict[str, str]:
        return {
            c.id: ("not_exposed" if not c.exposed else "exposed" if c.students else "empty")
            for c in self._state(day).courses.values()
        }

    def is_active(self, day: date) -> dict[str, bool]:
        return {c.id: c.is_active for c in self._state(day).courses.values()}
