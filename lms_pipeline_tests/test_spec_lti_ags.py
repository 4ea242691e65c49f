"""The LTI AGS 2.0 contract, both ways: every line item and result answer the simulated platform gives and every
request the project's AGS client sends are checked against JSON Schemas written from the spec facts
(``spec_schemas/lti_ags_v2p0.schema.json``, docs/providers.md §9.5): bodies, media types, query parameters, the
results URL (the line item's path + ``/results``, its query kept) and ``Link`` paging. Real HTTP on 127.0.0.1.

The contexts listing (a stand-in for launch claims) and NRPS memberships are not AGS and are not checked here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from lms_pipeline.providers.http import RetrySettings
from lms_pipeline.providers.lti_ags.client import LtiAgsClient
from lms_pipeline.providers.lti_ags.simulator import LtiPlatformApp
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread
from lms_pipeline_tests.spec_wire import Exchange, Recorder, load_schema
from lms_pipeline_tests.spec_wire import violations as spec_violations

SCHEMA = load_schema("lti_ags_v2p0.schema.json")
MEDIA = SCHEMA["x-media-types"]
CID = "lti-spec"
WORLD = World(WorldSpec(CID, seed=5, n_courses=8, n_students=200, progress=True))
DAY = WORLD.spec.start_date + timedelta(days=6)
TOKEN = "lti-spec-token"
RETRY = RetrySettings(max_attempts=6, base_delay=0.01, max_delay=0.05, max_total_wait=5.0, timeout=10.0)


def violations(definition: str, instance: object) -> list[str]:
    return spec_violations(SCHEMA, definition, instance)


def kind(exchange: Exchange) -> str | None:
    """What an AGS URL serves: a line item container, a line item, a result container (None: not AGS)."""
    if exchange.path.endswith("/lineitems"):
        return "LineItemContainer"
    if exchange.path.endswith("/lineitem"):
        return "LineItem"
    if exchange.path.endswith("/lineitem/results"):
        return "ResultContainer"
    return None


def lineitem_key(url: str) -> tuple[str, str | None]:
    """A line item URL as (path, type_id): the parts that name it, whatever paging parameters ride along."""
    parts = urlsplit(url)
    return parts.path, dict(parse_qsl(parts.query)).get("type_id")


@contextmanager
def served(**options: object) -> Iterator[tuple[Recorder, str]]:
    recorder = Recorder(LtiPlatformApp([WORLD], {CID: TOKEN}, **options))
    with serve_in_thread(recorder) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        yield recorder, base_url


def exercise(base_url: str) -> list[dict]:
    """A full client scan with small pages, then what the client does not ask but a platform must answer
    conformantly: one line item, and one user's result."""
    with LtiAgsClient(CID, f"{base_url}/lti/{CID}", TOKEN, simulated_date=DAY, retry=RETRY, limit=3) as client:
        pages = client.grade_pages()
    lineitem = next(i for p in pages if p.endpoint == "lineitems" for i in json.loads(p.payload))
    result = next(i for p in pages if p.endpoint == "results" for i in json.loads(p.payload))
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Simulated-Date": DAY.isoformat()}
    with httpx.Client(timeout=10, headers=headers) as http:
        http.get(lineitem["id"], headers={"Accept": MEDIA["LineItem"]})
        results = httpx.URL(result["scoreOf"])
        http.get(results.copy_with(path=results.path + "/results").copy_merge_params({"user_id": result["userId"]}),
                 headers={"Accept": MEDIA["ResultContainer"]})  # fmt: skip
    return pages


def answer_problems(exchange: Exchange, base_url: str) -> list[str]:
    """How one AGS answer breaks the spec: media type, body, Link paging, results tied to their line item."""
    definition = kind(exchange)
    if definition is None or exchange.status != 200:
        return []
    where = f"{exchange.method} {exchange.path}?{exchange.query} -> {exchange.status}"
    problems = []
    if exchange.response_headers.get("content-type", "").split(";")[0] != MEDIA[definition]:
        problems.append(f"Content-Type {exchange.response_headers.get('content-type')!r}, not {MEDIA[definition]}")
    body = json.loads(exchange.response_body)
    problems += violations(definition, body)
    if definition == "ResultContainer":
        asked = lineitem_key(f"{base_url}{exchange.path.removesuffix('/results')}?{exchange.query}")
        wrong = [r.get("id") for r in body if lineitem_key(str(r.get("scoreOf"))) != asked]
        if wrong:
            problems.append(f"results {wrong[:3]} are scoreOf another line item than the one asked")
    for link in httpx.Response(200, headers={"Link": exchange.response_headers.get("link", "")}).links.values():
        target = urlsplit(link["url"])
        if link.get("rel") not in SCHEMA["x-link-relations"] or target.path != exchange.path:
            problems.append(f"Link {link}")
        if f"{target.scheme}://{target.netloc}" != base_url:
            problems.append(f"Link to another origin: {link['url']}")
    return [f"{where}: {p}" for p in problems]


def request_problems(exchange: Exchange, lineitem_ids: set[str], base_url: str) -> list[str]:
    """How one AGS request breaks the spec: GET only, bearer token, Accept naming the media type, the query
    parameters the container defines, and a results URL made from a line item id."""
    definition = kind(exchange)
    if definition is None:
        return []
    where = f"{exchange.method} {exchange.path}?{exchange.query}"
    problems = []
    if exchange.method != "GET" or exchange.body:
        problems.append("reads are GETs without a body")
    if exchange.headers.get("authorization") != f"Bearer {TOKEN}":
        problems.append("no bearer token")
    if MEDIA[definition] not in exchange.headers.get("accept", ""):
        problems.append(f"Accept {exchange.headers.get('accept')!r} does not name {MEDIA[definition]}")
    query = dict(parse_qsl(exchange.query, keep_blank_values=True))
    allowed = set(SCHEMA["x-query-parameters"].get(definition, []))
    if definition == "ResultContainer":  # the line item's own query travels on (e.g. Moodle's type_id)
        lineitem = f"{base_url}{exchange.path.removesuffix('/results')}"
        given = [i for i in lineitem_ids if urlsplit(i).path == urlsplit(lineitem).path]
        if len(given) != 1:
            problems.append("a results URL that is not a listed line item id + /results")
        else:
            own = dict(parse_qsl(urlsplit(given[0]).query))
            allowed |= set(own)
            if any(query.get(k) != v for k, v in own.items()):
                problems.append(f"the line item's query {own} was not kept")
    if definition == "LineItem":
        allowed = {
            k for i in lineitem_ids if urlsplit(i).path == exchange.path for k in dict(parse_qsl(urlsplit(i).query))
        }
    if unknown := set(query) - allowed:
        problems.append(f"query parameters AGS does not define here: {sorted(unknown)}")
    for name in ("limit", "page"):
        if name in query and not re.fullmatch(r"[1-9]\d*", query[name]):
            problems.append(f"{name}={query[name]!r} is not a positive integer")
    return [f"{where}: {p}" for p in problems]


@pytest.mark.parametrize("options", [{}, {"rate_limit_every": 7, "retry_after_seconds": 0}], ids=["plain", "throttled"])
def test_every_ags_answer_and_request_follows_the_spec(options: dict) -> None:
    with served(**options) as (recorder, base_url):
        pages = exercise(base_url)
    exchanges = recorder.exchanges
    lineitem_ids = {i["id"] for p in pages if p.endpoint == "lineitems" for i in json.loads(p.payload)}
    kinds = {(kind(e), e.status) for e in exchanges}
    assert {("LineItemContainer", 200), ("LineItem", 200), ("ResultContainer", 200)} <= kinds
    paged = [e for e in exchanges if kind(e) and 'rel="next"' in e.response_headers.get("link", "")]
    assert len(paged) >= 5, "small pages: listings take several"
    assert any("?" in i for i in lineitem_ids) and any("?" not in i for i in lineitem_ids)
    problems = [p for e in exchanges for p in (*answer_problems(e, base_url),
                                               *request_problems(e, lineitem_ids, base_url))]  # fmt: skip
    assert not problems, "\n".join(problems[:20])


def test_the_schemas_reject_what_ags_forbids() -> None:
    """The schemas are not permissive: served objects made to break one spec rule each are refused."""
    with served() as (recorder, base_url):
        exercise(base_url)
    lineitem = next(json.loads(e.response_body) for e in recorder.exchanges if kind(e) == "LineItem")
    result = next(r for e in recorder.exchanges if kind(e) == "ResultContainer" for r in json.loads(e.response_body))
    assert not violations("LineItem", lineitem) and not violations("Result", result)
    assert violations("LineItem", {**lineitem, "scoreMaximum": 0})  # > 0
    assert violations("LineItem", {k: v for k, v in lineitem.items() if k != "label"})
    assert violations("LineItem", {**lineitem, "id": "/relative/lineitem"})
    assert violations("Result", {**result, "resultMaximum": 0})
    assert violations("Result", {**result, "resultScore": "87"})  # a number, not text
    score = {"userId": result["userId"], "timestamp": "2026-09-07T10:00:00.123+00:00",
             "activityProgress": "Completed", "gradingProgress": "FullyGraded"}  # fmt: skip
    assert not violations("Score", score) and not violations("Score", {**score, "scoreGiven": 8, "scoreMaximum": 10})
    assert violations("Score", {**score, "scoreGiven": 8})  # scoreMaximum is required with scoreGiven
    assert violations("Score", {**score, "gradingProgress": "Graded"})
    assert violations("Score", {**score, "timestamp": "2026-09-07T10:00:00"})  # a zone is required


def test_the_line_item_container_honours_its_filters() -> None:
    """AGS defines ``resource_id``, ``tag`` and ``resource_link_id`` on the container GET (§9.5); a platform that
    ignored them would hand a tool every line item when it asked for one."""
    with served() as (_, base_url), httpx.Client(timeout=10) as http:
        headers = {"Authorization": f"Bearer {TOKEN}", "X-Simulated-Date": DAY.isoformat(),
                   "Accept": MEDIA["LineItemContainer"]}  # fmt: skip
        url = f"{base_url}/lti/{CID}/contexts/crs-00001/lineitems"
        everything = http.get(url, params={"limit": 100}, headers=headers).json()
        assert len(everything) >= 2
        wanted = everything[1]
        one = http.get(url, params={"resource_id": wanted["resourceId"]}, headers=headers).json()
        tagged = http.get(url, params={"tag": wanted["tag"], "limit": 100}, headers=headers).json()
        untagged = http.get(url, params={"tag": "no-such-tag"}, headers=headers)
        linked = http.get(url, params={"resource_link_id": "no-such-link"}, headers=headers)
    assert one == [wanted]
    assert tagged == [i for i in everything if i.get("tag") == wanted["tag"]]
    assert untagged.status_code == linked.status_code == 200 and untagged.json() == linked.json() == []
