"""No secret anywhere the pipeline writes: real Dagster runs of a connection of every dialect (Unified with its
grades read through LTI AGS and reconciled against a OneRoster SIS with write-back on, Canvas, Google Classroom,
OneRoster rostering) and a live Unified connection whose server echoes the token in every course. Known tokens
are set in the environment and every access token the simulated OAuth servers issue is recorded; then the live and
published DuckDB files, the Dagster instance's storage (run storage, event logs, compute logs) and every captured
log line and output are searched for each: none may be found."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import duckdb
import pytest
import yaml

from lms_pipeline.config import load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import partition_key
from lms_pipeline.providers.oneroster import simulator_oauth
from lms_pipeline.simulator.systems import embedded_sis
from lms_pipeline.warehouse import published_path
from lms_pipeline_tests.conftest import failure_message
from lms_pipeline_tests.hostile_server import HostileServer
from lms_pipeline_tests.test_pipeline_grades import SCHEMES

START, DAY = date(2026, 9, 1), date(2026, 9, 6)
FAST = {"retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05}}
WORLD = {"seed": 11, "n_courses": 6, "n_students": 120, "mean_roster_size": 12, "classes": "rosters",
         "roster_exposure": "mixed", "remove_prob": 0.0}  # fmt: skip
ENV = {name: f"{name.lower()}-{secrets.token_urlsafe(18)}" for name in (
    "SWEEP_UNIFIED_TOKEN", "SWEEP_CANVAS_TOKEN", "SWEEP_CLASSROOM_TOKEN", "SWEEP_ONEROSTER_SECRET",
    "SWEEP_SIS_SECRET", "SWEEP_ECHO_TOKEN")}  # fmt: skip


@pytest.fixture
def issued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every access token the simulated OAuth servers (the SIS, OneRoster rostering) issue during the test."""
    tokens: list[str] = []

    def recording(nbytes: int | None = None) -> str:
        tokens.append(secrets.token_urlsafe(nbytes))
        return tokens[-1]

    monkeypatch.setattr(simulator_oauth, "secrets", SimpleNamespace(token_urlsafe=recording))
    return tokens


def config(tmp: Path, echo_url: str) -> Path:
    schemes = {**SCHEMES, "courses": {"sweep-unified": {"*": "canvas_default"}}}
    (tmp / "schemes.yaml").write_text(yaml.safe_dump(schemes))
    sis = {"id": "sweep-sis", "provider": "oneroster", "client_id_env": "SWEEP_SIS_ID",
           "client_secret_env": "SWEEP_SIS_SECRET", "student_map": str(tmp / "students.csv"),
           "assignment_map": str(tmp / "items.csv"), "grading_schemes": str(tmp / "schemes.yaml"),
           "write_back": {"enabled": True}, "simulator": {"seed": 3}, **FAST}  # fmt: skip
    connections = [
        {"id": "sweep-unified", "provider": "unified", "token_env": "SWEEP_UNIFIED_TOKEN", "simulator": WORLD,
         "options": {"full_scan_every_days": 1, **FAST}, "grades": {"sis": "sweep-sis", "source": "lti_ags"}},
        {"id": "sweep-canvas", "provider": "canvas", "token_env": "SWEEP_CANVAS_TOKEN", "simulator": WORLD,
         "options": FAST},
        {"id": "sweep-classroom", "provider": "google_classroom", "token_env": "SWEEP_CLASSROOM_TOKEN",
         "simulator": WORLD, "options": FAST},
        {"id": "sweep-oneroster", "provider": "oneroster", "token_env": "SWEEP_ONEROSTER_SECRET", "simulator": WORLD,
         "options": {"client_id": "sweep-client", **FAST}},
        # A live server that echoes the bearer token in a field of every course it lists.
        {"id": "sweep-echo", "provider": "unified", "base_url": echo_url, "token_env": "SWEEP_ECHO_TOKEN",
         "options": {"simulated_clock": True, "scan": "single_pass", "supports_updated_gte": False,
                     "fetch_classes": False, "fetch_progress": False, **FAST}},
    ]  # fmt: skip
    path = tmp / "connections.yaml"
    path.write_text(yaml.safe_dump({"start_date": START.isoformat(), "warehouse": str(tmp / "w.duckdb"),
                                    "sis": [sis], "connections": connections}))  # fmt: skip
    # The analyst's mapping rows, as test_pipeline_grades writes them, so the write-back has grades to write.
    world = embedded_sis(load_settings(path)).worlds["sweep-sis"]
    (tmp / "students.csv").write_text("lms_connection_id,lms_user_id,sis_user_id\n" + "".join(
        f"sweep-unified,{lms},{sis}\n" for lms, sis in sorted(world.other_email_students().items())))  # fmt: skip
    (tmp / "items.csv").write_text("lms_connection_id,lms_course_id,lms_content_id,sis_line_item_id\n" + "".join(
        f"sweep-unified,{c},{k},{li}\n" for (c, k), li in sorted(world.renamed_line_items(DAY).items())))  # fmt: skip
    return path


def database_texts(path: Path) -> Iterator[tuple[str, str]]:
    """(where, text) of every row of every table, read through DuckDB (its files may compress strings)."""
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = conn.execute("SELECT table_schema, table_name FROM information_schema.tables").fetchall()
        for schema, table in tables:
            rows = conn.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall()
            yield f"{path.name}:{schema}.{table}", repr(rows)


def file_texts(root: Path) -> Iterator[tuple[str, str]]:
    """(where, text) of every file under ``root``, bytes decoded leniently: SQLite pages, compute logs, DuckDB."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield str(path.relative_to(root)), path.read_bytes().decode("latin-1")


def found(secret_values: dict[str, str], places: Iterator[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, where) for where, text in places for name, value in secret_values.items() if value in text]


def test_no_secret_is_stored_logged_or_shown_by_any_dialect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str], issued: list[str],
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    for name, value in {**ENV, "SWEEP_SIS_ID": "sweep-sis-client"}.items():
        monkeypatch.setenv(name, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with HostileServer("echo_token") as echo, dg.instance_for_test(temp_dir=str(home)) as instance:
        path = config(tmp_path, echo.url)
        job = build_defs(load_settings(path), str(path)).resolve_job_def(ROSTER_JOB)
        results = {cid: job.execute_in_process(partition_key=partition_key(cid, DAY), instance=instance,
                                               raise_on_error=False)
                   for cid in load_settings(path).connection_ids}  # fmt: skip
        assert echo.saw(ENV["SWEEP_ECHO_TOKEN"]), "the echoing server was asked with the token"
        events = [dg.serialize_value(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id)]
        runs = [dg.serialize_value(run) for run in instance.get_runs()]
    failed = {cid: failure_message(r) for cid, r in results.items() if not r.success}
    assert not failed, failed

    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        written = conn.execute("SELECT count(*) FROM lms.grade_sync_log WHERE http_status < 300").fetchone()
        providers = {p for (p,) in conn.execute("SELECT DISTINCT provider FROM lms.raw_course_pages").fetchall()}
    assert written[0] > 0, "the write-back wrote grades to the SIS with its access token"
    assert providers == {"unified", "canvas", "google_classroom", "oneroster"}, "every provider's pages were swept"
    assert len(issued) >= 2, "the SIS and the OneRoster rostering server issued access tokens"

    every = {**ENV, **{f"issued access token {i}": token for i, token in enumerate(issued)}}
    captured = capfd.readouterr()
    places = [
        *database_texts(db), *database_texts(published_path(db)),
        *file_texts(tmp_path),  # both DuckDB files raw, the Dagster home: run and event storage, compute logs
        *(("event log", text) for text in events), *(("run storage", text) for text in runs),
        *((f"log record {r.name}", f"{r.getMessage()} {r.args} {r.exc_text}") for r in caplog.records),
        ("stdout", captured.out), ("stderr", captured.err),
    ]  # fmt: skip
    compute_logs = [text for where, text in places if "compute_logs" in where]
    assert compute_logs and any(compute_logs), "the compute logs were captured and searched"
    assert found(every, iter(places)) == []

    # The sweep sees a leak where there is one: the same search finds a token planted in a DuckDB table (stored
    # compressed) and in a log file.
    planted = tmp_path / "planted"
    planted.mkdir()
    with duckdb.connect(str(planted / "p.duckdb")) as conn:
        conn.execute("CREATE TABLE t AS SELECT ? AS payload FROM range(1000)", [f'{{"echo": "{issued[0]}"}}'])
    (planted / "compute.err").write_text(f"Authorization: Bearer {ENV['SWEEP_UNIFIED_TOKEN']}")
    assert {name for name, _ in found(every, database_texts(planted / "p.duckdb"))} == {"issued access token 0"}
    assert {name for name, _ in found(every, file_texts(planted))} >= {"SWEEP_UNIFIED_TOKEN"}
