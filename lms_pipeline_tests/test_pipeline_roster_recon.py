"""Roster reconciliation end to end: real Dagster runs, the embedded LMS and the OneRoster SIS (the roster of record)
over HTTP on 127.0.0.1, a real DuckDB file. Every disagreement the SIS plants (late adds not pushed, drops not
applied, section moves, unknown students, classes and courses without a counterpart, rosters the LMS does not
expose) must be found with its status and first-seen day, on every day, and nothing else flagged."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from lms_pipeline.config import load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import partition_key
from lms_pipeline.providers.oneroster.sis_world import SisWorld
from lms_pipeline.simulator.systems import embedded_sis
from lms_pipeline_tests.conftest import failure_message

pytestmark = pytest.mark.slow  # real Dagster runs

START = date(2026, 9, 1)
DAYS = [START + timedelta(days=n) for n in range(5)]
CONN, SIS = "recon-lms", "recon-sis"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
STATUSES = {"missing_in_lms", "missing_in_sis", "section_mismatch", "unmapped_student", "unmapped_course",
            "lms_roster_not_exposed"}  # fmt: skip
RECON_ASSETS = [dg.AssetKey("raw_sis_roster_pages"), dg.AssetKey("roster_discrepancies")]
HEADER = "lms_connection_id,lms_user_id,sis_user_id\n"


class RosterReconPipeline:
    """A connections file with one embedded Unified connection (sections, rosters exposed or not) whose grades and
    rosters are reconciled against an embedded SIS, in ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.instance = dg.DagsterInstance.ephemeral()
        self.results: dict[date, dg.ExecuteInProcessResult] = {}
        self.config = tmp / "connections.yaml"
        (tmp / "schemes.yaml").write_text(yaml.safe_dump({"schemes": {"s": {"cutoffs": [["P", 50], ["F", 0]]}}}))
        (tmp / "assignment_map.csv").write_text("lms_connection_id,lms_course_id,lms_content_id,sis_line_item_id\n")
        sis = {"id": SIS, "provider": "oneroster", "client_id_env": "TEST_RECON_SIS_ID",
               "client_secret_env": "TEST_RECON_SIS_SECRET", "student_map": str(tmp / "student_map.csv"),
               "assignment_map": str(tmp / "assignment_map.csv"), "grading_schemes": str(tmp / "schemes.yaml"),
               "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
               "simulator": {"seed": 3, "rate_limit_every": 11}}  # fmt: skip
        connection = {"id": CONN, "provider": "unified", "token_env": "TEST_RECON_LMS_TOKEN",
                      "options": {"page_size": 50, "full_scan_every_days": 1,
                                  "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05}},
                      "simulator": {"seed": 22, "n_courses": 30, "n_students": 500, "roster_exposure": "mixed",
                                    "exposure_flip_prob": 0.1, "classes": "rosters", "adds_per_course": 1.0},
                      "grades": {"sis": SIS}, "rosters": {"sis": SIS, "missing_in_lms_warn_days": 2}}  # fmt: skip
        self.config.write_text(yaml.safe_dump({"start_date": START.isoformat(), "warehouse": str(self.db),
                                               "sis": [sis], "connections": [connection]}))  # fmt: skip
        self.sis_world: SisWorld = embedded_sis(load_settings(self.config)).worlds[SIS]
        self.student_rows = self.sis_world.other_email_students()
        self.write_map()

    @property
    def db(self) -> Path:
        return self.tmp / "warehouse.duckdb"

    def write_map(self, text: str | None = None) -> None:
        rows = "".join(f"{CONN},{lms},{sis}\n" for lms, sis in sorted(self.student_rows.items()))
        (self.tmp / "student_map.csv").write_text(text if text is not None else HEADER + rows)

    def run(self, day: date, recon_only: bool = False) -> dg.ExecuteInProcessResult:
        job = build_defs(load_settings(self.config), str(self.config)).resolve_job_def(ROSTER_JOB)
        return job.execute_in_process(partition_key=partition_key(CONN, day), instance=self.instance,
                                      raise_on_error=False, run_config=QUIET,
                                      asset_selection=RECON_ASSETS if recon_only else None)  # fmt: skip

    def rows(self, day: date, schema: str = "lms") -> pd.DataFrame:
        with duckdb.connect(str(self.db), read_only=True) as conn:
            return conn.execute(f"SELECT * FROM {schema}.roster_discrepancies WHERE snapshot_date = ?", [day]).df()

    def found(self, day: date) -> dict[tuple[str, str], tuple[str, date]]:
        return {tuple(r.row_key.split("|", 1)): (r.status, pd.Timestamp(r.first_seen).date())
                for r in self.rows(day).itertuples()}  # fmt: skip


@pytest.fixture(scope="module")
def recon(tmp_path_factory: pytest.TempPathFactory) -> RosterReconPipeline:
    pipeline = RosterReconPipeline(tmp_path_factory.mktemp("roster_recon"))
    for day in DAYS:
        pipeline.results[day] = result = pipeline.run(day)
        assert result.success, failure_message(result)
    return pipeline


def test_every_planted_roster_disagreement_is_found_with_its_first_day_and_nothing_else(recon) -> None:
    seen: Counter = Counter()
    for day in DAYS:
        got, expected = recon.found(day), recon.sis_world.rosters.expected(day, recon.student_rows)
        wrong = {
            k: (got.get(k), expected.get(k)) for k in got.keys() | expected.keys() if got.get(k) != expected.get(k)
        }
        assert not wrong, f"{day}: {len(wrong)} rows differ from the planted truth, e.g. {list(wrong.items())[:5]}"
        seen.update(status for status, _ in expected.values())
    assert set(seen) == STATUSES, seen  # every kind was planted, so every rule was exercised
    last = recon.sis_world.rosters.expected(DAYS[-1], recon.student_rows)
    assert any(first < DAYS[-1] for _, first in last.values()), "some disagreements last several days"


def test_a_roster_the_lms_does_not_expose_is_never_counted_missing(recon) -> None:
    for day in DAYS:
        rows = recon.rows(day)
        hidden = {c.id for c in recon.sis_world.lms.roster_view(day) if not c.exposed}
        assert hidden, "the world hides some rosters each day"
        on_hidden = rows[rows["course_id"].isin(hidden)]
        assert len(on_hidden) and set(on_hidden["status"]) == {"lms_roster_not_exposed"}


def test_rows_say_who_on_each_side_and_why(recon) -> None:
    rows = recon.rows(DAYS[-1])
    assert rows["detail"].str.len().gt(0).all()
    moved = rows[rows["status"] == "section_mismatch"]
    assert len(moved) and (moved["lms_sections"] != moved["sis_sections"]).all()
    assert moved["lms_student_id"].notna().all() and moved["sis_student_id"].notna().all()
    by_file = rows[rows["student_match"] == "mapping_file"]
    assert set(by_file["lms_student_id"]) <= set(recon.student_rows)
    assert (rows["days_open"] == (pd.Timestamp(DAYS[-1]) - rows["first_seen"]).dt.days + 1).all()


def test_the_day_is_published_for_analysts(recon) -> None:
    published = recon.db.with_name(f"{recon.db.stem}_published.duckdb")
    with duckdb.connect(str(published), read_only=True) as conn:
        got = conn.execute("SELECT count(*) FROM lms.roster_discrepancies WHERE snapshot_date = ?", [DAYS[-1]])
        assert got.fetchone()[0] == len(recon.rows(DAYS[-1]))


def test_old_missing_in_lms_warns_and_names_the_rows(recon) -> None:
    (evaluation,) = [e for e in recon.results[DAYS[-1]].get_asset_check_evaluations()
                     if e.check_name == "missing_in_lms_age"]  # fmt: skip
    old = recon.rows(DAYS[-1]).query("status == 'missing_in_lms' and days_open >= 2")
    assert len(old), "the world plants late adds that stay unpushed for days"
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert f"{len(old)} student(s)" in evaluation.description and old["row_key"].iloc[0] in evaluation.description


def test_a_bad_mapping_file_fails_naming_file_line_and_problem_and_writes_nothing(recon) -> None:
    day = DAYS[-1]
    before = recon.rows(day)
    good = (recon.tmp / "student_map.csv").read_text()
    try:
        for text, wanted in (
            (HEADER + f"{CONN},stu-00001,usr-00001\n{CONN},stu-00001,usr-00002\n", ["line 3: duplicate key"]),
            (HEADER + f"{CONN},stu-00001,usr-99999\n", ["line 2:", "'usr-99999'", "does not exist"]),
            ("lms_user_id,sis_user_id\nstu-00001,usr-00001\n", ["line 1: missing column(s) lms_connection_id"]),
        ):
            recon.write_map(text)
            result = recon.run(day, recon_only=True)  # the roster reconciliation's own refusal, not the grades'
            message = failure_message(result)
            assert not result.success and "roster_discrepancies" in message, message
            assert "roster reconciliation refused; nothing was written" in message, message
            assert all(f"student_map.csv, {w}" in message or w in message for w in wanted), message
            assert str(recon.tmp / "student_map.csv") in message
    finally:
        recon.write_map(good)
    after = recon.rows(day)
    pd.testing.assert_frame_equal(before.sort_values("row_key").reset_index(drop=True),
                                  after.sort_values("row_key").reset_index(drop=True))  # fmt: skip
