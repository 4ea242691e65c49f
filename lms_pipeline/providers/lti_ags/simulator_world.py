"""The world in LTI AGS and NRPS shapes (docs/providers.md §3, §9.5): each course a context with its launch claims, each
content a line item, each learner an opaque LTI user whose grade cell is the platform's reading of the world grade
(planted zeros included), and the NRPS members tying users to their SIS ids."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import NamedTuple
from urllib.parse import quote

from lms_pipeline.simulator.world import CourseView, World
from lms_pipeline.simulator.world_parts import instructor_name, student_name

AGS = "https://purl.imsglobal.org/spec/lti-ags/scope/"
ZERO_EVERY = 40  # one numeric grade cell in ZERO_EVERY is scored 0 (planted: the world has no zeros)


AGS_CLAIM = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"


NRPS_CLAIM = "https://purl.imsglobal.org/spec/lti-nrps/claim/namesroleservice"


LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"


INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"


class Entry(NamedTuple):
    """One learner's grade cell on one line item: what the results listing pages over."""

    user_id: str
    grade: str  # the gradebook's text ("" when ungraded), planted zeros applied


@dataclass(frozen=True)
class Context:
    view: CourseView
    line_items: dict[str, str]  # content id -> label, in content id order
    cells: dict[str, list[Entry]]  # content id -> grade cells sorted by user_id
    members: list[dict]  # NRPS members sorted by user_id


def lti_user_id(learner_id: str) -> str:
    """The opaque LTI ``sub`` of a world learner: deterministic, and nothing like the SIS id."""
    return hashlib.sha256(learner_id.encode()).hexdigest()[:16]


def type_id(content_id: str) -> str | None:
    """The ``type_id`` query parameter of a line item's id, or None when its id has no query (about half)."""
    h = zlib.crc32(f"{content_id}|type".encode())
    return str(1 + (h >> 1) % 9) if h % 2 else None


def platform_grade(learner_id: str, content_id: str, world_grade: str | None) -> str | None:
    """The grade text the platform holds for a cell: the world's, except the planted zeros (a numeric grade whose
    hash picks it scores 0 and keeps its maximum: "17/20" -> "0/20", "84.5%" -> "0%", "87" -> "0")."""
    if world_grade is None or result_score(world_grade) is None:
        return world_grade
    if zlib.crc32(f"{learner_id}|{content_id}|zero".encode()) % ZERO_EVERY:
        return world_grade
    if "/" in world_grade:
        return "0/" + world_grade.split("/", 1)[1]
    return "0%" if world_grade.endswith("%") else "0"


def result_score(grade: str) -> tuple[float, float] | None:
    """(resultScore, resultMaximum) of a gradebook entry; None when it has no numeric score ("", "EX", "pass")."""
    number = r"(\d+(?:\.\d+)?)"
    if match := re.fullmatch(number + "%?", grade.strip()):
        return to_number(match.group(1)), 100
    if (match := re.fullmatch(number + "/" + number, grade.strip())) and float(match.group(2)) > 0:
        return to_number(match.group(1)), to_number(match.group(2))
    return None


def to_number(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() else value


def build_contexts(world: World, as_of: date) -> dict[str, Context]:
    views = world.roster_view(as_of)
    emails = {s["id"]: s["emails"][0]["email"] for s in world.students(as_of)}
    labels = {c["id"]: c["name"] for c in world.contents(as_of)}
    cells: dict[str, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    guests: dict[str, set[str]] = defaultdict(set)
    for activity in world.activities(as_of):
        learner, course = activity["student_id"], activity["course_id"]
        if learner.startswith("gst-"):
            guests[course].add(learner)
        if "assigned_grade" in activity:
            grade = platform_grade(learner, activity["content_id"], activity["assigned_grade"]) or ""
            cells[course][activity["content_id"]].append(Entry(lti_user_id(learner), grade))
    contexts = {}
    for view in views:
        graded = cells.get(view.id, {})
        contexts[view.id] = Context(
            view=view,
            line_items={c: labels.get(c, c) for c in sorted(graded)},
            cells={c: sorted(entries) for c, entries in graded.items()},
            members=sorted(nrps_members(view, emails, sorted(guests.get(view.id, ()))), key=lambda m: m["user_id"]),
        )
    return contexts


def nrps_members(view: CourseView, emails: Mapping[str, str], guests: list[str]) -> list[dict]:
    """NRPS members: students on the roster (Active) and who left (Inactive, some Deleted), the instructor, and in
    odd-numbered courses the guests, listed without lis_person_sourcedid."""
    members = [nrps_person(sid, "Active", emails) for sid in view.enrolled]
    members += [nrps_person(sid, "Deleted" if zlib.crc32(f"{view.id}|{sid}".encode()) % 4 == 0 else "Inactive", emails)
                for sid in view.dropped]  # fmt: skip
    teacher = f"tch-{view.number:05d}"
    members.append({"user_id": lti_user_id(teacher), "status": "Active", "name": instructor_name(view.number),
                    "roles": [INSTRUCTOR], "lis_person_sourcedid": teacher})  # fmt: skip
    if view.number % 2:
        members += [
            {"user_id": lti_user_id(g), "status": "Active", "name": "Guest", "roles": [LEARNER]} for g in guests
        ]
    return members


def nrps_person(sid: str, status: str, emails: Mapping[str, str]) -> dict:
    first, last = student_name(int(sid.rsplit("-", 1)[1]))
    return {"user_id": lti_user_id(sid), "status": status, "name": f"{first} {last}", "given_name": first,
            "family_name": last, "email": emails.get(sid), "roles": [LEARNER], "lis_person_sourcedid": sid}  # fmt: skip


def line_item_id(base: str, course_id: str, content_id: str) -> str:
    kind = type_id(content_id)
    return f"{base}/contexts/{quote(course_id)}/lineitems/{quote(content_id)}/lineitem" + (
        f"?type_id={kind}" if kind else ""
    )


def line_item(base: str, context: Context, content_id: str) -> dict:
    return {"id": line_item_id(base, context.view.id, content_id), "scoreMaximum": 100,
            "label": context.line_items[content_id], "resourceId": content_id, "tag": "grade"}  # fmt: skip


def context_claims(base: str, context: Context, scopes: tuple[str, ...]) -> dict:
    """The claims a launch in this context carries: the AGS scopes granted and both service URLs."""
    course = f"{base}/contexts/{quote(context.view.id)}"
    return {
        "id": context.view.id,
        "label": f"C{context.view.number:05d}",
        "title": context.view.name,
        AGS_CLAIM: {"scope": [s for s in scopes if s.startswith(AGS)], "lineitems": f"{course}/lineitems"},
        NRPS_CLAIM: {"context_memberships_url": f"{course}/memberships", "service_versions": ["2.0"]},
    }
