"""Pages -> contents / progress / summary, called directly: the labelling rule, dedupe, malformed items, schema."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lms_pipeline.providers.base import PayloadError
from lms_pipeline.schemas import SchemaViolation, validate
from lms_pipeline.transforms.progress import normalize_progress

DAY = pd.Timestamp("2026-09-02")


def pages(activities: list[dict], contents: list[dict] | None = None, course: str = "c1") -> pd.DataFrame:
    content = contents or [{"id": "k1", "course_ids": [course], "is_active": True}]
    rows = [("content", content), ("activity", activities)]
    return pd.DataFrame({
        "connection_id": "conn", "snapshot_date": DAY, "endpoint": [e for e, _ in rows], "course_id": course,
        "page_index": 0, "page_offset": 0, "payload": [json.dumps(items) for _, items in rows],
    })  # fmt: skip


def roster(status: str = "exposed", students: tuple[str, ...] = ("s1",)) -> tuple[pd.DataFrame, pd.DataFrame]:
    rosters = pd.DataFrame({"connection_id": ["conn"], "snapshot_date": [DAY], "course_id": ["c1"],
                            "roster_status": [status], "student_count": [len(students)]})  # fmt: skip
    return rosters, pd.DataFrame({"course_id": "c1", "student_id": list(students)}, dtype=str)


def act(student: str, progress: float = 50, **kw: object) -> dict:
    return {"id": f"a-{student}", "course_id": "c1", "student_id": student, "content_id": "k1",
            "progress_percentage": progress, "is_completed": progress == 100, "updated_at": "2026-09-02T10:00:00Z",
            **kw}  # fmt: skip


def test_activity_is_labelled_against_the_roster_and_never_enrols_anyone() -> None:
    frames = normalize_progress(pages([act("s1"), act("s2"), act("guest")]), *roster())
    states = dict(zip(frames.student_progress["student_id"], frames.student_progress["enrollment_state"], strict=True))
    assert states == {"s1": "enrolled", "s2": "not_enrolled", "guest": "not_enrolled"}
    (summary,) = frames.course_progress_summary.to_dict("records")
    assert summary["enrolled_students"] == 1 and summary["learners_with_activity"] == 3
    assert summary["enrolled_with_activity"] == 1 and summary["activities_not_on_roster"] == 2
    assert summary["average_progress"] == 50, "the average counts enrolled learners only"


def test_an_unexposed_roster_labels_every_activity_roster_not_exposed() -> None:
    frames = normalize_progress(pages([act("s1"), act("s2")]), *roster("not_exposed", ()))
    assert set(frames.student_progress["enrollment_state"]) == {"roster_not_exposed"}
    (summary,) = frames.course_progress_summary.to_dict("records")
    assert pd.isna(summary["enrolled_students"]) and pd.isna(summary["completed_share"])
    assert summary["activities_not_on_roster"] == 0


def test_a_record_seen_twice_keeps_its_newest_version() -> None:
    old, new = act("s1", 40), act("s1", 80, updated_at="2026-09-02T11:00:00Z")
    frames = normalize_progress(pages([new, old]), *roster())
    assert frames.student_progress["progress_percentage"].tolist() == [80]


@pytest.mark.parametrize(
    ("item", "problem"),
    [({"student_id": None}, "student_id is missing"), ({"content_id": None}, "content_id is missing"),
     ({"course_id": "c9"}, "course_id c9 differs from the course asked for")],
)  # fmt: skip
def test_malformed_activities_raise_naming_connection_course_and_offset(item: dict, problem: str) -> None:
    where = r"connection 'conn': GET /lms/conn/activity\?course_id=c1 page at offset 0"
    with pytest.raises(PayloadError, match=rf"{where}.*{problem}"):
        normalize_progress(pages([{**act("s1"), **item}]), *roster())


def test_schema_refuses_progress_above_100_and_completion_before_start() -> None:
    bad = normalize_progress(pages([act("s1", 120)]), *roster()).student_progress
    with pytest.raises(SchemaViolation, match="column 'progress_percentage'"):
        validate("student_progress", bad)
    backwards = act("s1", 100, started_at="2026-09-02T10:00:00Z", completed_at="2026-09-01T10:00:00Z")
    frame = normalize_progress(pages([backwards]), *roster()).student_progress
    with pytest.raises(SchemaViolation, match="completed_after_started"):
        validate("student_progress", frame)
