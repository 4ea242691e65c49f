"""The SIS as the roster of record (OneRoster 1.2 rostering: courses, classes, academicSessions, enrollments, users),
with planted disagreements against the LMS world it mirrors, and their truth computed independently of the pipeline.

The SIS's rosters are the LMS world's true rosters (every LMS course with an SIS class: ``sis_plan.course_has_class``)
plus what districts see go wrong when the SIS pushes into the LMS (docs/operators.md, "Roster reconciliation"):

* late adds not yet pushed: a student the SIS enrolled (from a ``beginDate``, listed two days before it starts) whom
  the LMS course never got -> ``missing_in_lms``;
* drops not yet applied: a student the SIS dropped (``tobedeleted``, or an ``endDate`` that has passed) who is still
  in the LMS course -> ``missing_in_sis``;
* section moves: a student the SIS placed in another section than the LMS did -> ``section_mismatch``;
* unknown students: SIS users no LMS user matches (new students, or people the LMS knows by another email with no
  mapping row) -> ``unmapped_student``; LMS students the SIS lacks likewise;
* a class no LMS course has, and LMS courses without an SIS class -> ``unmapped_course``;
* a class whose LMS course does not expose its roster -> ``lms_roster_not_exposed`` (unknown, never missing).

Sections: when the LMS course has sections, the SIS lists one class per section, ``classCode`` = the LMS section
id, under an SIS course whose ``courseCode`` is the LMS course id; the class with ``classCode`` = the LMS course id
(the gradebook's class, ``sis_world``) then holds no students. Choices hash ids (zlib.crc32) as ``sis_plan`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import NamedTuple

from lms_pipeline.providers.oneroster.sis_plan import course_has_class, crc, sis_user_id, student_fate, student_number
from lms_pipeline.simulator.world import World

TERM = {"sourcedId": "as-2026-27", "status": "active", "dateLastModified": "2026-08-01T00:00:00Z",
        "title": "School year 2026-27", "type": "schoolYear", "startDate": "2026-08-01", "endDate": "2027-07-01",
        "schoolYear": "2027"}  # fmt: skip
TERM_REF = {"sourcedId": TERM["sourcedId"], "type": "academicSession"}
SCHOOL_REF = {"sourcedId": "org-school-1", "type": "org"}
SIS_ONLY_CLASS, SIS_ONLY_CODE, SIS_ONLY_COURSE = "cl-sis-only", "SIS-ONLY-101", "co-sis-only"
UNKNOWN_BASE = 90_000  # SIS-only users are usr-9xxxx: no LMS student has their number or email


class Seat(NamedTuple):
    """One SIS enrollment of a student: its class, the LMS course and section it stands for (None: no LMS course /
    the course class), and whether it counts on the day asked."""

    class_id: str
    user: str
    lms_course: str | None
    section: str | None
    status: str  # active | tobedeleted
    begin: date | None
    end: date | None

    def counts_on(self, day: date) -> bool:
        return (self.status == "active" and (self.begin is None or self.begin <= day)
                and (self.end is None or day < self.end))  # fmt: skip


def drop_day(start: date, course_id: str, learner: str) -> date | None:
    """The day the SIS drops this LMS student from the course (a drop the LMS never applies), or None."""
    key = crc(f"rdrop|{course_id}|{learner}")
    return start + timedelta(days=1 + key // 40 % 5) if key % 40 == 0 else None


def late_add(start: date, course_id: str, n_students: int) -> tuple[int, date] | None:
    """(student number, first day) of a student the SIS adds to the course and the LMS never gets, or None."""
    key = crc(f"radd|{course_id}")
    return (key // 7 % n_students + 1, start + timedelta(days=key // 3 % 6)) if key % 3 == 0 else None


def moved(course_id: str, learner: str) -> bool:
    """The SIS has this student in the next section of the course (a section move the LMS did not get)."""
    return crc(f"rsec|{course_id}|{learner}") % 20 == 0


def unknown_user(course_number: int) -> str | None:
    """An SIS-only student enrolled in this course (a new student no LMS user matches), or None."""
    return sis_user_id(UNKNOWN_BASE + course_number) if crc(f"runk|{course_number}") % 6 == 0 else None


class SisRosters:
    """The rostering side of one SIS world (``SisWorld`` serves what this builds)."""

    def __init__(self, lms: World) -> None:
        self.lms = lms
        self.start = lms.spec.start_date
        self.sectioned = lms.spec.classes != "none"

    # ---- what the SIS lists ----------------------------------------------------------------------------------
    def courses(self, day: date) -> list[dict]:
        out = [self._course(f"co-{c.number:05d}", c.name, c.id) for c in self.lms.roster_view(day)
               if course_has_class(c.number)]  # fmt: skip
        return [*out, self._course(SIS_ONLY_COURSE, "Study hall (SIS only)", "SIS-ONLY")]

    @staticmethod
    def _course(sourced_id: str, title: str, code: str) -> dict:
        return {"sourcedId": sourced_id, "status": "active", "dateLastModified": "2026-08-01T00:00:00Z",
                "title": title, "courseCode": code, "schoolYear": TERM_REF, "org": SCHOOL_REF}  # fmt: skip

    def section_classes(self, day: date) -> list[dict]:
        """The classes beyond each course's gradebook class: one per LMS section, and a class no LMS course has."""
        out = [self._class(f"cl-{c.number:05d}-s{k + 1}", f"{c.name} - Section {k + 1}", section_id,
                           f"co-{c.number:05d}")
               for c in self.lms.roster_view(day) if course_has_class(c.number) and self.sectioned
               for k, (section_id, _) in enumerate(c.sections)]  # fmt: skip
        return [*out, self._class(SIS_ONLY_CLASS, "Study hall", SIS_ONLY_CODE, SIS_ONLY_COURSE)]

    @staticmethod
    def _class(sourced_id: str, title: str, code: str, course: str) -> dict:
        return {"sourcedId": sourced_id, "status": "active", "dateLastModified": "2026-08-01T00:00:00Z",
                "title": title, "classCode": code, "classType": "scheduled", "course": {"sourcedId": course,
                "type": "course"}, "school": SCHOOL_REF, "terms": [TERM_REF]}  # fmt: skip

    def academic_sessions(self, day: date) -> list[dict]:
        return [TERM]

    def unknown_users(self, day: date) -> list[dict]:
        users = sorted({u for c in self.lms.roster_view(day) if course_has_class(c.number)
                        for u in [unknown_user(c.number)] if u})  # fmt: skip
        return [{"sourcedId": u, "status": "active", "dateLastModified": "2026-08-01T00:00:00Z", "enabledUser": "true",
                 "givenName": "New", "familyName": f"Student{u[4:]}", "identifier": f"S{u[4:]}",
                 "email": f"new.student{u[4:]}@sis.school.example", "roles": [{"roleType": "primary",
                 "role": "student"}]} for u in users]  # fmt: skip

    def enrollments(self, day: date) -> list[dict]:
        out = []
        for seat in self.seats(day):
            record = {"sourcedId": f"enr-{seat.class_id}-{seat.user}", "status": seat.status,
                      "dateLastModified": "2026-08-01T00:00:00Z", "user": {"sourcedId": seat.user, "type": "user"},
                      "class": {"sourcedId": seat.class_id, "type": "class"}, "school": SCHOOL_REF,
                      "role": "student", "primary": "false"}  # fmt: skip
            if seat.begin is not None:
                record["beginDate"] = seat.begin.isoformat()
            if seat.end is not None:
                record["endDate"] = seat.end.isoformat()
            out.append(record)
        return sorted(out, key=lambda r: r["sourcedId"])

    def seats(self, day: date) -> list[Seat]:
        """Every SIS enrollment listed on ``day`` (those that do not count today included)."""
        seats: list[Seat] = []
        for c in self.lms.roster_view(day):
            if not course_has_class(c.number):
                continue
            sections = [sid for sid, _ in c.sections] if self.sectioned else []
            where = {learner: k for k, (_, members) in enumerate(c.sections) for learner in members}

            def seat(learner_or_user: str, k: int | None, status: str = "active", begin: date | None = None,
                     end: date | None = None, *, course: str = c.id, number: int = c.number,
                     sections: list[str] = sections) -> Seat:  # fmt: skip
                if k is None or not sections:
                    return Seat(f"cl-{number:05d}", learner_or_user, course, None, status, begin, end)
                k %= len(sections)
                return Seat(f"cl-{number:05d}-s{k + 1}", learner_or_user, course, sections[k], status, begin, end)

            for learner in c.enrolled:
                n = student_number(learner)
                if n is None or student_fate(n) == "not_in_sis":
                    continue
                k = where.get(learner, 0) + (1 if moved(c.id, learner) and len(sections) > 1 else 0)
                dropped = drop_day(self.start, c.id, learner)
                if dropped is None or day < dropped:
                    seats.append(seat(sis_user_id(n), k))
                elif crc(f"rend|{c.id}|{learner}") % 2:  # the SIS end-dates the enrollment, status left active
                    seats.append(seat(sis_user_id(n), k, end=dropped))
                else:
                    seats.append(seat(sis_user_id(n), k, "tobedeleted"))
            for learner in c.dropped:  # the LMS's own drops: the SIS has them dropped too (agreement)
                n = student_number(learner)
                if n is not None and student_fate(n) != "not_in_sis":
                    seats.append(seat(sis_user_id(n), 0, "tobedeleted"))
            added = late_add(self.start, c.id, self.lms.spec.n_students)
            if added is not None and day >= added[1] - timedelta(days=2):  # listed before it begins
                learner = f"stu-{added[0]:05d}"
                if learner not in c.enrolled and learner not in c.dropped and student_fate(added[0]) != "not_in_sis":
                    seats.append(seat(sis_user_id(added[0]), 0, begin=added[1]))
            unknown = unknown_user(c.number)
            if unknown is not None:
                seats.append(seat(unknown, 0))
        known = [sis_user_id(n) for n in range(1, self.lms.spec.n_students + 1) if student_fate(n) == "in_sis"][:3]
        seats += [Seat(SIS_ONLY_CLASS, user, None, None, "active", None, None) for user in known]
        return seats

    # ---- ground truth ----------------------------------------------------------------------------------------
    def expected(self, day: date, student_map: Mapping[str, str] | None = None) -> dict[tuple[str, str], tuple]:
        """(course key, student key) -> (status, first day seen) of every disagreement on ``day``, for a pipeline
        that reconciled every day since the world's start. Keys as ``roster_discrepancies.row_key`` spells them:
        the LMS course id (``sis-class:<id>`` for a class no LMS course has) and the LMS student id
        (``sis-user:<id>`` for an SIS user no LMS student maps to)."""
        first: dict[tuple[str, str], tuple[str, date]] = {}
        for k in range((day - self.start).days + 1):
            current = self.day_statuses(self.start + timedelta(days=k), student_map)
            first = {key: (status, first[key][1] if key in first and first[key][0] == status else
                           self.start + timedelta(days=k)) for key, status in current.items()}  # fmt: skip
        return first

    def day_statuses(self, day: date, student_map: Mapping[str, str] | None = None) -> dict[tuple[str, str], str]:
        """The status of every disagreement on ``day`` alone (plain Python over the world's truth)."""
        smap = dict(student_map or {})
        reverse = {u: s for s, u in smap.items()}

        def sis_of(learner: str) -> str | None:
            n = student_number(learner)
            return smap.get(learner) or (sis_user_id(n) if n is not None and student_fate(n) == "in_sis" else None)

        def lms_of(user: str) -> str | None:
            if user in reverse:
                return reverse[user]
            n = int(user[4:]) if user[4:].isdigit() else None
            in_pool = n is not None and n <= self.lms.spec.n_students and student_fate(n) == "in_sis"
            return f"stu-{n:05d}" if in_pool and f"stu-{n:05d}" not in smap else None

        members: dict[str | None, dict[str, set[str]]] = {}
        for seat in self.seats(day):
            if seat.counts_on(day):
                sections = members.setdefault(seat.lms_course, {}).setdefault(seat.user, set())
                sections |= {seat.section} if seat.section else set()
        out: dict[tuple[str, str], str] = {}
        for user in members.get(None, {}):
            out[(f"sis-class:{SIS_ONLY_CLASS}", lms_of(user) or f"sis-user:{user}")] = "unmapped_course"
        for c in self.lms.roster_view(day):
            if not course_has_class(c.number):
                out |= {(c.id, s): "unmapped_course" for s in (c.enrolled if c.exposed else ())}
                continue
            sis = members.get(c.id, {})
            if not c.exposed:
                out |= {(c.id, lms_of(u) or f"sis-user:{u}"): "lms_roster_not_exposed" for u in sis}
                continue
            lms_sections = {learner: {sid} for sid, group in c.sections for learner in group} if self.sectioned else {}
            for user, sections in sis.items():
                learner = lms_of(user)
                if learner is None:
                    out[(c.id, f"sis-user:{user}")] = "unmapped_student"
                elif learner not in c.enrolled:
                    out[(c.id, learner)] = "missing_in_lms"
                elif sections and learner in lms_sections and sections != lms_sections[learner]:
                    out[(c.id, learner)] = "section_mismatch"
            for learner in c.enrolled:
                user = sis_of(learner)
                if user is None:
                    out[(c.id, learner)] = "unmapped_student"
                elif user not in sis:
                    out[(c.id, learner)] = "missing_in_sis"
        return out
