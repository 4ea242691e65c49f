"""Google Classroom grades end to end: simulator, ``ClassroomClient.grade_pages`` and ``normalize_classroom_grades``
against the world's truth, read through the project's own ``parse_grades``.

Contract (docs/providers.md §5.3, GitHub issue 5): courseWork and studentSubmissions (courseWorkId ``-``) are paged by
token to the end, short and empty pages included; ``assignedGrade`` is the only grade of record, points out of
``maxPoints``; ``draftGrade`` never counts; a real 0 stays 0; Classroom cannot say "excused" or "pass", so those are
ungraded; a course we may not see answers 403 and yields a 403 page and no grades. Real HTTP on 127.0.0.1 only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, timedelta

import httpx
import pandas as pd
import pytest

from lms_pipeline.providers.classroom.client import ClassroomClient
from lms_pipeline.providers.classroom.grades import ClassroomGradeFrames, normalize_classroom_grades
from lms_pipeline.providers.classroom.rosters import ClassroomPayloadError
from lms_pipeline.providers.classroom.simulator import ClassroomSimulatorApp
from lms_pipeline.providers.classroom.simulator_world import (
    classroom_course_id,
    classroom_coursework_id,
    classroom_user_id,
    content_id_of,
    grade_percent,
    planted,
)
from lms_pipeline.providers.http import LmsAuthError, LmsPayloadError, RetrySettings
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread
from lms_pipeline.transforms.grades import parse_grades

CID = "gc-grades"
TOKEN = "gc-grade-token-s3cret-9876543210"
D0 = date(2026, 9, 1)
DAY = D0 + timedelta(days=7)  # a week of learning: every grade form, planted cases, multi-page listings
SPEC = WorldSpec(CID, seed=8, start_date=D0, n_courses=14, mean_roster_size=70, n_students=300,
                 roster_exposure="mixed", contents_per_course=7)  # fmt: skip
RETRY = RetrySettings(max_attempts=3, base_delay=0.01, max_delay=0.05, max_total_wait=2.0)
KEY = ["course_id", "content_id", "student_id"]


@dataclass
class Served:
    app: ClassroomSimulatorApp
    base_url: str

    def client(self, day: date = DAY, token: str = TOKEN, **kw: object) -> ClassroomClient:
        return ClassroomClient(CID, f"{self.base_url}/classroom/{CID}", token, as_of=day, retry=RETRY, **kw)

    def scan(self, course_ids: list[str] | None = None, **kw: object) -> list[dict]:
        with self.client(**kw) as client:
            return client.grade_pages(course_ids)

    def get(self, path: str, **params: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Simulated-Date": DAY.isoformat()}
        return httpx.get(f"{self.base_url}/classroom/{CID}/v1/{path}", params=params, headers=headers, timeout=10)


@dataclass(frozen=True)
class Scan:
    pages: list[dict]
    log: list[dict]
    stats: dict


@contextmanager
def served(world: World, **options: object) -> Iterator[Served]:
    app = ClassroomSimulatorApp([world], {CID: TOKEN}, clock=lambda: D0, **options)
    with serve_in_thread(app) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        yield Served(app, base_url)


@pytest.fixture(scope="module")
def world() -> World:
    return World(SPEC)


@pytest.fixture(scope="module")
def api(world: World) -> Iterator[Served]:
    with served(world) as s:
        yield s


@pytest.fixture(autouse=True)
def _fresh_controls(request: pytest.FixtureRequest) -> Iterator[None]:
    """No fault or log entry leaks from one test into another."""
    yield
    if "api" in request.fixturenames:
        app = request.getfixturevalue("api").app
        app.clear_faults()
        app.reset_log()


@pytest.fixture(scope="module")
def scanned(api: Served) -> Scan:
    """DAY's grades read once with the default page size (30)."""
    api.app.reset_log()
    with api.client() as client:
        pages = client.grade_pages()
    return Scan(pages, list(api.app.request_log), client.stats.as_dict())


def directory(world: World) -> pd.DataFrame:
    """The SIS side of the identity map: every student's email and id."""
    students = world.students(DAY)
    return pd.DataFrame(
        {"email": [s["emails"][0]["email"] for s in students], "student_id": [s["id"] for s in students]}
    )


def normalized(pages: list[dict], world: World) -> ClassroomGradeFrames:
    return normalize_classroom_grades(pages, CID, identity="email", directory=directory(world))


def truth(world: World, day: date = DAY) -> pd.DataFrame:
    """The activities Classroom shows as submissions: graded-kind activities of enrolled students in courses we may
    see (the simulator's documented rule), with the world's grade string and a label of what it is."""
    courses = {c.id: c for c in world.roster_view(day)}
    rows = [
        {"course_id": a["course_id"], "content_id": a["content_id"], "student_id": a["student_id"],
         "world_grade": a["assigned_grade"], "updated_at": a["updated_at"]}
        for a in world.activities(day)
        if "assigned_grade" in a and courses[a["course_id"]].exposed
        and a["student_id"] in courses[a["course_id"]].enrolled
    ]  # fmt: skip
    out = pd.DataFrame(rows)
    numeric = out["world_grade"].map(lambda g: grade_percent(g) is not None)
    case = [planted(s, k) for s, k in zip(out["student_id"], out["content_id"], strict=True)]
    out["kind"] = [
        (c or "numeric") if n else repr(g) for c, n, g in zip(case, numeric, out["world_grade"], strict=True)
    ]
    return out


@pytest.fixture(scope="module")
def compared(world: World, scanned: Scan) -> pd.DataFrame:
    """Our parsed grades joined with the world's strings parsed the same way (points possible unknown)."""
    ours = parse_grades(normalized(scanned.pages, world).grades)
    expected = truth(world)
    theirs = parse_grades(expected.rename(columns={"world_grade": "raw_grade"}).assign(points_possible=None))
    theirs = theirs[[*KEY, "raw_grade", "kind", "updated_at", "grade_status", "percent"]]
    return ours.merge(theirs, on=KEY, how="outer", suffixes=("", "_world"), indicator=True)


def rows(compared: pd.DataFrame, kind: str) -> pd.DataFrame:
    out = compared[compared["kind"] == kind]
    assert len(out), f"the fixture world should have {kind} grades"
    return out


def data_pages(log: list[dict], endpoint: str) -> list[dict]:
    return [e for e in log if e["endpoint"] == endpoint and e["status"] == 200]


# ---- the fixture and paging -------------------------------------------------------------------------------------


def test_fixture_world_has_every_grade_form_and_hidden_courses_with_grades(world: World) -> None:
    kinds = set(truth(world)["kind"])
    assert {"numeric", "zero", "draft_only", "regrade", "''", "'EX'", "'pass'"} <= kinds
    hidden = {c.id for c in world.roster_view(DAY) if not c.exposed}
    assert any(a["course_id"] in hidden and "assigned_grade" in a for a in world.activities(DAY))


def test_paging_to_the_end_follows_short_and_empty_pages_with_tokens(world: World, scanned: Scan) -> None:
    submissions = data_pages(scanned.log, "studentSubmissions")
    assert {e["params"]["pageSize"] for e in submissions} == {"30"} and max(e["page_index"] for e in submissions) >= 3
    assert any(e["items"] == 0 and e["next_page_token"] for e in submissions)
    assert any(0 < e["items"] < 30 and e["next_page_token"] for e in submissions)
    assert all(e["params"].get("pageToken", "-") != "" for e in scanned.log)
    assert all(("pageToken" in e["params"]) == (e["page_index"] > 0) for e in scanned.log)
    assert all(e["course_id"] is not None for e in data_pages(scanned.log, "courseWork"))
    total = sum(e["items"] for e in submissions)
    assert total == len(truth(world)) == len(normalized(scanned.pages, world).grades)


def test_forced_short_and_empty_pages_at_a_small_page_size_change_nothing(world: World, scanned: Scan) -> None:
    with served(world, short_page_every=1, empty_page_every=1) as forced:
        pages = forced.scan(page_size=7)
        log = forced.app.request_log
    assert any(e["items"] == 0 and e["next_page_token"] for e in data_pages(log, "courseWork"))
    assert any(e["items"] == 0 and e["next_page_token"] for e in data_pages(log, "studentSubmissions"))
    assert all(e["items"] <= 3 for e in data_pages(log, "studentSubmissions"))  # half of 7, every page
    expected = normalized(scanned.pages, world)
    got = normalized(pages, world)
    pd.testing.assert_frame_equal(got.grades, expected.grades)
    pd.testing.assert_frame_equal(got.contents, expected.contents)


def test_submission_tokens_are_bound_to_their_params_and_courseWork_ids_filter(world: World, api: Served) -> None:
    course = max((c for c in world.roster_view(DAY) if c.exposed), key=lambda c: len(c.enrolled))
    path = f"courses/{classroom_course_id(course.number)}/courseWork/-/studentSubmissions"
    token = api.get(path, pageSize=5).json()["nextPageToken"]
    assert api.get(path, pageSize=5, pageToken=token).status_code == 200
    refused = api.get(path, pageSize=5, pageToken=token, states="RETURNED")
    assert refused.status_code == 400 and refused.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert api.get(path, states="GRADED").status_code == 400
    returned = api.get(path, states="RETURNED", pageSize=30).json()["studentSubmissions"]
    assert {s["state"] for s in returned} == {"RETURNED"}
    work_id = returned[0]["courseWorkId"]
    one = api.get(path.replace("/-/", f"/{work_id}/"), pageSize=30).json()["studentSubmissions"]
    assert {s["courseWorkId"] for s in one} == {work_id}
    assert api.get(path.replace("/-/", "/800999999999/")).status_code == 404
    assert content_id_of(work_id).startswith(f"cnt-{course.number:05d}-")
    assert classroom_coursework_id(content_id_of(work_id)) == work_id


# ---- grades against the world -----------------------------------------------------------------------------------


def test_every_submission_is_a_world_activity_and_back(compared: pd.DataFrame) -> None:
    assert (compared["_merge"] == "both").all(), compared.loc[compared["_merge"] != "both", [*KEY, "_merge"]]
    assert compared["identity_matched"].all() and (compared["points_possible"] == 100).all()


def test_numeric_grades_give_the_worlds_percent(compared: pd.DataFrame) -> None:
    numeric = pd.concat([rows(compared, "numeric"), rows(compared, "regrade")])
    assert (numeric["grade_status"] == "graded").all() and (numeric["grade_status_world"] == "graded").all()
    assert numeric["percent"].tolist() == numeric["percent_world"].tolist()
    assert {"%", "/"} <= {c for g in numeric["raw_grade_world"] for c in g}  # "84.5%" and "17/20" forms both met
    assert (numeric["state"] == "RETURNED").all()
    assert (numeric["graded_at"] == pd.to_datetime(numeric["updated_at"], utc=True)).all()


def test_a_real_zero_stays_a_graded_zero(compared: pd.DataFrame) -> None:
    zeros = rows(compared, "zero")
    assert (zeros["raw_grade"] == "0").all() and (zeros["grade_status"] == "graded").all()
    assert (zeros["percent"] == 0).all() and zeros["graded_at"].notna().all()
    assert (zeros["percent_world"] >= 40).all()  # the world never grades below 40: the zeros are planted
    assert not compared.loc[compared["kind"] != "zero", "percent"].eq(0).any()


def test_draft_grades_never_count(world: World, scanned: Scan, compared: pd.DataFrame) -> None:
    drafts = rows(compared, "draft_only")
    assert (drafts["raw_grade"] == "").all() and (drafts["grade_status"] == "ungraded").all()
    assert drafts["draft_grade"].notna().all() and drafts["percent"].isna().all() and drafts["graded_at"].isna().all()
    assert (drafts["state"] == "TURNED_IN").all()
    regrades = rows(compared, "regrade")  # returned, then re-graded in draft: the returned grade stands
    assert (regrades["draft_grade"] != regrades["raw_grade"]).all()
    assert regrades["percent"].tolist() == regrades["percent_world"].tolist()
    # A stored page whose graded submissions lose assignedGrade but keep draftGrade: all of them become ungraded.
    pages = [asdict(p) for p in scanned.pages]
    page = next(p for p in pages if p["endpoint"] == "studentSubmissions" and '"assignedGrade"' in p["payload"])
    body = json.loads(page["payload"])
    stripped = {(s["userId"], content_id_of(s["courseWorkId"])) for s in body["studentSubmissions"]
                if s.pop("assignedGrade", None) is not None}  # fmt: skip
    page["payload"] = json.dumps(body)
    grades = parse_grades(normalized(pages, world).grades)
    touched = grades[[pair in stripped for pair in zip(grades["classroom_user_id"], grades["content_id"], strict=True)]]
    assert len(touched) == len(stripped) and touched["draft_grade"].notna().all()
    assert (touched["grade_status"] == "ungraded").all() and touched["percent"].isna().all()


def test_ungraded_excused_and_pass_are_ungraded(compared: pd.DataFrame) -> None:
    pending = rows(compared, "''")
    assert (pending["grade_status"] == "ungraded").all() and (pending["state"] == "TURNED_IN").all()
    for kind in ("'EX'", "'pass'"):  # Classroom has no excused state and no text grades: not representable
        cells = rows(compared, kind)
        assert (cells["grade_status"] == "ungraded").all() and (cells["state"] == "RETURNED").all()
        assert cells["draft_grade"].isna().all() and cells["graded_at"].isna().all()
    assert set(rows(compared, "'EX'")["grade_status_world"]) == {"excused"}


def test_contents_are_the_worlds_with_a_fallback_id_without_the_tag(world: World, scanned: Scan) -> None:
    exposed = {c.id for c in world.roster_view(DAY) if c.exposed}
    expected = {(k["course_ids"][0], k["id"], k["name"]) for k in world.contents(DAY) if k["course_ids"][0] in exposed}
    contents = normalized(scanned.pages, world).contents
    assert set(contents.itertuples(index=False, name=None)) == expected
    before = normalized(scanned.pages, world)
    graded = set(before.grades["content_id"])
    pages = [asdict(p) for p in scanned.pages]
    page, body, work = next(
        (p, body, w)
        for p in pages
        if p["endpoint"] == "courseWork" and p["status"] == 200
        for body in [json.loads(p["payload"])]
        for w in body.get("courseWork", [])
        if content_id_of(w["id"]) in graded
    )
    work["description"] = "Read chapter 3."  # no lms-content tag
    page["payload"] = json.dumps(body)
    after = normalized(pages, world)
    fallback, tagged = f"classroom-coursework:{work['id']}", content_id_of(work["id"])
    assert fallback in set(after.contents["content_id"]) and tagged not in set(after.contents["content_id"])
    assert (after.grades["content_id"] == fallback).sum() == (before.grades["content_id"] == tagged).sum() > 0


# ---- permissions and identity -----------------------------------------------------------------------------------


def test_a_hidden_course_answers_403_and_gives_a_403_page_and_no_grades(world: World, scanned: Scan) -> None:
    hidden = {classroom_course_id(c.number): c.id for c in world.roster_view(DAY) if not c.exposed}
    assert hidden
    for endpoint in ("courseWork", "studentSubmissions"):
        denied = [p for p in scanned.pages if p.endpoint == endpoint and p.status == 403]
        assert sorted(p.course_id for p in denied) == sorted(hidden)
        assert all(json.loads(p.payload)["error"]["status"] == "PERMISSION_DENIED" for p in denied)
    assert scanned.stats["retries"] == 0  # one request each: a 403 is an answer, not retried
    frames = normalized(scanned.pages, world)
    assert not frames.grades["course_id"].isin(hidden.values()).any()
    assert not frames.contents["course_id"].isin(hidden.values()).any()


def test_grade_pages_for_given_course_ids_reads_only_those(world: World, api: Served, compared: pd.DataFrame) -> None:
    shown, hidden = (next(c for c in world.roster_view(DAY) if c.exposed is e) for e in (True, False))
    pages = api.scan([classroom_course_id(shown.number), f"d:{hidden.id}"])
    assert {p.endpoint for p in pages} == {"aliases", "students", "courseWork", "studentSubmissions"}
    grades = parse_grades(normalized(pages, world).grades)
    expected = compared[compared["course_id"] == shown.id]
    assert len(grades) == len(expected) > 0 and set(grades["course_id"]) == {shown.id}
    assert sorted(grades["percent"].dropna()) == sorted(expected["percent"].dropna())


def test_identity_email_vs_provider(world: World, scanned: Scan, compared: pd.DataFrame) -> None:
    by_provider = normalize_classroom_grades(scanned.pages, CID, identity="provider").grades
    expected = {(c, k, f"classroom-user:{classroom_user_id(s)}") for c, k, s in compared[KEY].itertuples(index=False)}
    assert set(by_provider[KEY].itertuples(index=False, name=None)) == expected
    assert not by_provider["identity_matched"].any()
    with served(world, emails_scope=False) as no_emails:
        unscoped = normalized(no_emails.scan(), world).grades
    assert len(unscoped) == len(compared) and not unscoped["identity_matched"].any()
    assert unscoped["student_id"].str.startswith("classroom-user:").all()
    with pytest.raises(ValueError, match="directory"):
        normalize_classroom_grades(scanned.pages, CID, identity="email")


# ---- tokens and malformed pages ---------------------------------------------------------------------------------


def test_the_token_never_leaks_into_pages_or_errors(api: Served, scanned: Scan) -> None:
    assert TOKEN not in json.dumps([asdict(p) for p in scanned.pages], default=str)
    with api.client(token="wrong-" + TOKEN) as client, pytest.raises(LmsAuthError) as err:
        client.grade_pages()
    assert err.value.status == 401 and TOKEN not in str(err.value)


def test_a_malformed_page_raises_naming_connection_url_and_page(world: World, api: Served) -> None:
    course = max((c for c in world.roster_view(DAY) if c.exposed), key=lambda c: len(c.enrolled))
    classroom_id = classroom_course_id(course.number)
    api.app.inject_fault(CID, status=200, body=f"<html>echo: Bearer {TOKEN}</html>", endpoint="studentSubmissions",
                         course_id=classroom_id, page=1)  # fmt: skip
    with pytest.raises(LmsPayloadError) as err:
        api.scan()
    message = str(err.value)
    url = f"/v1/courses/{classroom_id}/courseWork/-/studentSubmissions"
    assert message.startswith(f"connection {CID!r}: GET {url} answered HTTP 200 with a body that is not JSON")
    assert message.endswith("(page 1)") and TOKEN not in message and "[token]" in message


def _not_json(body: dict) -> str:
    return "<html>bad gateway</html>"


def _submissions_not_a_list(body: dict) -> str:
    return json.dumps({**body, "studentSubmissions": {"userId": "1"}})


def _grade_as_text(body: dict) -> str:
    body["studentSubmissions"][0]["assignedGrade"] = "87"
    return json.dumps(body)


def _submission_without_user(body: dict) -> str:
    del body["studentSubmissions"][0]["userId"]
    return json.dumps(body)


@pytest.mark.parametrize(
    ("spoil", "problem"),
    [
        (_not_json, "the body is not JSON"),
        (_submissions_not_a_list, "studentSubmissions is OBJECT, not a list"),
        (_grade_as_text, "a submission whose assignedGrade is not a number"),
        (_submission_without_user, "a submission without a string userId"),
    ],
)
def test_the_normalizer_refuses_a_malformed_stored_page(
    world: World, scanned: Scan, spoil: Callable[[dict], str], problem: str
) -> None:
    pages = [asdict(p) for p in scanned.pages]
    target = next(p for p in pages if p["endpoint"] == "studentSubmissions" and p["page_index"] == 1
                  and '"userId"' in p["payload"])  # fmt: skip
    target["payload"] = spoil(json.loads(target["payload"]))
    with pytest.raises(ClassroomPayloadError) as err:
        normalized(pages, world)
    assert f"connection {CID!r}: page 1 of GET {target['url']}: {problem}" in str(err.value)


def test_the_normalizer_refuses_a_listing_not_read_to_its_end(world: World, scanned: Scan) -> None:
    cut = next(p for p in scanned.pages if p.endpoint == "studentSubmissions" and p.page_index == 1)
    pages = [
        p
        for p in scanned.pages
        if not (p.endpoint == cut.endpoint and p.course_id == cut.course_id and p.page_index >= 1)
    ]
    with pytest.raises(ClassroomPayloadError, match="the listing was not read to its end") as err:
        normalized(pages, world)
    assert f"connection {CID!r}: page 0 of GET " in str(err.value)
