"""The Canvas simulator and client checked against Canvas's own Python client, ``canvasapi`` (ucfopen, 3.6.0).

canvasapi is pointed at the embedded Canvas simulator on 127.0.0.1 and reads, through its ``PaginatedList``s, the
root account's courses (``Account.get_courses`` with ``state``), each course's enrollments (``type[]``,
``state[]``), sections, assignments, grading standards and submissions (``student_ids[]=all``, ``include[]=user``).
What it reads must equal what the project's own client read (ids and every field the pipeline's normalizers use)
and the world's truth; canvasapi follows only our Link headers (it strips its base URL from each ``next``), so
every listing must end exactly where its last page says so. Where the simulator refuses (a roster it may not
read, a teacher's token on the account), canvasapi must raise the exception Canvas's answer maps to: ``Unauthorized``
(a 401 without ``WWW-Authenticate``), not ``InvalidAccessToken``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from canvasapi import Canvas
from canvasapi.account import Account
from canvasapi.canvas_object import CanvasObject
from canvasapi.course import Course
from canvasapi.exceptions import Unauthorized

from lms_pipeline.providers.canvas.client import ENROLLMENT_STATES, CanvasClient
from lms_pipeline.providers.canvas.simulator import CanvasSimulatorApp
from lms_pipeline.providers.canvas.simulator_world import GUEST_USER_BASE
from lms_pipeline.providers.http import RetrySettings
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread

D0 = date(2026, 9, 1)
DAY = D0 + timedelta(days=6)  # students have left (deleted/inactive/completed enrollments) and grades exist
CID = "canvas-oracle"
TOKEN = "canvas-oracle-token-s3cret"
WORLD = World(WorldSpec(CID, seed=17, start_date=D0, n_courses=14, mean_roster_size=35, n_students=300,
                        roster_exposure="mixed", classes="rosters", deactivate_prob=0.05, guest_share=0.5))  # fmt: skip
PER_PAGE = 10  # our client's pages: several per listing, other boundaries than canvasapi's, the same items
# canvasapi 3.6's PaginatedList adds its own per_page=100 after any per_page it is given (``per_page=25&per_page=100``
# on the wire): Canvas (Rack) keeps the last plain value, so its pages are 100 long whatever it is asked.
PAGE_SIZE = 100
RETRY = RetrySettings(max_attempts=3, base_delay=0.01, max_delay=0.05, max_total_wait=2.0, timeout=10.0)
COURSE_STATES = ["available", "completed"]
# The fields of each object the pipeline's normalizers read (transforms/canvas.py, transforms/canvas_grades.py).
FIELDS = {
    "courses": ("id", "sis_course_id", "name", "workflow_state"),
    "enrollments": ("id", "user_id", "type", "enrollment_state", "course_section_id", "sis_user_id",
                    "sis_section_id", "sis_course_id"),
    "sections": ("id", "sis_section_id", "course_id"),
    "assignments": ("id", "name", "integration_id", "points_possible", "grading_type", "grading_standard_id",
                    "updated_at", "published"),
    "grading_standards": ("id", "title", "context_type", "grading_scheme"),
    "submissions": ("id", "assignment_id", "user_id", "sis_user_id", "score", "grade", "excused", "workflow_state",
                    "graded_at", "posted_at", "submitted_at"),
}  # fmt: skip


@dataclass
class Oracle:
    app: CanvasSimulatorApp
    base_url: str  # {server}/canvas/{CID}: canvasapi appends /api/v1/
    canvas: Canvas
    courses: dict[int, Course]  # canvasapi's Course objects, from its own account listing
    ours: dict[str, dict[int | None, list[dict]]]  # endpoint -> Canvas course id -> items our client read
    refused: dict[str, set[int]]  # endpoint -> courses our client got Canvas's permission refusal (401) for


def canvas_api(base_url: str, token: str = TOKEN) -> Canvas:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "use HTTPS": the simulator is plain HTTP on 127.0.0.1
        return Canvas(base_url, token)


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    app = CanvasSimulatorApp([WORLD], {CID: TOKEN}, clock=lambda: DAY, bucket_capacity=None)
    with serve_in_thread(app) as server:
        base_url = f"{server}/canvas/{CID}"
        with CanvasClient(CID, base_url, TOKEN, retry=RETRY, per_page=PER_PAGE, simulated_date=DAY) as client:
            roster = client.roster_pages()
            grades = [p for p in client.grade_pages() if p.endpoint != "courses"]  # the listing read twice
        ours: dict[str, dict[int | None, list[dict]]] = {}
        refused: dict[str, set[int]] = {}
        for page in roster + grades:
            listing = ours.setdefault(page.endpoint, {}).setdefault(page.course_id, [])
            if page.status == 200:
                listing += json.loads(page.payload)
            else:
                assert page.status == 401 and json.loads(page.payload)["status"] == "unauthorized"
                refused.setdefault(page.endpoint, set()).add(page.course_id)
        app.reset_log()  # from here on the log holds canvasapi's requests only
        canvas = canvas_api(base_url)
        courses = {c.id: c for c in root_account(canvas).get_courses(state=COURSE_STATES, per_page=PER_PAGE)}
        yield Oracle(app, base_url, canvas, courses, ours, refused)


def root_account(canvas: Canvas) -> Account:
    """The account canvasapi finds as an admin would: the one ``GET /accounts`` lists (canvasapi's ``get_account``
    takes only an id, not ``self``)."""
    (account,) = canvas.get_accounts()
    return account


def attributes(obj: CanvasObject, fields: tuple[str, ...]) -> tuple:
    """The named attributes of a canvasapi object, as the JSON gave them (absent: None)."""
    return tuple(json.dumps(getattr(obj, name, None), sort_keys=True) for name in fields)


def keyed(items: list[dict], fields: tuple[str, ...]) -> set[tuple]:
    return {tuple(json.dumps(item.get(name), sort_keys=True) for name in fields) for item in items}


def course_ids(oracle: Oracle) -> list[int]:
    return [c["id"] for c in oracle.ours["courses"][None]]


# ---- courses --------------------------------------------------------------------------------------------------


def test_canvasapi_lists_the_root_accounts_courses_as_our_client_and_the_world_do(oracle: Oracle) -> None:
    account = root_account(oracle.canvas)
    assert account.id == 1 and account.parent_account_id is None
    assert oracle.canvas.get_account(account.id).name == account.name
    courses = list(account.get_courses(state=COURSE_STATES, per_page=PER_PAGE))
    assert [c.id for c in courses] == course_ids(oracle)
    assert {attributes(c, FIELDS["courses"]) for c in courses} == keyed(oracle.ours["courses"][None],
                                                                         FIELDS["courses"])  # fmt: skip
    views = WORLD.roster_view(DAY)
    assert {c.sis_course_id: c.workflow_state == "available" for c in courses} == WORLD.is_active(DAY)
    assert len(courses) == len(views) > PER_PAGE  # more than one of our pages, all of them read
    assert {"available", "completed"} == {c.workflow_state for c in courses}


def test_canvasapi_and_the_token_users_own_courses_are_a_handful(oracle: Oracle) -> None:
    own = [c.id for c in oracle.canvas.get_courses(per_page=PER_PAGE)]
    assert own and len(own) < len(course_ids(oracle))  # Canvas.get_courses is GET /courses: the user's own


def test_canvasapi_is_refused_the_account_listing_with_a_teachers_token() -> None:
    app = CanvasSimulatorApp([WORLD], {CID: TOKEN}, clock=lambda: DAY, bucket_capacity=None, account_admin=False)
    with serve_in_thread(app) as server:
        canvas = canvas_api(f"{server}/canvas/{CID}")
        with pytest.raises(Unauthorized) as caught:  # 401 without WWW-Authenticate: a permission, not the token
            list(canvas.get_account(1).get_courses(state=COURSE_STATES))
        assert list(canvas.get_accounts()) == []  # a teacher administers no account
        assert "user not authorized to perform that action" in str(caught.value)
        assert [c.id for c in canvas.get_courses()]  # its own courses it may list


# ---- each course's listings -----------------------------------------------------------------------------------


def course_listing(oracle: Oracle, endpoint: str, course_id: int) -> list[CanvasObject]:
    """One course's listing read by canvasapi with the parameters our client sends."""
    course = oracle.courses[course_id]
    if endpoint == "enrollments":
        return list(course.get_enrollments(type=["StudentEnrollment"], state=list(ENROLLMENT_STATES),
                                           per_page=PER_PAGE))  # fmt: skip
    if endpoint == "sections":
        return list(course.get_sections(per_page=PER_PAGE))
    if endpoint == "assignments":
        return list(course.get_assignments(per_page=PER_PAGE))
    if endpoint == "grading_standards":
        return list(course.get_grading_standards(per_page=PER_PAGE))
    return list(course.get_multiple_submissions(student_ids=["all"], include=["user"], per_page=PER_PAGE))


@pytest.mark.parametrize("endpoint", ["enrollments", "sections", "assignments", "grading_standards", "submissions"])
def test_canvasapi_reads_every_courses_listing_as_our_client_did(oracle: Oracle, endpoint: str) -> None:
    fields, read, denied = FIELDS[endpoint], 0, set()
    for course_id in course_ids(oracle):
        try:
            objects = course_listing(oracle, endpoint, course_id)
        except Unauthorized as refusal:  # 401 without WWW-Authenticate: a roster the token may not read
            assert "user not authorized to perform that action" in str(refusal)
            denied.add(course_id)
            continue
        assert {attributes(o, fields) for o in objects} == keyed(oracle.ours[endpoint][course_id], fields), course_id
        assert len(objects) == len(oracle.ours[endpoint][course_id])  # no item twice, none dropped
        read += len(objects)
    assert read > PER_PAGE and denied == oracle.refused.get(endpoint, set())
    if endpoint in ("enrollments", "submissions"):
        assert denied == {v.number for v in WORLD.roster_view(DAY) if not v.exposed} != set()


def test_canvasapi_enrollments_give_the_worlds_roster_and_every_leaving_state(oracle: Oracle) -> None:
    active, states = set(), set()
    for view in WORLD.roster_view(DAY):
        if not view.exposed:
            continue
        for enrollment in course_listing(oracle, "enrollments", view.number):
            states.add(enrollment.enrollment_state)
            if enrollment.enrollment_state == "active":
                active.add((enrollment.sis_course_id, enrollment.sis_user_id))
    assert active == WORLD.true_course_edges(DAY)
    assert {"active", "invited", "deleted", "inactive", "completed"} == states


def test_canvasapi_submissions_are_the_worlds_grades(oracle: Oracle) -> None:
    got = set()
    for view in WORLD.roster_view(DAY):
        if not view.exposed:
            continue
        assignments = {a.id: a.integration_id for a in course_listing(oracle, "assignments", view.number)}
        for submission in course_listing(oracle, "submissions", view.number):
            learner = getattr(submission, "sis_user_id", None) or f"gst-{submission.user_id - GUEST_USER_BASE:05d}"
            assert submission.user["id"] == submission.user_id  # include[]=user was read as an array
            got.add((view.id, learner, assignments[submission.assignment_id]))
    exposed = {v.id for v in WORLD.roster_view(DAY) if v.exposed}
    truth = {key for key, grade in WORLD.true_grades(DAY).items() if grade is not None and key[0] in exposed}
    assert got == truth and any(learner.startswith("gst-") for _, learner, _ in got)


# ---- paging ---------------------------------------------------------------------------------------------------
# Listings longer than canvasapi's 100-item pages: a wide school (numbered course pages) and a course with a huge
# roster (bookmarked enrollment pages).
WIDE = World(WorldSpec("canvas-wide", seed=5, start_date=D0, n_courses=105, mean_roster_size=3, n_students=300,
                       progress=False))  # fmt: skip
DEEP = World(WorldSpec("canvas-deep", seed=6, start_date=D0, n_courses=2, mean_roster_size=160, n_students=500,
                       progress=False))  # fmt: skip


def test_canvasapi_follows_our_link_headers_to_the_end_and_nothing_else() -> None:
    tokens = {"canvas-wide": TOKEN, "canvas-deep": TOKEN}
    app = CanvasSimulatorApp([WIDE, DEEP], tokens, clock=lambda: D0, bucket_capacity=None)
    big = max(DEEP.roster_view(D0), key=lambda v: len(v.enrolled))
    with serve_in_thread(app) as server:
        with CanvasClient("canvas-deep", f"{server}/canvas/canvas-deep", TOKEN, retry=RETRY, per_page=PER_PAGE,
                          simulated_date=D0) as client:  # fmt: skip
            ours = [e["id"] for p in client.enrollment_pages(big.number) for e in json.loads(p.payload)
                    if e["enrollment_state"] == "active"]  # fmt: skip
        app.reset_log()  # canvasapi's requests only from here
        courses = list(root_account(canvas_api(f"{server}/canvas/canvas-wide")).get_courses(
            state=COURSE_STATES, per_page=PER_PAGE))  # fmt: skip
        deep = {c.id: c for c in root_account(canvas_api(f"{server}/canvas/canvas-deep")).get_courses()}
        enrollments = list(deep[big.number].get_enrollments(type=["StudentEnrollment"], state=["active"],
                                                            per_page=PER_PAGE))  # fmt: skip
    assert sorted(c.sis_course_id for c in courses) == sorted(v.id for v in WIDE.roster_view(D0))
    assert {(e.sis_course_id, e.sis_user_id) for e in enrollments} == {
        edge for edge in DEEP.true_course_edges(D0) if edge[0] == big.id
    }
    assert [e.id for e in enrollments] == ours  # the same items in the same order, across other page boundaries
    for endpoint, items in (("courses", courses), ("enrollments", enrollments)):
        log = [e for e in app.request_log if e["endpoint"] == endpoint]
        offered = [e["next"] for e in log if e["next"]]
        followed = [e["url"] for e in log if "page" in e["params"]]
        assert followed == offered and offered  # every next link requested once, in order, and nothing else
        assert log[-1]["next"] is None and all(e["status"] == 200 for e in log)  # ended where the pages said
        assert len(offered) + 1 == -(-len(items) // PAGE_SIZE) >= 2
        assert log[0]["params"]["per_page"] == [str(PER_PAGE), str(PAGE_SIZE)]  # canvasapi's doubled per_page
        assert f"per_page={PAGE_SIZE}" in offered[0]  # ... read as Rack reads it: the last one
