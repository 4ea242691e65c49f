"""The simulated Canvas's world in Canvas's shapes: courses, sections, enrollments, assignments, grading standards
and submissions built from a ``World`` (its courses' rosters, contents and activities), cached per day.

How the world becomes enrollments (deterministic, from zlib.crc32 of course and student): every enrolled student has
an active StudentEnrollment in their section; every student who left has one enrollment that is deleted, inactive
or completed; some courses have invited students who are not on the roster; every course has one TeacherEnrollment,
and the token user's own courses a second one (the token user's).

How the world becomes grades: each content of a course is an assignment (id = the integer of the content id's
digits, "cnt-00007-02" -> 702; the world's content id in ``integration_id``, as Canvas has no SIS id to put it in;
100 points possible). A share of them (``letter_grade_share``, a quarter by default, by crc32) are ``letter_grade``
assignments graded with the course's grading standard: Canvas's default scheme, or in a third of the courses a
scheme whose cutoffs (.545, .55, .555, .56) are fractions that binary floats push above their exact value, so only
an exact (Decimal) comparison gives the right letter at those boundaries. Every world activity with an
``assigned_grade`` is one submission, whatever the learner's enrollment state: "87", "84.5%" and "17/20" are graded
scores out of 100 (87.0, 84.5, 85.0), "EX" is excused (no score), "" is submitted and not graded yet, and "pass" is
a graded complete/incomplete-style grade without a score. Students' user ids are their numbers; guests (never on a
roster, no SIS id and no email) are 9,000,000 + their number.
"""

from __future__ import annotations

import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from lms_pipeline.providers.canvas.simulator_http import SubmissionKey
from lms_pipeline.simulator.world import CourseView, World
from lms_pipeline.simulator.world_parts import instructor_name, student_id, student_name

ENROLLMENT_TYPES = ("StudentEnrollment", "TeacherEnrollment", "TaEnrollment", "DesignerEnrollment",
                    "ObserverEnrollment")  # fmt: skip
LEFT_STATES = ("deleted", "inactive", "completed")  # how a student who left the roster shows up
ROOT_ACCOUNT_ID = 1  # every simulated course belongs to the root account; ``self`` names it too
TOKEN_USER_ID = 8_000_000  # the token's own user: above the teachers' ids, below the guests'
OWN_COURSES = 5  # the token user teaches the first five courses created: all that GET /courses lists
TEACHER_USER_BASE = 1_000_000  # teacher user ids: disjoint from the students' 1..n_students
GUEST_USER_BASE = 9_000_000  # guests' user ids ("gst-00007" -> 9000007): disjoint from students and teachers
POINTS_POSSIBLE = Decimal(100)  # every simulated assignment is out of 100 points
# Canvas's default grading scheme (GradingStandard.default_grading_standard), lower bounds as fractions 0-1.
DEFAULT_SCHEME = (("A", 0.94), ("A-", 0.90), ("B+", 0.87), ("B", 0.84), ("B-", 0.80), ("C+", 0.77), ("C", 0.74),
                  ("C-", 0.70), ("D+", 0.67), ("D", 0.64), ("D-", 0.61), ("F", 0.0))  # fmt: skip
# Cutoffs whose float * 100 lands above the exact value (0.545 * 100 == 54.50000000000001): a float comparison gives
# 54.5% the letter below "D-", Canvas's BigDecimal comparison gives "D-".
BOUNDARY_SCHEME = (("A", 0.9), ("B", 0.8), ("C", 0.7), ("C-", 0.56), ("D+", 0.555), ("D", 0.55), ("D-", 0.545),
                   ("F", 0.0))  # fmt: skip
_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")

EnrollmentKey = tuple[str, str, int]  # Canvas lists enrollments by type, sortable name, id: the bookmark


@dataclass(frozen=True)
class Gradebook:
    """One course's grade listings on one day, built once: paging asks for the same course many times."""

    assignments: list[dict]
    standards: list[dict]
    submissions: list[tuple[SubmissionKey, dict]]  # sorted by id; each with its ``user``, dropped unless asked


class CanvasRecords:
    """The world's objects as Canvas gives them, for one simulated instance's options (``sis_permission``,
    ``second_section_share``, ``letter_grade_share``); a day's courses and a course's gradebook are built once."""

    def __init__(self, sis_permission: bool, second_section_share: float, letter_grade_share: float) -> None:
        self.sis_permission = sis_permission
        self.second_section_share, self.letter_grade_share = second_section_share, letter_grade_share
        self._views: OrderedDict[tuple, dict[int, CourseView]] = OrderedDict()
        self._gradebooks: OrderedDict[tuple, Gradebook] = OrderedDict()
        self._emails: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    def course_views(self, world: World, as_of: date) -> dict[int, CourseView]:
        """The day's courses by Canvas id; cached, as a scan asks for the same day hundreds of times."""
        key = (world.spec.connection_id, as_of, world.churn_fired(as_of)[0])
        with self._lock:
            if key in self._views:
                self._views.move_to_end(key)
                return self._views[key]
        views = {v.number: v for v in world.roster_view(as_of)}
        with self._lock:
            self._views[key] = views
            while len(self._views) > 8:
                self._views.popitem(last=False)
        return views

    def course(self, view: CourseView, own: bool = False) -> dict:
        """Canvas's Course object (it has created_at but no updated_at); in the user's own listing with the
        user's enrollments in it, as ``GET /courses`` gives them."""
        mine = {"enrollments": [{"type": "teacher", "role": "TeacherEnrollment", "role_id": 4,
                                 "user_id": TOKEN_USER_ID, "enrollment_state": "active",
                                 "limit_privileges_to_course_section": False}]} if own else {}  # fmt: skip
        return self.sis({
            "id": view.number, "sis_course_id": view.id, "name": view.name, "course_code": f"C{view.number:05d}",
            "workflow_state": workflow_state(view), "account_id": ROOT_ACCOUNT_ID,
            "root_account_id": ROOT_ACCOUNT_ID, "enrollment_term_id": 1, "created_at": view.created_at,
            "start_at": None, "end_at": None, **mine,
        })  # fmt: skip

    def sections(self, view: CourseView) -> list[dict]:
        return [
            self.sis({"id": _number(cls), "name": f"{view.name} - Section {chr(ord('A') + k)}",
                       "course_id": view.number, "sis_section_id": cls, "sis_course_id": view.id,
                       "nonxlist_course_id": None, "start_at": None, "end_at": None})
            for k, (cls, _) in enumerate(view.sections)
        ]  # fmt: skip

    def enrollments(self, world: World, view: CourseView, own: bool) -> list[tuple[EnrollmentKey, dict]]:
        """Every enrollment of the course, sorted in Canvas's listing order (type, sortable name, id); ``own``: the
        token user teaches it too."""
        sections = [cls for cls, _ in view.sections]
        placed = [(sid, k, "active") for k, (_, members) in enumerate(view.sections) for sid in members]
        share = self.second_section_share
        if share and len(sections) > 1:
            placed += [(sid, (k + 1) % len(sections), "active") for sid, k, _ in list(placed)
                       if _hash(view.id, sid, "second") % 1000 < share * 1000]  # fmt: skip
        placed += [(sid, _hash(view.id, sid) % len(sections), LEFT_STATES[_hash(view.id, sid, "left") % 3])
                   for sid in view.dropped]  # fmt: skip
        placed += [(sid, 0, "invited") for sid in _invited(view, world.spec.n_students)]
        rows = [self._student_enrollment(view, sections, sid, k, state) for sid, k, state in placed]
        rows.append(self._teacher_enrollment(view, sections))
        if own:
            user = {"id": TOKEN_USER_ID, "name": "Token User", "sortable_name": "User, Token", "short_name": "Token",
                    "sis_user_id": "tch-token"}  # fmt: skip
            rows.append(self._enrollment(view, sections, 0, user, "TeacherEnrollment", "active"))
        return sorted(rows, key=lambda row: row[0])

    def _student_enrollment(self, view: CourseView, sections: Sequence[str], sid: str, k: int,
                            state: str) -> tuple[EnrollmentKey, dict]:  # fmt: skip
        number = _number(sid)
        first, last = student_name(number)
        user = {"id": number, "name": f"{first} {last}", "sortable_name": f"{last}, {first}", "short_name": first,
                "sis_user_id": sid}  # fmt: skip
        return self._enrollment(view, sections, k, user, "StudentEnrollment", state)

    def _teacher_enrollment(self, view: CourseView, sections: Sequence[str]) -> tuple[EnrollmentKey, dict]:
        name = instructor_name(view.number)
        user = {"id": TEACHER_USER_BASE + view.number, "name": name, "sortable_name": name, "short_name": name,
                "sis_user_id": f"tch-{view.number:05d}"}  # fmt: skip
        return self._enrollment(view, sections, 0, user, "TeacherEnrollment", "active")

    def _enrollment(self, view: CourseView, sections: Sequence[str], k: int, user: dict, kind: str,
                    state: str) -> tuple[EnrollmentKey, dict]:  # fmt: skip
        # Stable ids: one enrollment per (course, section, user); users are below TEACHER_USER_BASE * 2.
        enrollment_id = (view.number * len(ENROLLMENT_TYPES) + ENROLLMENT_TYPES.index(kind)) * 10**8 + k * 10**7
        enrollment_id += user["id"]
        stamp = view.updated_at or view.created_at
        record = self.sis({
            "id": enrollment_id, "user_id": user["id"], "course_id": view.number,
            "course_section_id": _number(sections[k]), "type": kind, "role": kind, "enrollment_state": state,
            "created_at": view.created_at, "updated_at": stamp, "sis_course_id": view.id,
            "sis_section_id": sections[k], "sis_user_id": user["sis_user_id"], "user": self.sis(user),
        })  # fmt: skip
        return (kind, user["sortable_name"], enrollment_id), record

    # ---- grades ----------------------------------------------------------------------------------------------
    def gradebook(self, world: World, view: CourseView, as_of: date) -> Gradebook:
        """The course's assignments, grading standard and submissions on ``as_of``; cached per course and day."""
        key = (world.spec.connection_id, as_of, world.churn_fired(as_of)[0], view.number)
        with self._lock:
            if key in self._gradebooks:
                self._gradebooks.move_to_end(key)
                return self._gradebooks[key]
        standard = self._grading_standard(view)
        scheme = [(entry["name"], entry["value"]) for entry in standard["grading_scheme"]]
        contents = [k for k in world.contents(as_of) if view.id in k["course_ids"]]
        assignments = {k["id"]: self._assignment(view, k, standard["id"]) for k in contents}
        emails = self._email_book(world, as_of)
        submissions = sorted(
            (
                self._submission(assignments[a["content_id"]], a, scheme, emails)
                for a in world.activities_of(as_of, view.id)
                if "assigned_grade" in a and a["content_id"] in assignments
            ),
            key=lambda keyed: keyed[0],
        )
        book = Gradebook(list(assignments.values()), [standard], submissions)
        with self._lock:
            self._gradebooks[key] = book
            while len(self._gradebooks) > 256:
                self._gradebooks.popitem(last=False)
        return book

    @staticmethod
    def _grading_standard(view: CourseView) -> dict:
        """The course's own standard (grading_standards_api_controller.rb), values as fractions 0-1."""
        boundary = _hash(view.id, "scheme") % 3 == 0
        return {
            "id": view.number, "title": "Boundary scheme" if boundary else "Default Grading Scheme",
            "context_type": "Course", "context_id": view.number,
            "grading_scheme": [{"name": name, "value": value}
                               for name, value in (BOUNDARY_SCHEME if boundary else DEFAULT_SCHEME)],
        }  # fmt: skip

    def _assignment(self, view: CourseView, content: dict, standard_id: int) -> dict:
        letter = _hash(content["id"], "letter") % 1000 < self.letter_grade_share * 1000
        return {
            "id": _digits(content["id"]), "name": content["name"], "course_id": view.number,
            "points_possible": float(POINTS_POSSIBLE), "grading_type": "letter_grade" if letter else "points",
            "grading_standard_id": standard_id if letter else None, "integration_id": content["id"],
            "published": content["is_active"], "created_at": content["created_at"],
            "updated_at": content["updated_at"], "due_at": None, "assignment_group_id": 1,
            "omit_from_final_grade": False, "post_to_sis": True,
        }  # fmt: skip

    def _submission(self, assignment: dict, activity: dict, scheme: Sequence[tuple[str, float]],
                    emails: Mapping[str, str]) -> tuple[SubmissionKey, dict]:  # fmt: skip
        """One activity's grade as Canvas's Submission object: score out of points_possible, grade as text."""
        learner, given = activity["student_id"], activity["assigned_grade"]
        guest = learner.startswith("gst-")
        user_id = (GUEST_USER_BASE if guest else 0) + _number(learner)
        percent = _percent(given)
        excused = given.strip().upper() == "EX"
        if excused or given.strip() == "":
            score, grade = None, None
        elif percent is None:  # a complete/incomplete-style grade: text without a score
            score, grade = None, given
        else:
            score = percent * POINTS_POSSIBLE / 100
            grade = score_to_grade(percent, scheme) if assignment["grading_type"] == "letter_grade" else _text(score)
        graded = excused or grade is not None
        stamp = activity["updated_at"]
        user = {"id": user_id, "name": f"Guest {_number(learner)}" if guest else " ".join(student_name(user_id)),
                "login_id": emails.get(learner), **({} if guest else {"sis_user_id": learner})}  # fmt: skip
        submission_id = assignment["id"] * 10**7 + user_id
        record = {
            "id": submission_id, "assignment_id": assignment["id"], "user_id": user_id,
            **({} if guest else {"sis_user_id": learner}),
            "score": None if score is None else float(score), "grade": grade,
            "entered_score": None if score is None else float(score), "entered_grade": grade, "excused": excused,
            "late": False, "missing": False, "workflow_state": "graded" if graded else "submitted",
            "submitted_at": activity.get("completed_at", stamp), "graded_at": stamp if graded else None,
            "posted_at": stamp if graded else None, "attempt": 1,
            "grader_id": TEACHER_USER_BASE + assignment["course_id"] if graded else None,
            "user": self.sis(user),
        }  # fmt: skip
        return (submission_id,), self.sis(record)

    def _email_book(self, world: World, as_of: date) -> dict[str, str]:
        """Student id -> login email; the pool is the same every day, so it is read once per connection."""
        connection_id = world.spec.connection_id
        with self._lock:
            book = self._emails.get(connection_id)
        if book is None:
            book = {s["id"]: s["emails"][0]["email"] for s in world.students(as_of) if s.get("emails")}
            with self._lock:
                self._emails[connection_id] = book
        return book

    def sis(self, record: dict) -> dict:
        """Without SIS permission Canvas leaves every sis_* field out (enrollments_api_controller.rb)."""
        if self.sis_permission:
            return record
        return {k: v for k, v in record.items() if not k.startswith("sis_")}


def workflow_state(view: CourseView) -> str:
    return "available" if view.is_active else "completed"


def own_courses(views: Mapping[int, CourseView]) -> dict[int, CourseView]:
    """The courses the token's user teaches: the first ``OWN_COURSES`` created (``views`` is in creation order)."""
    return dict(list(views.items())[:OWN_COURSES])


def teacher_ids(view: CourseView, own: bool) -> set[str]:
    """User ids (as text, as ``by_teachers[]`` sends them) of the course's teachers."""
    return {str(TEACHER_USER_BASE + view.number), *([str(TOKEN_USER_ID)] if own else [])}


def account(world: World) -> dict:
    """The root account, as ``GET /accounts/:id`` shows it (accounts_controller.rb ``show``)."""
    return {"id": ROOT_ACCOUNT_ID, "name": f"{world.spec.connection_id} (simulated root account)",
            "uuid": f"sim{zlib.crc32(world.spec.connection_id.encode()):08x}", "parent_account_id": None,
            "root_account_id": None, "workflow_state": "active", "default_time_zone": "Etc/UTC"}  # fmt: skip


def _number(world_id: str) -> int:
    """Canvas's integer id from a world id: "stu-00042" -> 42, "cls-00007" -> 7."""
    return int(world_id.rsplit("-", 1)[1])


def _digits(world_id: str) -> int:
    """Canvas's integer id of a content: the digits of its world id, "cnt-00007-02" -> 702 (course, index)."""
    return int("".join(ch for ch in world_id if ch.isdigit()))


def _percent(grade: str) -> Decimal | None:
    """The percent a world grade string means ("87", "84.5%", "17/20" -> 85), exactly; None when it has none."""
    text = grade.strip()
    if text.endswith("%") and _NUMBER.fullmatch(text[:-1].strip()):
        return Decimal(text[:-1].strip())
    top, slash, bottom = text.partition("/")
    if slash and _NUMBER.fullmatch(top.strip()) and _NUMBER.fullmatch(bottom.strip()) and Decimal(bottom) > 0:
        return Decimal(top) * 100 / Decimal(bottom)
    return Decimal(text) if _NUMBER.fullmatch(text) else None


def score_to_grade(percent: Decimal, scheme: Sequence[tuple[str, float]]) -> str:
    """Canvas's GradingStandard#score_to_grade: a negative percent counts as 0; the letter is the entry with the
    highest lower bound <= percent, else the lowest entry. Bounds are fractions 0-1 compared exactly (BigDecimal in
    Canvas, Decimal of their shortest text here): 0.545 means 54.5, not 54.50000000000001."""
    percent = max(percent, Decimal(0))
    bounds = sorted(((Decimal(str(value)) * 100, name) for name, value in scheme), reverse=True)
    return next((name for bound, name in bounds if percent >= bound), bounds[-1][1])


def _text(number: Decimal) -> str:
    """A score as Canvas writes it in ``grade``: 87 -> "87", 84.5 -> "84.5"."""
    return format(number.normalize(), "f")


def _hash(*parts: str) -> int:
    return zlib.crc32("|".join(parts).encode())


def _invited(view: CourseView, n_students: int) -> list[str]:
    """0-2 students invited to the course who are not (and never were) on its roster: pending, not enrolled."""
    on_roster = set(view.enrolled) | set(view.dropped)
    count, invited = _hash(view.id, "invited") % 3, []
    for k in range(32):  # bounded: a crowded pool may leave fewer than ``count``
        if len(invited) == count:
            break
        sid = student_id(1 + _hash(view.id, "invited", str(k)) % n_students)
        if sid not in on_roster and sid not in invited:
            invited.append(sid)
    return invited
