"""One simulated world, four roster dialects (Unified API, Canvas REST, Google Classroom, OneRoster 1.2), each a
real Dagster run over HTTP on 127.0.0.1: the stored edges, roster statuses and change sets must be the same
whichever dialect fed them, and equal the world's truth."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from lms_pipeline.config import ConfigError, load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import partition_key
from lms_pipeline.providers.registry import markdown_table
from lms_pipeline.simulator.systems import embedded_worlds
from lms_pipeline_tests.conftest import failure_message

START = date(2026, 9, 1)
DAYS = [START, date(2026, 9, 2)]
WORLD = {"seed": 9, "world_id": "shared-school", "n_courses": 25, "n_students": 400, "mean_roster_size": 30,
         "roster_exposure": "mixed", "not_exposed_share": 0.2, "exposure_flip_prob": 0.2, "classes": "rosters",
         "missing_timestamps_share": 0.0, "drop_prob": 0.05, "progress": False,
         "deactivate_prob": 0.1}  # fmt: skip  # two courses deactivate on the second day, one keeping its roster
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
FAST = {"retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05}}
DIALECTS = {
    "school-unified": {"provider": "unified", "options": {"full_scan_every_days": 1, **FAST}},
    "school-canvas": {"provider": "canvas", "options": FAST},
    "school-classroom": {"provider": "google_classroom", "options": {"identity": "email", **FAST}},
    "school-oneroster": {"provider": "oneroster", "options": {"client_id": "lms-pipeline", **FAST}},
}


@pytest.fixture(scope="module")
def school(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("dialects")
    config = tmp / "connections.yaml"
    directory = tmp / "directory.csv"
    connections = [
        {"id": cid, "token_env": f"TEST_{cid.upper().replace('-', '_')}", "simulator": WORLD, **spec}
        for cid, spec in DIALECTS.items()
    ]  # fmt: skip
    connections[2]["options"]["student_directory"] = str(directory)
    config.write_text(yaml.safe_dump({"start_date": START.isoformat(), "warehouse": str(tmp / "w.duckdb"),
                                      "connections": connections}))  # fmt: skip
    settings = load_settings(config)
    world = embedded_worlds(settings)["school-unified"]
    # The school's directory export: Classroom has no SIS id field, so emails tie its users to student ids.
    students = pd.DataFrame([(s["emails"][0]["email"], s["id"]) for s in world.students(START)],
                            columns=["email", "student_id"])  # fmt: skip
    students.to_csv(directory, index=False)
    job = build_defs(settings, str(config)).resolve_job_def(ROSTER_JOB)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS:
        for cid in DIALECTS:
            result = job.execute_in_process(partition_key=partition_key(cid, day), instance=instance,
                                            raise_on_error=False, run_config=QUIET)  # fmt: skip
            assert result.success, f"{cid} {day}: {failure_message(result)}"
    return {"db": tmp / "w.duckdb", "world": world, "config": config}


def rows(school: dict, sql: str, *params: object) -> pd.DataFrame:
    with duckdb.connect(str(school["db"]), read_only=True) as conn:
        return conn.execute(sql, list(params)).df()


def by_connection(school: dict, table: str, columns: str, day: date) -> dict[str, set]:
    frame = rows(school, f"SELECT connection_id, {columns} FROM lms.{table} WHERE snapshot_date = ?", day)
    return {cid: set(map(tuple, group.drop(columns="connection_id").values)) for cid, group in
            frame.groupby("connection_id")}  # fmt: skip


def test_every_dialect_gives_the_same_edges_and_statuses_as_the_truth(school: dict) -> None:
    world = school["world"]
    for day in DAYS:
        edges = by_connection(school, "course_student_edges", "course_id, student_id", day)
        statuses = by_connection(school, "course_rosters", "course_id, roster_status", day)
        assert set(edges) == set(DIALECTS)
        for cid in DIALECTS:
            assert edges[cid] == world.true_course_edges(day), f"{cid} {day}"
            assert statuses[cid] == set(world.roster_status(day).items()), f"{cid} {day}"
        assert {"not_exposed", "exposed"} <= {s for _, s in statuses["school-canvas"]}


def test_section_rosters_agree_where_the_dialect_has_sections(school: dict) -> None:
    world = school["world"]
    classes = by_connection(school, "class_student_edges", "class_id, course_id, student_id", DAYS[-1])
    for cid in ("school-unified", "school-canvas", "school-oneroster"):
        assert classes[cid] == world.true_class_edges(DAYS[-1]), cid
    assert "school-classroom" not in classes  # Classroom has no sections


def test_drops_are_drops_in_every_dialect_and_deleted_states_never_count(school: dict) -> None:
    changes = by_connection(school, "enrollment_changes", "course_id, student_id, change_type, reason", DAYS[-1])
    assert len({frozenset(v) for v in changes.values()}) == 1, "every dialect publishes the same change set"
    dropped = {(c, s) for c, s, kind, _ in changes["school-canvas"] if kind == "dropped"}
    assert dropped
    pages = rows(school, "SELECT provider, payload FROM lms.raw_course_pages WHERE snapshot_date = ? AND "
                 "status_code = 200 AND endpoint = 'enrollments'", DAYS[-1])  # fmt: skip
    gone = set()
    for _, payload in pages.itertuples(index=False):
        body = json.loads(payload)
        for item in body if isinstance(body, list) else body.get("enrollments", []):
            if item.get("enrollment_state") in ("deleted", "inactive", "completed"):
                gone.add(("canvas", item["sis_user_id"]))
            if item.get("status") in ("tobedeleted", "inactive"):
                gone.add(("oneroster", item["user"]["sourcedId"]))
    assert {p for p, _ in gone} == {"canvas", "oneroster"}, "both dialects show left students as states"
    edges = by_connection(school, "course_student_edges", "student_id", DAYS[-1])
    on_roster = {s for (s,) in edges["school-canvas"]}
    assert {s for _, s in gone} - on_roster, "students in a deleted/tobedeleted state are not enrolled"


def true_deactivation_drops(world: object, before: date, day: date) -> set[tuple[str, str]]:
    """(course, student) dropped on ``day`` because their course went inactive: both days' rosters known."""
    previous = {v.id: v for v in world.roster_view(before)}  # type: ignore[attr-defined]
    return {
        (v.id, s)
        for v in world.roster_view(day)  # type: ignore[attr-defined]
        if (p := previous.get(v.id)) is not None and p.exposed and v.exposed and p.is_active and not v.is_active
        for s in set(p.enrolled) - set(v.enrolled)
    }


def test_course_deactivated_fires_in_every_dialect_as_the_truth_says(school: dict) -> None:
    """OneRoster has no "course is active" flag (docs/providers.md §9.2): the OneRoster connection must see the
    deactivation in the class's status and its terms' dates, never in an invented field."""
    truth = true_deactivation_drops(school["world"], DAYS[0], DAYS[-1])
    assert truth, "the world deactivates a course with a known roster on the second day"
    changes = by_connection(school, "enrollment_changes", "course_id, student_id, reason", DAYS[-1])
    for cid in DIALECTS:
        assert {(c, s) for c, s, reason in changes[cid] if reason == "course_deactivated"} == truth, cid
    served = rows(school, "SELECT endpoint, payload FROM lms.raw_course_pages WHERE provider = 'oneroster' AND "
                  "status_code = 200 AND endpoint IN ('courses', 'classes')")  # fmt: skip
    for endpoint, payload in served.itertuples(index=False):
        for item in json.loads(payload):
            assert "lmsActive" not in json.dumps(item), f"an invented flag on {endpoint} {item['sourcedId']}"
            assert endpoint == "courses" or item["terms"], f"class {item['sourcedId']} has no terms"


def test_the_sync_log_says_how_each_dialect_was_read(school: dict) -> None:
    log = rows(school, "SELECT connection_id, mode, technique, requests FROM lms.sync_log WHERE snapshot_date = ?",
               DAYS[-1]).set_index("connection_id")  # fmt: skip
    assert log.loc["school-canvas", "technique"] == "link_next"
    assert log.loc["school-classroom", "technique"] == "page_token"
    assert log.loc["school-oneroster", "technique"] == "link_next_total_count"
    assert (log["mode"] == "full").all() and (log["requests"] > 0).all()


def test_the_documented_capability_matrix_is_the_one_the_pipeline_reads() -> None:
    providers = (Path(__file__).resolve().parent.parent / "docs" / "providers.md").read_text()
    assert markdown_table() in providers, "docs/providers.md: paste capabilities.markdown_table() over its matrix"


@pytest.mark.parametrize(
    ("connection", "message"),
    [
        ({"provider": "moodle"}, "field 'provider': Input tag 'moodle'"),
        ({"provider": "oneroster", "options": {}}, "field 'options.client_id': Field required"),
        ({"provider": "google_classroom", "options": {"identity": "email"}},
         "identity 'email' needs student_directory"),
        ({"provider": "canvas", "options": {"supports_updated_gte": True}},
         "field 'options.supports_updated_gte': Extra inputs are not permitted"),
    ],
)  # fmt: skip
def test_provider_options_are_validated_naming_the_connection_and_field(
    tmp_path: Path, connection: dict, message: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"start_date": "2026-09-01", "connections": [
        {"id": "bad-one", "token_env": "TOKEN_X", **connection}]}))  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "connection 'bad-one' (connections[0])" in str(caught.value) and message in str(caught.value)
