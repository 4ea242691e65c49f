"""A deterministic LMS world that evolves day by day, and its ground truth.

Day 0 is built from the seed; each later day is replayed from the one before with an RNG seeded by
(seed, connection, day), so a day's answer is the same whatever order days are asked in. The truth API returns
exactly what the HTTP API exposes: tests compare the pipeline's tables with it.

Presentation options (roster exposure, roster fields, classes, missing timestamps) draw from the RNG whatever their
value, so two specs differing only in them share the same underlying enrolments.

Timeline of a day D: the day's own changes happen between 00:00 and 23:00 UTC; the scan of D runs at 23:30. In churn
mode the world also changes *while it is scanned*: a fixed list of updates for D (``churn_share`` of the courses, each
stamped 23:30:00 + i seconds, so "now" is always the newest time) is applied ``churn_per_request`` at a time, before
each list request after the first (``World.fire``). Updates not fired by the end of a scan happened after it; D+1
starts from D with all its updates applied, so every day's state is the same whatever requests were made.

Rollover mode (``rollover_days``): on those days an SIS-style term rollover rewrites ``rollover_share`` of the active
courses' rosters in one bulk update at 23:10:00 UTC, so hundreds of records share one ``updated_at`` second, at the
microsecond as a single SQL transaction stamps them (``rollover_stamps="identical"``) or microseconds apart as
row-by-row updates do (``"microseconds"``). That day's mid-scan churn then touches rolled-over courses only: a bulk
run paged by offset while some of its records move to the end is what keyset paging has to survive.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any, Literal, NamedTuple

from lms_pipeline.simulator.world_evolution import Evolution
from lms_pipeline.simulator.world_parts import (
    Day,
    DayPlan,
    activity_items,
    content_items,
    grade_key,
    instructor_name,
    roster_keys,
    stamp_text,
    student_id,
    student_name,
    timestamp_keys,
)

MAX_DAYS = 3660  # about ten years after start_date: bounds the replay an as-of date can ask for
CHECKPOINT_EVERY = 10  # every 10th day stays cached, so any day replays at most 9 days
RECENT_DAYS = 32  # plus the most recently asked days (a pipeline walks days in order)

# fmt: on


class DateOutOfRangeError(ValueError):
    """An as-of date beyond the world's horizon (``MAX_DAYS`` after start_date)."""


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
    supports_sort: bool = True  # False: sort/order ignored, lists always in the default updated_at order
    progress: bool = True  # the integration has contents and activities (False: those endpoints answer 501)
    contents_per_course: int = 5  # at most, when a course is created; more are added now and then
    guest_share: float = 0.2  # share of courses with a learner who never was on the roster (activity only)
    churn_share: float = 0.0  # share of courses updated during each day's scan (mid-scan churn)
    churn_per_request: int = 1  # updates applied before each list request after the first
    world_id: str | None = None  # seeds the world instead of connection_id: connections sharing it see one world
    rollover_days: tuple[int, ...] = ()  # days (0 = start_date) with a term rollover: a bulk update at 23:10:00
    rollover_share: float = 0.5  # share of the active, timestamped courses the rollover rewrites
    # identical: one transaction stamps every row alike; microseconds: row-by-row updates within that second
    rollover_stamps: Literal["identical", "microseconds"] = "identical"
    # An integration whose list options are `-none-` (docs/providers.md §9.4: Moodle courses): limit_offset = every
    # answer is the whole list; offset = limit honoured but offset ignored, the first page served forever.
    ignores_paging: Literal["no", "limit_offset", "offset"] = "no"
    ignores_paging_on: tuple[str, ...] = ("course",)  # the endpoints it applies to
    # Records tied on the sort key come in a new order on every request (an ORDER BY without a unique tiebreaker);
    # False: ties by id, the same every time.
    unstable_ties: bool = False

    @property
    def world_key(self) -> str:
        return self.world_id or self.connection_id


class CourseView(NamedTuple):
    """A course's enrolment facts on one day, whatever dialect presents them (``World.roster_view``)."""

    id: str
    number: int
    name: str
    is_active: bool
    exposed: bool  # False: the provider does not expose this course's roster today
    created_at: str | None  # None when the provider omits the course's timestamps
    updated_at: str | None
    enrolled: tuple[str, ...]  # student ids, sorted
    dropped: tuple[str, ...]  # ever-enrolled students now out, sorted
    sections: tuple[tuple[str, tuple[str, ...]], ...]  # (class id, its enrolled student ids)


class World:
    """The evolving world of one connection; thread-safe, days computed lazily and cached."""

    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self._evolution = Evolution(spec)
        self._lock = threading.Lock()
        self._checkpoints: dict[int, DayPlan] = {}
        self._recent: OrderedDict[int, DayPlan] = OrderedDict()
        self._fired: dict[date, int] = {}
        self._listings: OrderedDict[tuple, Any] = OrderedDict()  # a client pages one listing many times

    def _index(self, day: date) -> int:
        index = max(0, (day - self.spec.start_date).days)
        if index > MAX_DAYS:
            raise DateOutOfRangeError(f"{day} is more than {MAX_DAYS} days after start_date {self.spec.start_date}")
        return index

    def _day_plan(self, day: date) -> DayPlan:
        index = self._index(day)
        with self._lock:
            if not self._checkpoints:
                evolution, start = self._evolution, self.spec.start_date
                self._checkpoints[0] = evolution.plan(evolution.progress(evolution.day0(), start), start)
            if index in self._recent:
                self._recent.move_to_end(index)
                return self._recent[index]
            base = max(i for i in (*self._checkpoints, *self._recent) if i <= index)
            plan = self._checkpoints.get(base) or self._recent[base]
            for i in range(base + 1, index + 1):
                moment = self.spec.start_date + timedelta(days=i)
                plan = self._evolution.plan(self._evolution.advance(plan.end, moment), moment)
                if i % CHECKPOINT_EVERY == 0:
                    self._checkpoints[i] = plan
            self._recent[index] = plan
            if len(self._recent) > RECENT_DAYS:
                self._recent.popitem(last=False)
            return plan

    def _day(self, day: date) -> Day:
        return self._now(day)[1]

    def _now(self, day: date) -> tuple[int, Day]:
        """(updates fired, state) as of now: the day's start plus the mid-scan updates fired so far."""
        plan = self._day_plan(day)
        with self._lock:
            fired = min(self._fired.get(max(day, self.spec.start_date), 0), len(plan.updates))
        return fired, plan.state(fired)

    # ---- mid-scan churn ----------------------------------------------------------------------------------------
    def fire(self, day: date, requests: int = 1) -> int:
        """Apply the next mid-scan updates of ``day`` (``churn_per_request`` per request); returns how many fired.

        The HTTP app calls it before each list request after a day's first, so the data changes while it is paged.
        """
        total = len(self._day_plan(day).updates)
        key = max(day, self.spec.start_date)
        with self._lock:
            before = self._fired.get(key, 0)
            self._fired[key] = min(total, before + requests * self.spec.churn_per_request)
            return self._fired[key] - before

    def churn_fired(self, day: date) -> tuple[int, int]:
        """(updates fired so far, updates planned) for ``day``."""
        with self._lock:
            fired = self._fired.get(max(day, self.spec.start_date), 0)
        return fired, len(self._day_plan(day).updates)

    # ---- what the API exposes --------------------------------------------------------------------------------
    def _listing(self, kind: str, day: date, build: Callable[[Day], Any]) -> Any:
        """A listing as of now, cached by (kind, day, updates fired): callers must not mutate it."""
        fired, state = self._now(day)
        key = (kind, day, fired)
        with self._lock:
            if key in self._listings:
                self._listings.move_to_end(key)
                return self._listings[key]
        items = build(state)
        with self._lock:
            self._listings[key] = items
            while len(self._listings) > 8:
                self._listings.popitem(last=False)
        return items

    def courses(self, day: date) -> list[dict]:
        """The course objects listed on ``day``, in creation order."""
        return self._listing("course", day, self._course_items)

    def _course_items(self, state: Day) -> list[dict]:
        return [
            {
                "id": c.id,
                "name": c.name,
                "description": f"{c.name} at {self.spec.connection_id}",
                "is_active": c.is_active,
                **timestamp_keys(c, c.timestamps),
                "instructors": [{"id": f"ins-{c.instructor:05d}", "name": instructor_name(c.instructor)}],
                **roster_keys(c, sorted(c.students)),
            }
            for c in state.courses
        ]

    def classes(self, day: date) -> list[dict]:
        """The sections listed on ``day`` ([] when the integration has none: the API answers 501).

        A section's timestamps are its course's: any change to the course (its roster included) touches them.
        """
        if self.spec.classes == "none":
            return []
        with_rosters = self.spec.classes == "rosters"
        return [
            {
                "id": cls.id,
                "name": f"{c.name} - Section {chr(ord('A') + k)}",
                "course_id": c.id,
                **timestamp_keys(c, cls.timestamps),
                **(roster_keys(c, members) if with_rosters else {}),
            }
            for c in self._day(day).courses
            for k, (cls, members) in enumerate(c.class_members())
        ]

    @cached_property
    def _student_pool(self) -> tuple[tuple[str, str, str, str, str], ...]:
        """(id, first, last, email, updated_at) per student: formatted once, as the pool never changes."""
        start = datetime.combine(self.spec.start_date, datetime.min.time())
        pool = []
        for n in range(1, self.spec.n_students + 1):
            first, last = student_name(n)
            updated = stamp_text(start - timedelta(days=n * 37 % 365, seconds=n * 7919 % 86_400))
            pool.append((student_id(n), first, last, f"{first}.{last}.{n}@school.example".lower(), updated))
        return tuple(pool)

    def students(self, day: date) -> list[dict]:
        """The student pool (the same every day); updated_at spread over the year before start_date. Built once:
        callers must not mutate it (a 20,000-student pool took 0.15 s to build per page request)."""
        return self._student_items

    @cached_property
    def _student_items(self) -> list[dict]:
        return [
            {"id": sid, "name": f"{first} {last}", "first_name": first, "last_name": last,
             "emails": [{"email": email, "type": "WORK"}], "updated_at": updated}
            for sid, first, last, email, updated in self._student_pool
        ]  # fmt: skip

    def contents(self, day: date) -> list[dict]:
        """Contents of the listed courses (``course_ids`` as in Unified.to's LmsContent), in course order."""
        return self._listing("content", day, content_items) if self.spec.progress else []

    def activities(self, day: date) -> list[dict]:
        """Every learner's progress record in the listed courses; ``completed_at`` only once completed."""
        return self._listing("activity", day, activity_items) if self.spec.progress else []

    def activities_of(self, day: date, course_id: str) -> list[dict]:
        """The activities of one course (the API's ``course_id`` filter), from an index built once per listing."""
        if not self.spec.progress:
            return []

        def index(state: Day) -> dict[str, list[dict]]:
            grouped: dict[str, list[dict]] = {}
            for item in activity_items(state):
                grouped.setdefault(item["course_id"], []).append(item)
            return grouped

        return self._listing("activity_by_course", day, index).get(course_id, [])  # type: ignore[attr-defined]

    def true_grades(self, day: date) -> dict[tuple[str, str, str], str | None]:
        """(course, learner, content) -> the assigned_grade string the API shows (None: no such field)."""
        return {
            (c.id, learner, content): grade_key(learner, content, a).get("assigned_grade")
            for c in self._day(day).courses for (learner, content), a in c.activity.items()
        }  # fmt: skip

    def true_progress(self, day: date) -> dict[tuple[str, str, str], tuple[bool, int, str]]:
        """(course, learner, content) -> (is_completed, progress, enrollment_state) for every activity listed.

        enrollment_state: roster_not_exposed when the course's roster is not exposed that day, else enrolled or
        not_enrolled by the true roster: activity never implies membership.
        """
        out = {}
        for c in self._day(day).courses:
            members = {student_id(n) for n in c.students}
            for (learner, content), a in c.activity.items():
                state = "roster_not_exposed" if not c.exposed else "enrolled" if learner in members else "not_enrolled"
                out[(c.id, learner, content)] = (a.completed_at is not None, a.progress, state)
        return out

    def true_course_edges(self, day: date) -> set[tuple[str, str]]:
        """(course_id, student_id) of every listed course whose roster is exposed."""
        return {(c.id, student_id(n)) for c in self._day(day).courses if c.exposed for n in c.students}

    def true_class_edges(self, day: date) -> set[tuple[str, str, str]]:
        """(class_id, course_id, student_id) of every exposed section roster (only with classes="rosters")."""
        if self.spec.classes != "rosters":
            return set()
        return {
            (cls.id, c.id, student_id(n))
            for c in self._day(day).courses if c.exposed
            for cls, members in c.class_members() for n in members
        }  # fmt: skip

    def roster_status(self, day: date) -> dict[str, str]:
        """course_id -> exposed | empty (keys present, no student) | not_exposed (no roster keys)."""
        return {
            c.id: "not_exposed" if not c.exposed else "exposed" if c.students else "empty"
            for c in self._day(day).courses
        }

    def roster_view(self, day: date) -> list[CourseView]:
        """Each listed course's enrolment facts as of ``day``, for dialect apps (Canvas, Classroom, OneRoster) that
        present the same world in their own shapes. ``dropped`` are students who were enrolled and left."""
        return [
            CourseView(
                id=c.id, number=c.number, name=c.name, is_active=c.is_active, exposed=c.exposed,
                created_at=c.created_at if c.timestamps else None, updated_at=c.updated_at if c.timestamps else None,
                enrolled=tuple(student_id(n) for n in sorted(c.students)),
                dropped=tuple(student_id(n) for n in sorted(c.dropped)),
                sections=tuple((cls.id, tuple(student_id(n) for n in members)) for cls, members in c.class_members()),
            )
            for c in self._day(day).courses
        ]  # fmt: skip

    def is_active(self, day: date) -> dict[str, bool]:
        return {c.id: c.is_active for c in self._day(day).courses}
