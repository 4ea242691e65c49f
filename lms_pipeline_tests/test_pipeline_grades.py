"""Grade reconciliation end to end: real Dagster runs, the embedded LMS and OneRoster SIS over HTTP on 127.0.0.1,
a real DuckDB file. Every planted disagreement must be found with its status and nothing else flagged; the opt-in
write-back creates and updates by PUT (OneRoster 1.2 has no POST /results), never overwrites a newer SIS grade,
and a second run writes nothing. test_writeback_*.py cover the write-back against vendor deviations and crashes.
"""

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

START = date(2026, 9, 1)
DAYS = [START + timedelta(days=n) for n in (5, 6, 7)]
CONN, SIS = "grades-lms", "test-sis"
GRADE_ASSETS = [dg.AssetKey(k) for k in ("raw_grade_pages", "lms_grades", "grade_discrepancies", "grade_sync_log")]
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
SCHEMES = {
    "schemes": {
        "canvas_default": {"cutoffs": [["A", 94], ["A-", 90], ["B+", 87], ["B", 84], ["B-", 80], ["C+", 77],
                                       ["C", 74], ["C-", 70], ["D+", 67], ["D", 64], ["D-", 61], ["F", 0]]},
        "floor_whole": {"cutoffs": [["A", 90], ["B", 80], ["C", 70], ["D", 60], ["F", 0]], "precision": 0,
                        "rounding": "floor"},
    },
    "courses": {CONN: {"*": "canvas_default", "crs-00002": "floor_whole", "crs-00004": "floor_whole"}},
}  # fmt: skip


class GradesPipeline:
    """A connections file with one embedded LMS connection reconciled against an embedded SIS, in ``tmp``."""

    def __init__(self, tmp: Path, provider: str = "unified", grade_source: str = "native") -> None:
        self.tmp, self.provider, self.grade_source = tmp, provider, grade_source
        self.instance = dg.DagsterInstance.ephemeral()
        self.config = tmp / "connections.yaml"
        (tmp / "schemes.yaml").write_text(yaml.safe_dump(SCHEMES))
        self.write_config()
        self.sis_world: SisWorld = embedded_sis(load_settings(self.config)).worlds[SIS]
        students = self.sis_world.lms.students(START)  # the school's directory export (Classroom has no SIS id)
        (tmp / "directory.csv").write_text("email,student_id\n" + "".join(
            f"{s['emails'][0]['email']},{s['id']}\n" for s in students))  # fmt: skip
        self.student_rows = self.sis_world.other_email_students()
        self.item_rows = self.sis_world.renamed_line_items(DAYS[0])
        self.write_maps()

    @property
    def db(self) -> Path:
        return self.tmp / "warehouse.duckdb"

    def write_config(self, write_back: dict | None = None) -> None:
        sis = {"id": SIS, "provider": "oneroster", "client_id_env": "TEST_SIS_CLIENT_ID",
               "client_secret_env": "TEST_SIS_CLIENT_SECRET", "student_map": str(self.tmp / "student_map.csv"),
               "assignment_map": str(self.tmp / "assignment_map.csv"),
               "grading_schemes": str(self.tmp / "schemes.yaml"),
               "write_back": write_back or {"enabled": False},
               "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05},
               "simulator": {"seed": 3, "rate_limit_every": 7}}  # fmt: skip
        options = {"page_size": 50, "fetch_classes": False,
                   "retry": {"base_delay_seconds": 0.01, "max_delay_seconds": 0.05}}  # fmt: skip
        if self.provider == "unified":
            options["full_scan_every_days"] = 1
        if self.provider == "google_classroom":
            options.update(identity="email", student_directory=str(self.tmp / "directory.csv"))
        connection = {"id": CONN, "provider": self.provider, "token_env": "TEST_GRADES_LMS_TOKEN", "options": options,
                      "simulator": {"seed": 7, "n_courses": 25, "n_students": 500, "remove_prob": 0.0},
                      "grades": {"sis": SIS, "source": self.grade_source}}  # fmt: skip
        self.config.write_text(yaml.safe_dump({"start_date": START.isoformat(), "warehouse": str(self.db),
                                               "sis": [sis], "connections": [connection]}))  # fmt: skip

    def write_maps(self, students: str | None = None, items: str | None = None) -> None:
        (self.tmp / "student_map.csv").write_text(students or "lms_connection_id,lms_user_id,sis_user_id\n" + "".join(
            f"{CONN},{lms},{sis}\n" for lms, sis in sorted(self.student_rows.items())))  # fmt: skip
        item_rows = "".join(f"{CONN},{c},{k},{li}\n" for (c, k), li in sorted(self.item_rows.items()))
        (self.tmp / "assignment_map.csv").write_text(
            items or "lms_connection_id,lms_course_id,lms_content_id,sis_line_item_id\n" + item_rows
        )

    def run(self, day: date, grades_only: bool = False) -> dg.ExecuteInProcessResult:
        job = build_defs(load_settings(self.config), str(self.config)).resolve_job_def(ROSTER_JOB)
        return job.execute_in_process(
            partition_key=partition_key(CONN, day), instance=self.instance, raise_on_error=False, run_config=QUIET,
            asset_selection=GRADE_ASSETS if grades_only else None,
        )  # fmt: skip

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with duckdb.connect(str(self.db), read_only=True) as conn:
            return conn.execute(sql, params or []).df()

    def statuses(self, day: date) -> dict[tuple, str]:
        rows = self.query("SELECT * FROM lms.grade_discrepancies WHERE snapshot_date = ?", [day])
        return {
            (("lms", r.course_id, r.lms_student_id, r.content_id) if r.row_key.startswith("lms|")
             else ("sis", r.sis_result_id)): r.status
            for r in rows.itertuples()
        }  # fmt: skip

    def expected(self, day: date) -> dict[tuple, str]:
        return self.sis_world.expected_statuses(day, self.student_rows, self.item_rows)


@pytest.fixture(scope="module")
def grades(tmp_path_factory: pytest.TempPathFactory) -> GradesPipeline:
    pipeline = GradesPipeline(tmp_path_factory.mktemp("grades"))
    for day in DAYS:
        result = pipeline.run(day)
        assert result.success, failure_message(result)
    return pipeline


def test_every_planted_disagreement_is_found_and_nothing_else(grades: GradesPipeline) -> None:
    seen: Counter = Counter()
    for day in DAYS:
        got, expected = grades.statuses(day), grades.expected(day)
        wrong = {
            k: (got.get(k), expected.get(k)) for k in got.keys() | expected.keys() if got.get(k) != expected.get(k)
        }
        assert not wrong, f"{day}: {len(wrong)} rows differ from the planted truth, e.g. {list(wrong.items())[:5]}"
        seen.update(expected.values())
    # Every status occurs, so each rule above was exercised, and most rows agree (the SIS is mostly in sync).
    assert set(seen) == {"match", "score_mismatch", "missing_in_sis", "missing_in_lms", "unmapped_student",
                         "unmapped_assignment", "unparseable"}, seen  # fmt: skip
    assert seen["match"] > sum(seen.values()) / 2


def test_matching_uses_mapping_rows_and_reports_why_the_rest_is_unmapped(grades: GradesPipeline) -> None:
    rows = grades.query("SELECT * FROM lms.grade_discrepancies WHERE snapshot_date = ?", [DAYS[-1]])
    by_file = rows[rows["student_match"] == "mapping_file"]
    assert len(by_file) and set(by_file["lms_student_id"]) <= set(grades.student_rows)
    assert (rows.loc[rows["item_match"] == "mapping_file", "sis_line_item_id"].isin(grades.item_rows.values())).all()
    unmapped = rows[rows["status"].str.startswith("unmapped")]
    assert unmapped["detail"].notna().all()
    details = " ".join(unmapped["detail"])
    assert "ambiguous" in details and "no LMS student record" in details and "classCode" in details


def test_tolerance_and_letters_are_applied_with_each_course_scheme(grades: GradesPipeline) -> None:
    rows = grades.query("SELECT * FROM lms.grade_discrepancies WHERE snapshot_date = ? AND status = 'match'",
                        [DAYS[-1]])  # fmt: skip
    points = rows[~rows["letter_scale"].astype(bool) & rows["lms_percent"].notna()]
    # The SIS floors x.5 percents to whole points: inside the 0.5 tolerance, so they match.
    assert ((points["lms_percent"] - points["sis_percent"]).abs() == 0.5).any()
    letters = rows[rows["letter_scale"].astype(bool) & rows["lms_percent"].notna()]
    assert len(letters) and set(letters["scheme"]) == {"canvas_default", "floor_whole"}
    assert (letters["lms_letter"] == letters["sis_text_score"]).all()


def test_metadata_counts_statuses_and_match_rate(grades: GradesPipeline) -> None:
    day = DAYS[-1]
    event = grades.instance.get_latest_materialization_event(dg.AssetKey("grade_discrepancies"))
    assert event.asset_materialization.partition == partition_key(CONN, day)
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    counts = Counter(grades.statuses(day).values())
    assert {s: metadata[f"status_{s}"] for s in counts} == dict(counts)
    assert metadata["match_rate"] == pytest.approx(counts["match"] / (counts["match"] + counts["score_mismatch"]), 1e-3)
    assert "match rate" in metadata["lowest_match_rate_courses"]


@pytest.fixture(scope="module")
def synced(grades: GradesPipeline) -> dict:
    """Dry run, then a real write-back, then a second run, on the last day (on a copy of the module's warehouse)."""
    day, app = DAYS[-1], embedded_sis(load_settings(grades.config))
    before = grades.statuses(day)
    grades.write_config({"enabled": True, "dry_run": True})

    def writes() -> int:
        return sum(e["method"] in ("PUT", "POST") and "/results" in e["path"] for e in app.request_log)

    writes_before = writes()
    dry = grades.run(day, grades_only=True)
    dry_writes = writes() - writes_before
    grades.write_config({"enabled": True})
    first = grades.run(day, grades_only=True)
    after_first = grades.statuses(day)
    second = grades.run(day, grades_only=True)
    grades.write_config()
    log = grades.query("SELECT * FROM lms.grade_sync_log ORDER BY attempted_at")  # intents and outcomes
    return {"day": day, "before": before, "after_first": after_first, "after": grades.statuses(day), "log": log,
            "runs": [dry, first, second], "dry_writes": dry_writes}  # fmt: skip


def test_dry_run_logs_would_write_and_sends_nothing(synced: dict) -> None:
    assert all(r.success for r in synced["runs"]), [failure_message(r) for r in synced["runs"]]
    dry = synced["log"][synced["log"]["dry_run"]]
    assert set(dry["phase"]) == {"outcome"}  # nothing to send: no intent
    assert synced["dry_writes"] == 0
    assert len(dry) and set(dry["outcome"]) <= {"would_write", "skipped_sis_newer", "already_current"}
    assert dry["http_status"].isna().all()
    wanted = sum(s in ("missing_in_sis", "score_mismatch") for s in synced["before"].values())
    assert 0 < (dry["outcome"] == "would_write").sum() < wanted  # some are newer in the SIS and are kept


def test_write_back_creates_and_updates_by_put_and_never_overwrites_newer(synced: dict, grades: GradesPipeline) -> None:
    runs = synced["log"].groupby("run_id", sort=False)
    _, journal = list(runs)[1]
    real = journal[journal["phase"] == "outcome"]
    outcomes = Counter(zip(real["method"].fillna("-"), real["outcome"], strict=True))
    assert outcomes[("PUT", "created")] > 0 and outcomes[("PUT", "updated")] > 0
    assert outcomes[("-", "skipped_sis_newer")] > 0
    assert not real["outcome"].isin(["failed", "conflict", "identity_unproven"]).any()
    # Every write was journaled as an intent before it was sent, and its outcome after, under one operation id.
    intents = journal[journal["phase"] == "intent"]
    assert sorted(intents["operation_id"]) == sorted(real.loc[real["method"] == "PUT", "operation_id"])
    assert set(real.loc[real["method"] == "PUT", "http_status"]) == {201}  # the spec's answer to PUT, no body
    # A result the registrar changed after the LMS grade keeps its value.
    results = {r["sourcedId"]: r for r in grades.sis_world.results(synced["day"])}
    kept = real[real["outcome"] == "skipped_sis_newer"]
    for row in kept.itertuples():
        current = results[row.sis_result_id]
        assert (current.get("score"), current.get("textScore")) == (
            None if pd.isna(row.previous_score) else row.previous_score,
            None if pd.isna(row.previous_text_score) else row.previous_text_score,
        )
        assert pd.Timestamp(current["dateLastModified"]) == row.previous_modified_at


def test_after_the_sync_written_grades_match_and_a_second_run_writes_nothing(
    synced: dict, grades: GradesPipeline
) -> None:
    day, log = synced["day"], synced["log"]
    log = log[log["phase"] == "outcome"]
    real_run = log.groupby("run_id", sort=False).ngroup() == 1
    written = set(log.loc[real_run & log["outcome"].isin(["created", "updated"]), "row_key"])
    after = grades.query("SELECT row_key, status FROM lms.grade_discrepancies WHERE snapshot_date = ?", [day])
    assert written and set(after.loc[after["row_key"].isin(written), "status"]) == {"match"}
    # Only the kept rows (newer in the SIS) still differ.
    kept = set(log.loc[real_run & log["outcome"].eq("skipped_sis_newer"), "row_key"])
    assert set(after.loc[after["status"] == "score_mismatch", "row_key"]) == kept
    assert synced["after"] == grades.expected(day)  # the SIS world's truth now includes the written results
    third = log[log.groupby("run_id", sort=False).ngroup() == 2]
    assert third["method"].isna().all() and set(third["outcome"]) <= {"skipped_sis_newer"}


def test_a_put_keeps_the_results_other_fields(synced: dict, grades: GradesPipeline) -> None:
    log = synced["log"]
    puts = log[(log["method"] == "PUT") & (log["outcome"] == "updated")]
    assert len(puts)
    results = {r["sourcedId"]: r for r in grades.sis_world.results(synced["day"])}
    late = [results[rid] for rid in puts["sis_result_id"] if results[rid].get("late") == "true"]
    assert late, "the world plants late results among those updated"
    assert all(r["comment"] == "" and r["missing"] == "false" for r in late)


@pytest.mark.parametrize(
    ("which", "content", "message"),
    [
        ("students", "lms_connection_id,lms_user_id,sis_user_id\n{c},stu-00001,usr-00001\n{c},stu-00001,usr-00002\n",
         "student_map.csv, line 3: duplicate key"),
        ("students", "lms_connection_id,lms_user_id,sis_user_id\n{c},stu-00001,usr-99999\n",
         "student_map.csv, line 2: SIS test-sis user 'usr-99999' (sis_user_id) does not exist"),
        ("items", "lms_connection_id,lms_course_id,sis_line_item_id\n{c},crs-00001,li-x\n",
         "assignment_map.csv, line 1: missing column(s) lms_content_id"),
    ],
)  # fmt: skip
def test_a_bad_mapping_file_fails_naming_file_line_and_problem_and_changes_nothing(
    grades: GradesPipeline, tmp_path: Path, which: str, content: str, message: str
) -> None:
    day = DAYS[0]
    before = grades.query("SELECT * FROM lms.grade_discrepancies WHERE snapshot_date = ? ORDER BY row_key", [day])
    saved = {name: (grades.tmp / name).read_text() for name in ("student_map.csv", "assignment_map.csv")}
    try:
        grades.write_maps(**{which: content.format(c=CONN)})
        result = grades.run(day, grades_only=True)
    finally:
        for name, text in saved.items():
            (grades.tmp / name).write_text(text)
    assert not result.success
    assert message in failure_message(result)
    after = grades.query("SELECT * FROM lms.grade_discrepancies WHERE snapshot_date = ? ORDER BY row_key", [day])
    pd.testing.assert_frame_equal(before, after)
