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

import math
import random
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache, cached_property
from types import MappingProxyType
from typing import Any, Literal, NamedTuple, TypeVar

RosterFields = Literal["student_ids", "students", "both"]
T = TypeVar("T")

MAX_DAYS = 3660  # about ten years after start_date: bounds the replay an as-of date can ask for
DAY_SECONDS = 23 * 3600  # a day's own changes happen before 23:00; its scan (and mid-scan churn) at 23:30
ROLLOVER_SECONDS = DAY_SECONDS + 600  # a rollover day's bulk update: 23:10:00, after the day's own changes
CHECKPOINT_EVERY = 10  # every 10th day stays cached, so any day replays at most 9 days
RECENT_DAYS = 32  # plus the most recently asked days (a pipeline walks days in order)

# fmt: off
SUBJECTS = ("Biology", "Chemistry", "Physics", "Algebra", "Geometry", "Statistics", "History", "Geography",
            "Literature", "Spanish", "French", "Art", "Music", "Economics", "Computing", "Psychology")
FIRST_NAMES = ("Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jun", "Kofi", "Lea", "Mateo",
               "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Vera", "Wen", "Yusuf")
LAST_NAMES = ("Li", "Okafor", "Smith", "Garcia", "Nguyen", "Kowalski", "Haddad", "Silva", "Berg", "Tanaka", "Ray",
              "Moreau", "Novak", "Osei", "Patel", "Quispe", "Rossi", "Schmidt", "Torres", "Ivanova", "Yilmaz")
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


class _Class(NamedTuple):
    id: str
    timestamps: bool


class _Content(NamedTuple):
    id: str
    name: str
    is_active: bool
    duration_minutes: int
    created_at: str
    updated_at: str


class _Activity(NamedTuple):
    """One learner's progress on one content; kept unchanged once the learner leaves the course."""

    progress: int
    started_at: str
    completed_at: str | None
    updated_at: str


class _Course(NamedTuple):
    """One course's state on one day; unchanged courses are shared between days (a tuple: cheap to replace)."""

    id: str
    number: int
    name: str
    instructor: int
    created_at: str
    updated_at: str
    timestamps: bool
    fields: RosterFields
    classes: tuple[_Class, ...]
    is_active: bool
    exposed: bool
    students: frozenset[int]
    dropped: frozenset[int]  # ever-enrolled students now out: the pool re-enrolments come from
    contents: tuple[_Content, ...] = ()
    guests: tuple[str, ...] = ()  # learner ids with activity that never were on the roster
    activity: Mapping[tuple[str, str], _Activity] = MappingProxyType({})  # (learner id, content id) -> progress

    def class_members(self) -> list[tuple[_Class, list[int]]]:
        """Sections partition the roster by a fixed rule, so a student stays in one section while enrolled."""
        members: list[list[int]] = [[] for _ in self.classes]
        for student in sorted(self.students):
            members[(student + self.number) % len(self.classes)].append(student)
        return list(zip(self.classes, members, strict=True))


@dataclass(frozen=True)
class _Day:
    courses: tuple[_Course, ...]  # listed courses, in creation order
    next_course: int
    next_class: int


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


class _Update(NamedTuple):
    """One mid-scan change: the course at ``index`` becomes ``course``."""

    index: int
    course: _Course


@dataclass(frozen=True)
class _DayPlan:
    start: _Day  # the state when the day's scan begins
    updates: tuple[_Update, ...]  # mid-scan churn, in firing order
    end: _Day  # start with every update applied: the next day evolves from it

    def state(self, fired: int) -> _Day:
        if fired <= 0 or not self.updates:
            return self.start
        if fired >= len(self.updates):
            return self.end
        courses = list(self.start.courses)
        for update in self.updates[:fired]:
            courses[update.index] = update.course
        return _Day(tuple(courses), self.start.next_course, self.start.next_class)


@cache
def student_id(number: int) -> str:
    return f"stu-{number:05d}"


def student_name(number: int) -> tuple[str, str]:
    return FIRST_NAMES[number % len(FIRST_NAMES)], LAST_NAMES[(number // len(FIRST_NAMES)) % len(LAST_NAMES)]


def instructor_name(number: int) -> str:
    return f"{FIRST_NAMES[-number % len(FIRST_NAMES)][0]}. {LAST_NAMES[number % len(LAST_NAMES)]}"


@cache
def _full_name(number: int) -> str:
    return " ".join(student_name(number))


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(rng: random.Random, day: date) -> str:
    """A random second of the UTC day before 23:00: when something happened that day."""
    hour, rest = divmod(rng.randrange(DAY_SECONDS), 3600)
    return f"{day.isoformat()}T{hour:02d}:{rest // 60:02d}:{rest % 60:02d}Z"


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: exact for the small means used here, and bounded."""
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit and k < 1000:
        p *= rng.random()
        k += 1
    return k


def _pick(rng: random.Random, items: Sequence[T], prob: float) -> list[T]:
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


def _flip_rates(share: float, prob: float) -> tuple[float, float]:
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


def _grade_key(learner: str, content: str, activity: _Activity) -> dict:
    grade = assigned_grade(learner, content) if activity.completed_at else None
    return {} if grade is None else {"assigned_grade": grade}


class World:
    """The evolving world of one connection; thread-safe, days computed lazily and cached."""

    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self._to_dark, self._to_light = _flip_rates(spec.not_exposed_share, spec.exposure_flip_prob)
        self._lock = threading.Lock()
        self._checkpoints: dict[int, _DayPlan] = {}
        self._recent: OrderedDict[int, _DayPlan] = OrderedDict()
        self._fired: dict[date, int] = {}
        self._listings: OrderedDict[tuple, Any] = OrderedDict()  # a client pages one listing many times

    # ---- evolution -------------------------------------------------------------------------------------------
    def _rng(self, day: date) -> random.Random:
        return random.Random(f"{self.spec.seed}:{self.spec.world_key}:{day.isoformat()}")

    def _new_course(self, rng: random.Random, day: date, number: int, first_class: int) -> _Course:
        s = self.spec
        moment = _moment(rng, day)
        size = min(s.n_students, rng.randint(s.mean_roster_size // 2, s.mean_roster_size * 3 // 2))
        n_classes = rng.randint(1, 3)
        exposed = rng.random() >= s.not_exposed_share
        fields = rng.choice(("student_ids", "students", "both"))
        return _Course(
            id=f"crs-{number:05d}",
            number=number,
            name=f"{rng.choice(SUBJECTS)} {rng.randint(1, 4)}{rng.randrange(100):02d}",
            instructor=rng.randint(1, max(1, s.n_courses // 3)),
            created_at=moment,
            updated_at=moment,
            timestamps=rng.random() >= s.missing_timestamps_share,
            fields=fields if s.roster_fields == "mixed" else s.roster_fields,
            classes=tuple(
                _Class(f"cls-{first_class + k:05d}", rng.random() >= s.missing_timestamps_share)
                for k in range(n_classes)
            ),
            is_active=True,
            exposed={"all": True, "none": False, "mixed": exposed}[s.roster_exposure],
            students=frozenset(n + 1 for n in rng.sample(range(s.n_students), size)),
            dropped=frozenset(),
        )

    def _add_courses(self, rng: random.Random, day: date, courses: list[_Course], count: int, state: _Day) -> _Day:
        next_course, next_class = state.next_course, state.next_class
        for _ in range(count):
            course = self._new_course(rng, day, next_course, next_class)
            courses.append(course)
            next_course, next_class = next_course + 1, next_class + len(course.classes)
        return _Day(tuple(courses), next_course, next_class)

    def _day0(self) -> _Day:
        return self._add_courses(self._rng(self.spec.start_date), self.spec.start_date, [], self.spec.n_courses,
                                 _Day((), 1, 1))  # fmt: skip

    def _churn(self, course: _Course, rng: random.Random) -> tuple[frozenset[int], frozenset[int]]:
        """One day of an active course's enrolments: drops, re-enrolments of dropped students, new students."""
        s = self.spec
        gone = _pick(rng, sorted(course.students), s.drop_prob)
        back = _pick(rng, sorted(course.dropped), s.reenrol_prob)
        new = [rng.randint(1, s.n_students) for _ in range(_poisson(rng, s.adds_per_course))]
        students = course.students.difference(gone).union(back, new)
        return students, course.dropped.union(gone).difference(students)

    def _evolve(self, course: _Course, rng: random.Random, day: date) -> _Course:
        s = self.spec
        is_active, students, dropped = course.is_active, course.students, course.dropped
        if is_active and rng.random() < s.deactivate_prob:
            is_active = False
            if rng.random() < s.clear_roster_on_deactivate:
                students, dropped = frozenset(), dropped | students
        elif is_active:
            students, dropped = self._churn(course, rng)
        flip = rng.random() < (self._to_dark if course.exposed else self._to_light)
        exposed = course.exposed != (flip and s.roster_exposure == "mixed")
        changed = is_active != course.is_active or students != course.students
        if not changed and exposed == course.exposed:
            return course
        # Exposure is a provider-side fact, not a change to the course: it leaves updated_at alone.
        updated_at = _moment(rng, day) if changed else course.updated_at
        return course._replace(is_active=is_active, students=students, dropped=dropped, exposed=exposed,
                               updated_at=updated_at)  # fmt: skip

    def _advance(self, prev: _Day, day: date) -> _Day:
        rng = self._rng(day)
        kept = [self._evolve(c, rng, day) for c in prev.courses if rng.random() >= self.spec.remove_prob]
        return self._progress(self._add_courses(rng, day, kept, _poisson(rng, self.spec.new_courses_per_day), prev),
                              day)  # fmt: skip

    def _progress(self, state: _Day, day: date) -> _Day:
        """A day of learning in every active course: contents appear, learners start and advance activities.

        A separate RNG, so the rosters are the same with or without progress. Learners are the enrolled students
        and the course's guests; a student who left keeps their activities, frozen.
        """
        s = self.spec
        if not s.progress:
            return state
        rng = random.Random(f"{s.seed}:{s.world_key}:{day.isoformat()}:progress")
        courses = []
        for c in state.courses:
            if not c.is_active:
                courses.append(c)
                continue
            contents, guests = list(c.contents), c.guests
            if not contents:  # a course gets its contents (and maybe a guest) the day it is created
                contents = [self._content(rng, c, k, day) for k in range(rng.randint(2, max(2, s.contents_per_course)))]
                guests = (f"gst-{c.number:05d}",) if rng.random() < s.guest_share else ()
            elif rng.random() < 0.05:
                contents.append(self._content(rng, c, len(contents), day))
            elif rng.random() < 0.02:
                k = rng.randrange(len(contents))
                contents[k] = contents[k]._replace(is_active=False, updated_at=_moment(rng, day))
            activity = dict(c.activity)
            open_contents = [k.id for k in contents if k.is_active]
            pairs = [(learner, k) for learner in [student_id(n) for n in sorted(c.students)] + list(guests)
                     for k in open_contents]  # fmt: skip
            for key in _pick(rng, [p for p in pairs if p not in activity], 0.3):  # learners starting a content
                moment = _moment(rng, day)
                activity[key] = _Activity(rng.randint(5, 40), moment, None, moment)
            going = [p for p in pairs if p in c.activity and c.activity[p].completed_at is None]
            for key in _pick(rng, going, 0.4):  # learners advancing (on a later day than they started)
                act, moment = activity[key], _moment(rng, day)
                progress = min(100, act.progress + rng.randint(10, 40))
                activity[key] = _Activity(progress, act.started_at, moment if progress == 100 else None, moment)
            courses.append(c._replace(contents=tuple(contents), guests=guests, activity=MappingProxyType(activity)))
        return _Day(tuple(courses), state.next_course, state.next_class)

    @staticmethod
    def _content(rng: random.Random, course: _Course, k: int, day: date) -> _Content:
        moment = _moment(rng, day)
        kind = rng.choice(("Reading", "Quiz", "Video", "Assignment", "Lab"))
        return _Content(f"cnt-{course.number:05d}-{k:02d}", f"{kind} {k + 1}", True, rng.choice((10, 20, 30, 45, 60)),
                        moment, moment)  # fmt: skip

    def _rollover(self, state: _Day, day: date) -> tuple[_Day, list[int]]:
        """A term rollover at 23:10:00 if ``day`` is a rollover day: each picked course loses about a tenth of its
        roster to the new term and gains as many; returns the new state and the indexes of the rolled courses."""
        s = self.spec
        if (day - s.start_date).days not in s.rollover_days:
            return state, []
        rng = random.Random(f"{s.seed}:{s.world_key}:{day.isoformat()}:rollover")
        candidates = [i for i, c in enumerate(state.courses) if c.timestamps and c.is_active]
        picked = sorted(rng.sample(candidates, round(s.rollover_share * len(candidates))))
        second = _stamp(datetime.combine(day, datetime.min.time()) + timedelta(seconds=ROLLOVER_SECONDS))[:-1]
        micros = (rng.sample(range(1_000_000), len(picked)) if s.rollover_stamps == "microseconds"
                  else [rng.randrange(1_000_000)] * len(picked))  # fmt: skip
        courses = list(state.courses)
        for index, micro in zip(picked, micros, strict=True):
            course = courses[index]
            size = max(1, len(course.students) // 10)
            gone = set(rng.sample(sorted(course.students), min(size, len(course.students))))
            students = course.students.difference(gone).union(rng.randint(1, s.n_students) for _ in range(size))
            courses[index] = course._replace(students=students, dropped=(course.dropped | gone) - students,
                                             updated_at=f"{second}.{micro:06d}Z")  # fmt: skip
        return _Day(tuple(courses), state.next_course, state.next_class), picked

    def _plan(self, start: _Day, day: date) -> _DayPlan:
        """The day's rollover, if any, then its mid-scan updates: distinct timestamped courses (rolled-over ones on a
        rollover day) each drop one student and gain another."""
        s = self.spec
        start, rolled = self._rollover(start, day)
        candidates = rolled or [i for i, c in enumerate(start.courses) if c.timestamps and c.is_active]
        count = min(len(candidates), math.ceil(s.churn_share * len(start.courses))) if s.churn_share > 0 else 0
        if not count:
            return _DayPlan(start, (), start)
        rng = random.Random(f"{s.seed}:{s.world_key}:{day.isoformat()}:churn")
        scan_start = datetime.combine(day, datetime.min.time()) + timedelta(seconds=DAY_SECONDS + 1800)
        picked = rng.sample(candidates, count)  # random order: the order the updates fire in
        updates = []
        for k, index in enumerate(picked):
            course = start.courses[index]
            gone = set(rng.sample(sorted(course.students), 1)) if course.students else set()
            students = course.students.difference(gone) | {rng.randint(1, s.n_students)}
            updated_at = _stamp(scan_start + timedelta(seconds=k))  # later updates carry later stamps
            changed = course._replace(students=students, dropped=(course.dropped | gone) - students,
                                      updated_at=updated_at)  # fmt: skip
            updates.append(_Update(index, changed))
        courses = list(start.courses)
        for update in updates:
            courses[update.index] = update.course
        return _DayPlan(start, tuple(updates), _Day(tuple(courses), start.next_course, start.next_class))

    def _index(self, day: date) -> int:
        index = max(0, (day - self.spec.start_date).days)
        if index > MAX_DAYS:
            raise DateOutOfRangeError(f"{day} is more than {MAX_DAYS} days after start_date {self.spec.start_date}")
        return index

    def _day_plan(self, day: date) -> _DayPlan:
        index = self._index(day)
        with self._lock:
            if not self._checkpoints:
                self._checkpoints[0] = self._plan(self._progress(self._day0(), self.spec.start_date),
                                                  self.spec.start_date)  # fmt: skip
            if index in self._recent:
                self._recent.move_to_end(index)
                return self._recent[index]
            base = max(i for i in (*self._checkpoints, *self._recent) if i <= index)
            plan = self._checkpoints.get(base) or self._recent[base]
            for i in range(base + 1, index + 1):
                moment = self.spec.start_date + timedelta(days=i)
                plan = self._plan(self._advance(plan.end, moment), moment)
                if i % CHECKPOINT_EVERY == 0:
                    self._checkpoints[i] = plan
            self._recent[index] = plan
            if len(self._recent) > RECENT_DAYS:
                self._recent.popitem(last=False)
            return plan

    def _day(self, day: date) -> _Day:
        return self._now(day)[1]

    def _now(self, day: date) -> tuple[int, _Day]:
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
    @staticmethod
    def _roster_keys(course: _Course, members: list[int]) -> dict:
        """The roster as the provider shows it: no keys at all when it does not expose rosters."""
        if not course.exposed:
            return {}
        keys: dict = {}
        if course.fields in ("student_ids", "both"):
            keys["student_ids"] = [student_id(n) for n in members]
        if course.fields in ("students", "both"):
            keys["students"] = [{"id": student_id(n), "name": _full_name(n)} for n in members]
        return keys

    @staticmethod
    def _timestamps(course: _Course, present: bool) -> dict:
        return {"created_at": course.created_at, "updated_at": course.updated_at} if present else {}

    def _listing(self, kind: str, day: date, build: Callable[[_Day], Any]) -> Any:
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

    def _course_items(self, state: _Day) -> list[dict]:
        return [
            {
                "id": c.id,
                "name": c.name,
                "description": f"{c.name} at {self.spec.connection_id}",
                "is_active": c.is_active,
                **self._timestamps(c, c.timestamps),
                "instructors": [{"id": f"ins-{c.instructor:05d}", "name": instructor_name(c.instructor)}],
                **self._roster_keys(c, sorted(c.students)),
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
                **self._timestamps(c, cls.timestamps),
                **(self._roster_keys(c, members) if with_rosters else {}),
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
            updated = _stamp(start - timedelta(days=n * 37 % 365, seconds=n * 7919 % 86_400))
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
        return self._listing("content", day, self._content_items) if self.spec.progress else []

    @staticmethod
    def _content_items(state: _Day) -> list[dict]:
        return [
            {"id": k.id, "name": k.name, "course_ids": [c.id], "is_active": k.is_active,
             "duration_minutes": k.duration_minutes, "created_at": k.created_at, "updated_at": k.updated_at}
            for c in state.courses for k in c.contents
        ]  # fmt: skip

    def activities(self, day: date) -> list[dict]:
        """Every learner's progress record in the listed courses; ``completed_at`` only once completed."""
        return self._listing("activity", day, self._activity_items) if self.spec.progress else []

    def activities_of(self, day: date, course_id: str) -> list[dict]:
        """The activities of one course (the API's ``course_id`` filter), from an index built once per listing."""
        if not self.spec.progress:
            return []

        def index(state: _Day) -> dict[str, list[dict]]:
            grouped: dict[str, list[dict]] = {}
            for item in self._activity_items(state):
                grouped.setdefault(item["course_id"], []).append(item)
            return grouped

        return self._listing("activity_by_course", day, index).get(course_id, [])  # type: ignore[attr-defined]

    @staticmethod
    def _activity_items(state: _Day) -> list[dict]:
        return [
            {"id": f"act-{content}-{learner}", "course_id": c.id, "content_id": content, "student_id": learner,
             "is_completed": a.completed_at is not None, "progress_percentage": a.progress,
             "started_at": a.started_at, **({"completed_at": a.completed_at} if a.completed_at else {}),
             **_grade_key(learner, content, a), "updated_at": a.updated_at}
            for c in state.courses for (learner, content), a in sorted(c.activity.items())
        ]  # fmt: skip

    def true_grades(self, day: date) -> dict[tuple[str, str, str], str | None]:
        """(course, learner, content) -> the assigned_grade string the API shows (None: no such field)."""
        return {
            (c.id, learner, content): _grade_key(learner, content, a).get("assigned_grade")
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
