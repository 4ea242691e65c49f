"""What a world is made of, day by day: the records of its state (courses, classes, contents, learners' activity, the
day and its mid-scan updates), the names and ids it gives people, the randomness it evolves with, and how a state is
listed as the Unified.to API shows it (rosters, timestamps, contents, activities, grades)."""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from types import MappingProxyType
from typing import Literal, NamedTuple, TypeVar

DAY_SECONDS = 23 * 3600  # a day's own changes happen before 23:00; its scan (and mid-scan churn) at 23:30
ROLLOVER_SECONDS = DAY_SECONDS + 600  # a rollover day's bulk update: 23:10:00, after the day's own changes
RosterFields = Literal["student_ids", "students", "both"]


T = TypeVar("T")


# fmt: off
SUBJECTS = ("Biology", "Chemistry", "Physics", "Algebra", "Geometry", "Statistics", "History", "Geography",
            "Literature", "Spanish", "French", "Art", "Music", "Economics", "Computing", "Psychology")


FIRST_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jun", "Kofi", "Lea", "Mateo",
               "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Vera", "Wen", "Yusuf")


LAST_NAMES = ("Li", "Okafor", "Smith", "Garcia", "Nguyen", "Kowalski", "Haddad", "Silva", "Berg", "Tanaka", "Ray",
              "Moreau", "Novak", "Osei", "Patel", "Quispe", "Rossi", "Schmidt", "Torres", "Ivanova", "Yilmaz")


class Class(NamedTuple):
    id: str
    timestamps: bool


class Content(NamedTuple):
    id: str
    name: str
    is_active: bool
    duration_minutes: int
    created_at: str
    updated_at: str


class Activity(NamedTuple):
    """One learner's progress on one content; kept unchanged once the learner leaves the course."""

    progress: int
    started_at: str
    completed_at: str | None
    updated_at: str


class Course(NamedTuple):
    """One course's state on one day; unchanged courses are shared between days (a tuple: cheap to replace)."""

    id: str
    number: int
    name: str
    instructor: int
    created_at: str
    updated_at: str
    timestamps: bool
    fields: RosterFields
    classes: tuple[Class, ...]
    is_active: bool
    exposed: bool
    students: frozenset[int]
    dropped: frozenset[int]  # ever-enrolled students now out: the pool re-enrolments come from
    contents: tuple[Content, ...] = ()
    guests: tuple[str, ...] = ()  # learner ids with activity that never were on the roster
    activity: Mapping[tuple[str, str], Activity] = MappingProxyType({})  # (learner id, content id) -> progress

    def class_members(self) -> list[tuple[Class, list[int]]]:
        """Sections partition the roster by a fixed rule, so a student stays in one section while enrolled."""
        members: list[list[int]] = [[] for _ in self.classes]
        for student in sorted(self.students):
            members[(student + self.number) % len(self.classes)].append(student)
        return list(zip(self.classes, members, strict=True))


@dataclass(frozen=True)
class Day:
    courses: tuple[Course, ...]  # listed courses, in creation order
    next_course: int
    next_class: int


class Update(NamedTuple):
    """One mid-scan change: the course at ``index`` becomes ``course``."""

    index: int
    course: Course


@dataclass(frozen=True)
class DayPlan:
    start: Day  # the state when the day's scan begins
    updates: tuple[Update, ...]  # mid-scan churn, in firing order
    end: Day  # start with every update applied: the next day evolves from it

    def state(self, fired: int) -> Day:
        if fired <= 0 or not self.updates:
            return self.start
        if fired >= len(self.updates):
            return self.end
        courses = list(self.start.courses)
        for update in self.updates[:fired]:
            courses[update.index] = update.course
        return Day(tuple(courses), self.start.next_course, self.start.next_class)


@cache
def student_id(number: int) -> str:
    return f"stu-{number:05d}"


def student_name(number: int) -> tuple[str, str]:
    return FIRST_NAMES[number % len(FIRST_NAMES)], LAST_NAMES[(number // len(FIRST_NAMES)) % len(LAST_NAMES)]


def instructor_name(number: int) -> str:
    return f"{FIRST_NAMES[-number % len(FIRST_NAMES)][0]}. {LAST_NAMES[number % len(LAST_NAMES)]}"


@cache
def full_name(number: int) -> str:
    return " ".join(student_name(number))


def stamp_text(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def random_moment(rng: random.Random, day: date) -> str:
    """A random second of the UTC day before 23:00: when something happened that day."""
    hour, rest = divmod(rng.randrange(DAY_SECONDS), 3600)
    return f"{day.isoformat()}T{hour:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: exact for the small means used here, and bounded."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit and k < 1000:
        p *= rng.random()
        k += 1
    return k


def pick(rng: random.Random, items: Sequence[T], prob: float) -> list[T]:
    """Each item independently with probability ``prob``, drawing about one number per pick (geometric skips)."""
    if prob <= 0:
        return []
    if prob >= 1:
        return list(items)
    picked, i, log_q = [], -1, math.log1p(-prob)
    while True:
        i += 1 + int(math.log(1.0 - rng.random()) / log_q)
        if i >= len(items):
            return picked
        picked.append(items[i])


def flip_rates(share: float, prob: float) -> tuple[float, float]:
    """Per-day probabilities exposed -> not exposed and back.

    The average course flips with probability ``prob`` while the not-exposed share stays at ``share``
    (balance: (1 - share) * to_dark == share * to_light).
    """
    if share <= 0:
        return 0.0, 1.0
    if share >= 1:
        return 1.0, 0.0
    return min(1.0, prob / (2 * (1 - share))), min(1.0, prob / (2 * share))


def assigned_grade(learner: str, content: str) -> str | None:
    """The grade a teacher gave a completed activity, in the forms gradebooks emit (docs/providers.md §1.4:
    ``assigned_grade`` is a free string): "87", "87.5%", "17/20", "" (submitted, not graded yet), "EX", or text no
    one can parse. Ungraded content kinds (a third of contents) have no grade field. Deterministic per pair."""
    if zlib.crc32(content.encode()) % 3 == 0:
        return None
    h = zlib.crc32(f"{learner}|{content}".encode())
    kind, score = h % 100, 40 + (h >> 8) % 61
    if kind < 5:
        return "EX"
    if kind < 12:
        return ""
    if kind < 14:
        return "pass"
    if kind < 60:
        return str(score)
    if kind < 80:
        return f"{score - 0.5}%"
    return f"{score // 5}/20"


def grade_key(learner: str, content: str, activity: Activity) -> dict:
    grade = assigned_grade(learner, content) if activity.completed_at else None
    return {} if grade is None else {"assigned_grade": grade}


def roster_keys(course: Course, members: list[int]) -> dict:
    """The roster as the provider shows it: no keys at all when it does not expose rosters."""
    if not course.exposed:
        return {}
    keys: dict = {}
    if course.fields in ("student_ids", "both"):
        keys["student_ids"] = [student_id(n) for n in members]
    if course.fields in ("students", "both"):
        keys["students"] = [{"id": student_id(n), "name": full_name(n)} for n in members]
    return keys


def timestamp_keys(course: Course, present: bool) -> dict:
    return {"created_at": course.created_at, "updated_at": course.updated_at} if present else {}


def content_items(state: Day) -> list[dict]:
    return [
        {"id": k.id, "name": k.name, "course_ids": [c.id], "is_active": k.is_active,
         "duration_minutes": k.duration_minutes, "created_at": k.created_at, "updated_at": k.updated_at}
        for c in state.courses for k in c.contents
    ]  # fmt: skip


def activity_items(state: Day) -> list[dict]:
    return [
        {"id": f"act-{content}-{learner}", "course_id": c.id, "content_id": content, "student_id": learner,
         "is_completed": a.completed_at is not None, "progress_percentage": a.progress,
         "started_at": a.started_at, **({"completed_at": a.completed_at} if a.completed_at else {}),
         **grade_key(learner, content, a), "updated_at": a.updated_at}
        for c in state.courses for (learner, content), a in sorted(c.activity.items())
    ]  # fmt: skip


def new_content(rng: random.Random, course: Course, k: int, day: date) -> Content:
    moment = random_moment(rng, day)
    kind = rng.choice(("Reading", "Quiz", "Video", "Assignment", "Lab"))
    return Content(f"cnt-{course.number:05d}-{k:02d}", f"{kind} {k + 1}", True, rng.choice((10, 20, 30, 45, 60)),
                    moment, moment)  # fmt: skip
