"""Privacy: one student's personal data is erased everywhere the pipeline keeps it (live tables, staged fetches, raw
payloads, the analysts' copy, the exports) and nothing else changes; raw pages past the retention are dropped while
derived history stays and later days still build.

The erase is checked independently of the code that does it: a byte scan of every table, every published Parquet
file (old versions included) and every export for the student's ids and emails, and a JSON diff of every page showing
that only list entries naming the student went away.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from lms_pipeline.config import load_settings
from lms_pipeline.privacy import drop_old_raw_pages, erase_student, main
from lms_pipeline.warehouse import Warehouse, published_path
from lms_pipeline_tests.conftest import START, Pipeline, failure_message
from lms_pipeline_tests.test_pipeline_grades import CONN, GradesPipeline
from lms_pipeline_tests.test_pipeline_grades import DAYS as GRADE_DAYS

PERSON_TABLES = {"course_student_edges": ("student_id",), "class_student_edges": ("student_id",),
                 "enrollment_changes": ("student_id",), "student_progress": ("student_id",),
                 "lms_grades": ("student_id",), "grade_discrepancies": ("lms_student_id", "sis_student_id"),
                 "grade_sync_log": ("lms_student_id", "sis_student_id")}  # fmt: skip
PAGES = ("raw_course_pages", "raw_progress_pages", "raw_grade_pages")


def every_table(db: Path) -> dict[str, list[dict]]:
    """Every row of every live table (schemas lms and lms_staging), as dicts in a stable order."""
    with duckdb.connect(str(db), read_only=True) as conn:
        names = conn.execute("SELECT table_schema || '.' || table_name FROM information_schema.tables "
                             "WHERE table_schema IN ('lms', 'lms_staging') ORDER BY 1").fetchall()  # fmt: skip
        return {name: conn.execute(f"SELECT * FROM {name} ORDER BY ALL").df().astype(str).to_dict("records")
                for (name,) in names}  # fmt: skip


def mentions(text: str, tokens: set[str]) -> bool:
    return any(re.search(r"(^|[^A-Za-z0-9])" + re.escape(t) + r"([^A-Za-z0-9]|$)", text) for t in tokens)


def only_entries_naming(before: object, after: object, tokens: set[str], numbers: set[str]) -> int:
    """Assert ``after`` is ``before`` minus list entries that name the student; return how many went."""
    if isinstance(before, list):
        assert isinstance(after, list)
        gone, rest = 0, iter(after)
        pending = next(rest, None)
        for item in before:
            if pending is not None and item == pending:
                pending = next(rest, None)
                continue
            if same_record(item, pending):
                try:
                    gone += only_entries_naming(item, pending, tokens, numbers)
                    pending = next(rest, None)
                    continue
                except AssertionError:
                    pass  # another record with the same id (the removed one): judged below
            text = json.dumps(item)
            by_number = any(re.search(rf'"(user_id|userId)": "?{n}"?[,}}]', text) for n in numbers)
            assert mentions(text, tokens) or by_number, (
                f"a list entry that does not name the student was removed: {text[:300]}"
            )
            gone += 1
        assert pending is None, "an entry was added or reordered"
        return gone
    if isinstance(before, dict):
        assert isinstance(after, dict) and set(before) == set(after)
        return sum(only_entries_naming(before[k], after[k], tokens, numbers) for k in before)
    assert before == after
    return 0


def same_record(item: object, other: object) -> bool:
    """Two versions of one record (its id unchanged, its inner lists possibly scrubbed)."""
    if not (isinstance(item, dict) and isinstance(other, dict)) or set(item) != set(other):
        return False
    key = next((k for k in ("id", "sourcedId", "courseId") if item.get(k) is not None), None)
    return key is not None and item[key] == other[key]


def linked_ids(db: Path, tokens: set[str]) -> set[str]:
    """The student's ids in the other systems' pages: an LTI member's user_id (by lis_person_sourcedid), a Classroom
    user's id (by profile email), a Canvas user number (by sis_user_id)."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            profile = value.get("profile") if isinstance(value.get("profile"), dict) else {}
            if {str(value.get("lis_person_sourcedid")), str(value.get("sis_user_id")),
                    str(profile.get("emailAddress"))} & tokens:  # fmt: skip
                found.update(str(value[k]) for k in ("user_id", "userId") if value.get(k) is not None)
            for item in value.values():
                walk(item)

    with duckdb.connect(str(db), read_only=True) as conn:
        for (payload,) in conn.execute("SELECT payload::VARCHAR FROM lms.raw_course_pages UNION ALL "
                                       "SELECT payload::VARCHAR FROM lms.raw_grade_pages").fetchall():  # fmt: skip
            walk(json.loads(payload))
    return found


def published_files(db: Path) -> list[Path]:
    root = db.with_name(f"{db.stem}_published")
    return sorted(root.rglob("*.parquet"))


def student_of(grades: GradesPipeline) -> tuple[str, set[str]]:
    """A student on a roster, with grades and a matched SIS record: every kind of trace exists for them."""
    day = GRADE_DAYS[1]
    row = grades.query(
        "SELECT d.lms_student_id, d.sis_student_id FROM lms.grade_discrepancies d JOIN lms.course_student_edges e "
        "ON e.connection_id = d.connection_id AND e.snapshot_date = d.snapshot_date "
        "AND e.student_id = d.lms_student_id WHERE d.snapshot_date = ? AND d.status = 'match' ORDER BY 1 LIMIT 1",
        [day]).iloc[0]  # fmt: skip
    student = grades.sis_world.lms.students(day)
    emails = {e["email"] for s in student if s["id"] == row["lms_student_id"] for e in s.get("emails", [])}
    return str(row["lms_student_id"]), {str(row["lms_student_id"]), str(row["sis_student_id"]), *emails}


@pytest.mark.parametrize(("provider", "source"), [("unified", "native"), ("canvas", "native"),
                                                  ("google_classroom", "native"), ("unified", "lti_ags")])  # fmt: skip
def test_an_erased_student_leaves_no_trace_and_every_other_row_is_unchanged(tmp_path, provider, source) -> None:  # noqa: ANN001
    grades = GradesPipeline(tmp_path, provider=provider, grade_source=source)
    for day in GRADE_DAYS[:2]:
        result = grades.run(day)
        assert result.success, failure_message(result)
    with duckdb.connect(str(grades.db)) as conn:  # a fetch held in staging, as a refused normalization leaves it
        conn.execute("INSERT INTO lms_staging.raw_course_pages SELECT * FROM lms.raw_course_pages")
    student, tokens = student_of(grades)
    linked = linked_ids(grades.db, tokens)
    numbers = {i for i in linked if i.isdigit()}  # Canvas user numbers: found structurally, not as text
    tokens |= linked - numbers
    if provider in ("canvas", "google_classroom") or source == "lti_ags":
        assert linked, "the dialect's pages name the student by its own user id too"
    before = every_table(grades.db)
    settings = load_settings(grades.config)

    report = erase_student(Warehouse(grades.db), settings, student)

    assert report.remaining == {}, report.remaining
    assert report.rows_deleted and report.pages_rewritten and report.published_days_rewritten
    after = every_table(grades.db)
    removed_entries = 0
    for name, rows in before.items():
        table = name.split(".")[1]
        if table in PERSON_TABLES:
            kept = [r for r in rows if not any(r[c] in tokens for c in PERSON_TABLES[table])]
            assert after[name] == kept, f"{name}: only the student's rows may go"
        elif table in PAGES:
            assert len(after[name]) == len(rows), f"{name}: pages are rewritten, never dropped"
            for old, new in zip(rows, after[name], strict=True):
                removed_entries += only_entries_naming(json.loads(old["payload"]), json.loads(new["payload"]),
                                                       tokens, numbers)  # fmt: skip
                assert {k: v for k, v in old.items() if k not in ("payload", "item_count")} == \
                    {k: v for k, v in new.items() if k not in ("payload", "item_count")}  # fmt: skip
        else:
            assert after[name] == rows, f"{name} holds no student's data and must not change"
    assert removed_entries > 0
    for name, rows in after.items():
        assert not any(mentions(json.dumps(r), tokens) for r in rows), f"{name} still names the student"
    for numbered in numbers:
        assert not grades.query("SELECT 1 FROM lms.raw_course_pages p, json_each(p.payload) i WHERE "
                                "json_extract(i.value, '$.user_id')::VARCHAR = ?", [numbered]).size  # fmt: skip
    with duckdb.connect() as conn:
        for path in published_files(grades.db):
            text = conn.execute(f"SELECT * FROM read_parquet('{path}')").df().astype(str).to_json()
            assert not mentions(text, tokens), f"published {path.parent.name}/{path.name} still names the student"
    for path in (tmp_path / "exports").rglob("*"):
        if path.suffix == ".csv":
            assert not mentions(path.read_text(), tokens), f"export {path} still names the student"
    log = (tmp_path / "privacy_log.jsonl").read_text()
    assert not mentions(log, tokens) and '"action": "erase"' in log, "the log says what, never who"


def test_the_erase_command_reports_counts_and_never_prints_the_student(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    grades = GradesPipeline(tmp_path)
    assert grades.run(GRADE_DAYS[0]).success
    student, tokens = student_of_day(grades)
    monkeypatch.setenv("LMS_PIPELINE_CONFIG", str(grades.config))
    assert main(["erase", "--student-id", student, "--connection", CONN]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["rows_deleted"]["lms.course_student_edges"] >= 1 and report["remaining"] == {}
    assert not mentions(out, tokens)
    with duckdb.connect(str(published_path(grades.db)), read_only=True) as analyst:
        assert analyst.execute("SELECT count(*) FROM lms.current_roster WHERE student_id = ?", [student]).fetchone() \
            == (0,)  # fmt: skip


def student_of_day(grades: GradesPipeline) -> tuple[str, set[str]]:
    row = grades.query("SELECT student_id FROM lms.course_student_edges ORDER BY 1 LIMIT 1").iloc[0]
    return str(row["student_id"]), {str(row["student_id"])}


def test_raw_pages_past_the_retention_go_and_derived_history_stays_and_later_days_build(pipeline: Pipeline) -> None:
    pipeline.run_days(3, ["conn-all"])
    first, third = START, START + timedelta(days=2)
    derived = ("course_rosters", "course_student_edges", "enrollment_changes", "enrollment_change_sets",
               "student_progress", "sync_log")  # fmt: skip
    before = {name: pipeline.query(f"SELECT * FROM lms.{name} ORDER BY ALL").to_json() for name in derived}
    settings = load_settings(pipeline.write_config())
    report = drop_old_raw_pages(Warehouse(pipeline.db), settings.model_copy(
        update={"retention": settings.retention.model_copy(update={"raw_pages_days": 1})}), third)  # fmt: skip
    assert report.cutoff == str(START + timedelta(days=1))
    assert report.rows_deleted["lms.raw_course_pages"] > 0 and report.published_days_rewritten == 1
    for name in ("raw_course_pages", "raw_progress_pages"):
        days = {d for (d,) in pipeline.rows(f"SELECT DISTINCT snapshot_date FROM lms.{name}")}
        assert first not in days and START + timedelta(days=1) in days, f"{name}: only pages before the cutoff go"
    assert {name: pipeline.query(f"SELECT * FROM lms.{name} ORDER BY ALL").to_json() for name in derived} == before
    with duckdb.connect(str(published_path(pipeline.db)), read_only=True) as analyst:
        assert analyst.execute("SELECT count(*) FROM lms.raw_course_pages WHERE snapshot_date = ?", [first]
                               ).fetchone() == (0,)  # fmt: skip
        assert analyst.execute("SELECT count(*) FROM lms.course_student_edges WHERE snapshot_date = ?", [first]
                               ).fetchone()[0] > 0, "the analysts keep the derived history"  # fmt: skip
    root = pipeline.db.with_name(f"{pipeline.db.stem}_published") / "versions" / "conn-all" / first.isoformat()
    assert not any(p.name.startswith("raw_") for p in root.rglob("*.parquet")), "no older version keeps the pages"

    nxt = pipeline.run("conn-all", START + timedelta(days=3))
    assert nxt.success, failure_message(nxt)
    assert pipeline.rows("SELECT course_id, student_id FROM lms.course_student_edges WHERE snapshot_date = ?",
                         [START + timedelta(days=3)]) == pipeline.worlds["conn-all"].true_course_edges(
                             START + timedelta(days=3))  # fmt: skip
    rebuild = pipeline.defs().resolve_job_def("daily_roster_job").execute_in_process(
        partition_key=f"conn-all|{first}", instance=pipeline.instance, raise_on_error=False,
        asset_selection=[dg.AssetKey(n) for n in ("course_rosters", "course_student_edges",
                                                  "class_student_edges")])  # fmt: skip
    assert not rebuild.success and "no raw_course_pages stored" in failure_message(rebuild)


def test_the_daily_retention_job_runs_and_its_schedule_is_on_by_default(pipeline: Pipeline) -> None:
    pipeline.run_days(1, ["conn-all"])
    defs = pipeline.defs()
    assert (
        defs.resolve_schedule_def("raw_page_retention_job_schedule").default_status == dg.DefaultScheduleStatus.RUNNING
    )
    result = defs.resolve_job_def("raw_page_retention_job").execute_in_process(instance=pipeline.instance)
    assert result.success
    assert pipeline.rows("SELECT count(*) FROM lms.raw_course_pages") != {(0,)}, "400 days keep yesterday's pages"
