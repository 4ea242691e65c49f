"""A deterministic SIS (OneRoster 1.2) world linked to an LMS world, with planted disagreements and their truth.

The SIS holds the grades of record for the LMS world's courses. Most of them agree with the LMS; a fixed,
hash-chosen few disagree in each way a reconciliation must catch (docs/operators.md, "Grade reconciliation"):

* students: some are not in the SIS, some have another email there (only a mapping-file row links them), some
  have a duplicate SIS record with the same email (ambiguous); guests of the LMS have no student record at all;
* classes: some LMS courses have no SIS class; line items: some contents have none, some are titled differently
  in the SIS (only a mapping-file row links them), some are letter-graded (``textScore``, compared after the
  course's grading scheme converts the LMS percent);
* results: missing, a different score, a different score *newer* than the LMS grade (a write-back must not
  overwrite it), a ``tobedeleted`` row (read as absent; a write-back must find it and PUT over it, not create a
  second result for the pair), a result where the LMS has none, and rounding inside the tolerance (the SIS floors
  84.5 to 84).

Choices hash the entity ids (zlib.crc32), so they are stable across days and independent of the order asked.
``expected_statuses`` computes, in plain Python and independently of the pipeline's SQL, the status every
discrepancy row must get. Writes (PUT) land in an overlay that outlives days, like a real gradebook.

The default SIS answers as the OneRoster 1.2 gradebook spec says (docs/providers.md §9.1); each vendor deviation
the write-back must survive is a switch of ``SisSpec``, off by default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import ROUND_FLOOR, Decimal

from lms_pipeline.providers.oneroster.sis_plan import (
    Scheme,
    course_has_class,
    crc,
    letter_for,
    line_item_id,
    line_item_kind,
    moment_of,
    other_letter,
    parse_percent,
    result_id,
    sis_user_id,
    stamp_of,
    student_fate,
    student_number,
)
from lms_pipeline.providers.oneroster.sis_rosters import TERM_REF, SisRosters
from lms_pipeline.simulator.world import World

SCORE_STATUSES = ("exempt", "fully graded", "not submitted", "partially graded", "submitted")
SCHOOL_ID = "org-school-1"


PUT_STATUSES = (201, 200, 204)  # the spec's 201 (no body), then the vendor variants a client must accept (§2.8)


@dataclass(frozen=True)
class SisSpec:
    sis_id: str
    seed: int = 0
    token_ttl_seconds: float = 300.0
    rate_limit_every: int = 0  # every Nth request answers 429 server_busy
    max_limit: int = 100
    # Vendor deviations (§9.1 leaves filter support to the vendor and lists no 409 and no 200 for PUT):
    ignores_filter: bool = False  # listings ignore ``filter`` and return every record
    put_status: int = 201  # 201 with no body (spec); 200 with the stored result as body; 204 with none
    conflict_on_duplicate: bool = False  # PUT of a new sourcedId for a pair that already has a result: 409
    drop_after_writes: int = 0  # after this many writes the SIS drops the connection of the next ``drops`` writes
    drops: int = 1
    drop_applies_write: bool = True  # a dropped write lands before its connection drops (the answer is lost)

    def __post_init__(self) -> None:
        if self.put_status not in PUT_STATUSES:
            raise ValueError(f"put_status must be one of {PUT_STATUSES}, got {self.put_status}")


@dataclass(frozen=True)
class _Planted:
    """One generated SIS result and the status the pair must get (before mapping decides otherwise)."""

    result: dict
    course_id: str
    learner: str
    content_id: str


class SisWorld:
    """The SIS of one LMS world: users, classes, line items and results as of a day, plus written results."""

    def __init__(self, spec: SisSpec, lms: World, scheme_for: Callable[[str], Scheme | None]) -> None:
        self.spec, self.lms, self.scheme_for = spec, lms, scheme_for
        self._lock = threading.Lock()
        self._written: dict[str, dict] = {}  # result sourcedId -> the result as last written (outlives days)
        self._cache: dict[date, tuple] = {}
        self._writes_seen = 0  # write requests since the spec was last switched (drop_after_writes counts these)
        self.rosters = SisRosters(lms)  # the rostering side: courses, sessions, section classes, enrollments

    def switch(self, **changes: object) -> None:
        """Change vendor behaviour while the SIS keeps its gradebook (tests switch a quirk on and off between runs)."""
        with self._lock:
            self.spec = replace(self.spec, **changes)
            self._writes_seen = 0

    def next_write(self) -> int:
        """Count one write request; its 1-based number since the last switch."""
        with self._lock:
            self._writes_seen += 1
            return self._writes_seen

    # ---- rostering -------------------------------------------------------------------------------------------
    def users(self, day: date) -> list[dict]:
        out = []
        for lms_student in self.lms.students(day):
            number = student_number(lms_student["id"])
            fate = student_fate(number)
            if fate == "not_in_sis":
                continue
            email = lms_student["emails"][0]["email"]
            if fate == "other_email":
                email = f"{lms_student['last_name'].lower()}{number}@sis.school.example"
            user = {
                "sourcedId": sis_user_id(number), "status": "active", "dateLastModified": "2026-08-01T00:00:00Z",
                "enabledUser": "true", "givenName": lms_student["first_name"], "familyName": lms_student["last_name"],
                "identifier": f"S{200000 + number}", "email": email,
                "roles": [{"roleType": "primary", "role": "student"}],
            }  # fmt: skip
            out.append(user)
            if crc(f"old|{number}") % 25 == 0:  # an old record of the same person, deleted: must not make it ambiguous
                out.append({**user, "sourcedId": f"{sis_user_id(number)}-old", "status": "tobedeleted"})
            if fate == "duplicate":
                out.append({**user, "sourcedId": f"{sis_user_id(number)}-b", "identifier": f"S{900000 + number}"})
        return out + self.rosters.unknown_users(day)

    def classes(self, day: date) -> list[dict]:
        """One class per LMS course (classCode = the course id), and for some an old deleted class with the same
        code (``tobedeleted``: it must not make the match ambiguous)."""
        out = []
        for c in self.lms.roster_view(day):
            if not course_has_class(c.number):
                continue
            cls = {"sourcedId": f"cl-{c.number:05d}", "status": "active", "dateLastModified": c.created_at or
                   "2026-08-01T00:00:00Z", "title": c.name, "classCode": c.id, "classType": "scheduled",
                   "course": {"sourcedId": f"co-{c.number:05d}", "type": "course"}, "terms": [TERM_REF]}  # fmt: skip
            out.append(cls)
            if c.number % 9 == 4:
                out.append({**cls, "sourcedId": f"cl-{c.number:05d}-old", "status": "tobedeleted"})
        return out + self.rosters.section_classes(day)

    def courses(self, day: date) -> list[dict]:
        return self.rosters.courses(day)

    def academic_sessions(self, day: date) -> list[dict]:
        return self.rosters.academic_sessions(day)

    def enrollments(self, day: date) -> list[dict]:
        return self.rosters.enrollments(day)

    # ---- gradebook -------------------------------------------------------------------------------------------
    def line_items(self, day: date) -> list[dict]:
        return self._state(day)[0]

    def results(self, day: date) -> list[dict]:
        generated = self._state(day)[1]
        with self._lock:
            written = dict(self._written)
        merged = {r["sourcedId"]: r for r in (p.result for p in generated)}
        merged.update(written)
        return [merged[k] for k in sorted(merged)]

    def line_item(self, day: date, sourced_id: str) -> dict | None:
        return next((li for li in self.line_items(day) if li["sourcedId"] == sourced_id), None)

    def write(self, result: dict) -> None:
        with self._lock:
            self._written[result["sourcedId"]] = result

    def _state(self, day: date) -> tuple[list[dict], list[_Planted]]:
        with self._lock:
            if day in self._cache:
                return self._cache[day]
        state = self._build(day)
        with self._lock:
            self._cache[day] = state
            while len(self._cache) > 8:
                self._cache.pop(next(iter(self._cache)))
        return state

    def _build(self, day: date) -> tuple[list[dict], list[_Planted]]:
        courses = {c.id: c for c in self.lms.roster_view(day)}
        contents = {k["id"]: k for k in self.lms.contents(day)}
        items: dict[str, dict] = {}
        planted: list[_Planted] = []
        updated = {
            (a["course_id"], a["student_id"], a["content_id"]): a["updated_at"] for a in self.lms.activities(day)
        }
        for (course_id, learner, content_id), raw in sorted(self.lms.true_grades(day).items()):
            course = courses.get(course_id)
            if course is None or not course_has_class(course.number) or content_id not in contents:
                continue
            kind = line_item_kind(content_id)
            if kind == "none":
                continue
            li = line_item_id(content_id)
            if li not in items:
                items[li] = self._line_item(contents[content_id], course.number, kind)
            number = student_number(learner)
            if raw is None or number is None or student_fate(number) in ("not_in_sis", "duplicate"):
                continue
            graded_at = updated[(course_id, learner, content_id)]
            result = self._result(items[li], course_id, learner, content_id, raw, number, graded_at)
            if result is not None:
                planted.append(_Planted(result, course_id, learner, content_id))
        return [items[k] for k in sorted(items)], planted

    @staticmethod
    def _line_item(content: dict, course_number: int, kind: str) -> dict:
        title = content["name"] + (" (gradebook)" if kind == "renamed" else "")
        item = {
            "sourcedId": line_item_id(content["id"]), "status": "active", "dateLastModified": content["created_at"],
            "title": title, "assignDate": content["created_at"], "dueDate": content["created_at"],
            "class": {"sourcedId": f"cl-{course_number:05d}", "type": "class"},
            "school": {"sourcedId": SCHOOL_ID, "type": "org"},
            "category": {"sourcedId": "cat-coursework", "type": "category"},
            "resultValueMin": 0.0, "resultValueMax": 20.0 if kind == "points20" else 100.0,
        }  # fmt: skip
        if kind == "letter":  # a letter scale has no maximum: the field is absent (a float when present, §9.1)
            del item["resultValueMax"]
            item["scoreScale"] = {"sourcedId": "scale-letters", "type": "scoreScale"}
        return item

    def _result(self, item: dict, course_id: str, learner: str, content_id: str, raw: str, number: int,
                graded_at: str) -> dict | None:  # fmt: skip
        """The SIS's result for an LMS grade, planted by a hash of the pair: None when the SIS has none."""
        kind = crc(f"res|{learner}|{content_id}") % 100
        text = raw.strip().upper()
        base = {
            "sourcedId": result_id(item["sourcedId"], sis_user_id(number)), "status": "active",
            "lineItem": {"sourcedId": item["sourcedId"], "type": "lineItem"},
            "student": {"sourcedId": sis_user_id(number), "type": "user"},
            "class": item["class"], "scoreDate": graded_at[:10], "comment": "",
            "late": "true" if crc(f"late|{learner}|{content_id}") % 4 == 0 else "false", "missing": "false",
            "dateLastModified": stamp_of(moment_of(graded_at) + timedelta(hours=1)),
        }  # fmt: skip
        if text == "":  # ungraded in the LMS: a fifth of these have a score in the SIS (missing_in_lms)
            if kind >= 20:
                return None
            if item.get("resultValueMax") is None:
                return {**base, "scoreStatus": "fully graded", "textScore": "C"}
            return {**base, "scoreStatus": "fully graded", "score": self._points(item, Decimal(70))}
        if text in ("EX", "EXCUSED"):
            return None if kind < 8 else {**base, "scoreStatus": "exempt"}
        percent = parse_percent(text)
        if percent is None:  # unparseable in the LMS: the SIS has nothing
            return None
        if kind < 8:
            return None
        older = stamp_of(moment_of(graded_at) - timedelta(days=1))
        newer = stamp_of(moment_of(graded_at) + timedelta(hours=2))
        if 8 <= kind < 13:  # the LMS grade changed after the last sync
            return {**base, **self._score(item, course_id, percent, off=True), "dateLastModified": older}
        if 13 <= kind < 16:  # deleted in the SIS, still there as tobedeleted
            return {**base, **self._score(item, course_id, percent, off=True), "status": "tobedeleted",
                    "dateLastModified": older}  # fmt: skip
        if 16 <= kind < 18:  # a registrar changed the SIS grade after the LMS grade: newer, must not be overwritten
            return {**base, **self._score(item, course_id, percent, off=True), "dateLastModified": newer}
        return {**base, **self._score(item, course_id, percent, off=False)}

    def _score(self, item: dict, course_id: str, percent: Decimal, *, off: bool) -> dict:
        if item.get("resultValueMax") is None:
            scheme = self.scheme_for(course_id)
            if scheme is None:
                return {"scoreStatus": "fully graded", "textScore": "P"}
            letter = letter_for(percent, scheme)
            return {"scoreStatus": "fully graded", "textScore": other_letter(letter, scheme) if off else letter}
        if off:
            percent = percent - 7 if percent >= 7 else percent + 7
        elif percent == percent.to_integral_value() + Decimal("0.5") and item["resultValueMax"] == 100.0:
            percent = percent.to_integral_value(rounding=ROUND_FLOOR)  # this SIS floors x.5: inside the tolerance
        return {"scoreStatus": "fully graded", "score": self._points(item, percent)}

    @staticmethod
    def _points(item: dict, percent: Decimal) -> float:
        return float((percent * Decimal(str(item["resultValueMax"])) / 100).quantize(Decimal("0.01")))

    # ---- ground truth ----------------------------------------------------------------------------------------
    def expected_statuses(
        self,
        day: date,
        student_map: Mapping[str, str] | None = None,
        assignment_map: Mapping[tuple[str, str], str] | None = None,
        lms_grades: Mapping[tuple[str, str, str], str | None] | None = None,
    ) -> dict[tuple[str, ...], str]:
        """The status every discrepancy row must get, given the mapping-file rows (LMS user -> SIS user,
        (course, content) -> line item). Keys: ("lms", course, learner, content) for rows with an LMS grade,
        ("sis", result sourcedId) for SIS results that no LMS grade row reaches. ``lms_grades`` are the grade
        strings as a dialect presents them (default: the Unified activities' ``assigned_grade``)."""
        student_map, assignment_map = dict(student_map or {}), dict(assignment_map or {})
        courses = {c.id: c for c in self.lms.roster_view(day)}
        items = {li["sourcedId"]: li for li in self.line_items(day)}
        results = {r["sourcedId"]: r for r in self.results(day) if r["status"] == "active"}
        by_pair = {(r["student"]["sourcedId"], r["lineItem"]["sourcedId"]): r for r in results.values()}

        def sis_student(learner: str) -> str | None:
            if learner in student_map:
                return student_map[learner]
            number = student_number(learner)
            return sis_user_id(number) if number is not None and student_fate(number) == "in_sis" else None

        def sis_item(course_id: str, content_id: str) -> str | None:
            if (course_id, content_id) in assignment_map:
                return assignment_map[(course_id, content_id)]
            course = courses.get(course_id)
            if course is None or not course_has_class(course.number):
                return None
            return line_item_id(content_id) if line_item_kind(content_id) not in ("none", "renamed") else None

        out: dict[tuple[str, ...], str] = {}
        reached: set[str] = set()
        presented = self.lms.true_grades(day) if lms_grades is None else lms_grades
        for (course_id, learner, content_id), raw in presented.items():
            if raw is None:
                continue
            text, user, li = raw.strip().upper(), sis_student(learner), sis_item(course_id, content_id)
            has_value = text != ""
            result = by_pair.get((user, li)) if user and li else None
            if result is not None:
                reached.add(result["sourcedId"])
            if not has_value and result is None:
                continue
            if user is None and has_value:
                status = "unmapped_student"
            elif li is None and has_value:
                status = "unmapped_assignment"
            elif user is None or li is None:
                continue  # an ungraded LMS row that maps nowhere: nothing to say (its SIS side, if any, below)
            elif has_value and text not in ("EX", "EXCUSED") and parse_percent(text) is None:
                status = "unparseable"
            elif result is None:
                status = "missing_in_sis"
            elif not has_value:
                status = "missing_in_lms"
            else:
                status = self._compare(text, result, items[li], course_id)
            out[("lms", course_id, learner, content_id)] = status
        reverse_students = set(student_map.values()) | {
            sis_user_id(n) for n in range(1, self.lms.spec.n_students + 1) if student_fate(n) == "in_sis"
        }
        mapped_items = set(assignment_map.values()) | {
            li for li in items if line_item_kind(li[3:]) not in ("none", "renamed")
        }
        for rid, result in results.items():
            if rid in reached:
                continue
            user, li = result["student"]["sourcedId"], result["lineItem"]["sourcedId"]
            if user not in reverse_students:
                out[("sis", rid)] = "unmapped_student"
            elif li not in mapped_items:
                out[("sis", rid)] = "unmapped_assignment"
            else:
                out[("sis", rid)] = "missing_in_lms"
        return out

    def _compare(self, text: str, result: dict, item: dict, course_id: str) -> str:
        if text in ("EX", "EXCUSED") or result.get("scoreStatus") == "exempt":
            return "match" if text in ("EX", "EXCUSED") and result.get("scoreStatus") == "exempt" else "score_mismatch"
        percent = parse_percent(text)
        if item.get("resultValueMax") is None:
            scheme = self.scheme_for(course_id)
            if scheme is None:
                return "unmapped_assignment"
            return "match" if letter_for(percent, scheme) == result.get("textScore") else "score_mismatch"
        sis_percent = Decimal(str(result["score"])) * 100 / Decimal(str(item["resultValueMax"]))
        return "match" if abs(sis_percent - percent) <= Decimal("0.5") else "score_mismatch"

    def renamed_line_items(self, day: date) -> dict[tuple[str, str], str]:
        """(course, content) -> line item of every renamed line item: what an analyst's mapping rows would say."""
        courses = {f"cl-{c.number:05d}": c.id for c in self.lms.roster_view(day)}
        return {
            (courses[li["class"]["sourcedId"]], li["sourcedId"][3:]): li["sourcedId"]
            for li in self.line_items(day) if line_item_kind(li["sourcedId"][3:]) == "renamed"
        }  # fmt: skip

    def other_email_students(self) -> dict[str, str]:
        """LMS student -> SIS user for every student the SIS knows under another email."""
        return {
            f"stu-{n:05d}": sis_user_id(n)
            for n in range(1, self.lms.spec.n_students + 1) if student_fate(n) == "other_email"
        }  # fmt: skip
