"""The OneRoster 1.2 rostering dialect end to end: the simulator serves the world as OneRoster, the reader lists every
collection to its end through the project's OneRosterClient (whatever the provider's paging signals), and the
normalizer turns the raw pages into exactly the world's truth.

Real HTTP on 127.0.0.1 only; backoffs are a few milliseconds.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_start

import httpx
import pandas as pd
import pytest

from lms_pipeline.providers.http import LmsAuthError, LmsPayloadError, RetrySettings
from lms_pipeline.providers.oneroster.rostering import OneRosterRosterReader
from lms_pipeline.providers.oneroster.rosters import (
    OneRosterPayloadError,
    OneRosterRosterFrames,
    normalize_oneroster_pages,
)
from lms_pipeline.providers.oneroster.simulator import OneRosterRosteringApp
from lms_pipeline.providers.oneroster.simulator_oauth import SCOPE_ROOT
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread

D0 = date(2026, 9, 1)
D1, D2 = D0 + timedelta(days=1), D0 + timedelta(days=2)  # drops start on D1
MAIN = "or-main"
# Deactivations that clear rosters make empty and inactive courses; "mixed" exposure makes refused rosters.
WORLD = World(WorldSpec(MAIN, seed=4, n_courses=30, mean_roster_size=30, n_students=400, progress=False,
                        classes="rosters", roster_exposure="mixed", deactivate_prob=0.05,
                        clear_roster_on_deactivate=1.0))  # fmt: skip
CLIENT_ID, SECRET = "or-client-main", "or-secret-main-must-not-leak"
RETRY = RetrySettings(max_attempts=10, base_delay=0.01, max_delay=0.2, max_total_wait=10.0, timeout=10.0)
ROSTERING = "/ims/oneroster/rostering/v1p2"
SINCE_EVER = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass
class Scan:
    pages: list[dict]
    frames: OneRosterRosterFrames
    log: list[dict]  # the app's request log during the scan


class Served:
    """One served app, a plain httpx client with a token for talking to it directly, and cached reader scans."""

    def __init__(self, app: OneRosterRosteringApp, base_url: str, http: httpx.Client) -> None:
        self.app, self.base_url, self.http = app, base_url, http
        self._token: str | None = None
        self._scans: dict[tuple, Scan] = {}

    def reader(self, day: date = D1, *, secret: str = SECRET, **kw: object) -> OneRosterRosterReader:
        return OneRosterRosterReader(MAIN, f"{self.base_url}/oneroster/{MAIN}", CLIENT_ID, secret,
                                     simulated_date=day, retry=RETRY, **kw)  # type: ignore[arg-type]  # fmt: skip

    def get(self, path: str, day: date = D1, params: dict[str, object] | None = None) -> httpx.Response:
        """GET a rostering path (``enrollments``, ``classes/X/students``) or an absolute Link URL."""
        if self._token is None:
            grant = {"grant_type": "client_credentials", "scope": f"{SCOPE_ROOT}roster-core.readonly"}
            self._token = self.http.post("oauth/token", auth=(CLIENT_ID, SECRET), data=grant).json()["access_token"]
        headers = {"Authorization": f"Bearer {self._token}", "X-Simulated-Date": day.isoformat()}
        url = path if path.startswith("http") else f"{ROSTERING.lstrip('/')}/{path}"
        return self.http.get(url, params=params, headers=headers)  # type: ignore[arg-type]

    def scan(self, day: date = D1, page_size: int = 100) -> Scan:
        """Every roster page on ``day``, normalized; cached, as several tests read the same scan."""
        key = (day, page_size)
        if key not in self._scans:
            self.app.reset_log()
            with self.reader(day, page_size=page_size) as reader:
                pages = reader.roster_pages()
            self._scans[key] = Scan(pages, normalize_oneroster_pages(pages, MAIN, day), list(self.app.request_log))
        return self._scans[key]


@contextmanager
def served(**options: object) -> Iterator[Served]:
    app = OneRosterRosteringApp([WORLD], {MAIN: (CLIENT_ID, SECRET)}, clock=lambda: D1, **options)
    with serve_in_thread(app) as base_url, httpx.Client(base_url=f"{base_url}/oneroster/{MAIN}/", timeout=10) as http:
        assert base_url.startswith("http://127.0.0.1:")
        yield Served(app, base_url, http)


@pytest.fixture(scope="module")
def oneroster() -> Iterator[Served]:
    with served() as app:
        yield app


@pytest.fixture(autouse=True)
def _no_fault_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "oneroster" in request.fixturenames:
        request.getfixturevalue("oneroster").app.clear_faults()


def rows(frame: pd.DataFrame) -> set[tuple]:
    return set(frame.itertuples(index=False, name=None))


def statuses(frames: OneRosterRosterFrames) -> dict[str, str]:
    return dict(zip(frames.course_rosters["course_id"], frames.course_rosters["roster_status"], strict=True))


def items(pages: list[dict], endpoint: str = "enrollments") -> list[dict]:
    """Every item on the 200 pages of ``endpoint``."""
    return [
        item for p in pages if p.endpoint == endpoint and p.status == 200 for item in json.loads(p.payload)
    ]


def listings(pages: list[dict]) -> dict[tuple[str, str | None], list[dict]]:
    """The 200 pages of each listing: (endpoint, filter) -> pages in reading order."""
    out: dict[tuple[str, str | None], list[dict]] = {}
    for page in pages:
        if page.status == 200:
            out.setdefault((page.endpoint, page.params.get("filter")), []).append(page)
    return out


def course_of(day: date) -> dict[str, str]:
    """class id -> course id in the world on ``day``."""
    return {class_id: view.id for view in WORLD.roster_view(day) for class_id, _ in view.sections}


def served_enrollments(day: date) -> int:
    """Enrollments the default app serves on ``day``: exposed classes' students, left students and teachers."""
    return sum(len(v.enrolled) + len(v.dropped) + len(v.sections) for v in WORLD.roster_view(day) if v.exposed)


def imsx_minor(response: httpx.Response) -> str:
    return response.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"]


# ---- paging ---------------------------------------------------------------------------------------------------

MODES: dict[str, dict[str, object]] = {
    "headers": {},
    "body": {"paging": "body"},
    "none": {"paging": "none"},
    "headers-capped": {"limit_cap": 30},
    "body-capped": {"paging": "body", "limit_cap": 30},
    "none-capped": {"paging": "none", "limit_cap": 30},
    "ignore-limit": {"ignore_limit": True},
}
# Capped modes are read asking 100 (a cap below the ask is the trap), ignore-limit asking 7 (it serves more).
CASES = [(m, size) for m in ("headers", "body", "none") for size in (100, 7)] + [
    ("headers-capped", 100), ("body-capped", 100), ("none-capped", 100), ("ignore-limit", 7)]  # fmt: skip


@pytest.mark.parametrize(("mode", "page_size"), CASES)
def test_every_listing_is_read_to_its_end_in_every_paging_mode(mode: str, page_size: int) -> None:
    options = MODES[mode]
    with served(**options) as app, app.reader(D1, page_size=page_size) as reader:
        pages = reader.roster_pages()
        everything = reader.changed_enrollment_pages(SINCE_EVER)
    frames = normalize_oneroster_pages(pages, MAIN, D1)
    assert rows(frames.course_student_edges) == WORLD.true_course_edges(D1)
    assert rows(frames.class_student_edges) == WORLD.true_class_edges(D1)
    assert statuses(frames) == WORLD.roster_status(D1)
    assert set(statuses(frames).values()) == {"exposed", "empty", "not_exposed"}
    rosters = frames.course_rosters.set_index("course_id")
    assert rosters["is_active"].to_dict() == WORLD.is_active(D1) and not rosters["is_active"].all()
    truth = Counter(c for c, _ in WORLD.true_course_edges(D1))
    known = rosters[rosters["roster_status"] != "not_exposed"]
    assert known["student_count"].to_dict() == {c: truth.get(c, 0) for c in known.index}
    assert rosters.loc[rosters["roster_status"] == "not_exposed", "student_count"].isna().all()

    ids = [e["sourcedId"] for e in items(everything)]  # the unfiltered listing: hundreds of rows, each read once
    assert len(ids) == len(set(ids)) == served_enrollments(D1) > 500
    cap = min(page_size, options.get("limit_cap") or page_size)  # type: ignore[operator]
    sizes = []
    for group in listings([*pages, *everything]).values():
        counts = [len(json.loads(p.payload)) for p in group]
        sizes += counts
        assert [p.page_index for p in group] == list(range(len(group)))
        if options.get("paging") == "none":  # no totals anywhere: read on until an empty page
            assert {p.total for p in group} == {None} and counts[-1] == 0
        else:  # the header's or the body's total, and exactly that many rows read
            assert {p.total for p in group} == {sum(counts)}
    if options.get("ignore_limit"):
        assert len(everything) == 1 and max(sizes) > page_size
    else:
        assert max(sizes) == cap and len(everything) >= -(-len(ids) // cap)


def test_the_app_defaults_limit_to_100_with_total_count_and_links(oneroster: Served) -> None:
    total = served_enrollments(D1)
    first = oneroster.get("enrollments")
    assert len(first.json()["enrollments"]) == 100 and first.headers["X-Total-Count"] == str(total)
    assert set(first.links) == {"first", "last", "next"}
    second = oneroster.get(first.links["next"]["url"])
    assert set(second.links) == {"first", "last", "next", "prev"} and "offset=100" in first.links["next"]["url"]
    assert {e["sourcedId"] for e in first.json()["enrollments"]}.isdisjoint(
        e["sourcedId"] for e in second.json()["enrollments"]
    )
    last = oneroster.get(first.links["last"]["url"])
    assert "next" not in last.links and len(last.json()["enrollments"]) == total - (total - 1) // 100 * 100
    assert oneroster.get("courses", params={"limit": 0}).status_code == 400


def test_body_paging_sends_totals_in_the_body_and_no_paging_headers() -> None:
    with served(paging="body", limit_cap=5) as app:
        answer = app.get("classes", params={"limit": 50, "offset": 5})
    body = answer.json()
    classes = sum(len(v.sections) for v in WORLD.roster_view(D1))
    assert "X-Total-Count" not in answer.headers and "Link" not in answer.headers
    assert len(body["classes"]) == 5  # silently capped: 50 asked
    assert {k: body[k] for k in ("totalCount", "offset", "limit", "pageNumber", "pageCount")} == {
        "totalCount": classes, "offset": 5, "limit": 5, "pageNumber": 2, "pageCount": -(-classes // 5),
    }  # fmt: skip


# ---- enrollment statuses and roles ------------------------------------------------------------------------------


def test_left_students_are_tobedeleted_or_legacy_inactive_and_never_edges() -> None:
    with served(legacy_inactive_share=0.5) as app, app.reader(D2) as reader:
        pages = reader.roster_pages()
    frames = normalize_oneroster_pages(pages, MAIN, D2)
    enrollments, courses = items(pages), course_of(D2)
    counts = Counter(e["status"] for e in enrollments if e["role"] == "student")
    assert counts["tobedeleted"] >= 10 and counts["inactive"] >= 10, counts
    left = {(e["class"]["sourcedId"], e["user"]["sourcedId"]) for e in enrollments if e["status"] != "active"}
    assert {(courses[k], s) for k, s in left} == {(v.id, s) for v in WORLD.roster_view(D2) if v.exposed
                                                  for s in v.dropped}  # fmt: skip
    assert not left & {(k, s) for k, _, s in rows(frames.class_student_edges)}
    assert not {(courses[k], s) for k, s in left} & rows(frames.course_student_edges)
    assert rows(frames.course_student_edges) == WORLD.true_course_edges(D2)
    assert rows(frames.class_student_edges) == WORLD.true_class_edges(D2)


@pytest.mark.parametrize("deleted_rows", ["tobedeleted", "vanish"])
def test_a_later_drop_is_a_drop(deleted_rows: str) -> None:
    with served(deleted_rows=deleted_rows) as app:
        before, after = app.scan(D0), app.scan(D1)
    known = [{c for c, s in statuses(scan.frames).items() if s != "not_exposed"} for scan in (before, after)]
    dropped = {(v.id, s) for v in WORLD.roster_view(D1) if v.id in known[0] & known[1] for s in v.dropped}
    assert len(dropped) >= 5
    assert dropped <= rows(before.frames.course_student_edges)
    assert not dropped & rows(after.frames.course_student_edges)
    assert rows(after.frames.course_student_edges) == WORLD.true_course_edges(D1)
    courses = course_of(D1)
    served_d1 = {(courses[e["class"]["sourcedId"]], e["user"]["sourcedId"]): e["status"] for e in items(after.pages)}
    if deleted_rows == "tobedeleted":
        assert {served_d1[pair] for pair in dropped} == {"tobedeleted"}
    else:  # the rows are simply gone
        assert not dropped & served_d1.keys() and set(served_d1.values()) == {"active"}


def test_the_incremental_filter_returns_the_days_tobedeleted_rows(oneroster: Served) -> None:
    since = datetime.combine(D2, day_start.min, tzinfo=UTC)
    with oneroster.reader(D2) as reader:
        changed = items(reader.changed_enrollment_pages(since))
        everything = items(reader.changed_enrollment_pages(SINCE_EVER))
    yesterday, courses = {v.id: set(v.enrolled) for v in WORLD.roster_view(D1)}, course_of(D2)
    newly_left = {
        (v.id, s) for v in WORLD.roster_view(D2) if v.exposed for s in v.dropped if s in yesterday.get(v.id, ())
    }
    assert len(newly_left) >= 5
    got = {(courses[e["class"]["sourcedId"]], e["user"]["sourcedId"]) for e in changed if e["status"] == "tobedeleted"}
    assert got == newly_left
    assert all(e["dateLastModified"] > since.strftime("%Y-%m-%dT%H:%M:%SZ") for e in changed)
    older = {(courses[e["class"]["sourcedId"]], e["user"]["sourcedId"]) for e in everything
             if e["status"] == "tobedeleted"} - got  # fmt: skip
    assert older, "D1's drops are still served as tobedeleted, but not as changed on D2"
    same = oneroster.get("enrollments", D2, {"filter": f"dateLastModified>='{D2}' AND status='tobedeleted'",
                                             "limit": 1000})  # fmt: skip
    assert {(courses[e["class"]["sourcedId"]], e["user"]["sourcedId"]) for e in same.json()["enrollments"]} == got
    with served(deleted_rows="vanish") as vanishing:  # the gotcha: a delta cannot see rows that vanish
        delta = vanishing.get("enrollments", D2, {"filter": f"dateLastModified>='{D2}'", "limit": 1000})
    assert delta.status_code == 200 and {e["status"] for e in delta.json()["enrollments"]} == {"active"}


@pytest.mark.parametrize(
    "expression",
    [
        "role='student' AND status='active' AND class.sourcedId='cls-00001'",  # three predicates
        "status<>'active'",  # an operator OneRoster does not have
        "dateLastModified=>'2026-09-01'",
        "grade='9'",  # not a field of enrollments
        "role=student",  # unquoted value
        "dateLastModified>'yesterday'",
    ],
)
def test_an_invalid_filter_answers_400_with_an_imsx_body(oneroster: Served, expression: str) -> None:
    answer = oneroster.get("enrollments", params={"filter": expression})
    assert answer.status_code == 400
    assert answer.json()["imsx_codeMajor"] == "failure" and answer.json()["imsx_severity"] == "error"
    assert imsx_minor(answer) == "invalid_filter_field"


def test_two_predicates_combine_with_and_or_or(oneroster: Served) -> None:
    (first, _), (second, _) = next(v for v in WORLD.roster_view(D1) if v.exposed and len(v.sections) > 1).sections[:2]
    teacher = oneroster.get("enrollments", params={"filter": f"class.sourcedId='{first}' AND role='teacher'"})
    assert [e["role"] for e in teacher.json()["enrollments"]] == ["teacher"]
    both = oneroster.get("enrollments", params={"filter": f"class.sourcedId='{first}' OR class.sourcedId='{second}'"})
    assert {e["class"]["sourcedId"] for e in both.json()["enrollments"]} == {first, second}


def test_sort_order_by_and_fields_are_honoured_as_the_binding_defines(oneroster: Served) -> None:
    """``sort`` + ``orderBy`` order a listing across pages, ``fields`` selects properties (comma-separated or
    repeated); an unknown field answers 400 with an imsx body instead of being ignored."""
    params: dict[str, object] = {"sort": "title", "orderBy": "desc", "limit": 5}
    first = oneroster.get("courses", params=params)
    second = oneroster.get(first.links["next"]["url"])
    titles = [c["title"] for c in first.json()["courses"] + second.json()["courses"]]
    everything = sorted(v.name for v in WORLD.roster_view(D1))
    assert titles == everything[::-1][:10]
    ascending = oneroster.get("courses", params={"sort": "title", "limit": 3}).json()["courses"]
    assert [c["title"] for c in ascending] == everything[:3]
    for fields in ({"fields": "sourcedId,status"}, {"fields": ["sourcedId", "status"]}):
        chosen = oneroster.get("enrollments", params={**fields, "limit": 4}).json()["enrollments"]  # type: ignore[dict-item]
        assert len(chosen) == 4 and {tuple(e) for e in chosen} == {("sourcedId", "status")}
    bad_asks = [({"fields": "sourcedId,shoeSize"}, "invalid_selection_field"), ({"sort": "shoeSize"}, "invaliddata"),
                ({"sort": "title", "orderBy": "up"}, "invaliddata")]  # fmt: skip
    for bad, minor in bad_asks:
        answer = oneroster.get("courses", params=bad)  # type: ignore[arg-type]
        assert answer.status_code == 400 and imsx_minor(answer) == minor, bad


def test_teacher_enrollments_never_become_edges(oneroster: Served) -> None:
    scan = oneroster.scan(D1)
    teachers = [e for e in items(scan.pages) if e["role"] == "teacher"]
    exposed = {k for v in WORLD.roster_view(D1) if v.exposed for k, _ in v.sections}
    assert sorted(e["class"]["sourcedId"] for e in teachers) == sorted(exposed)  # one per readable class
    teacher_ids = {e["user"]["sourcedId"] for e in teachers}
    assert teacher_ids.isdisjoint(s for _, s in rows(scan.frames.course_student_edges))
    assert teacher_ids.isdisjoint(s for _, _, s in rows(scan.frames.class_student_edges))


# ---- refusals, throttling, auth ---------------------------------------------------------------------------------


def test_a_refused_class_makes_its_course_not_exposed_and_is_not_retried(oneroster: Served) -> None:
    scan = oneroster.scan(D1)
    dark = [v for v in WORLD.roster_view(D1) if not v.exposed]
    dark_classes = sorted(k for v in dark for k, _ in v.sections)
    refused = [p for p in scan.pages if p.status == 403]
    assert sorted(p.params["filter"] for p in refused) == [f"class.sourcedId='{k}'" for k in dark_classes]
    assert {p.course_id for p in refused} == {v.id for v in dark}
    assert {json.loads(p.payload)["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"]
            for p in refused} == {"forbidden"}  # fmt: skip
    asked = [e for e in scan.log if e["endpoint"] == "enrollments" and e["class_id"] in dark_classes]
    assert sorted(e["class_id"] for e in asked) == dark_classes and {e["status"] for e in asked} == {403}
    rosters = scan.frames.course_rosters.set_index("course_id")
    assert set(rosters.index[rosters["roster_status"] == "not_exposed"]) == {v.id for v in dark}
    assert {c for c, _ in rows(scan.frames.course_student_edges)}.isdisjoint(v.id for v in dark)


def test_class_students_lists_the_sections_students_and_refuses_hidden_rosters(oneroster: Served) -> None:
    views = WORLD.roster_view(D1)
    for view in [*[v for v in views if v.exposed][:3], *[v for v in views if not v.exposed][:3]]:
        for class_id, members in view.sections:
            answer = oneroster.get(f"classes/{class_id}/students")
            if view.exposed:
                assert answer.status_code == 200 and [u["sourcedId"] for u in answer.json()["users"]] == list(members)
            else:
                assert answer.status_code == 403 and imsx_minor(answer) == "forbidden"
    assert imsx_minor(oneroster.get("classes/cls-99999/students")) == "unknownobject"


def test_a_token_without_the_rostering_scope_fails_the_read(oneroster: Served) -> None:
    with oneroster.reader(scopes=("gradebook.readonly",)) as reader, pytest.raises(LmsAuthError) as err:
        reader.roster_pages()
    assert err.value.status == 403 and err.value.endpoint == "courses"


def test_server_busy_is_survived_and_counted() -> None:
    with served(throttle_every=6) as app:
        with app.reader(D1, page_size=7) as reader:
            frames = normalize_oneroster_pages(reader.roster_pages(), MAIN, D1)
        log = list(app.app.request_log)
        answers = [app.http.get(f"{ROSTERING.lstrip('/')}/courses") for _ in range(6)]  # throttled before auth
    assert rows(frames.course_student_edges) == WORLD.true_course_edges(D1)
    assert statuses(frames) == WORLD.roster_status(D1)
    busy = [e for e in log if e["status"] == 429]
    assert len(busy) >= 20 and reader.stats.throttled == reader.stats.retries == len(busy)
    assert any(e["params"].get("offset", "0") != "0" for e in busy)  # throttled mid-listing, resumed there
    throttled = [a for a in answers if a.status_code == 429]
    assert throttled and {imsx_minor(a) for a in throttled} == {"server_busy"}


def test_an_expired_token_is_refreshed_and_the_read_completes() -> None:
    app = OneRosterRosteringApp([WORLD], {MAIN: (CLIENT_ID, SECRET)}, clock=lambda: D1)
    gets = 0

    def expiring(environ: dict, start_response: object) -> list[bytes]:
        nonlocal gets
        if environ["REQUEST_METHOD"] == "GET":
            gets += 1
            if gets % 25 == 0:
                app.expire_tokens()
        return app(environ, start_response)  # type: ignore[arg-type]

    with (
        serve_in_thread(expiring) as base_url,
        OneRosterRosterReader(
            MAIN, f"{base_url}/oneroster/{MAIN}", CLIENT_ID, SECRET, simulated_date=D1, retry=RETRY
        ) as reader,
    ):
        frames = normalize_oneroster_pages(reader.roster_pages(), MAIN, D1)
    expired = [e for e in app.request_log if e["status"] == 401]
    assert len(expired) >= 2 and reader.token_requests == 1 + len(expired)
    assert rows(frames.course_student_edges) == WORLD.true_course_edges(D1)
    assert rows(frames.class_student_edges) == WORLD.true_class_edges(D1)


def test_no_secret_or_token_reaches_pages_logs_or_errors(oneroster: Served) -> None:
    scan = oneroster.scan(D1)
    wrong = "wrong-secret-that-must-not-leak"
    with oneroster.reader(secret=wrong) as reader, pytest.raises(LmsAuthError) as err:
        reader.roster_pages()
    assert err.value.status == 401 and err.value.endpoint == "oauth/token"
    tokens = oneroster.app.issued_tokens()
    assert tokens
    texts = [repr(scan.pages), repr(scan.log), str(err.value), repr(err.value), repr(reader)]
    assert not [t for t in texts for secret in (SECRET, wrong, *tokens) if secret in t]


# ---- malformed pages --------------------------------------------------------------------------------------------


def test_a_page_that_is_not_json_or_has_the_wrong_envelope_raises_a_clear_error(oneroster: Served) -> None:
    view = next(v for v in WORLD.roster_view(D1) if v.exposed)
    class_id = view.sections[0][0]
    url = (f"{oneroster.base_url}/oneroster/{MAIN}{ROSTERING}/enrollments?limit=100&offset=0"
           f"&filter=class.sourcedId%3D%27{class_id}%27")  # fmt: skip
    for body, detail in [("<html>maintenance</html>", "with a body that is not JSON: '<html>maintenance</html>'"),
                         ('{"users": []}', 'without a "enrollments" array of objects')]:  # fmt: skip
        oneroster.app.inject_fault(MAIN, status=200, body=body, endpoint="enrollments", class_id=class_id)
        with oneroster.reader() as reader, pytest.raises(LmsPayloadError) as err:
            reader.roster_pages()
        message = str(err.value)
        assert message.startswith(f"connection '{MAIN}': GET {ROSTERING}/enrollments at offset 0 answered")
        assert detail in message and message.endswith(f"(enrollments of course {view.id} page 0: GET {url})")
        assert not [t for t in oneroster.app.issued_tokens() if t in message]


def test_an_enrollment_without_a_user_raises_a_clear_normalizer_error() -> None:
    view = next(v for v in WORLD.roster_view(D1) if v.exposed)
    class_id = view.sections[0][0]
    with served(paging="body") as app:
        listing = app.get("enrollments", params={"filter": f"class.sourcedId='{class_id}'"}).json()
        del listing["enrollments"][1]["user"]
        app.app.inject_fault(MAIN, status=200, body=json.dumps(listing), endpoint="enrollments", class_id=class_id)
        with app.reader(D1) as reader:
            pages = reader.roster_pages()
    page = next(p for p in pages if p.params.get("filter") == f"class.sourcedId='{class_id}'")
    with pytest.raises(OneRosterPayloadError) as err:
        normalize_oneroster_pages(pages, MAIN, D1)
    assert str(err.value) == (
        f"connection '{MAIN}': 1 malformed OneRoster page(s) or item(s):\n  enrollments page 0 of course {view.id} "
        f"(GET {page.url}): item 1 is an enrollment without user.sourcedId"
    )


# ---- paging links ---------------------------------------------------------------------------------------------


def test_a_next_link_to_another_origin_is_refused_before_the_token_goes_there() -> None:
    """The bearer token rides on every request: a Link rel="next" to another host (here another port on 127.0.0.1)
    must not be followed, and the error names the connection, the listing and the foreign origin."""
    foreign: list[dict] = []

    def elsewhere(environ: dict, start_response: object) -> list[bytes]:
        foreign.append({"path": environ["PATH_INFO"], "authorization": environ.get("HTTP_AUTHORIZATION")})
        start_response("200 OK", [("Content-Type", "application/json")])  # type: ignore[operator]
        return [b'{"courses": []}']

    app = OneRosterRosteringApp([WORLD], {MAIN: (CLIENT_ID, SECRET)}, clock=lambda: D1)
    with serve_in_thread(elsewhere) as other:

        def redirecting(environ: dict, start_response: object) -> list[bytes]:
            def start(status: str, headers: list, exc_info: object = None) -> object:
                moved = [(k, v.replace(f"http://{environ['HTTP_HOST']}", other) if k == "Link" else v)
                         for k, v in headers]  # fmt: skip
                return start_response(status, moved, exc_info)  # type: ignore[operator]

            return app(environ, start)  # type: ignore[arg-type]

        with (
            serve_in_thread(redirecting) as base_url,
            OneRosterRosterReader(
                MAIN, f"{base_url}/oneroster/{MAIN}", CLIENT_ID, SECRET, simulated_date=D1, retry=RETRY, page_size=7
            ) as reader,  # fmt: skip
            pytest.raises(LmsPayloadError) as err,
        ):
            reader.roster_pages()
    assert foreign == [], "the token went to another origin"
    message = str(err.value)
    assert message.startswith(f"connection '{MAIN}': GET {base_url}/oneroster/{MAIN}{ROSTERING}/courses?limit=7")
    assert f"(courses page 0) links rel=next to another origin ({other}); not followed" in message
    assert err.value.endpoint == "courses" and not [t for t in app.issued_tokens() if t in message]


# ---- dates: activity from terms, enrollments from beginDate/endDate -----------------------------------------------


def test_a_student_end_dated_but_still_active_is_not_enrolled() -> None:
    """Some SISs keep a leaver's enrollment ``status: active`` and end-date it (endDate excluded, §9.2)."""
    with served(deleted_rows="end_dated") as app:
        scan = app.scan(D2)
    leavers = [e for e in items(scan.pages) if e["role"] == "student" and "endDate" in e]
    assert len(leavers) >= 10 and {e["status"] for e in leavers} == {"active"}
    assert all(e["endDate"] <= D2.isoformat() for e in leavers)
    assert rows(scan.frames.course_student_edges) == WORLD.true_course_edges(D2)
    assert rows(scan.frames.class_student_edges) == WORLD.true_class_edges(D2)
    assert statuses(scan.frames) == WORLD.roster_status(D2)


def test_an_enrollment_that_begins_tomorrow_is_not_enrolled_today() -> None:
    with served(early_enrollments=True) as app:
        scan = app.scan(D1)
    early = [e for e in items(scan.pages) if e.get("beginDate") == D2.isoformat()]
    assert len(early) >= 5 and {(e["status"], e["role"]) for e in early} == {("active", "student")}
    assert rows(scan.frames.course_student_edges) == WORLD.true_course_edges(D1)
    assert rows(scan.frames.class_student_edges) == WORLD.true_class_edges(D1)


def test_a_course_is_inactive_once_its_classes_terms_end_or_its_classes_are_tobedeleted() -> None:
    """OneRoster has no course activity flag (§9.2): a course runs while one of its classes is active and the day
    is inside one of that class's terms. Two ways an SIS says a course stopped: its term ended, or its classes are
    marked tobedeleted (then every class sits in the school year)."""
    day = D0 + timedelta(days=6)
    truth = WORLD.is_active(day)
    assert 2 <= list(truth.values()).count(False) < len(truth) - 2
    for deactivation in ("term_end", "tobedeleted"):
        with served(class_deactivation=deactivation) as app:
            scan = app.scan(day)
        rosters = scan.frames.course_rosters.set_index("course_id")
        assert rosters["is_active"].to_dict() == truth, deactivation
        sessions = items(scan.pages, "academicSessions")
        ended = [s for s in sessions if s["endDate"] <= day.isoformat()]
        if deactivation == "term_end":
            assert {s["sourcedId"].removeprefix("term-") for s in ended} == {c for c, a in truth.items() if not a}
        else:
            assert ended == [] and {s["type"] for s in sessions} == {"schoolYear"}
            stopped = {k["course"]["sourcedId"] for k in items(scan.pages, "classes") if k["status"] == "tobedeleted"}
            assert stopped == {c for c, a in truth.items() if not a}


def test_is_active_is_judged_on_the_partition_day() -> None:
    """The same pages read as of an earlier day: a term that has ended since was still running then, and a course
    created since had not started."""
    day = D0 + timedelta(days=6)
    with served() as app:
        scan = app.scan(day)
    earlier = normalize_oneroster_pages(scan.pages, MAIN, D0).course_rosters.set_index("course_id")["is_active"]
    existed = set(WORLD.is_active(D0))
    assert earlier.to_dict() == {c: c in existed for c in earlier.index}
    assert not scan.frames.course_rosters["is_active"].all() and set(earlier.index) - existed


def test_a_class_naming_an_unlisted_term_raises_a_clear_normalizer_error(oneroster: Served) -> None:
    scan = oneroster.scan(D1)
    pages = [p for p in scan.pages if p.endpoint != "academicSessions"]
    with pytest.raises(OneRosterPayloadError) as err:
        normalize_oneroster_pages(pages, MAIN, D1)
    first = next(p for p in pages if p.endpoint == "classes")
    term = json.loads(first.payload)[0]["terms"][0]["sourcedId"]
    assert f"classes page 0 (GET {first.url}): item 0 names academicSession {term}, which the academicSessions " \
           "listing does not hold" in str(err.value)  # fmt: skip


def edited(pages: list[dict], endpoint: str, edit: object) -> list[dict]:
    """The pages with ``edit(items) -> items`` applied to every 200 page of ``endpoint`` (served data, changed in
    one respect a test needs)."""
    return [replace(p, payload=json.dumps(edit(json.loads(p.payload))))  # type: ignore[operator]
            if p.endpoint == endpoint and p.status == 200 else p for p in pages]  # fmt: skip


def test_a_course_outside_its_school_year_is_inactive_whatever_its_terms_say(oneroster: Served) -> None:
    scan = oneroster.scan(D1)
    year = next(s for s in items(scan.pages, "academicSessions") if s["type"] == "schoolYear")
    assert {c["schoolYear"]["sourcedId"] for c in items(scan.pages, "courses")} == {year["sourcedId"]}

    def ended_yesterday(sessions: list[dict]) -> list[dict]:
        return [{**s, "endDate": D1.isoformat()} if s["sourcedId"] == year["sourcedId"] else s for s in sessions]

    frames = normalize_oneroster_pages(edited(scan.pages, "academicSessions", ended_yesterday), MAIN, D1)
    assert scan.frames.course_rosters["is_active"].any() and not frames.course_rosters["is_active"].any()
    assert rows(frames.course_student_edges) == rows(scan.frames.course_student_edges)  # activity is not enrolment


def test_a_course_without_classes_runs_nothing(oneroster: Served) -> None:
    scan = oneroster.scan(D1)
    course = next(v for v in WORLD.roster_view(D1) if v.is_active and v.exposed)
    pages = edited(scan.pages, "classes", lambda ks: [k for k in ks if k["course"]["sourcedId"] != course.id])
    pages = [p for p in pages if p.course_id != course.id]  # its classes' enrollment listings go with them
    rosters = normalize_oneroster_pages(pages, MAIN, D1).course_rosters.set_index("course_id")
    assert not rosters.loc[course.id, "is_active"] and rosters.loc[course.id, "roster_status"] == "empty"
    assert rosters.drop(index=course.id)["is_active"].to_dict() == {
        c: a for c, a in WORLD.is_active(D1).items() if c != course.id
    }
