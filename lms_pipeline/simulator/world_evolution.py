"""How a world evolves: day 0 from the seed, then each day from the one before with an RNG seeded by (seed, world,
day), so a day's answer is the same whatever order days are asked in (``World`` caches and serves the days)."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING

from lms_pipeline.simulator.world_parts import (
    DAY_SECONDS,
    ROLLOVER_SECONDS,
    SUBJECTS,
    Activity,
    Class,
    Course,
    Day,
    DayPlan,
    Update,
    flip_rates,
    new_content,
    pick,
    poisson,
    random_moment,
    stamp_text,
    student_id,
)

if TYPE_CHECKING:
    from lms_pipeline.simulator.world import WorldSpec


class Evolution:
    """The day-to-day changes of one world's spec: courses created, rosters churned, exposure flipped, courses
    deactivated or removed, contents and learner activity added, bulk rollovers and mid-scan updates planned."""

    def __init__(self, spec: WorldSpec) -> None:
        self.spec = spec
        self._to_dark, self._to_light = flip_rates(spec.not_exposed_share, spec.exposure_flip_prob)

    def rng(self, day: date) -> random.Random:
        return random.Random(f"{self.spec.seed}:{self.spec.world_key}:{day.isoformat()}")

    def new_course(self, rng: random.Random, day: date, number: int, first_class: int) -> Course:
        s = self.spec
        moment = random_moment(rng, day)
        size = min(s.n_students, rng.randint(s.mean_roster_size // 2, s.mean_roster_size * 3 // 2))
        n_classes = rng.randint(1, 3)
        exposed = rng.random() >= s.not_exposed_share
        fields = rng.choice(("student_ids", "students", "both"))
        return Course(
            id=f"crs-{number:05d}",
            number=number,
            name=f"{rng.choice(SUBJECTS)} {rng.randint(1, 4)}{rng.randrange(100):02d}",
            instructor=rng.randint(1, max(1, s.n_courses // 3)),
            created_at=moment,
            updated_at=moment,
            timestamps=rng.random() >= s.missing_timestamps_share,
            fields=fields if s.roster_fields == "mixed" else s.roster_fields,
            classes=tuple(
                Class(f"cls-{first_class + k:05d}", rng.random() >= s.missing_timestamps_share)
                for k in range(n_classes)
            ),
            is_active=True,
            exposed={"all": True, "none": False, "mixed": exposed}[s.roster_exposure],
            students=frozenset(n + 1 for n in rng.sample(range(s.n_students), size)),
            dropped=frozenset(),
        )

    def add_courses(self, rng: random.Random, day: date, courses: list[Course], count: int, state: Day) -> Day:
        next_course, next_class = state.next_course, state.next_class
        for _ in range(count):
            course = self.new_course(rng, day, next_course, next_class)
            courses.append(course)
            next_course, next_class = next_course + 1, next_class + len(course.classes)
        return Day(tuple(courses), next_course, next_class)

    def day0(self) -> Day:
        return self.add_courses(self.rng(self.spec.start_date), self.spec.start_date, [], self.spec.n_courses,
                                 Day((), 1, 1))  # fmt: skip

    def churn(self, course: Course, rng: random.Random) -> tuple[frozenset[int], frozenset[int]]:
        """One day of an active course's enrolments: drops, re-enrolments of dropped students, new students."""
        s = self.spec
        gone = pick(rng, sorted(course.students), s.drop_prob)
        back = pick(rng, sorted(course.dropped), s.reenrol_prob)
        new = [rng.randint(1, s.n_students) for _ in range(poisson(rng, s.adds_per_course))]
        students = course.students.difference(gone).union(back, new)
        return students, course.dropped.union(gone).difference(students)

    def evolve(self, course: Course, rng: random.Random, day: date) -> Course:
        s = self.spec
        is_active, students, dropped = course.is_active, course.students, course.dropped
        if is_active and rng.random() < s.deactivate_prob:
            is_active = False
            if rng.random() < s.clear_roster_on_deactivate:
                students, dropped = frozenset(), dropped | students
        elif is_active:
            students, dropped = self.churn(course, rng)
        flip = rng.random() < (self._to_dark if course.exposed else self._to_light)
        exposed = course.exposed != (flip and s.roster_exposure == "mixed")
        changed = is_active != course.is_active or students != course.students
        if not changed and exposed == course.exposed:
            return course
        # Exposure is a provider-side fact, not a change to the course: it leaves updated_at alone.
        updated_at = random_moment(rng, day) if changed else course.updated_at
        return course._replace(is_active=is_active, students=students, dropped=dropped, exposed=exposed,
                               updated_at=updated_at)  # fmt: skip

    def advance(self, prev: Day, day: date) -> Day:
        rng = self.rng(day)
        kept = [self.evolve(c, rng, day) for c in prev.courses if rng.random() >= self.spec.remove_prob]
        return self.progress(self.add_courses(rng, day, kept, poisson(rng, self.spec.new_courses_per_day), prev),
                              day)  # fmt: skip

    def progress(self, state: Day, day: date) -> Day:
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
                contents = [new_content(rng, c, k, day) for k in range(rng.randint(2, max(2, s.contents_per_course)))]
                guests = (f"gst-{c.number:05d}",) if rng.random() < s.guest_share else ()
            elif rng.random() < 0.05:
                contents.append(new_content(rng, c, len(contents), day))
            elif rng.random() < 0.02:
                k = rng.randrange(len(contents))
                contents[k] = contents[k]._replace(is_active=False, updated_at=random_moment(rng, day))
            activity = dict(c.activity)
            open_contents = [k.id for k in contents if k.is_active]
            pairs = [(learner, k) for learner in [student_id(n) for n in sorted(c.students)] + list(guests)
                     for k in open_contents]  # fmt: skip
            for key in pick(rng, [p for p in pairs if p not in activity], 0.3):  # learners starting a content
                moment = random_moment(rng, day)
                activity[key] = Activity(rng.randint(5, 40), moment, None, moment)
            going = [p for p in pairs if p in c.activity and c.activity[p].completed_at is None]
            for key in pick(rng, going, 0.4):  # learners advancing (on a later day than they started)
                act, moment = activity[key], random_moment(rng, day)
                progress = min(100, act.progress + rng.randint(10, 40))
                activity[key] = Activity(progress, act.started_at, moment if progress == 100 else None, moment)
            courses.append(c._replace(contents=tuple(contents), guests=guests, activity=MappingProxyType(activity)))
        return Day(tuple(courses), state.next_course, state.next_class)

    def rollover(self, state: Day, day: date) -> tuple[Day, list[int]]:
        """A term rollover at 23:10:00 if ``day`` is a rollover day: each picked course loses about a tenth of its
        roster to the new term and gains as many; returns the new state and the indexes of the rolled courses."""
        s = self.spec
        if (day - s.start_date).days not in s.rollover_days:
            return state, []
        rng = random.Random(f"{s.seed}:{s.world_key}:{day.isoformat()}:rollover")
        candidates = [i for i, c in enumerate(state.courses) if c.timestamps and c.is_active]
        picked = sorted(rng.sample(candidates, round(s.rollover_share * len(candidates))))
        second = stamp_text(datetime.combine(day, datetime.min.time()) + timedelta(seconds=ROLLOVER_SECONDS))[:-1]
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
        return Day(tuple(courses), state.next_course, state.next_class), picked

    def plan(self, start: Day, day: date) -> DayPlan:
        """The day's rollover, if any, then its mid-scan updates: distinct timestamped courses (rolled-over ones on a
        rollover day) each drop one student and gain another."""
        s = self.spec
        start, rolled = self.rollover(start, day)
        candidates = rolled or [i for i, c in enumerate(start.courses) if c.timestamps and c.is_active]
        count = min(len(candidates), math.ceil(s.churn_share * len(start.courses))) if s.churn_share > 0 else 0
        if not count:
            return DayPlan(start, (), start)
        rng = random.Random(f"{s.seed}:{s.world_key}:{day.isoformat()}:churn")
        scan_start = datetime.combine(day, datetime.min.time()) + timedelta(seconds=DAY_SECONDS + 1800)
        picked = rng.sample(candidates, count)  # random order: the order the updates fire in
        updates = []
        for k, index in enumerate(picked):
            course = start.courses[index]
            gone = set(rng.sample(sorted(course.students), 1)) if course.students else set()
            students = course.students.difference(gone) | {rng.randint(1, s.n_students)}
            updated_at = stamp_text(scan_start + timedelta(seconds=k))  # later updates carry later stamps
            changed = course._replace(students=students, dropped=(course.dropped | gone) - students,
                                      updated_at=updated_at)  # fmt: skip
            updates.append(Update(index, changed))
        courses = list(start.courses)
        for update in updates:
            courses[update.index] = update.course
        return DayPlan(start, tuple(updates), Day(tuple(courses), start.next_course, start.next_class))
