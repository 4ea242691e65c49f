"""The LTI Advantage dialect end to end: the simulated platform speaks AGS 2.0 (line items, results) and NRPS 2.0
(memberships), the client reads every listing to its end by following Link headers alone, and the normalizer turns
the raw pages into exactly the world's grades, percent for percent as the project's own grade parser reads them.

Real HTTP on 127.0.0.1 only. Backoffs are short, and where the platform says Retry-After the client's sleep is a
recorder, so nothing waits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from urllib.parse import parse_qsl, urlsplit

import httpx
import pandas as pd
import pytest

from lms_pipeline.providers.http import (
    FetchStats,
    LmsAuthError,
    LmsClientError,
    LmsFetchError,
    LmsPayloadError,
    LmsRefusedRequestError,
    RetrySettings,
)
from lms_pipeline.providers.lti_ags.client import MEDIA_TYPES, LtiAgsClient, contexts_of, lineitem_ids, results_url
from lms_pipeline.providers.lti_ags.grades import GRADE_COLUMNS, LtiPayloadError, normalize_lti_grades
from lms_pipeline.providers.lti_ags.simulator import LINEITEM_READ_SCOPE, MEMBERSHIP_SCOPE, RESULT_SCOPE, LtiPlatformApp
from lms_pipeline.providers.lti_ags.simulator_world import lti_user_id, platform_grade
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread
from lms_pipeline.transforms.grades import parse_grades

CID = "lti-main"
WORLD = World(WorldSpec(CID, n_courses=15, n_students=300, progress=True))
DAY = WORLD.spec.start_date + timedelta(days=8)  # a week in: hundreds of graded activities, guests among them
TOKENS = {CID: "lti-token-lti-main-s3cret"}
RETRY = RetrySettings(max_attempts=10, base_delay=0.01, max_delay=0.2, max_total_wait=10.0, timeout=10.0)
LIMIT = 3  # small, so every kind of listing takes several pages
KEY = ["course_id", "content_id", "student_id"]


@dataclass
class Scan:
    pages: list[dict]
    grades: pd.DataFrame
    log: list[dict]  # the app's request log during the scan
    stats: FetchStats


class Platform:
    """One served app, a plain httpx client for talking to it directly, and one cached client scan."""

    def __init__(self, app: LtiPlatformApp, base_url: str, http: httpx.Client) -> None:
        self.app, self.base_url, self.http = app, base_url, http
        self._scan: Scan | None = None

    def client(self, token: str | None = None, **kw: object) -> LtiAgsClient:
        kw.setdefault("limit", LIMIT)
        return LtiAgsClient(CID, f"{self.base_url}/lti/{CID}", token or TOKENS[CID], simulated_date=DAY, retry=RETRY,
                            **kw)  # type: ignore[arg-type]  # fmt: skip

    def get(self, url: str, accept: str | None, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or TOKENS[CID]}", "X-Simulated-Date": DAY.isoformat()}
        if accept is not None:
            headers["Accept"] = accept
        return self.http.get(url, headers=headers)

    def scan(self) -> Scan:
        """Every page of the connection on DAY with limit=LIMIT, normalized; cached, as most tests read it."""
        if self._scan is None:
            self.app.reset_log()
            with self.client() as client:
                pages = client.grade_pages()
            self._scan = Scan(pages, normalize_lti_grades(pages, CID), list(self.app.request_log), client.stats)
        return self._scan


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    app = LtiPlatformApp([WORLD], TOKENS, clock=lambda: date(2000, 1, 1))  # the client's X-Simulated-Date wins
    with serve_in_thread(app) as base_url, httpx.Client(timeout=10) as http:
        assert base_url.startswith("http://127.0.0.1:")
        yield Platform(app, base_url, http)


@pytest.fixture(autouse=True)
def _no_fault_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "platform" in request.fixturenames:
        request.getfixturevalue("platform").app.clear_faults()


def scan_app(app: LtiPlatformApp, **client_options: object) -> tuple[list[dict], LtiAgsClient]:
    """Serve ``app`` on 127.0.0.1 for one client scan; the pages and the (closed) client with its counters."""
    client_options.setdefault("retry", RETRY)
    with serve_in_thread(app) as base_url, LtiAgsClient(CID, f"{base_url}/lti/{CID}", TOKENS[CID], simulated_date=DAY,
                                                       **client_options) as client:  # type: ignore[arg-type]  # fmt: skip
        return client.grade_pages(), client


def items(page: dict) -> list[dict]:
    body = json.loads(page.payload)
    return body["members"] if page.endpoint == "memberships" else body


def listings(pages: list[dict], endpoint: str) -> list[list[dict]]:
    """The pages of each listing of ``endpoint``, in the order read (a listing starts at page 0)."""
    out: list[list[dict]] = []
    for page in pages:
        if page.endpoint == endpoint:
            if page.page_index == 0:
                out.append([])
            out[-1].append(page)
    return out


def student(learner: str) -> str:
    """The student id a learner's grades must carry: the world's id, or for a guest its unmatched LTI id."""
    return f"lti-user:{lti_user_id(learner)}" if learner.startswith("gst-") else learner


def world_cells() -> pd.DataFrame:
    """Every (course, content, learner) whose activity carries a grade field, with the grade text the platform
    holds (the world's, or a planted 0), parsed by the project's own grade parser."""
    cells = [
        {"course_id": c, "content_id": k, "learner": learner, "world_grade": g,
         "raw_grade": platform_grade(learner, k, g), "points_possible": None}
        for (c, learner, k), g in WORLD.true_grades(DAY).items() if g is not None
    ]  # fmt: skip
    parsed = parse_grades(pd.DataFrame(cells))
    return parsed.assign(student_id=parsed["learner"].map(student))


def same_url(requested: str, given: str, **added: str) -> bool:
    """Whether ``requested`` is ``given`` with only ``added`` query parameters merged in."""
    r, g = urlsplit(requested), urlsplit(given)
    expected = {**dict(parse_qsl(g.query)), **added}
    return (r.scheme, r.netloc, r.path) == (g.scheme, g.netloc, g.path) and dict(parse_qsl(r.query)) == expected


def with_results(lineitem_id: str) -> str:
    """The results URL of a line item, worked out independently of the client: /results before the query."""
    path, _, query = lineitem_id.partition("?")
    return f"{path}/results" + (f"?{query}" if query else "")


# ---- the grades ------------------------------------------------------------------------------------------------


def test_normalized_grades_equal_the_world_percent_for_percent_with_the_project_parser(platform: Platform) -> None:
    grades = platform.scan().grades
    assert list(grades.columns) == GRADE_COLUMNS and not grades.duplicated(KEY).any()
    cells = world_cells()
    forms = set(cells["world_grade"].str.replace(r"\d+(\.\d+)?", "n", regex=True))
    assert {"n", "n%", "n/n"} <= forms, forms  # "87", "84.5%" and "17/20" all occur
    assert {"graded", "ungraded", "excused", "unparseable"} <= set(cells["grade_status"])
    by_key = grades.set_index(KEY)

    numeric = cells[cells["grade_status"] == "graded"].set_index(KEY)
    assert len(numeric) > 200
    got = by_key.loc[numeric.index]
    assert (got["grade_status"] == "graded").all()
    pd.testing.assert_series_equal(got["percent"], numeric["percent"], check_names=False)  # exact, not approximate
    reparsed = parse_grades(got.reset_index()[["raw_grade"]].assign(points_possible=None))  # "17/20" and the like
    assert reparsed["percent"].tolist() == got["percent"].tolist()
    assert (got["score_given"] / got["score_maximum"] * 100).round(6).tolist() == got["percent"].tolist()
    assert set(got["score_maximum"]) == {20.0, 100.0}  # a result's own maximum, not the line item's

    no_score = cells[cells["grade_status"].isin(["excused", "unparseable"])].set_index(KEY)
    kept = by_key.loc[no_score.index]
    assert (kept["grade_status"] == "ungraded").all()
    assert kept["percent"].isna().all() and kept["raw_grade"].isna().all() and kept["score_given"].isna().all()
    assert kept["comment"].tolist() == no_score["world_grade"].tolist()  # "EX", "pass": listed without a score

    ungraded = cells[cells["grade_status"] == "ungraded"].set_index(KEY)
    assert len(ungraded) >= 5 and not set(ungraded.index) & set(by_key.index)  # AGS omits them: no row
    assert set(by_key.index) == set(numeric.index) | set(no_score.index)


def test_a_planted_zero_stays_a_graded_zero(platform: Platform) -> None:
    cells = world_cells()
    planted = cells[cells["raw_grade"] != cells["world_grade"]].set_index(KEY)
    assert len(planted) >= 3 and (planted["percent"] == 0).all()  # the world grades >= 40; these are the platform's
    got = platform.scan().grades.set_index(KEY).loc[planted.index]
    assert (got["grade_status"] == "graded").all()
    assert (got["percent"] == 0.0).all() and (got["score_given"] == 0.0).all() and got["percent"].notna().all()
    assert got["raw_grade"].str.startswith("0/").all()


def test_a_result_maximum_other_than_100_or_absent_is_normalized_exactly(platform: Platform) -> None:
    course = "crs-00002"
    first = platform.get(f"{platform.base_url}/lti/{CID}/contexts/{course}/lineitems", MEDIA_TYPES["lineitems"])
    lineitem = first.json()[0]
    odd = [
        {"id": f"{lineitem['id']}#1", "scoreOf": lineitem["id"], "userId": "sub-third", "resultScore": 1,
         "resultMaximum": 3},
        {"id": f"{lineitem['id']}#2", "scoreOf": lineitem["id"], "userId": "sub-half", "resultScore": 0.5},
        {"id": f"{lineitem['id']}#3", "scoreOf": lineitem["id"], "userId": "sub-none", "resultMaximum": 10,
         "comment": "late"},
    ]  # fmt: skip
    platform.app.inject_fault(CID, status=200, body=json.dumps(odd), endpoint="results", course_id=course)
    with platform.client(limit=50) as client:
        grades = normalize_lti_grades(client.grade_pages(), CID)
    mine = grades[grades["content_id"] == lineitem["resourceId"]].set_index("lti_user_id")
    assert mine.loc["sub-third", ["raw_grade", "percent"]].tolist() == ["1/3", 33.333333]
    assert parse_grades(pd.DataFrame({"raw_grade": ["1/3"], "points_possible": [None]}))["percent"][0] == 33.333333
    assert mine.loc["sub-half", ["raw_grade", "score_maximum", "percent"]].tolist() == ["0.5/1", 1.0, 50.0]
    assert mine.loc["sub-none", ["grade_status", "score_maximum", "comment"]].tolist() == ["ungraded", 10.0, "late"]
    assert pd.isna(mine.loc["sub-none", "percent"])
    assert not mine["identity_matched"].any() and mine.loc["sub-half", "student_id"] == "lti-user:sub-half"


# ---- paging ---------------------------------------------------------------------------------------------------


def test_every_listing_is_read_to_its_end_by_next_links_alone(platform: Platform) -> None:
    scan = platform.scan()
    views = {v.id: v for v in WORLD.roster_view(DAY)}
    for endpoint in ("contexts", "lineitems", "results", "memberships"):
        found = listings(scan.pages, endpoint)
        assert sum(len(pages) >= 2 for pages in found) >= (1 if endpoint == "contexts" else 3), endpoint
        for pages in found:
            assert [p.page_index for p in pages] == list(range(len(pages)))
            assert all(len(items(p)) <= LIMIT and p.params["limit"] == str(LIMIT) for p in pages)
    assert {c.course_id for c in contexts_of(scan.pages, CID)} == set(views)
    for course, view in views.items():
        members = [m for p in scan.pages if p.endpoint == "memberships" and p.course_id == course
                   for m in items(p)]  # fmt: skip
        ids = {m.get("lis_person_sourcedid") for m in members}
        assert ids - {None} == {*view.enrolled, *view.dropped, f"tch-{view.number:05d}"}, course
        assert len(members) == len({m["user_id"] for m in members})  # each member once
    graded_contents = {(c, k) for (c, _, k), g in WORLD.true_grades(DAY).items() if g is not None}
    listed = {(p.course_id, item["resourceId"]) for p in scan.pages if p.endpoint == "lineitems"
              for item in items(p)}  # fmt: skip
    assert listed == graded_contents
    short = {p.url for p in scan.pages if p.endpoint == "results" and len(items(p)) < LIMIT}
    continued = [e for e in scan.log if e["url"] in short and e["next"]]
    assert continued, "no short results page with a next link: the omitted ungraded learners should make some"
    assert all(any(p.url == e["next"] for p in scan.pages) for e in continued)  # and the client went on


def test_the_client_requests_only_urls_it_was_given(platform: Platform) -> None:
    scan = platform.scan()
    contexts = contexts_of(scan.pages, CID)
    claims = [c.lineitems_url for c in contexts] + [c.memberships_url for c in contexts]
    derived = [with_results(i) for i in lineitem_ids(scan.pages)]
    first_urls = [f"{platform.base_url}/lti/{CID}/contexts", *claims, *derived]
    offered: list[str] = []
    followed = 0
    for entry in scan.log:
        assert entry["status"] == 200
        if "page" in entry["params"]:
            assert entry["url"] in offered, f"requested a URL no Link offered: {entry['url']}"
            followed += 1
        else:
            assert any(same_url(entry["url"], url, limit=str(LIMIT)) for url in first_urls), entry["url"]
        if entry["next"]:
            offered.append(entry["next"])
    assert followed == len(offered) == len(set(offered)) > 100  # each next link followed once, nothing else
    assert len(scan.log) - followed == len(first_urls)  # and each given URL asked once
    assert scan.stats.pages == len(scan.pages) == len(scan.log) and scan.stats.requests == len(scan.log)


def test_a_next_link_to_another_origin_is_refused_before_the_token_goes_there() -> None:
    """A platform's Link rel="next" to another host (here another port on 127.0.0.1) is not followed: the bearer
    token would go with it. The error names the connection, the listing and the foreign origin."""
    foreign: list[str | None] = []

    def elsewhere(environ: dict, start_response: object) -> list[bytes]:
        foreign.append(environ.get("HTTP_AUTHORIZATION"))
        start_response("200 OK", [("Content-Type", MEDIA_TYPES["lineitems"])])  # type: ignore[operator]
        return [b"[]"]

    app = LtiPlatformApp([WORLD], TOKENS)
    with serve_in_thread(elsewhere) as other:

        def redirecting(environ: dict, start_response: object) -> list[bytes]:
            def start(status: str, headers: list, exc_info: object = None) -> object:
                moved = [(k, v.replace(f"http://{environ['HTTP_HOST']}", other) if k == "Link" else v)
                         for k, v in headers]  # fmt: skip
                return start_response(status, moved, exc_info)  # type: ignore[operator]

            return app(environ, start)  # type: ignore[arg-type]

        with pytest.raises(LmsRefusedRequestError) as err:
            scan_app(redirecting, limit=LIMIT)  # type: ignore[arg-type]
    assert foreign == [], "the token went to another origin"
    message = str(err.value)
    assert message.startswith(f"connection '{CID}': GET {other}/lti/{CID}/contexts")
    assert f"leads to another origin ({other})" in message and "refused before sending" in message
    assert TOKENS[CID] not in message


def test_lineitem_ids_with_a_query_string_have_their_results_read(platform: Platform) -> None:
    scan = platform.scan()
    ids = lineitem_ids(scan.pages)
    queried = [i for i in ids if "?" in i]
    assert len(queried) >= 5 and len(ids) - len(queried) >= 5
    for lineitem in queried:
        asked = [e for e in scan.log if e["endpoint"] == "results" and same_url(e["url"], with_results(lineitem),
                                                                               limit=str(LIMIT))]  # fmt: skip
        assert [e["status"] for e in asked] == [200], lineitem
    read = {item["scoreOf"] for p in scan.pages if p.endpoint == "results" for item in items(p)}
    assert len(read & set(queried)) >= 5
    contents = {item["resourceId"] for p in scan.pages if p.endpoint == "lineitems" for item in items(p)
                if "?" in item["id"]}  # fmt: skip
    assert len(contents & set(scan.grades["content_id"])) >= 5  # their grades made it through
    lineitem = queried[0]
    assert results_url(lineitem) == with_results(lineitem) != lineitem + "/results"
    assert platform.get(lineitem + "/results", MEDIA_TYPES["results"]).status_code == 404  # naive concatenation
    right = platform.get(results_url(lineitem), MEDIA_TYPES["results"])
    assert right.status_code == 200 and isinstance(right.json(), list)
    assert platform.get(lineitem.partition("?")[0] + "/results", MEDIA_TYPES["results"]).status_code == 404


def test_the_user_id_filter_returns_at_most_one_result(platform: Platform) -> None:
    cells = world_cells()
    graded = cells[cells["grade_status"] == "graded"].iloc[0]
    ungraded = cells[(cells["grade_status"] == "ungraded") & (cells["course_id"] == graded["course_id"])]
    lineitems = platform.get(f"{platform.base_url}/lti/{CID}/contexts/{graded['course_id']}/lineitems?limit=100",
                             MEDIA_TYPES["lineitems"]).json()  # fmt: skip
    by_content = {item["resourceId"]: item["id"] for item in lineitems}

    def results(content: str, learner: str) -> list[dict]:
        url = httpx.URL(results_url(by_content[content])).copy_merge_params({"user_id": lti_user_id(learner)})
        response = platform.get(str(url), MEDIA_TYPES["results"])
        assert response.status_code == 200 and "link" not in response.headers
        return response.json()

    one = results(graded["content_id"], graded["learner"])
    assert [r["userId"] for r in one] == [lti_user_id(graded["learner"])]
    assert results(graded["content_id"], "stu-99999") == []
    assert not ungraded.empty and results(ungraded.iloc[0]["content_id"], ungraded.iloc[0]["learner"]) == []


def test_a_listing_longer_than_max_pages_is_refused_not_truncated(platform: Platform) -> None:
    with platform.client(limit=1, max_pages=3) as client, pytest.raises(LmsClientError, match="max_pages") as err:
        client.context_pages()
    assert "page=4" in str(err.value) and not isinstance(err.value, LmsFetchError)


# ---- identity -------------------------------------------------------------------------------------------------


def test_guests_stay_unmatched_lti_users_and_everyone_else_is_matched_through_nrps(platform: Platform) -> None:
    scan = platform.scan()
    grades = scan.grades
    guests = {lti_user_id(learner): learner for (_, learner, _) in WORLD.true_grades(DAY) if learner.startswith("gst-")}
    is_guest = grades["lti_user_id"].isin(guests)
    assert is_guest.any() and (~is_guest).sum() > 200
    assert not grades.loc[is_guest, "identity_matched"].any()
    assert (grades.loc[is_guest, "student_id"] == "lti-user:" + grades.loc[is_guest, "lti_user_id"]).all()
    assert grades.loc[~is_guest, "identity_matched"].all()
    assert grades.loc[~is_guest, "student_id"].str.fullmatch(r"stu-\d{5}").all()
    assert not set(grades["lti_user_id"]) & set(grades["student_id"])  # the LTI userId is never the SIS id
    listed = {m["user_id"]: m for p in scan.pages if p.endpoint == "memberships" for m in items(p)}
    graded_guests = set(grades.loc[is_guest, "lti_user_id"])
    without_id = {g for g in graded_guests if g in listed and "lis_person_sourcedid" not in listed[g]}
    assert without_id and graded_guests - set(listed), "guests both listed without a SIS id and absent from NRPS"
    statuses = {m["status"] for m in listed.values()}
    assert statuses == {"Active", "Inactive", "Deleted"}
    left = grades[grades["student_id"].isin({m["lis_person_sourcedid"] for m in listed.values()
                                             if m["status"] != "Active"})]  # fmt: skip
    assert left["identity_matched"].all()  # a student who left keeps their id


# ---- media types, throttling, auth -----------------------------------------------------------------------------


def test_the_client_sends_each_media_type_and_a_wrong_accept_is_refused_with_406(platform: Platform) -> None:
    scan = platform.scan()
    sent: dict[str, set[str]] = {}
    for entry in scan.log:
        sent.setdefault(entry["endpoint"], set()).add(entry["accept"])
    assert sent == {endpoint: {media_type} for endpoint, media_type in MEDIA_TYPES.items()}
    context = contexts_of(scan.pages, CID)[0]
    urls = {"lineitems": context.lineitems_url, "memberships": context.memberships_url,
            "results": with_results(lineitem_ids(scan.pages)[0])}  # fmt: skip
    for endpoint, url in urls.items():
        right = platform.get(url, MEDIA_TYPES[endpoint])  # type: ignore[index]
        assert right.status_code == 200 and right.headers["Content-Type"] == MEDIA_TYPES[endpoint]  # type: ignore[index]
        others = [m for e, m in MEDIA_TYPES.items() if e != endpoint]
        for wrong in [None, "*/*", "application/json", *others]:
            refused = platform.get(url, wrong)
            assert refused.status_code == 406, (endpoint, wrong)
            assert MEDIA_TYPES[endpoint] in refused.json()["error_description"]  # type: ignore[index]
    both = platform.get(urls["results"], f"application/json;q=0.5, {MEDIA_TYPES['results']}")
    assert both.status_code == 200


def test_429_with_retry_after_is_survived_counted_and_waited_as_told(platform: Platform) -> None:
    app = LtiPlatformApp([WORLD], TOKENS, rate_limit_every=7, retry_after_seconds=2)
    waits: list[float] = []
    patient = RetrySettings(max_attempts=3, base_delay=0.01, max_delay=5.0, max_total_wait=10.0, timeout=10.0)
    pages, client = scan_app(app, limit=10, sleep=waits.append, retry=patient)
    pd.testing.assert_frame_equal(normalize_lti_grades(pages, CID), platform.scan().grades)
    throttled = [e for e in app.request_log if e["throttled"]]
    assert len(throttled) >= 10 and {e["status"] for e in throttled} == {429}
    assert {e["endpoint"] for e in throttled} >= {"lineitems", "results", "memberships"}
    assert client.stats.throttled == client.stats.retries == len(throttled)
    assert waits == [2.0] * len(throttled)


def test_a_token_without_the_results_scope_gets_403_and_a_clear_auth_error() -> None:
    app = LtiPlatformApp([WORLD], TOKENS, scopes=(LINEITEM_READ_SCOPE, MEMBERSHIP_SCOPE))
    with pytest.raises(LmsAuthError) as err:
        scan_app(app)
    refused = [e for e in app.request_log if e["status"] == 403]
    assert [e["endpoint"] for e in refused] == ["results"]  # refused once, never retried
    assert app.request_log[-1] is refused[0]
    assert {e["status"] for e in app.request_log[:-1]} == {200}  # line items were readable with their scope
    message = str(err.value)
    assert err.value.status == 403 and err.value.endpoint == "results" and err.value.connection_id == CID
    assert f"GET {refused[0]['url']} failed with HTTP 403" in message
    assert message.endswith("; reading results needs the scope " + RESULT_SCOPE)
    assert TOKENS[CID] not in message


def test_a_bad_token_answers_401_and_raises_without_leaking_any_token(platform: Platform) -> None:
    url = f"{platform.base_url}/lti/{CID}/contexts"
    for token in ["nope", None]:
        headers = {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        response = platform.http.get(url, headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    bad = "bad-token-that-must-not-leak"
    with platform.client(token=bad) as client, pytest.raises(LmsAuthError) as err:
        client.grade_pages()
    assert err.value.status == 401 and f"GET {url}?limit={LIMIT} failed with HTTP 401" in str(err.value)
    scan = platform.scan()
    texts = [str(err.value), repr(err.value), repr(client), repr(scan.pages), repr(scan.log), scan.grades.to_csv()]
    assert not [t for t in texts for token in (bad, *TOKENS.values()) if token in t]


# ---- malformed pages ------------------------------------------------------------------------------------------


def test_a_page_that_is_not_json_raises_a_clear_error_naming_connection_url_and_page(platform: Platform) -> None:
    course = "crs-00003"
    platform.app.inject_fault(CID, status=200, body="<html>maintenance</html>", endpoint="results", course_id=course)
    with platform.client() as client, pytest.raises(LmsPayloadError) as err:
        client.grade_pages()
    message = str(err.value)
    assert message.startswith(f"connection '{CID}': GET {platform.base_url}/lti/{CID}/contexts/{course}/lineitems/")
    assert f"(results page 0 of course {course}) answered HTTP 200 with a body that is not JSON: " in message
    assert message.endswith("'<html>maintenance</html>'") and err.value.endpoint == "results"
    platform.app.inject_fault(CID, status=200, body="[]", endpoint="memberships", course_id=course)
    with platform.client() as client, pytest.raises(LmsPayloadError, match="memberships page 0 of course crs-00003"):
        client.grade_pages()


def test_the_normalizer_refuses_damaged_pages_and_results_of_unlisted_line_items(platform: Platform) -> None:
    pages = [asdict(p) for p in platform.scan().pages]
    damaged = next(i for i, p in enumerate(pages) if p["endpoint"] == "results" and p["page_index"] == 1)
    pages[damaged]["payload"] = '{"errors": []}'
    with pytest.raises(LtiPayloadError) as err:
        normalize_lti_grades(pages, CID)
    page = pages[damaged]
    assert str(err.value) == (
        f"connection '{CID}': 1 malformed LTI page(s) or item(s):\n  results page 1 of course {page['course_id']} "
        f"(GET {page['url']}): the body is a JSON object, not a list"
    )
    course = page["course_id"]
    orphaned = [p for p in platform.scan().pages if not (p.endpoint == "lineitems" and p.course_id == course)]
    with pytest.raises(LtiPayloadError, match=f"results page 0 of course {course} .*a line item its context did not"):
        normalize_lti_grades(orphaned, CID)
