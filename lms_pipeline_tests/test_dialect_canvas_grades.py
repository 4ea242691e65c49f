"""Canvas grades end to end: the simulator serves the world's activities as assignments, grading standards and
submissions; the client reads every listing to its end; the normalizer's rows, parsed by the project's own
``parse_grades``, say exactly what the world's ``assigned_grade`` strings say.

Real HTTP on 127.0.0.1 only. The world is a small mixed-exposure one read eight days after its start, when many
activities are completed and graded. Its seed is chosen so that some letter grades fall exactly on a cutoff of the
boundary scheme (where a float comparison gives another letter): the test asserts that they exist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import httpx
import pandas as pd
import pytest

from lms_pipeline.providers.canvas.client import CanvasClient
from lms_pipeline.providers.canvas.grades import CanvasGradeFrames, CanvasPayloadError, normalize_canvas_grades
from lms_pipeline.providers.canvas.simulator import CanvasSimulatorApp
from lms_pipeline.providers.canvas.simulator_world import GUEST_USER_BASE
from lms_pipeline.providers.http import LmsAuthError, LmsPayloadError, RetrySettings
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread
from lms_pipeline.transforms.grades import parse_grades

D0 = date(2026, 9, 1)
DAY = D0 + timedelta(days=8)  # about a week in: grades exist
CID = "canvas-grades"
WORLD = World(WorldSpec(CID, seed=3, n_courses=12, mean_roster_size=30, n_students=300, roster_exposure="mixed",
                        guest_share=0.5))  # fmt: skip
TOKENS = {CID: "canvas-grades-token-s3cret"}
RETRY = RetrySettings(max_attempts=5, base_delay=0.01, max_delay=0.1, max_total_wait=5.0, timeout=10.0)
KEYS = ["course_id", "content_id", "student_id"]
# Canvas's default scheme (docs/providers.md §4.7), as the API gives it: fractions 0-1.
CANVAS_DEFAULT = [("A", "0.94"), ("A-", "0.90"), ("B+", "0.87"), ("B", "0.84"), ("B-", "0.80"), ("C+", "0.77"),
                  ("C", "0.74"), ("C-", "0.70"), ("D+", "0.67"), ("D", "0.64"), ("D-", "0.61"), ("F", "0")]  # fmt: skip


@dataclass
class Scan:
    pages: list[dict]
    frames: CanvasGradeFrames


class Canvas:
    """One served app, a plain httpx client for direct requests, and cached client scans."""

    def __init__(self, app: CanvasSimulatorApp, base_url: str, http: httpx.Client) -> None:
        self.app, self.base_url, self.http = app, base_url, http
        self._scans: dict[int, Scan] = {}

    def client(self, token: str | None = None, **kw: object) -> CanvasClient:
        return CanvasClient(CID, f"{self.base_url}/canvas/{CID}", token or TOKENS[CID], simulated_date=DAY,
                            retry=RETRY, **kw)  # type: ignore[arg-type]  # fmt: skip

    def get(self, path: str, params: list[tuple[str, object]] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKENS[CID]}", "X-Simulated-Date": DAY.isoformat()}
        return self.http.get(f"/canvas/{CID}/api/v1/{path}", params=params, headers=headers)

    def scan(self, per_page: int = 100) -> Scan:
        if per_page not in self._scans:
            with self.client(per_page=per_page) as client:
                pages = client.grade_pages()
            self._scans[per_page] = Scan(pages, normalize_canvas_grades(pages, CID))
        return self._scans[per_page]


@pytest.fixture(scope="module")
def canvas() -> Iterator[Canvas]:
    app = CanvasSimulatorApp([WORLD], TOKENS, clock=lambda: DAY, bucket_capacity=None)
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=10) as http:
        assert base_url.startswith("http://127.0.0.1:")
        yield Canvas(app, base_url, http)


@pytest.fixture(autouse=True)
def _no_fault_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "canvas" in request.fixturenames:
        request.getfixturevalue("canvas").app.clear_faults()


def canvas_student(learner: str) -> str:
    """The id the normalizer gives a world learner: students keep their SIS id; guests have none in Canvas."""
    prefix, number = learner.rsplit("-", 1)
    return learner if prefix == "stu" else f"canvas-user:{GUEST_USER_BASE + int(number)}"


def number(world_id: str) -> int:
    return int(world_id.rsplit("-", 1)[1])


def exposed_courses() -> set[str]:
    return {v.id for v in WORLD.roster_view(DAY) if v.exposed}


def world_grades() -> pd.DataFrame:
    """The world's graded activities in exposed courses, parsed the way the Unified.to path parses them."""
    truth = pd.DataFrame(
        [{"course_id": a["course_id"], "content_id": a["content_id"], "student_id": canvas_student(a["student_id"]),
          "raw_grade": a["assigned_grade"]}
         for a in WORLD.activities(DAY) if "assigned_grade" in a and a["course_id"] in exposed_courses()],
        columns=[*KEYS, "raw_grade"],
    )  # fmt: skip
    return parse_grades(truth.assign(points_possible=pd.array([None] * len(truth), dtype="Float64")))


def items(pages: list[dict], endpoint: str) -> list[dict]:
    """Every item on the 200 pages of ``endpoint``, with the Canvas course id of its listing; decimals exact."""
    return [{**item, "_course": p.course_id} for p in pages if p.endpoint == endpoint and p.status == 200
            for item in json.loads(p.payload, parse_float=Decimal)]  # fmt: skip


def letter(percent: Decimal, scheme: list[dict], exact: bool = True) -> str:
    """Canvas's rule: the highest lower bound <= percent, else the lowest entry; exact (Decimal) or as floats."""
    bound = (lambda e: e["value"] * 100) if exact else (lambda e: float(e["value"]) * 100)
    value = percent if exact else float(percent)
    fits = [e for e in scheme if value >= bound(e)]
    return (max(fits, key=bound) if fits else min(scheme, key=bound))["name"]


def merged(scan: Scan) -> pd.DataFrame:
    """World and Canvas grades side by side, every key on both sides (asserted)."""
    canvas_side = parse_grades(scan.frames.grades)
    both = world_grades().merge(canvas_side, on=KEYS, how="outer", suffixes=("_world", "_canvas"), indicator=True)
    assert set(both["_merge"]) == {"both"}, both[both["_merge"] != "both"].head()
    return both


# ---- paging and equality with the world ------------------------------------------------------------------------


def test_every_grade_listing_is_read_to_its_end(canvas: Canvas) -> None:
    small, big = canvas.scan(per_page=5), canvas.scan(per_page=100)
    listings: dict[tuple, list[dict]] = {}
    for page in small.pages:
        listings.setdefault((page.endpoint, page.course_id), []).append(page)
    courses = [v.number for v in WORLD.roster_view(DAY)]
    assert set(listings) == {("courses", None)} | {
        (e, c) for c in courses for e in ("assignments", "grading_standards", "submissions")
    }
    for pages in listings.values():
        assert [p.page_index for p in pages] == list(range(len(pages)))
        sizes = [len(json.loads(p.payload)) for p in pages if p.status == 200]
        assert all(size == 5 for size in sizes[:-1]) and all(size <= 5 for size in sizes[-1:])
    longest = max(len(pages) for (endpoint, _), pages in listings.items() if endpoint == "submissions")
    assert longest >= 5  # submissions really took several bookmark pages
    assert len(items(small.pages, "submissions")) == len(items(big.pages, "submissions")) > 200
    pd.testing.assert_frame_equal(small.frames.grades, big.frames.grades)
    asked = [p.params for p in big.pages if p.endpoint == "submissions"]
    assert all(q["student_ids[]"] == ["all"] and q["include[]"] == ["user"] for q in asked)


def test_parsed_grades_equal_the_worlds_own_grade_strings(canvas: Canvas) -> None:
    both = merged(canvas.scan())
    assert (both["grade_status_world"] == both["grade_status_canvas"]).all()
    assert set(both["grade_status_world"]) == {"graded", "excused", "ungraded", "unparseable"}
    points = both[both["grading_type"] == "points"]
    assert len(points) > 150 and points["letter_given_canvas"].isna().all()
    pd.testing.assert_series_equal(points["percent_world"], points["percent_canvas"], check_names=False)
    letters = both[both["grading_type"] == "letter_grade"]
    graded = letters[letters["grade_status_world"] == "graded"]
    assert len(graded) > 30 and graded["letter_given_canvas"].notna().all() and letters["percent_canvas"].isna().all()
    # the score behind a letter is kept: it is the world's percent, as every assignment is out of 100
    pd.testing.assert_series_equal(graded["score"], graded["percent_world"], check_names=False)
    assert (both["points_possible_canvas"] == 100.0).all()
    stamps = {(a["course_id"], a["content_id"], canvas_student(a["student_id"])): a["updated_at"]
              for a in WORLD.activities(DAY) if "assigned_grade" in a}  # fmt: skip
    expected = [pd.Timestamp(stamps[key]) for key in both[KEYS].itertuples(index=False, name=None)]
    assert list(both["updated_at"]) == expected
    ungraded = both["grade_status_world"] == "ungraded"
    assert both.loc[ungraded, "graded_at"].isna().all() and both.loc[~ungraded, "graded_at"].notna().all()


def test_excused_and_ungraded_are_never_zero(canvas: Canvas) -> None:
    scan = canvas.scan()
    both = merged(scan)
    for status, raw in [("excused", "EX"), ("ungraded", ""), ("unparseable", "pass")]:
        rows = both[both["grade_status_world"] == status]
        assert len(rows) >= 2, status
        assert (rows["grade_status_canvas"] == status).all() and set(rows["raw_grade_canvas"]) == {raw}
        assert rows["percent_canvas"].isna().all() and rows["score"].isna().all()
    submissions = items(scan.pages, "submissions")
    excused = [s for s in submissions if s["excused"]]
    assert excused and all(s["score"] is None and s["grade"] is None and s["workflow_state"] == "graded"
                           for s in excused)  # fmt: skip
    waiting = [s for s in submissions if s["workflow_state"] == "submitted"]
    assert waiting and all(s["score"] is None and s["grade"] is None and s["graded_at"] is None for s in waiting)


def test_a_real_zero_stays_a_graded_zero(canvas: Canvas) -> None:
    """The world never gives a 0 (its scores are 40-100), so one is planted: a course's real submissions page with
    one points score set to 0, and one excused submission given a score of 0 as well, is served in place of the
    simulator's own (a status-200 fault). The zero is graded 0 %; the excused one stays excused."""
    assert not (world_grades()["percent"] == 0).any()  # why the zero is planted
    course = next(v for v in WORLD.roster_view(DAY) if v.exposed
                  and 3 <= len(canvas.get(f"courses/{v.number}/students/submissions",
                                          [("student_ids[]", "all"), ("per_page", 100)]).json()) < 100)  # fmt: skip
    assignments = {a["id"]: a for a in canvas.get(f"courses/{course.number}/assignments").json()}
    page = canvas.get(f"courses/{course.number}/students/submissions",
                      [("student_ids[]", "all"), ("include[]", "user"), ("per_page", 100)]).json()  # fmt: skip
    zero = next(
        s for s in page if s["score"] is not None and assignments[s["assignment_id"]]["grading_type"] == "points"
    )
    zero.update(score=0.0, grade="0", entered_score=0.0, entered_grade="0")
    excused = next(s for s in page if s is not zero)
    excused.update(score=0.0, grade=None, excused=True, workflow_state="graded")
    canvas.app.inject_fault(CID, status=200, body=json.dumps(page), endpoint="submissions", course_id=course.number)
    with canvas.client() as client:
        frames = normalize_canvas_grades(client.grade_pages([course.number]), CID)
    parsed = parse_grades(frames.grades).set_index("student_id")
    assert set(frames.grades["course_id"]) == {course.id} and len(parsed) == len(page)
    zero_row = parsed[parsed["content_id"] == assignments[zero["assignment_id"]]["integration_id"]]
    zero_row = zero_row.loc[zero["sis_user_id"]]
    assert (zero_row["raw_grade"], zero_row["grade_status"], zero_row["percent"]) == ("0.0", "graded", 0.0)
    excused_row = parsed[parsed["content_id"] == assignments[excused["assignment_id"]]["integration_id"]]
    excused_row = excused_row.loc[excused.get("sis_user_id", f"canvas-user:{excused['user_id']}")]
    assert (excused_row["raw_grade"], excused_row["grade_status"]) == ("EX", "excused")
    assert pd.isna(excused_row["percent"]) and pd.isna(excused_row["score"])


def test_letter_grades_use_the_courses_grading_standard_exactly(canvas: Canvas) -> None:
    scan = canvas.scan()
    standards = {s["_course"]: s for s in items(scan.pages, "grading_standards")}
    assert set(standards) == {v.number for v in WORLD.roster_view(DAY)}
    for course, standard in standards.items():
        assert standard["context_type"] == "Course" and standard["context_id"] == course
        values = [e["value"] for e in standard["grading_scheme"]]
        assert all(0 <= v <= 1 for v in values) and len(set(values)) == len(values) and min(values) == 0
    schemes = {tuple((e["name"], e["value"]) for e in s["grading_scheme"]) for s in standards.values()}
    assert len(schemes) == 2 and tuple((name, Decimal(value)) for name, value in CANVAS_DEFAULT) in schemes
    assignments = {(a["_course"], a["id"]): a for a in items(scan.pages, "assignments")}
    assert {a["grading_type"] for a in assignments.values()} == {"points", "letter_grade"}
    for (course, _), a in assignments.items():
        expected = standards[course]["id"] if a["grading_type"] == "letter_grade" else None
        assert a["grading_standard_id"] == expected and a["points_possible"] == 100
    both = merged(scan)
    graded = both[(both["grading_type"] == "letter_grade") & (both["grade_status_world"] == "graded")]
    by_sis = {v.id: v.number for v in WORLD.roster_view(DAY)}
    checked = float_would_differ = 0
    for row in graded.itertuples():
        percent = Decimal(str(row.percent_world))
        scheme = standards[by_sis[row.course_id]]["grading_scheme"]
        assert row.letter_given_canvas == letter(percent, scheme), row
        checked += 1
        float_would_differ += letter(percent, scheme, exact=False) != letter(percent, scheme)
    assert checked > 30
    assert float_would_differ >= 1, "the world (seed) should put a letter grade exactly on a float-unsafe cutoff"


# ---- the submissions endpoint, directly ------------------------------------------------------------------------


def test_the_submissions_endpoint_honours_canvas_parameters(canvas: Canvas) -> None:
    course = max((v for v in WORLD.roster_view(DAY) if v.exposed), key=lambda v: len(v.enrolled))
    path = f"courses/{course.number}/students/submissions"
    too_many = canvas.get(path, [("student_ids[]", n) for n in range(1, 102)])
    assert too_many.status_code == 400 and too_many.json() == {"error": "too many students"}
    ids = [number(s) for s in course.enrolled[:100]]
    chosen = canvas.get(path, [*(("student_ids[]", n) for n in ids), ("per_page", 100)])
    assert chosen.status_code == 200 and chosen.json() and {s["user_id"] for s in chosen.json()} <= set(ids)
    assert canvas.get(path).json() == []  # no student_ids[]: the caller's own submissions, none for a teacher
    for bad in ["yesterday", "2026-09-05", "2026-09-05T10:00:00"]:
        response = canvas.get(path, [("student_ids[]", "all"), ("graded_since", bad)])
        assert response.status_code == 400 and "graded_since" in response.text, bad
    everything = canvas.get(path, [("student_ids[]", "all"), ("per_page", 100)]).json()
    since = "2026-09-07T00:00:00Z"
    recent = canvas.get(path, [("student_ids[]", "all"), ("graded_since", since), ("per_page", 100)]).json()
    assert 0 < len(recent) < len(everything)
    assert all(s["graded_at"] >= since for s in recent)
    assert {s["id"] for s in everything if s["graded_at"] and s["graded_at"] >= since} == {s["id"] for s in recent}
    assert not [s for s in everything if "user" in s]  # the user object only when include[]=user asks for it
    emails = {s["id"]: s["emails"][0]["email"] for s in WORLD.students(DAY)}
    with_user = canvas.get(path, [("student_ids[]", "all"), ("include[]", "user"), ("per_page", 100)]).json()
    assert [s["id"] for s in with_user] == [s["id"] for s in everything]
    for s in with_user:
        if s["user_id"] < GUEST_USER_BASE:
            assert s["user"]["login_id"] == emails[s["sis_user_id"]] == emails[s["user"]["sis_user_id"]]
        else:
            assert "sis_user_id" not in s and s["user"]["login_id"] is None
    first = canvas.get(path, [("student_ids[]", "all"), ("per_page", 3)])
    assert set(first.links) == {"current", "next", "first"} and "page=bookmark%3A" in first.links["next"]["url"]
    listing = canvas.get(f"courses/{course.number}/assignments", [("per_page", 2)])
    assert {"current", "first", "last"} <= set(listing.links)


def test_students_carry_their_login_emails(canvas: Canvas) -> None:
    frames = canvas.scan().frames
    emails = {s["id"]: s["emails"][0]["email"] for s in WORLD.students(DAY)}
    assert len(frames.students) > 50
    assert dict(zip(frames.students["student_id"], frames.students["email"], strict=True)) == {
        s: emails[s] for s in frames.students["student_id"]
    }
    graded_students = set(frames.grades["student_id"])
    assert set(frames.students["student_id"]) == {s for s in graded_students if s.startswith("stu-")}


def test_contents_are_the_worlds_contents_of_every_listed_course(canvas: Canvas) -> None:
    contents = canvas.scan().frames.contents
    truth = {(k["course_ids"][0], k["id"], k["name"]) for k in WORLD.contents(DAY)}
    assert set(contents.itertuples(index=False, name=None)) == truth


# ---- permissions, tokens, faults --------------------------------------------------------------------------------


def test_a_course_whose_roster_is_refused_gives_a_refused_page_and_no_grades(canvas: Canvas) -> None:
    scan = canvas.scan()
    dark = {v.number: v.id for v in WORLD.roster_view(DAY) if not v.exposed}
    assert dark, "the fixture world should hide some rosters"
    refused = [p for p in scan.pages if p.status == 401]  # canvas-lms refuses with 401 (render_json_unauthorized)
    assert {(p.endpoint, p.course_id) for p in refused} == {("submissions", c) for c in dark}
    assert all(json.loads(p.payload)["status"] == "unauthorized" for p in refused)
    graded_in_dark = [a for a in WORLD.activities(DAY) if "assigned_grade" in a and a["course_id"] in dark.values()]
    assert graded_in_dark, "the hidden courses should have grades the token may not read"
    assert not set(scan.frames.grades["course_id"]) & set(dark.values())
    assert set(dark.values()) <= set(scan.frames.contents["course_id"])  # assignments are still readable


def test_a_roster_refused_with_403_gives_the_same_grades_as_canvas_401(canvas: Canvas) -> None:
    app = CanvasSimulatorApp([WORLD], TOKENS, clock=lambda: DAY, bucket_capacity=None, roster_denial_status=403)
    with serve_in_thread(app) as base_url, CanvasClient(CID, f"{base_url}/canvas/{CID}", TOKENS[CID],
                                                       retry=RETRY) as client:  # fmt: skip
        pages = client.grade_pages()
    assert {p.status for p in pages} == {200, 403}
    frames = normalize_canvas_grades(pages, CID)
    assert frames.grades.equals(canvas.scan().frames.grades)


def test_without_sis_permission_ids_fall_back_to_canvas_ids() -> None:
    app = CanvasSimulatorApp([WORLD], TOKENS, clock=lambda: DAY, bucket_capacity=None, sis_permission=False)
    with serve_in_thread(app) as base_url, CanvasClient(CID, f"{base_url}/canvas/{CID}", TOKENS[CID],
                                                       retry=RETRY) as client:  # fmt: skip
        pages = client.grade_pages()
    records = [item for p in pages if p.status == 200 for item in json.loads(p.payload)]
    assert records and not [k for r in records for k in [*r, *(r.get("user") or {})] if k.startswith("sis_")]
    grades = normalize_canvas_grades(pages, CID).grades
    truth = {(f"canvas-course:{number(a['course_id'])}", a["content_id"], f"canvas-user:{user_id(a['student_id'])}")
             for a in WORLD.activities(DAY)
             if "assigned_grade" in a and a["course_id"] in exposed_courses()}  # fmt: skip
    assert set(grades[KEYS].itertuples(index=False, name=None)) == truth


def user_id(learner: str) -> int:
    return number(learner) + (GUEST_USER_BASE if learner.startswith("gst-") else 0)


def test_the_token_is_never_in_pages_logs_or_errors(canvas: Canvas) -> None:
    bad = "bad-grades-token-that-must-not-leak"
    with canvas.client(token=bad) as client, pytest.raises(LmsAuthError) as err:
        client.grade_pages()
    assert err.value.status == 401 and err.value.connection_id == CID
    texts = [str(err.value), repr(err.value), repr(client), repr(canvas.scan().pages), repr(canvas.app.request_log)]
    assert not [t for t in texts for token in (bad, *TOKENS.values()) if token in t]


def test_a_page_that_is_not_json_raises_a_clear_client_error(canvas: Canvas) -> None:
    course = next(v for v in WORLD.roster_view(DAY) if v.exposed)
    canvas.app.inject_fault(CID, status=200, body="<html>maintenance</html>", endpoint="submissions",
                            course_id=course.number)  # fmt: skip
    with canvas.client() as client, pytest.raises(LmsPayloadError) as err:
        client.grade_pages()
    message = str(err.value)
    assert message.startswith(f"connection '{CID}': GET {canvas.base_url}/canvas/{CID}/api/v1/courses/"
                              f"{course.number}/students/submissions?")  # fmt: skip
    assert "(submissions page 0) answered HTTP 200 with a body that is not JSON: '<html>maintenance</html>'" in message
    assert TOKENS[CID] not in message


def test_a_malformed_submission_raises_a_clear_normalizer_error(canvas: Canvas) -> None:
    course = next(v for v in WORLD.roster_view(DAY) if v.exposed)
    stray = [{"id": 1, "assignment_id": 1, "score": 50.0, "workflow_state": "graded"}]
    canvas.app.inject_fault(CID, status=200, body=json.dumps(stray), endpoint="submissions", course_id=course.number)
    with canvas.client() as client:
        pages = client.grade_pages([course.number])
    url = next(p.url for p in pages if p.endpoint == "submissions")
    with pytest.raises(CanvasPayloadError) as err:
        normalize_canvas_grades(pages, CID)
    assert str(err.value) == (
        f"connection '{CID}': 1 malformed Canvas page(s) or item(s):\n  submissions page 0 of course "
        f"{course.number} (GET {url}): item 0 is a submission without user_id"
    )
    unlisted = [{**stray[0], "user_id": 7, "assignment_id": 424242}]
    damaged = [replace(p, payload=json.dumps(unlisted)) if p.endpoint == "submissions" else p for p in pages]
    with pytest.raises(CanvasPayloadError, match="item 0 is a submission for assignment 424242, which the course's"):
        normalize_canvas_grades(damaged, CID)
    damaged = [replace(p, payload='{"errors": []}') if p.endpoint == "assignments" else p for p in pages]
    with pytest.raises(CanvasPayloadError, match=r"assignments page 0 of course \d+ \(GET .*\): the body is a JSON "
                                                 r"object, not a list"):  # fmt: skip
        normalize_canvas_grades(damaged, CID)


def test_grade_pages_for_chosen_courses_reads_only_those(canvas: Canvas) -> None:
    chosen = [v.number for v in WORLD.roster_view(DAY)][:2]
    with canvas.client() as client:
        pages = client.grade_pages(chosen)
    assert {p.course_id for p in pages if p.endpoint != "courses"} == set(chosen)
    assert any(p.endpoint == "courses" for p in pages)  # the listing still gives the courses' SIS ids
    assert isinstance(pages[0].fetched_at, datetime)
