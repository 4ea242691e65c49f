"""The OneRoster 1.2 rostering contract, both ways: every answer the simulated rostering service gives (lists,
errors, paging headers) and every request the project's reader sends (the token form, each GET's query) is checked
against JSON Schemas written from the spec facts (``spec_schemas/oneroster_v1p2_rostering.schema.json``,
docs/providers.md §9.2, imsx_StatusInfo §9.1), over real HTTP on 127.0.0.1.

The simulator's vendor-deviation modes (totals in the body, 1.0's ``inactive``) are the only answers allowed to
break the schema, and a test shows the schema catches them, so a schema that accepts anything cannot pass here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest

from lms_pipeline.providers.http import LmsAuthError, RetrySettings
from lms_pipeline.providers.oneroster.rostering import OneRosterRosterReader
from lms_pipeline.providers.oneroster.simulator import OneRosterRosteringApp
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread
from lms_pipeline_tests.spec_wire import Exchange, Recorder, load_schema
from lms_pipeline_tests.spec_wire import violations as spec_violations

SCHEMA = load_schema("oneroster_v1p2_rostering.schema.json")
ROSTERING = "/ims/oneroster/rostering/v1p2/"
ERROR_STATUSES = {400, 401, 403, 404, 422, 429, 500}  # what the OpenAPI lists for a GET
CID = "or-spec"
WORLD = World(WorldSpec(CID, seed=12, n_courses=20, mean_roster_size=20, n_students=300, progress=False,
                        classes="rosters", roster_exposure="mixed", deactivate_prob=0.08))  # fmt: skip
D0 = WORLD.spec.start_date
DAYS = [D0, D0 + timedelta(days=3)]  # the second day has left students and ended terms
CLIENT_ID, SECRET = "or-spec-client", "or-spec-secret-never-sent-in-a-body"
RETRY = RetrySettings(max_attempts=6, base_delay=0.01, max_delay=0.05, max_total_wait=5.0, timeout=10.0)


def violations(definition: str, instance: object) -> list[str]:
    return spec_violations(SCHEMA, definition, instance)


@contextmanager
def served(**options: object) -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder(OneRosterRosteringApp([WORLD], {CID: (CLIENT_ID, SECRET)}, clock=lambda: D0, **options))
    with serve_in_thread(recorder) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        yield recorder, base_url


def reader(base_url: str, day: date, **kw: object) -> OneRosterRosterReader:
    return OneRosterRosterReader(CID, f"{base_url}/oneroster/{CID}", CLIENT_ID, SECRET, simulated_date=day,
                                 retry=RETRY, page_size=7, **kw)  # type: ignore[arg-type]  # fmt: skip


def exercise(base_url: str) -> None:
    """What a client can make the service answer: full scans on two days, a delta, class rosters (shared and not
    shared), and the errors: a bad filter, a bad token, a token without the rostering scope, an unknown class."""
    for day in DAYS:
        with reader(base_url, day) as client:
            client.roster_pages()
            client.changed_enrollment_pages(datetime.combine(day, datetime.min.time(), tzinfo=UTC))
    with reader(base_url, DAYS[-1], scopes=("gradebook.readonly",)) as client, pytest.raises(LmsAuthError):
        client.roster_pages()
    root = f"{base_url}/oneroster/{CID}"
    with httpx.Client(base_url=root, timeout=10) as http:  # requests as any OAuth 2 client would send them
        grant = {"grant_type": "client_credentials", "scope": SCHEMA["x-read-scopes"][1]}
        token = http.post("/oauth/token", auth=(CLIENT_ID, SECRET), data=grant).json()["access_token"]
        http.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json",
                             "X-Simulated-Date": DAYS[-1].isoformat()})  # fmt: skip
        views = WORLD.roster_view(DAYS[-1])
        for view in [next(v for v in views if v.exposed), next(v for v in views if not v.exposed)]:
            http.get(f"{ROSTERING}classes/{view.sections[0][0]}/students")
        http.get(f"{ROSTERING}terms")
        http.get(f"{ROSTERING}classes/cls-99999/students")
        http.get(f"{ROSTERING}enrollments", params={"filter": "grade='9'"})
        http.get(f"{ROSTERING}classes", params={"sort": "course.sourcedId", "orderBy": "desc", "limit": 5})
        http.get(f"{ROSTERING}classes", params={"fields": "sourcedId,shoeSize"})
        http.get(f"{ROSTERING}courses", headers={"Authorization": "Bearer not-a-token"})


def answer_problems(exchange: Exchange, base_url: str) -> list[str]:
    """How one answer breaks the binding: envelope or error body, media type, paging headers."""
    where = f"{exchange.method} {exchange.path}?{exchange.query} -> {exchange.status}"
    if exchange.path.endswith("/oauth/token"):
        return []  # OAuth 2 (RFC 6749), not the OneRoster binding
    problems = []
    if exchange.response_headers.get("content-type", "").split(";")[0] != "application/json":
        problems.append(f"Content-Type {exchange.response_headers.get('content-type')!r}")
    body = json.loads(exchange.response_body)
    if exchange.status == 200:
        endpoint = exchange.path.rsplit("/", 1)[-1]
        problems += violations(SCHEMA["x-endpoint-envelopes"][endpoint], body)
        total = exchange.response_headers.get("x-total-count")
        if total is not None and not total.isdigit():
            problems.append(f"X-Total-Count {total!r} is not a count")
        for link in httpx.Response(200, headers={"Link": exchange.response_headers.get("link", "")}).links.values():
            target = urlsplit(link["url"])
            if link.get("rel") not in ("next", "prev", "first", "last") or target.path != exchange.path:
                problems.append(f"Link {link}")
            if f"{target.scheme}://{target.netloc}" != base_url:
                problems.append(f"Link to another origin: {link['url']}")
    else:
        problems += violations("imsx_StatusInfo", body)
        if exchange.status not in ERROR_STATUSES or body.get("imsx_codeMajor") != "failure":
            problems.append("an error the binding does not list, or not a failure")
    return [f"{where}: {p}" for p in problems]


def request_problems(exchange: Exchange) -> list[str]:
    """How one request breaks the binding: the token form, a GET's authorization, Accept and query."""
    where = f"{exchange.method} {exchange.path}?{exchange.query}"
    if exchange.path.endswith("/oauth/token"):
        form = {k: v[0] for k, v in parse_qs(exchange.body.decode(), keep_blank_values=True).items()}
        problems = violations("TokenRequest", form)
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
        if exchange.headers.get("authorization") != expected or SECRET.encode() in exchange.body:
            problems.append("the client must authenticate with HTTP Basic, never in the body")
        if exchange.headers.get("content-type") != "application/x-www-form-urlencoded":
            problems.append(f"Content-Type {exchange.headers.get('content-type')!r}")
        return [f"{where}: {p}" for p in problems]
    problems = []
    if exchange.method != "GET" or exchange.body:
        problems.append("the rostering service is GET only, without a body")
    if not exchange.headers.get("authorization", "").startswith("Bearer "):
        problems.append("no bearer token")
    if "application/json" not in exchange.headers.get("accept", ""):
        problems.append(f"Accept {exchange.headers.get('accept')!r}")
    query = dict(parse_qsl(exchange.query, keep_blank_values=True))
    if unknown := set(query) - set(SCHEMA["x-collection-query-parameters"]):
        problems.append(f"query parameters the binding does not define: {sorted(unknown)}")
    if not re.fullmatch(r"[1-9]\d*", query.get("limit", "1")) or not re.fullmatch(r"\d+", query.get("offset", "0")):
        problems.append("limit must be >= 1 and offset >= 0")
    return [f"{where}: {p}" for p in problems]


SPEC_MODES: dict[str, dict[str, object]] = {
    "default": {},
    "capped-limit": {"limit_cap": 3},
    "no-paging-headers": {"paging": "none"},
    "deleted-rows-vanish": {"deleted_rows": "vanish"},
    "end-dated-leavers": {"deleted_rows": "end_dated"},
    "early-enrollments": {"early_enrollments": True},
    "classes-marked-tobedeleted": {"class_deactivation": "tobedeleted"},
    "throttled": {"throttle_every": 9},
}


@pytest.mark.parametrize("mode", SPEC_MODES)
def test_every_answer_and_every_request_follows_the_rostering_binding(mode: str) -> None:
    with served(**SPEC_MODES[mode]) as (recorder, base_url):
        exercise(base_url)
    exchanges = recorder.exchanges
    seen = {(e.path.rsplit("/", 1)[-1], e.status) for e in exchanges}
    expected = {("courses", 200), ("classes", 200), ("academicSessions", 200), ("terms", 200), ("enrollments", 200),
                ("students", 200), ("students", 403), ("students", 404), ("enrollments", 400), ("courses", 401),
                ("courses", 403), ("classes", 400), ("token", 200)}  # fmt: skip
    if mode == "throttled":  # the direct requests are not retried: any may be the one answered 429
        assert any(status == 429 for _, status in seen)
    else:
        assert expected <= seen, expected - seen
    problems = [p for e in exchanges for p in (*answer_problems(e, base_url), *request_problems(e))]
    assert not problems, "\n".join(problems[:20])


def test_the_vendor_deviation_modes_are_what_the_schema_rejects() -> None:
    """Totals in the body (Timeback) and 1.0's ``inactive`` are not OneRoster 1.2: the schema says so, which
    shows it is not a schema that accepts anything."""
    with served(paging="body", legacy_inactive_share=1.0) as (recorder, base_url), reader(base_url, DAYS[-1]) as r:
        r.roster_pages()
    problems = [p for e in recorder.exchanges for p in answer_problems(e, base_url)]
    assert any("Additional properties are not allowed ('limit', 'offset', 'pageCount', 'pageNumber', 'totalCount'"
               in p for p in problems), problems[:3]  # fmt: skip
    assert any("'inactive' is not one of ['active', 'tobedeleted']" in p for p in problems), problems[:3]
    assert not [p for e in recorder.exchanges for p in request_problems(e)]


def test_served_academic_sessions_say_when_each_class_runs() -> None:
    """Every class names at least one listed academicSession, and the world's active courses are exactly those
    with a class whose term holds the day (start included, end excluded)."""
    day = DAYS[-1]
    with served() as (recorder, base_url), reader(base_url, day) as client:
        pages = client.roster_pages()
    listed = {e: [i for p in pages if p.endpoint == e and p.status == 200 for i in json.loads(p.payload)]
              for e in ("classes", "academicSessions")}  # fmt: skip
    sessions = {s["sourcedId"]: s for s in listed["academicSessions"]}
    running: dict[str, bool] = {}
    for item in listed["classes"]:
        terms = [sessions[t["sourcedId"]] for t in item["terms"]]
        runs = any(s["startDate"] <= day.isoformat() < s["endDate"] for s in terms)
        course = item["course"]["sourcedId"]
        running[course] = running.get(course, False) or (item["status"] == "active" and runs)
    assert running == WORLD.is_active(day) and not all(running.values())
