"""Roster reconciliation without Dagster: the SIS's rostering read over real HTTP with the project's OneRoster reader,
compared with the LMS world's truth, must give exactly the planted disagreements; the student mapping file is read
as the grade reconciliation reads it."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from lms_pipeline.config import SisConfig
from lms_pipeline.grade_inputs import STUDENT_MAP_COLUMNS, mapping_inputs, read_mapping
from lms_pipeline.providers.http import RetrySettings
from lms_pipeline.providers.oneroster.sis_simulator import SisSimulatorApp
from lms_pipeline.providers.oneroster.sis_world import SisSpec, SisWorld
from lms_pipeline.providers.pages import page_rows
from lms_pipeline.roster_recon import SisRosterReader, reconcile_rosters, sis_frames
from lms_pipeline.simulator import World, WorldSpec
from lms_pipeline.simulator.server import Router, serve_in_thread


def test_a_mapping_file_with_a_header_and_no_rows_maps_nobody(tmp_path: Path) -> None:
    path = tmp_path / "student_map.csv"
    path.write_text("# nobody needs a mapping row yet\nlms_connection_id,lms_user_id,sis_user_id\n")
    rows = read_mapping(path, STUDENT_MAP_COLUMNS, ("lms_connection_id", "lms_user_id"), "sis_user_id")
    assert rows.empty and set(STUDENT_MAP_COLUMNS) <= set(rows.columns)


def test_an_assignment_map_with_no_rows_maps_no_assignment_and_is_no_error(tmp_path: Path) -> None:
    # A district reconciling rosters may have no assignment to map by hand: a header-only file must read as no rows.
    (tmp_path / "students.csv").write_text("lms_connection_id,lms_user_id,sis_user_id\nc1,stu-1,usr-1\n")
    (tmp_path / "items.csv").write_text("lms_connection_id,lms_course_id,lms_content_id,sis_line_item_id\n")
    (tmp_path / "schemes.yaml").write_text("schemes: {s: {cutoffs: [[P, 50], [F, 0]]}}\n")
    sis = SisConfig(id="s1", provider="oneroster", client_id_env="X", client_secret_env="Y",
                    student_map=str(tmp_path / "students.csv"), assignment_map=str(tmp_path / "items.csv"),
                    grading_schemes=str(tmp_path / "schemes.yaml"))  # fmt: skip
    sis_data = {"users": pd.DataFrame({"sourced_id": ["usr-1"]}), "lineItems": pd.DataFrame({"sourced_id": ["li-1"]})}
    students = pd.DataFrame({"student_id": ["stu-1"], "email": ["a@x"]})
    grades = pd.DataFrame({"student_id": ["stu-1"], "course_id": ["crs-1"], "content_id": ["k1"]})
    contents = pd.DataFrame({"course_id": ["crs-1"], "content_id": ["k1"]})
    student_rows, item_rows, *_ = mapping_inputs(sis, "c1", sis_data, students, grades, contents)
    assert list(student_rows["sis_user_id"]) == ["usr-1"]
    assert item_rows.empty and "sis_line_item_id" in item_rows.columns


def test_the_sis_roster_read_over_http_gives_exactly_the_planted_disagreements_day_after_day() -> None:
    lms = World(WorldSpec("rr", seed=22, n_courses=25, n_students=400, roster_exposure="mixed", classes="rosters"))
    sis_world = SisWorld(SisSpec("sis1", rate_limit_every=9), lms, lambda _: None)
    mapping = sis_world.other_email_students()
    previous = pd.DataFrame({"row_key": pd.Series(dtype=str), "status": pd.Series(dtype=str),
                             "first_seen": pd.Series(dtype="datetime64[ns]")})  # fmt: skip
    seen: set[str] = set()
    app = SisSimulatorApp([sis_world], {"sis1": ("client", "secret")})
    with serve_in_thread(Router({"sis": app})) as base:
        for day in (date(2026, 9, 1) + timedelta(days=k) for k in range(4)):
            with SisRosterReader("sis1", f"{base}/sis/sis1", "client", "secret", simulated_date=day, page_size=40,
                                 retry=RetrySettings(base_delay=0.01, max_delay=0.02)) as reader:  # fmt: skip
                sis = sis_frames(page_rows(reader.sis_pages()), "sis1", day)
            views = lms.roster_view(day)
            rosters = pd.DataFrame(
                {
                    "course_id": [c.id for c in views],
                    "roster_status": ["exposed" if c.exposed else "not_exposed" for c in views],
                }
            )
            edges = pd.DataFrame(sorted(lms.true_course_edges(day)), columns=["course_id", "student_id"])
            sections = pd.DataFrame(sorted(lms.true_class_edges(day)), columns=["class_id", "course_id", "student_id"])
            students = pd.DataFrame([(s["id"], s["emails"][0]["email"]) for s in lms.students(day)],
                                    columns=["student_id", "email"])  # fmt: skip
            rows = pd.DataFrame(list(mapping.items()), columns=["lms_user_id", "sis_user_id"])
            report = reconcile_rosters(sis, rosters, edges, sections, students, rows, previous, day)
            previous = report[["row_key", "status", "first_seen"]]
            got = {
                tuple(k.split("|", 1)): (s, f.date())
                for k, s, f in zip(report["row_key"], report["status"], report["first_seen"], strict=True)
            }
            assert got == sis_world.rosters.expected(day, mapping), day
            seen |= set(report["status"])
    assert seen == {"missing_in_lms", "missing_in_sis", "section_mismatch", "unmapped_student", "unmapped_course",
                    "lms_roster_not_exposed"}  # fmt: skip
