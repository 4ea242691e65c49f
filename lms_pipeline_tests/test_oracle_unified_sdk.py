"""The vendor's own SDK as an oracle: unified-python-sdk 0.61.5 reads every demo Unified connection off the embedded
simulator, over real HTTP on 127.0.0.1, with its own list methods, models and paging.

Every object of every list (courses, classes, students, contents, activities) must parse into the SDK's model, and
what the SDK keeps must equal what our client reads, record for record and in the same order. What the SDK drops is
listed and explained, so a misspelled or invented simulator field shows up as a failure:

* ``student_ids`` on courses and classes: deprecated in favour of ``students`` (docs/providers.md §1.4, §9.4) and
  gone from the 0.61.x models, while legacy integrations still send only it. Our client reads both; through the SDK
  a ``student_ids``-only roster is invisible (asserted below, for legacy-blackboard).
* ``emails[].email`` and ``emails[].type`` on students: ``LmsEmail`` is an empty schema in the SDK (§1.9).

The SDK sends ``limit=100.0&offset=0.0`` (float-typed, §9.4), which the simulator must accept. Its security scheme
is an API key put verbatim in the ``authorization`` header (``utils/security.py``), so the key given to it is
``Bearer <token>``: the header the API documents (§1.1).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from unified_python_sdk import UnifiedTo
from unified_python_sdk.models import errors, shared
from unified_python_sdk.utils import BackoffStrategy, RetryConfig

from lms_pipeline.config import load_settings
from lms_pipeline.providers.http import LmsFetchError, RetrySettings
from lms_pipeline.providers.unified.client import UnifiedLmsClient
from lms_pipeline.providers.unified.simulator import SimulatorApp
from lms_pipeline.simulator import World, serve_in_thread
from lms_pipeline.simulator.systems import world_spec

SETTINGS = load_settings()  # data/connections.yaml: the demo's connections
UNIFIED = [c for c in SETTINGS.connections if c.provider == "unified"]
DAY = SETTINGS.start_date + timedelta(days=2)
DATE_HEADER = {"X-Simulated-Date": DAY.isoformat()}
LIMIT = 100
# endpoint -> (the SDK's list method, the response attribute, the model)
LISTS = {
    "course": ("list_lms_courses", "lms_courses", shared.LmsCourse),
    "class": ("list_lms_classes", "lms_classes", shared.LmsClass),
    "student": ("list_lms_students", "lms_students", shared.LmsStudent),
    "content": ("list_lms_contents", "lms_contents", shared.LmsContent),
    "activity": ("list_lms_activities", "lms_activities", shared.LmsActivity),
}
# What the SDK's models do not keep (see the module docstring); anything else unread fails the test.
EXPLAINED = {"course.student_ids", "class.student_ids", "student.emails[].email", "student.emails[].type"}


def test_the_oracle_is_the_pinned_sdk() -> None:
    assert importlib.metadata.version("unified-python-sdk") == "0.61.5"


@pytest.fixture(scope="module")
def demo() -> Iterator[tuple[str, dict[str, World], dict[str, str]]]:
    """The demo's Unified worlds, built as lms_pipeline.resources builds them, served by one simulator."""
    worlds = {c.id: World(world_spec(SETTINGS, c)) for c in UNIFIED}
    tokens = {cid: f"oracle-token-{cid}" for cid in worlds}
    for world in worlds.values():  # mid-scan churn fired up front: both readers must see one state of the day
        world.fire(DAY, 10**6)
    with serve_in_thread(SimulatorApp(worlds.values(), tokens), host="127.0.0.1", port=0) as base_url:
        yield base_url, worlds, tokens


def sdk_list(sdk: UnifiedTo, cid: str, endpoint: str) -> list | None:
    """Every object through the SDK's list method, paged by limit/offset to a short page; None on HTTP 501."""
    method, attribute, _ = LISTS[endpoint]
    out: list = []
    for _ in range(1000):
        try:
            response = getattr(sdk.lms, method)(request={"connection_id": cid, "limit": LIMIT, "offset": len(out)},
                                                http_headers=DATE_HEADER)  # fmt: skip
        except errors.SDKError as exc:
            if exc.status_code == 501:
                return None
            raise
        page = getattr(response, attribute) or []
        out += page
        if len(page) < LIMIT:
            return out
    raise AssertionError(f"{cid} {endpoint}: paging never ended")


def our_list(base_url: str, cid: str, token: str, endpoint: str) -> list[dict] | None:
    retry = RetrySettings(base_delay=0.01, max_delay=0.05)
    with UnifiedLmsClient(cid, base_url, token, page_size=LIMIT, headers=DATE_HEADER, retry=retry) as client:
        try:
            return [item for page in client.iter_pages(endpoint) for item in page.items]
        except LmsFetchError as exc:
            if exc.status == 501:
                return None
            raise


def unread(ours: object, theirs: object, path: str) -> set[str]:
    """Paths of what our record has and the SDK's model does not keep; every value both have must be equal."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), path
        assert not theirs.keys() - ours.keys(), f"{path}: the SDK holds {theirs.keys() - ours.keys()} we never got"
        out: set[str] = set()
        for key, value in ours.items():
            if key not in theirs:
                out |= set() if value is None else {f"{path}.{key}"}
            else:
                out |= unread(value, theirs[key], f"{path}.{key}")
        return out
    if isinstance(ours, list):
        assert isinstance(theirs, list) and len(theirs) == len(ours), path
        return set().union(*(unread(a, b, f"{path}[]") for a, b in zip(ours, theirs, strict=True)))
    if isinstance(theirs, datetime):
        assert isinstance(ours, str) and datetime.fromisoformat(ours) == theirs, f"{path}: {ours!r} != {theirs}"
        return set()
    assert ours == theirs and isinstance(ours, bool) == isinstance(theirs, bool), f"{path}: {ours!r} != {theirs!r}"
    return set()


@pytest.mark.parametrize("cid", [c.id for c in UNIFIED])
def test_the_vendor_sdk_parses_every_object_and_reads_what_our_client_reads(demo, cid: str) -> None:
    base_url, worlds, tokens = demo
    retry = RetryConfig("backoff", BackoffStrategy(1, 20, 1.5, 30_000, jitter_ms=0), False)  # the demo throttles
    with UnifiedTo(server_url=base_url, security=shared.Security(jwt=f"Bearer {tokens[cid]}"),
                   retry_config=retry) as sdk:  # fmt: skip
        read = {endpoint: (our_list(base_url, cid, tokens[cid], endpoint), sdk_list(sdk, cid, endpoint))
                for endpoint in LISTS}  # fmt: skip
    dropped: set[str] = set()
    for endpoint, (ours, theirs) in read.items():
        assert (ours is None) == (theirs is None), f"{endpoint}: both answered 501, or neither"
        if ours is None or theirs is None:
            continue
        assert ours, f"{cid} {endpoint}: nothing listed to check"
        assert all(isinstance(model, LISTS[endpoint][2]) for model in theirs)
        assert [m.id for m in theirs] == [item["id"] for item in ours], f"{endpoint}: same records, same order"
        for item, model in zip(ours, theirs, strict=True):
            dropped |= unread(item, model.model_dump(exclude_none=True), endpoint)
    assert dropped <= EXPLAINED, f"the SDK's models do not keep {dropped - EXPLAINED}"
    world = worlds[cid]
    assert read["course"][0] is not None and len(read["course"][0]) == len(world.roster_status(DAY))


def test_through_the_sdk_a_student_ids_only_roster_is_invisible_and_our_client_reads_it(demo) -> None:
    """legacy-blackboard sends rosters only as the deprecated ``student_ids`` (§1.4): why our client reads both."""
    base_url, worlds, tokens = demo
    cid = "legacy-blackboard"
    with UnifiedTo(server_url=base_url, security=shared.Security(jwt=f"Bearer {tokens[cid]}")) as sdk:
        theirs = sdk_list(sdk, cid, "course")
    ours = our_list(base_url, cid, tokens[cid], "course")
    assert theirs is not None and ours is not None
    exposed = {c for c, status in worlds[cid].roster_status(DAY).items() if status == "exposed"}
    assert exposed and all(m.students is None for m in theirs)
    assert {(c["id"], s) for c in ours if c["id"] in exposed for s in c["student_ids"]} == {
        edge for edge in worlds[cid].true_course_edges(DAY) if edge[0] in exposed
    }
