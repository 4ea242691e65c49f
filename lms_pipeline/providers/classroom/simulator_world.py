"""The simulated Classroom's world in Classroom's shapes: ids (a course's, a user's, a courseWork's), courses,
courseWork and submissions built from a ``World``, and the grades planted among them (a 0, a draft-only grade, a
pending regrade)."""

from __future__ import annotations

import base64
import re
import zlib
from decimal import Decimal

from lms_pipeline.simulator.world import CourseView

COURSE_ID_BASE = 700_000_000_000


USER_ID_BASE = 100_000_000_000


COURSEWORK_ID_BASE = 800_000_000_000  # + course number * 1000 + the content's index in its course


MAX_POINTS = 100


CONTENT_MARKER = "lms-content:"  # courseWork.description carries "lms-content:<world content id>"


PLANT_EVERY = 30  # one numeric grade in PLANT_EVERY is a 0, one more draft-only, one more a pending regrade


def classroom_course_id(number: int) -> str:
    """The opaque numeric Classroom id of the world's course ``number``."""
    return str(COURSE_ID_BASE + number)


def classroom_user_id(student_id: str) -> str:
    """The opaque numeric Classroom user id of the world's student ``stu-NNNNN``."""
    return str(USER_ID_BASE + int(student_id.removeprefix("stu-")))


def classroom_coursework_id(content_id: str) -> str:
    """The numeric courseWork id of the world's content ``cnt-<course>-<index>``; ``content_id_of`` inverts it."""
    _, course, index = content_id.split("-")
    if int(index) >= 1000:
        raise ValueError(f"content index of {content_id!r} does not fit the courseWork id scheme")
    return str(COURSEWORK_ID_BASE + int(course) * 1000 + int(index))


def content_id_of(coursework_id: str) -> str:
    """The world content id of a courseWork id from ``classroom_coursework_id``."""
    course, index = divmod(int(coursework_id) - COURSEWORK_ID_BASE, 1000)
    return f"cnt-{course:05d}-{index:02d}"


def grade_percent(world_grade: str) -> Decimal | None:
    """The percent a gradebook string states ("87", "84.5%", "17/20"), exactly; None for "", "EX", "pass", text."""
    number = r"([+-]?\d+(?:\.\d+)?)"
    text = world_grade.strip()
    if match := re.fullmatch(number + r"\s*%?", text):
        return Decimal(match.group(1))
    if (match := re.fullmatch(number + r"\s*/\s*" + number, text)) and Decimal(match.group(2)) > 0:
        return Decimal(match.group(1)) * 100 / Decimal(match.group(2))
    return None


def planted(learner: str, content: str) -> str | None:
    """Which planted case a numeric grade cell is: ``zero``, ``draft_only``, ``regrade`` or None (as the world)."""
    slot = zlib.crc32(f"{learner}|{content}|classroom".encode()) % PLANT_EVERY
    return {0: "zero", 1: "draft_only", 2: "regrade"}.get(slot)


def classroom_submission_grade(learner: str, content: str, world_grade: str) -> dict:
    """``state`` and the grade fields of the submission for an activity whose gradebook string is ``world_grade``
    (maxPoints 100, so points are the percent); see the module docstring for the mapping and the planted cases."""
    percent = grade_percent(world_grade)
    if percent is None:  # "" is handed in and waiting; "EX", "pass" and text have no Classroom form
        return {"state": "TURNED_IN" if world_grade.strip() == "" else "RETURNED"}
    case = planted(learner, content)
    points = Decimal(0) if case == "zero" else percent * MAX_POINTS / 100
    if case == "draft_only":
        return {"state": "TURNED_IN", "draftGrade": json_number(points)}
    draft = points - 5 if points >= 5 else points + 5
    return {"state": "RETURNED", "assignedGrade": json_number(points),
            "draftGrade": json_number(draft if case == "regrade" else points)}  # fmt: skip


def json_number(value: Decimal) -> int | float:
    """A whole number as a JSON integer (87, not 87.0), else the nearest double (84.5)."""
    return int(value) if value == value.to_integral_value() else float(value)


def course_state(course: CourseView) -> str:
    return "ACTIVE" if course.is_active else "ARCHIVED"


def course_resource(course: CourseView) -> dict:
    """A Course resource; the world's missing timestamps stay missing (real courses always have them)."""
    times = {"creationTime": course.created_at, "updateTime": course.updated_at} if course.updated_at else {}
    return {"id": classroom_course_id(course.number), "name": course.name, **times, "courseState": course_state(course)}


def coursework_resource(course: CourseView, content: dict) -> dict:
    """A CourseWork resource for a world content (``CONTENT_MARKER`` in the description: see the module docstring)."""
    return {"courseId": classroom_course_id(course.number), "id": classroom_coursework_id(content["id"]),
            "title": content["name"], "description": f"{CONTENT_MARKER}{content['id']}", "state": "PUBLISHED",
            "creationTime": content["created_at"], "updateTime": content["updated_at"], "maxPoints": MAX_POINTS,
            "workType": "ASSIGNMENT", "submissionModificationMode": "MODIFIABLE_UNTIL_TURNED_IN"}  # fmt: skip


def submission_resource(course: CourseView, activity: dict) -> dict:
    """A StudentSubmission for a world activity carrying ``assigned_grade``."""
    learner, content = activity["student_id"], activity["content_id"]
    user_id, work_id = classroom_user_id(learner), classroom_coursework_id(content)
    grade = classroom_submission_grade(learner, content, activity["assigned_grade"])
    late = {"late": True} if zlib.crc32(f"{learner}|{content}|late".encode()) % 10 == 0 else {}
    opaque = base64.urlsafe_b64encode(f"{work_id}:{user_id}".encode()).decode().rstrip("=")
    return {"courseId": classroom_course_id(course.number), "courseWorkId": work_id, "id": f"Cg{opaque}",
            "userId": user_id, "creationTime": activity["started_at"], "updateTime": activity["updated_at"],
            **grade, **late, "courseWorkType": "ASSIGNMENT"}  # fmt: skip
