"""Pages -> rosters/edges: the not-exposed vs empty rule, field union, dedupe, malformed items."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lms_pipeline.transforms.rosters import MalformedPayloadError, normalize_pages


def pages(*payloads: list[dict], endpoint: str = "course") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "connection_id": "c1",
            "snapshot_date": pd.Timestamp("2026-09-01"),
            "endpoint": endpoint,
            "page_index": list(range(len(payloads))),
            "page_offset": [i * 100 for i in range(len(payloads))],
            "payload": [json.dumps(p) for p in payloads],
        }
    )


def test_absent_or_null_roster_is_not_exposed_and_only_an_empty_list_is_empty() -> None:
    out = normalize_pages(pages([
        {"id": "absent"},
        {"id": "nulls", "student_ids": None, "students": None},
        {"id": "empty", "student_ids": []},
        {"id": "empty-refs", "students": []},
        {"id": "full", "student_ids": ["s1"]},
    ]))  # fmt: skip
    status = dict(zip(out.course_rosters["course_id"], out.course_rosters["roster_status"], strict=True))
    assert status == {"absent": "not_exposed", "nulls": "not_exposed", "empty": "empty", "empty-refs": "empty",
                      "full": "exposed"}  # fmt: skip
    counts = out.course_rosters.set_index("course_id")["student_count"]
    assert pd.isna(counts["absent"]) and counts["empty"] == 0 and counts["full"] == 1


def test_roster_is_the_union_of_student_ids_and_students() -> None:
    out = normalize_pages(pages([
        {"id": "a", "student_ids": ["s1", "s2"], "students": [{"id": "s2", "name": "B"}, {"id": "s3", "name": "C"}]},
        {"id": "b", "students": [{"id": "s9", "name": "Z"}]},
    ]))  # fmt: skip
    edges = set(map(tuple, out.course_student_edges[["course_id", "student_id"]].to_numpy()))
    assert edges == {("a", "s1"), ("a", "s2"), ("a", "s3"), ("b", "s9")}
    sources = dict(zip(out.course_rosters["course_id"], out.course_rosters["roster_source"], strict=True))
    assert sources == {"a": "both", "b": "students"}


def test_a_course_seen_twice_keeps_its_newest_version() -> None:
    out = normalize_pages(pages(
        [{"id": "a", "updated_at": "2026-09-01T10:00:00Z", "student_ids": ["old"]}],
        [{"id": "a", "updated_at": "2026-09-01T11:00:00Z", "student_ids": ["new"]}],
    ))  # fmt: skip
    assert out.course_student_edges["student_id"].tolist() == ["new"]
    assert len(out.course_rosters) == 1


def test_class_rosters_become_class_edges_with_their_course() -> None:
    out = normalize_pages(pages([
        {"id": "k1", "course_id": "a", "student_ids": ["s1"]},
        {"id": "k2", "course_id": "a"},
    ], endpoint="class"))  # fmt: skip
    assert out.class_student_edges[["class_id", "course_id", "student_id"]].values.tolist() == [["k1", "a", "s1"]]
    assert out.course_rosters.empty


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"id": "a", "student_ids": "s1"}, "student_ids is VARCHAR, not a list"),
        ({"id": "a", "student_ids": [1, 2]}, "student_ids holds a non-string"),
        ({"id": "a", "students": [{"name": "x"}]}, "students holds an entry without a string id"),
        ({"name": "no id"}, "id is missing or not a string"),
        ({"id": "a", "student_ids": ["s1", None]}, "student_ids holds a non-string"),
    ],
)
def test_malformed_items_raise_naming_connection_endpoint_and_offset(item: dict, problem: str) -> None:
    with pytest.raises(MalformedPayloadError) as err:
        normalize_pages(pages([{"id": "ok", "student_ids": []}], [item]))
    assert "connection 'c1': GET /lms/c1/course page at offset 100" in str(err.value)
    assert problem in str(err.value)


def test_the_same_id_twice_on_one_page_is_an_error_not_a_silent_dedupe() -> None:
    with pytest.raises(MalformedPayloadError, match="item 'a': the same id appears 2 times on one page"):
        normalize_pages(pages([{"id": "a", "student_ids": ["s1"]}, {"id": "a", "student_ids": []}]))
