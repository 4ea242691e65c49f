"""Which courses a Canvas connection mirrors, and how Canvas reads the query strings it is sent.

Real Canvas lists an institution's courses at ``GET /api/v1/accounts/:account_id/courses`` (the account permission
``read_course_list``; ``:account_id`` may be ``self``, the domain's root account); ``GET /api/v1/courses`` lists only
the token user's own courses (docs/providers.md §9.3). Canvas runs on Rack, which keeps the last of repeated plain
parameters and reads ``k[]`` as an array; the account listing reads ``enrollment_type``, ``by_teachers`` and
``by_subaccounts`` only as arrays. The simulator behaves so, and the pipeline's first day from a Canvas connection
must hold the institution's courses, equal to the world's truth. Real HTTP on 127.0.0.1, real Dagster runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import duckdb
import httpx
import pytest
import yaml

from lms_pipeline.config import ConfigError, load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import partition_key
from lms_pipeline.providers.canvas.client import CanvasClient
from lms_pipeline.providers.canvas.simulator import NOT_AUTHORIZED, CanvasSimulatorApp
from lms_pipeline.providers.canvas.simulator_http import rack_params
from lms_pipeline.providers.canvas.simulator_world import OWN_COURSES, TEACHER_USER_BASE
from lms_pipeline.providers.http import LmsAuthError, LmsFetchError, RetrySettings
from lms_pipeline.simulator import World, WorldSpec, serve_in_thread
from lms_pipeline_tests.conftest import failure_message

D0 = date(2026, 9, 1)
DAY = D0 + timedelta(days=2)  # the simulator's own clock: by then some courses are completed
CID = "canvas-district"
TOKEN = "canvas-admin-token-s3cret-42"
WORLD = World(WorldSpec(CID, seed=31, start_date=D0, n_courses=30, mean_roster_size=20, n_students=400,
                        progress=False, classes="rosters", roster_exposure="mixed", deactivate_prob=0.2))  # fmt: skip
RETRY = RetrySettings(max_attempts=4, base_delay=0.01, max_delay=0.05, max_total_wait=5.0, timeout=10.0)
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@dataclass
class Served:
    app: CanvasSimulatorApp
    base_url: str  # the connection's Canvas root: {server}/canvas/{CID}

    def get(self, path: str, query: str = "", token: str = TOKEN) -> httpx.Response:
        url = f"{self.base_url}/api/v1/{path}" + (f"?{query}" if query else "")
        return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)

    def client(self, **kw: object) -> CanvasClient:
        return CanvasClient(CID, self.base_url, TOKEN, retry=RETRY, simulated_date=D0, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def admin() -> Iterator[Served]:
    app = CanvasSimulatorApp([WORLD], {CID: TOKEN}, clock=lambda: DAY, bucket_capacity=None)
    with serve_in_thread(app) as server:
        yield Served(app, f"{server}/canvas/{CID}")


@pytest.fixture(scope="module")
def teacher() -> Iterator[Served]:
    """The same Canvas, but the connection's token is a plain teacher's (no ``read_course_list``)."""
    app = CanvasSimulatorApp([WORLD], {CID: TOKEN}, clock=lambda: DAY, bucket_capacity=None, account_admin=False)
    with serve_in_thread(app) as server:
        yield Served(app, f"{server}/canvas/{CID}")


def ids(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    return [course["id"] for course in response.json()]


def every_course_number(day: date = DAY) -> list[int]:
    return sorted(v.number for v in WORLD.roster_view(day))


# ---- the simulator: whose courses each listing holds ----------------------------------------------------------


def test_the_users_own_listing_holds_a_handful_and_the_account_listing_every_course(admin: Served) -> None:
    everything = every_course_number()
    assert len(everything) > 30  # 30 on the first day, and courses are added
    own = ids(admin.get("courses", "per_page=100"))
    assert own == everything[:OWN_COURSES]  # the token user's own courses only, whatever the institution's size
    for account in ("self", "1"):
        assert ids(admin.get(f"accounts/{account}/courses", "per_page=100")) == everything
    assert admin.get("accounts/2/courses").status_code == 404  # no such account


def test_a_teachers_token_is_refused_the_account_listing_as_canvas_refuses_it(teacher: Served) -> None:
    for path in ("accounts/self/courses", "accounts/self"):
        refused = teacher.get(path)
        assert refused.status_code == 401 and refused.json() == NOT_AUTHORIZED
        assert "WWW-Authenticate" not in refused.headers  # the token is good: Canvas adds it only without a user
    assert ids(teacher.get("courses")) == every_course_number()[:OWN_COURSES]
    not_theirs = every_course_number()[OWN_COURSES]
    assert teacher.get(f"courses/{not_theirs}/enrollments").status_code == 401  # refused, as any roster it may not read
    bad = teacher.get("accounts/self/courses", token="not-a-token")
    assert bad.status_code == 401 and bad.headers["WWW-Authenticate"].startswith("Bearer")


def test_the_account_listing_uses_its_own_states_and_pages_without_a_last_link(admin: Served) -> None:
    views = WORLD.roster_view(DAY)
    completed = sorted(v.number for v in views if not v.is_active)
    assert completed and len(completed) < len(views)
    assert ids(admin.get("accounts/self/courses", "state[]=completed&per_page=100")) == completed
    assert ids(admin.get("accounts/self/courses", "state[]=all&per_page=100")) == every_course_number()
    assert ids(admin.get("accounts/self/courses", "state[]=unpublished")) == []  # not an account state: nothing
    first = admin.get("accounts/self/courses", "state[]=available&state[]=completed&per_page=7")
    assert set(first.links) == {"current", "next", "first"}  # paginated with total_entries nil: no rel="last"
    last_page = admin.get("accounts/self/courses", "per_page=7&page=5")
    assert len(last_page.json()) == len(views) - 28 and set(last_page.links) == {"current", "prev", "first"}


# ---- the simulator: Rack query parsing ------------------------------------------------------------------------


def test_rack_keeps_the_last_plain_value_and_reads_brackets_as_arrays() -> None:
    assert rack_params("k=a&k=b") == {"k": "b"}
    assert rack_params("k[]=a&k[]=b") == {"k": ["a", "b"]}
    assert rack_params("k[]=a&k=b") == {"k": "b"}  # a plain value replaces the array
    assert rack_params("per_page=10&state%5B%5D=x+y") == {"per_page": "10", "state": ["x y"]}


def test_the_simulator_reads_each_parameter_as_canvas_reads_it(admin: Served) -> None:
    views = WORLD.roster_view(DAY)
    active = sorted(v.number for v in views if v.is_active)
    completed = sorted(v.number for v in views if not v.is_active)
    both = "state=available&state=completed&per_page=100"
    assert ids(admin.get("accounts/self/courses", both)) == completed  # repeated plain state: the last one wins
    assert ids(admin.get("accounts/self/courses", "state=available&per_page=100")) == active  # Array(state)
    third = every_course_number()[2]
    teacher_of_third = TEACHER_USER_BASE + third
    assert ids(admin.get("accounts/self/courses", f"by_teachers[]={teacher_of_third}")) == [third]
    assert ids(admin.get("accounts/self/courses", f"by_teachers={teacher_of_third}&per_page=100")) == (
        every_course_number()
    )  # only an array is read: a plain by_teachers is silently ignored
    assert ids(admin.get("accounts/self/courses", "enrollment_type[]=observer")) == []  # no observers anywhere
    ignored = admin.get("accounts/self/courses", "enrollment_type=observer&per_page=100")
    assert ids(ignored) == every_course_number()  # not an array: ignored
    assert ids(admin.get("accounts/self/courses", "by_subaccounts[]=7")) == []
    assert ids(admin.get("accounts/self/courses", "by_subaccounts=7&per_page=100")) == every_course_number()
    mixed = admin.get("accounts/self/courses", "state=available&state[]=completed")
    assert mixed.status_code == 400 and "expected Array (got String) for param `state'" in mixed.text


def test_links_carry_the_parameters_as_canvas_read_them(admin: Served) -> None:
    response = admin.get("accounts/self/courses", "state=available&state=completed&include[]=term&per_page=5")
    query = urlsplit(response.links["next"]["url"]).query
    assert query == "include%5B%5D=term&state=completed&page=2&per_page=5"  # to_query: sorted, the last state
    enrollment_type = admin.get("accounts/self/courses", "enrollment_type=student&per_page=100")
    assert "enrollment_type=student" in enrollment_type.links["current"]["url"]


# ---- the client -----------------------------------------------------------------------------------------------


def test_the_client_lists_the_accounts_courses_and_canvas_reads_its_requests_as_meant(admin: Served) -> None:
    admin.app.reset_log()
    with admin.client(per_page=10) as client:
        exposed = next(v.number for v in WORLD.roster_view(D0) if v.exposed)
        pages = client.roster_pages() + client.grade_pages(course_ids=[exposed])
    listed = sorted({item["id"] for p in pages if p.endpoint == "courses" for item in json.loads(p.payload)})
    assert listed == every_course_number(D0)
    intended = {
        "courses": {"state": ["available", "completed"], "per_page": "10"},
        "enrollments": {"type": ["StudentEnrollment"], "per_page": "10",
                        "state": ["active", "invited", "inactive", "completed", "deleted"]},
        "sections": {"per_page": "10"},
        "assignments": {"per_page": "10"},
        "grading_standards": {"per_page": "10"},
        "submissions": {"student_ids": ["all"], "include": ["user"], "per_page": "10"},
    }  # fmt: skip
    seen = set()
    for entry in admin.app.request_log:
        assert entry["status"] == 200 or entry["endpoint"] == "enrollments", entry
        read = rack_params(urlsplit(entry["url"]).query)
        read.pop("page", None)
        assert read == intended[entry["endpoint"]], entry["url"]
        seen.add(entry["endpoint"])
        if entry["endpoint"] == "courses":
            assert urlsplit(entry["url"]).path == f"{urlsplit(admin.base_url).path}/api/v1/accounts/self/courses"
    assert seen == set(intended)


def test_a_token_without_read_course_list_gets_an_error_naming_the_account_and_permission(teacher: Served) -> None:
    with teacher.client() as client, pytest.raises(LmsAuthError) as caught:
        client.roster_pages()
    message = str(caught.value)
    assert caught.value.status == 401 and caught.value.connection_id == CID and caught.value.endpoint == "courses"
    assert message.startswith(f"connection '{CID}': GET {teacher.base_url}/api/v1/accounts/self/courses?")
    for part in ("options.account_id 'self'", "read_course_list", "user not authorized to perform that action"):
        assert part in message
    assert TOKEN not in message and TOKEN not in repr(caught.value)


def test_an_unknown_account_is_a_clear_error(admin: Served) -> None:
    with admin.client(account_id="999") as client, pytest.raises(LmsFetchError) as caught:
        client.course_pages()
    message = str(caught.value)
    assert caught.value.status == 404 and "/api/v1/accounts/999/courses" in message
    assert "options.account_id '999'" in message and "no such account" in message


# ---- the pipeline ---------------------------------------------------------------------------------------------


def write_config(tmp: Path, base_url: str, options: dict | None = None) -> Path:
    config = tmp / "connections.yaml"
    connection = {"id": CID, "provider": "canvas", "base_url": base_url, "token_env": "TEST_CANVAS_ACCOUNT_TOKEN",
                  "options": {"simulated_clock": True, "page_size": 20, **(options or {}),
                              "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05}}}  # fmt: skip
    config.write_text(yaml.safe_dump({"start_date": D0.isoformat(), "warehouse": str(tmp / "w.duckdb"),
                                      "connections": [connection]}))  # fmt: skip
    return config


def run_first_day(config: Path) -> dg.ExecuteInProcessResult:
    job = build_defs(load_settings(config), str(config)).resolve_job_def(ROSTER_JOB)
    return job.execute_in_process(partition_key=partition_key(CID, D0), instance=dg.DagsterInstance.ephemeral(),
                                  raise_on_error=False, run_config=QUIET)  # fmt: skip


def test_the_first_day_from_a_canvas_connection_holds_the_institutions_courses(
    admin: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_CANVAS_ACCOUNT_TOKEN", TOKEN)
    result = run_first_day(write_config(tmp_path, admin.base_url))
    assert result.success, failure_message(result)
    where = "WHERE connection_id = ? AND snapshot_date = ?"
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as conn:
        statuses = dict(conn.execute(f"SELECT course_id, roster_status FROM lms.course_rosters {where}", [CID, D0])
                        .fetchall())  # fmt: skip
        edges = set(conn.execute(f"SELECT course_id, student_id FROM lms.course_student_edges {where}", [CID, D0])
                    .fetchall())  # fmt: skip
    assert len(statuses) == 30 and statuses == WORLD.roster_status(D0)
    assert edges == WORLD.true_course_edges(D0)


def test_a_teacher_token_fails_the_run_with_the_permission_it_lacks(
    teacher: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_CANVAS_ACCOUNT_TOKEN", TOKEN)
    result = run_first_day(write_config(tmp_path, teacher.base_url))
    assert not result.success
    message = failure_message(result)
    assert f"connection '{CID}'" in message and "options.account_id 'self'" in message
    assert "read_course_list" in message and TOKEN not in message


@pytest.mark.parametrize("account_id", ["self", "1", "sis_account_id:district-1"])
def test_account_id_accepts_canvas_account_references(tmp_path: Path, account_id: str) -> None:
    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9/canvas/x", {"account_id": account_id}))
    assert settings.connection(CID).options.account_id == account_id  # type: ignore[union-attr]


@pytest.mark.parametrize("account_id", ["", "../courses", "12/courses", "me"])
def test_account_id_rejects_anything_else_naming_the_field(tmp_path: Path, account_id: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(tmp_path, "http://127.0.0.1:9/canvas/x", {"account_id": account_id}))
    assert f"connection '{CID}'" in str(caught.value) and "options.account_id" in str(caught.value)


def test_account_id_defaults_to_the_root_account(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, "http://127.0.0.1:9/canvas/x"))
    assert settings.connection(CID).options.account_id == "self"  # type: ignore[union-attr]
