"""The Classroom simulator checked against Google's own client and Google's own description of the API.

``google-api-python-client`` ships the Classroom v1 discovery document (``classroom.v1.json``). The service is built
from that document with its root pointed at the embedded Classroom simulator on 127.0.0.1 (no network), and lists
courses, each course's students, courseWork and studentSubmissions with the library's own paging (``list_next``).
Every response is validated against the document's schemas, converted to JSON Schema here: an unknown property is
an error (each declared record gets ``additionalProperties: false``), and so are a wrong type, a value outside an
enum, a malformed ``google-datetime`` and an ``int32`` out of range. What Google's client reads must equal what the
project's own client read and the world's truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import google_auth_httplib2
import googleapiclient
import httplib2
import jsonschema
import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import Resource, build_from_document
from googleapiclient.errors import HttpError

from lms_pipeline.providers.classroom.client import COURSE_STATES, ClassroomClient
from lms_pipeline.providers.classroom.simulator import ClassroomSimulatorApp
from lms_pipeline.providers.classroom.simulator_world import classroom_course_id, classroom_user_id
from lms_pipeline.providers.http import RetrySettings
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread

DOCUMENT_PATH = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "classroom.v1.json"
DOCUMENT = json.loads(DOCUMENT_PATH.read_text())
D0 = date(2026, 9, 1)
DAY = D0 + timedelta(days=8)  # courses archived, students dropped, grades given
CID = "gc-oracle"
TOKEN = "gc-oracle-token-s3cret"
WORLD = World(WorldSpec(CID, seed=23, start_date=D0, n_courses=12, mean_roster_size=45, n_students=400,
                        roster_exposure="mixed", deactivate_prob=0.05, contents_per_course=6))  # fmt: skip
RETRY = RetrySettings(max_attempts=3, base_delay=0.01, max_delay=0.05, max_total_wait=2.0, timeout=10.0)
MAX_PAGES = 200  # every listing here ends well before: a loop that does not is a paging bug
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"


# ---- discovery schemas as JSON Schema -------------------------------------------------------------------------


def json_schema(schema: dict) -> dict:
    """One discovery-document schema as JSON Schema (draft 2020-12). Discovery's vocabulary is small: ``$ref`` to a
    named schema, ``type`` (``any`` is anything), ``properties``, ``additionalProperties`` (a map's values),
    ``items``, ``enum`` and ``format``. A record (an object with ``properties`` and no ``additionalProperties``)
    forbids every other property; formats become patterns or bounds, so they are always checked."""
    if "$ref" in schema:
        return {"$ref": f"#/$defs/{schema['$ref']}"}
    kind = schema.get("type", "any")
    out: dict = {} if kind == "any" else {"type": kind}
    if kind == "object":
        out["properties"] = {name: json_schema(p) for name, p in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties")
        out["additionalProperties"] = json_schema(extra) if extra is not None else False
    elif kind == "array":
        out["items"] = json_schema(schema["items"])
    fmt = schema.get("format")
    if fmt == "google-datetime":
        out["pattern"] = RFC3339
    elif fmt in ("int64", "uint64"):  # 64-bit integers travel as decimal strings
        out["pattern"] = r"^-?\d+$"
    elif fmt == "int32":
        out |= {"minimum": -(2**31), "maximum": 2**31 - 1}
    elif fmt == "uint32":
        out |= {"minimum": 0, "maximum": 2**32 - 1}
    if "enum" in schema:
        out["enum"] = schema["enum"]
    return out


DEFS = {name: json_schema(schema) for name, schema in DOCUMENT["schemas"].items()}


def problems(instance: object, schema_name: str) -> list[str]:
    """Every way ``instance`` breaks the named schema, as ``path: message`` lines (empty: it conforms)."""
    validator = jsonschema.Draft202012Validator({"$ref": f"#/$defs/{schema_name}", "$defs": DEFS})
    return sorted(f"{error.json_path}: {error.message}" for error in validator.iter_errors(instance))


def method(path: str) -> dict:
    """The discovery description of ``<resource path>.list``, e.g. ``courses.courseWork.studentSubmissions``."""
    node = DOCUMENT
    for part in path.split("."):
        node = node["resources"][part]
    return node["methods"]["list"]


def test_the_converted_schemas_flag_unknown_properties_types_enums_and_formats() -> None:
    good = {"id": "1", "name": "Biology", "courseState": "ACTIVE", "creationTime": "2026-09-01T00:49:32Z"}
    assert problems({"courses": [good], "nextPageToken": "t"}, "ListCoursesResponse") == []
    assert problems({**good, "alias": "d:crs-00001"}, "Course") == [
        "$: Additional properties are not allowed ('alias' was unexpected)"
    ]
    assert problems({**good, "courseState": "OPEN"}, "Course")[0].startswith("$.courseState: 'OPEN' is not one of")
    assert problems({**good, "id": 1}, "Course") == ["$.id: 1 is not of type 'string'"]
    assert problems({**good, "creationTime": "2026-09-01"}, "Course")[0].startswith("$.creationTime: '2026-09-01'")
    assert problems({"courseId": "1", "profile": {"name": {"fullName": 7}}}, "Student") == [
        "$.profile.name.fullName: 7 is not of type 'string'"
    ]
    assert problems({"dueDate": {"year": 2**31}}, "CourseWork")[0].startswith("$.dueDate.year: 2147483648 is")
    assert problems({"assignedGrade": "87"}, "StudentSubmission") == ["$.assignedGrade: '87' is not of type 'number'"]


# ---- Google's client against the simulator --------------------------------------------------------------------


@dataclass
class Listing:
    pages: list[dict]  # every response, in order
    items: list[dict]


@dataclass
class Google:
    app: ClassroomSimulatorApp
    service: Resource
    ours: dict[str, dict[str | None, list[dict]]]  # endpoint -> course id -> items our client read
    refused: dict[str, set[str]]  # endpoint -> courses our client got 403 PERMISSION_DENIED for

    def listing(self, path: str, **params: object) -> Listing:
        """Every page of ``path``.list with the library's own paging: ``list`` then ``list_next`` until it gives
        None (no ``nextPageToken``). Each response is checked against the method's response schema."""
        resource = self.service
        for part in path.split("."):
            resource = getattr(resource, part)()
        schema, field = method(path)["response"]["$ref"], path.rsplit(".", 1)[-1]
        request, pages = resource.list(**params), []
        for _ in range(MAX_PAGES):
            if request is None:
                return Listing(pages, [item for page in pages for item in page.get(field, [])])
            response = request.execute()
            assert problems(response, schema) == [], f"{path}.list {params}"
            pages.append(response)
            request = resource.list_next(request, response)
        raise AssertionError(f"{path}.list gave a nextPageToken on {MAX_PAGES} pages")


@pytest.fixture(scope="module")
def google() -> Iterator[Google]:
    app = ClassroomSimulatorApp([WORLD], {CID: TOKEN}, clock=lambda: DAY)
    with serve_in_thread(app) as server:
        with ClassroomClient(CID, f"{server}/classroom/{CID}", TOKEN, as_of=DAY, retry=RETRY) as client:
            pages = client.grade_pages()
        ours: dict[str, dict[str | None, list[dict]]] = {}
        refused: dict[str, set[str]] = {}
        for page in pages:
            if page.status == 403:
                refused.setdefault(page.endpoint, set()).add(page.course_id)
                continue
            items = json.loads(page.payload).get(page.endpoint, [])
            ours.setdefault(page.endpoint, {}).setdefault(page.course_id, []).extend(items)
        http = google_auth_httplib2.AuthorizedHttp(Credentials(TOKEN), http=httplib2.Http(timeout=10))
        service = build_from_document(
            DOCUMENT, http=http, client_options={"api_endpoint": f"{server}/classroom/{CID}/"}
        )
        app.reset_log()
        yield Google(app, service, ours, refused)


def exposed() -> list[str]:
    return [classroom_course_id(v.number) for v in WORLD.roster_view(DAY) if v.exposed]


def test_courses_list_conforms_and_equals_our_read_and_the_world(google: Google) -> None:
    google.app.reset_log()
    listing = google.listing("courses", pageSize=5)  # the default states: every one but SUSPENDED
    assert len(listing.pages) > 2  # several pages, some short or empty while a token remains
    assert [c["id"] for c in listing.items] == [c["id"] for c in google.ours["courses"][None]]
    truth = {classroom_course_id(v.number): "ACTIVE" if v.is_active else "ARCHIVED" for v in WORLD.roster_view(DAY)}
    assert {c["id"]: c["courseState"] for c in listing.items} == truth
    assert set(truth.values()) == set(COURSE_STATES)
    # One state a listing: list_next cannot page a request with a repeated parameter (courseStates=A&courseStates=B
    # raises ValueError in _helpers.parse_unique_urlencoded, googleapis/google-api-python-client#667).
    for state in COURSE_STATES:
        alone = google.listing("courses", courseStates=[state], pageSize=5)
        assert {c["id"] for c in alone.items} == {c for c, s in truth.items() if s == state}
    for entry in google.app.request_log:  # every page asked as Google's client asks: alt=json, the same pageSize
        assert entry["params"]["alt"] == "json" and entry["params"]["pageSize"] == "5"


def test_students_list_conforms_and_gives_the_worlds_rosters(google: Google) -> None:
    got, pages = set(), 0
    for view in WORLD.roster_view(DAY):
        course_id = classroom_course_id(view.number)
        if not view.exposed:
            with pytest.raises(HttpError) as refused:
                google.listing("courses.students", courseId=course_id)
            assert refused.value.status_code == 403 and course_id in google.refused["students"]
            continue
        listing = google.listing("courses.students", courseId=course_id)
        assert {s["userId"] for s in listing.items} == {s["userId"] for s in google.ours["students"][course_id]}
        got |= {(view.id, s["userId"]) for s in listing.items}
        pages += len(listing.pages)
    assert got == {(course, classroom_user_id(student)) for course, student in WORLD.true_course_edges(DAY)}
    assert pages > len(exposed())  # rosters over 30 students took several pages


def test_coursework_and_submissions_conform_and_equal_our_read(google: Google) -> None:
    work_count = submission_count = 0
    for course_id in exposed():
        work = google.listing("courses.courseWork", courseId=course_id).items
        assert {w["id"] for w in work} == {w["id"] for w in google.ours["courseWork"].get(course_id, [])}
        submissions = google.listing("courses.courseWork.studentSubmissions", courseId=course_id, courseWorkId="-")
        assert sorted(s["id"] for s in submissions.items) == sorted(
            s["id"] for s in google.ours["studentSubmissions"].get(course_id, []))  # fmt: skip
        one = google.listing("courses.courseWork.studentSubmissions", courseId=course_id, courseWorkId=work[0]["id"])
        assert {s["id"] for s in one.items} == {
            s["id"] for s in submissions.items if s["courseWorkId"] == work[0]["id"]
        }
        work_count += len(work)
        submission_count += len(submissions.items)
    assert work_count > 0 and submission_count > 30


# ---- behaviours the discovery document describes ----------------------------------------------------------------


def test_coursework_is_listed_most_recently_updated_first_unless_ordered_otherwise(google: Google) -> None:
    reordered = 0
    for view in [v for v in WORLD.roster_view(DAY) if v.exposed]:
        course_id = classroom_course_id(view.number)
        default = google.listing("courses.courseWork", courseId=course_id).items
        stamps = [w["updateTime"] for w in default]
        assert stamps == sorted(stamps, reverse=True)  # "If not specified, updateTime desc is the default"
        ascending = google.listing("courses.courseWork", courseId=course_id, orderBy="updateTime asc").items
        assert [w["updateTime"] for w in ascending] == sorted(stamps)
        assert sorted(w["id"] for w in ascending) == sorted(w["id"] for w in default)
        created = [k["updated_at"] for k in WORLD.contents(DAY) if view.id in k["course_ids"]]
        reordered += created != sorted(created, reverse=True)  # the world's own order is not the API's
    assert reordered
    with pytest.raises(HttpError) as caught:
        google.listing("courses.courseWork", courseId=exposed()[0], orderBy="title")
    assert caught.value.status_code == 400  # only updateTime and dueDate are supported fields


def test_submissions_are_filtered_by_user_and_by_lateness(google: Google) -> None:
    course_id = max(exposed(), key=lambda c: len(google.ours["studentSubmissions"].get(c, [])))
    everything = google.listing("courses.courseWork.studentSubmissions", courseId=course_id, courseWorkId="-").items
    students = {s["userId"]: s["profile"]["emailAddress"] for s in google.ours["students"][course_id]}
    learner = max(students, key=lambda u: sum(s["userId"] == u for s in everything))
    theirs = [s["id"] for s in everything if s["userId"] == learner]
    assert 1 < len(theirs) < len(everything)
    for who in (learner, students[learner]):  # the numeric id, or the email address
        mine = google.listing("courses.courseWork.studentSubmissions", courseId=course_id, courseWorkId="-",
                              userId=who).items  # fmt: skip
        assert [s["id"] for s in mine] == theirs
    late = [s["id"] for s in everything if s.get("late")]
    assert late and len(late) < len(everything)
    for value, expected in (("LATE_ONLY", late), ("NOT_LATE_ONLY", [s["id"] for s in everything if not s.get("late")])):
        got = google.listing("courses.courseWork.studentSubmissions", courseId=course_id, courseWorkId="-",
                             late=value).items  # fmt: skip
        assert [s["id"] for s in got] == expected, value


def test_courses_are_filtered_by_student(google: Google) -> None:
    edges = WORLD.true_course_edges(DAY)
    learner = max({s for _, s in edges}, key=lambda s: sum(s == t for _, t in edges))
    theirs = {classroom_course_id(v.number) for v in WORLD.roster_view(DAY) if learner in v.enrolled and v.exposed}
    assert len(theirs) > 1
    assert {c["id"] for c in google.listing("courses", studentId=classroom_user_id(learner)).items} == theirs
    assert google.listing("courses", studentId="me").items == []  # the token's user is no one's classmate
    with pytest.raises(HttpError) as caught:
        google.listing("courses", studentId=classroom_user_id(learner), teacherId="me")
    assert caught.value.status_code == 400  # "If specified, teacher_id must be empty"
