"""The world in OneRoster 1.2 shapes: GUIDRefs, users, the academic sessions a class runs in (terms and school years,
from the days its course was active), and the ids and instants the records carry."""

from __future__ import annotations

import threading
import zlib
from datetime import date, timedelta

from lms_pipeline.simulator.world import CourseView, World
from lms_pipeline.simulator.world_parts import DAY_SECONDS, student_name


# ---- helpers --------------------------------------------------------------------------------------------------
class CourseDays:
    """The day each course of one world was first listed and the day it was first inactive, found once by walking
    the world's days forward.

    The world knows only each day's flag (and may omit a course's timestamps); a term's dates must name the days a
    course started and stopped, and stay the same on every later day. Courses never come back once inactive, and
    the world replays days deterministically (its checkpoints make the walk cost what computing the days costs)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.walked: date | None = None
        self.listed: dict[str, date] = {}
        self.stopped: dict[str, date] = {}
        self._lock = threading.Lock()

    def until(self, day: date) -> tuple[dict[str, date], dict[str, date]]:
        """(course id -> first listed day, course id -> first inactive day), for the days up to ``day``."""
        with self._lock:
            walked = self.walked or self.world.spec.start_date - timedelta(days=1)
            while walked < day:
                walked += timedelta(days=1)
                for course_id, active in self.world.is_active(walked).items():
                    self.listed.setdefault(course_id, walked)
                    if not active:
                        self.stopped.setdefault(course_id, walked)
            self.walked = max(walked, self.walked or walked)
            return ({c: d for c, d in self.listed.items() if d <= day},
                    {c: d for c, d in self.stopped.items() if d <= day})  # fmt: skip


def school_year_of(day: date) -> int:
    """The year the school year holding ``day`` ends in (OneRoster's ``schoolYear``; years run 1 July-30 June)."""
    return day.year + 1 if day.month >= 7 else day.year


def course_term(view: CourseView, started: date, ended: date | None, day: date, fallback: str) -> dict:
    """The term a course's classes run in: from the day it was first listed to the day it went inactive (excluded),
    or while it runs to the end of the current school year (1 July, excluded)."""
    if ended is not None:
        end, modified = ended, view.updated_at or f"{ended}T00:00:00Z"  # the course last changed when it stopped
    else:
        end = date(school_year_of(day), 7, 1)
        modified = max(view.created_at or fallback, f"{end.year - 1}-07-01T00:00:00Z")  # extended each 1 July
    return {
        "sourcedId": f"term-{view.id}", "status": "active", "dateLastModified": modified,
        "title": f"{view.name} teaching period", "startDate": started.isoformat(), "endDate": end.isoformat(),
        "type": "term", "schoolYear": str(school_year_of(end - timedelta(days=1))),
    }  # fmt: skip


def guid_ref(root: str, collection: str, sourced_id: str, kind: str) -> dict:
    return {"href": f"{root}/{collection}/{sourced_id}", "sourcedId": sourced_id, "type": kind}


def user_record(sid: str, school: dict, modified: str) -> dict:
    first, last = student_name(number_of(sid))
    email = f"{first}.{last}.{number_of(sid)}@school.example".lower()
    return {
        "sourcedId": sid, "status": "active", "dateLastModified": modified, "enabledUser": "true",
        "username": sid, "givenName": first, "familyName": last, "email": email,
        "roles": [{"roleType": "primary", "role": "student", "org": school}],
    }  # fmt: skip


def number_of(world_id: str) -> int:
    return int(world_id.rsplit("-", 1)[1])


def moment_of(day: date, *parts: str) -> str:
    """A fixed second of ``day`` before 23:00 (when the world's changes happen), derived from ``parts``."""
    hour, rest = divmod(zlib.crc32("|".join(parts).encode()) % DAY_SECONDS, 3600)
    return f"{day}T{hour:02d}:{rest // 60:02d}:{rest % 60:02d}Z"
