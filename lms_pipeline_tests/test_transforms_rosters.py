"""Stored pages -> rosters/edges inside the warehouse: the not-exposed vs empty rule, field union, dedupe, malformed
items, incremental carry-forward, batches, and the transaction that keeps a refused day's previous rows."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from lms_pipeline.providers.base import ROSTER_TABLES, RosterFrames
from lms_pipeline.providers.unified import rosters
from lms_pipeline.providers.unified.rosters import UnifiedPayloadError
from lms_pipeline.transforms.snapshot import snapshot_metadata
from lms_pipeline.warehouse import Warehouse, table

D1, D2 = date(2026, 9, 1), date(2026, 9, 2)


def page_rows(*payloads: list[dict] | str, endpoint: str = "course", day: date = D1) -> pd.DataFrame:
    """raw_course_pages rows; a payload is a list of items (stored compact, as before bodies were kept) or a body."""
    texts = [p if isinstance(p, str) else json.dumps(p, separators=(",", ":")) for p in payloads]
    return pd.DataFrame(
        {
            "connection_id": "c1",
            "snapshot_date": pd.Timestamp(day),
            "provider": "unified",
            "endpoint": endpoint,
            "page_index": list(range(len(texts))),
            "page_offset": [i * 100 for i in range(len(texts))],
            "request_params": "{}",
            "fetched_at": pd.Timestamp("2026-09-01T06:00:00Z"),
            "status_code": 200,
            "attempts": 1,
            "item_count": [len(json.loads(t)) for t in texts],
            "payload": texts,
        }
    )


def normalize(store: Warehouse, pages: pd.DataFrame, day: date = D1, base: date | None = None,
              batch_bytes: int = rosters.BATCH_BYTES) -> RosterFrames:  # fmt: skip
    """Store the pages as the day's raw_course_pages and build the day's snapshot from them, as the asset does."""
    store.replace_partition({"raw_course_pages": pages}, "c1", day)
    with store.rewrite("c1", day) as conn:
        rosters.build_snapshot(conn, table("raw_course_pages"), "c1", day, base, batch_bytes)
    return snapshot(store, day)


def snapshot(store: Warehouse, day: date) -> RosterFrames:
    return RosterFrames(*(
        store.query(f"SELECT * FROM {table(name)} WHERE snapshot_date = ? ORDER BY ALL", [day])
        for name in ROSTER_TABLES
    ))  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Warehouse:
    return Warehouse(tmp_path / "w.duckdb")


def test_absent_or_null_roster_is_not_exposed_and_only_an_empty_list_is_empty(store: Warehouse) -> None:
    out = normalize(store, page_rows([
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


def test_roster_is_the_union_of_student_ids_and_students(store: Warehouse) -> None:
    out = normalize(store, page_rows([
        {"id": "a", "student_ids": ["s1", "s2"], "students": [{"id": "s2", "name": "B"}, {"id": "s3", "name": "C"}]},
        {"id": "b", "students": [{"id": "s9", "name": "Z"}]},
    ]))  # fmt: skip
    edges = set(map(tuple, out.course_student_edges[["course_id", "student_id"]].to_numpy()))
    assert edges == {("a", "s1"), ("a", "s2"), ("a", "s3"), ("b", "s9")}
    sources = dict(zip(out.course_rosters["course_id"], out.course_rosters["roster_source"], strict=True))
    assert sources == {"a": "both", "b": "students"}


def test_a_course_seen_twice_keeps_its_newest_version(store: Warehouse) -> None:
    out = normalize(store, page_rows(
        [{"id": "a", "updated_at": "2026-09-01T10:00:00Z", "student_ids": ["old"]}],
        [{"id": "a", "updated_at": "2026-09-01T11:00:00Z", "student_ids": ["new"]}],
    ))  # fmt: skip
    assert out.course_student_edges["student_id"].tolist() == ["new"]
    assert len(out.course_rosters) == 1


def test_class_rosters_become_class_edges_with_their_course(store: Warehouse) -> None:
    out = normalize(store, page_rows([
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
        ({"id": 7, "student_ids": []}, "id is missing or not a string"),
        ({"id": "a", "student_ids": ["s1", None]}, "student_ids holds a non-string"),
        ({"id": "a", "students": "s1"}, "students is VARCHAR, not a list"),
    ],
)
def test_malformed_items_raise_naming_connection_endpoint_and_offset(
    store: Warehouse, item: dict, problem: str
) -> None:
    with pytest.raises(UnifiedPayloadError) as err:
        normalize(store, page_rows([{"id": "ok", "student_ids": []}], [item]))
    assert "connection 'c1': GET /lms/c1/course page at offset 100" in str(err.value)
    assert problem in str(err.value)


def test_the_same_id_twice_on_one_page_is_an_error_not_a_silent_dedupe(store: Warehouse) -> None:
    with pytest.raises(UnifiedPayloadError, match="item 'a': the same id appears 2 times on one page"):
        normalize(store, page_rows([{"id": "a", "student_ids": ["s1"]}, {"id": "a", "student_ids": []}]))


def test_a_page_that_is_not_an_array_is_named_not_skipped(store: Warehouse) -> None:
    with pytest.raises(UnifiedPayloadError, match="page at offset 100, item '\\?': the page is OBJECT, not a JSON"):
        normalize(store, page_rows([{"id": "ok", "student_ids": []}], '{"data": []}'))


def test_a_refused_day_keeps_the_previous_snapshot_of_that_day_whole(store: Warehouse) -> None:
    before = normalize(store, page_rows([{"id": "a", "student_ids": ["s1", "s2"]}]))
    with pytest.raises(UnifiedPayloadError):
        normalize(store, page_rows([{"id": "a", "student_ids": "s1"}]))
    after = snapshot(store, D1)
    for old, new in zip(before, after, strict=True):
        pd.testing.assert_frame_equal(old, new)


def test_a_body_as_received_and_the_items_re_serialized_give_the_same_snapshot(tmp_path: Path) -> None:
    items = [{"id": "a", "name": "Émile", "is_active": True, "updated_at": "2026-09-01T10:00:00Z",
              "student_ids": ["s1"], "students": [{"id": "s2", "name": "Zoë"}], "raw": {"nested": [1, {"x": None}]}},
             {"id": "b", "created_at": "2026-08-01T00:00:00+02:00"}]  # fmt: skip
    received = "[\n  " + ",\n  ".join(json.dumps(i, ensure_ascii=False, indent=1) for i in items) + "\n]\n"
    old_style = json.dumps(items, separators=(",", ":"))  # what pages stored before bodies were kept look like
    new = normalize(Warehouse(tmp_path / "new.duckdb"), page_rows(received))
    old = normalize(Warehouse(tmp_path / "old.duckdb"), page_rows(old_style))
    for a, b in zip(new, old, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert new.course_rosters.set_index("course_id").loc["a", "course_name"] == "Émile"


def test_a_day_read_in_many_batches_gives_the_same_snapshot_as_one_batch(tmp_path: Path) -> None:
    pages = page_rows(
        *[[{"id": f"c{p}-{i}", "updated_at": f"2026-09-01T0{p % 9}:00:00Z", "student_ids": [f"s{p}{i}", "s0"]}
           for i in range(3)] for p in range(7)],
        # the same course again on the last page, newer: the newest wins across batches
        [{"id": "c0-0", "updated_at": "2026-09-01T09:30:00Z", "student_ids": ["late"]}],
    )  # fmt: skip
    whole = normalize(Warehouse(tmp_path / "one.duckdb"), pages)
    batched = normalize(Warehouse(tmp_path / "many.duckdb"), pages, batch_bytes=1)  # one page per batch
    for a, b in zip(whole, batched, strict=True):
        pd.testing.assert_frame_equal(a, b)
    edges = batched.course_student_edges
    assert edges.loc[edges["course_id"] == "c0-0", "student_id"].tolist() == ["late"]
    assert len(batched.course_rosters) == 21


def test_an_incremental_day_replaces_polled_courses_and_carries_the_rest_forward(store: Warehouse) -> None:
    normalize(store, pd.concat([
        page_rows([{"id": "a", "student_ids": ["s1"]}, {"id": "b", "student_ids": ["s2"]}]),
        page_rows([{"id": "k1", "course_id": "a", "student_ids": ["s1"]}, {"id": "k2", "course_id": "b",
                    "student_ids": ["s2"]}], endpoint="class"),
    ]))  # fmt: skip
    polled = pd.concat([
        page_rows([{"id": "b", "student_ids": ["s3"]}], day=D2),
        page_rows([{"id": "k2", "course_id": "b"}], endpoint="class", day=D2),
    ])  # fmt: skip
    out = normalize(store, polled, day=D2, base=D1)
    r = out.course_rosters.set_index("course_id")
    assert r.loc["a", "fetched_on"] == pd.Timestamp(D1) and r.loc["b", "fetched_on"] == pd.Timestamp(D2)
    assert set(r["snapshot_date"]) == {pd.Timestamp(D2)}
    assert set(map(tuple, out.course_student_edges[["course_id", "student_id"]].to_numpy())) == {
        ("a", "s1"),
        ("b", "s3"),
    }
    # k2 was polled and exposes no roster now: its edges are not carried forward; k1 was not polled: carried
    assert out.class_student_edges[["class_id", "student_id"]].values.tolist() == [["k1", "s1"]]


def test_an_incremental_day_without_its_base_snapshot_is_refused_by_name(store: Warehouse) -> None:
    with pytest.raises(rosters.MissingSnapshotInput, match="the base snapshot c1\\|2026-09-01 .* is not built"):
        normalize(store, page_rows([{"id": "b", "student_ids": ["s3"]}], day=D2), day=D2, base=D1)


def test_the_snapshot_counts_operators_see_are_the_stored_rows(store: Warehouse) -> None:
    normalize(store, page_rows([
        {"id": "a", "is_active": False, "student_ids": ["s1", "s2"]},
        {"id": "b", "students": [{"id": "s2"}]},
        {"id": "c", "student_ids": []},
        {"id": "d"},
    ]))  # fmt: skip
    with store.session() as conn:
        counts = snapshot_metadata(conn, "c1", D1)
    assert counts == {"courses": 4, "courses_carried_forward": 0, "courses_exposed": 2, "courses_empty": 1,
                      "courses_not_exposed": 1, "courses_inactive": 1, "edges": 3, "distinct_students": 2,
                      "courses_with_students": 2, "class_edges": 0, "classes": 0}  # fmt: skip
