"""Rosters from the provider dialects other than the Unified API: Canvas REST, Google Classroom, OneRoster 1.2.

Each dialect has its own client (paging, throttling, refusals) and normalizer (its shapes -> the project's
``course_rosters``, ``course_student_edges``, ``class_student_edges``); this module stores their pages as fetched in
``raw_dialect_pages`` and turns them into the same frames the Unified path produces, so every downstream asset
(change sets, mass-drop guard, published copy) is the same whichever dialect fed it. None of these dialects is
polled incrementally yet: every day is a full scan, reconciled by id (the capability matrix says why per provider).
"""

import json
from datetime import date

import pandas as pd

from lms_pipeline.capabilities import capabilities
from lms_pipeline.config import ClassroomOptions, ConnectionConfig
from lms_pipeline.transforms.canvas import normalize_canvas_pages
from lms_pipeline.transforms.classroom import normalize_classroom_pages
from lms_pipeline.transforms.oneroster_rosters import normalize_oneroster_pages
from lms_pipeline.transforms.rosters import RosterFrames

TECHNIQUE = {"canvas": "link_next", "google_classroom": "page_token", "oneroster": "link_next_total_count"}
READ = {"canvas": "roster_pages", "google_classroom": "scan_rosters", "oneroster": "roster_pages"}
COURSE_ENDPOINT = {"canvas": "courses", "google_classroom": "courses", "oneroster": "courses"}
CLASS_ENDPOINT = {"canvas": "sections", "google_classroom": None, "oneroster": "classes"}


def read_pages(client: object, provider: str) -> list[dict]:
    """Every roster page of one day, read by the dialect's client (it raises on anything but a roster refusal)."""
    return getattr(client, READ[provider])()


def pages_frame(pages: list[dict], connection_id: str, provider: str, day: date, run_id: str) -> pd.DataFrame:
    """The dialect's raw pages as the rows of ``raw_dialect_pages`` (no token: the clients never put one in)."""
    return pd.DataFrame(
        {
            "connection_id": connection_id,
            "snapshot_date": pd.Timestamp(day),
            "provider": provider,
            "endpoint": pd.Series([p["endpoint"] for p in pages], dtype=str),
            "course_id": pd.Series(
                [None if p.get("course_id") is None else str(p["course_id"]) for p in pages], dtype=object
            ),  # fmt: skip
            "page_index": pd.Series([p["page_index"] for p in pages], dtype="int64"),
            "url": pd.Series([p["url"] for p in pages], dtype=str),
            "request_params": pd.Series(
                [json.dumps(p.get("params") or {}, sort_keys=True, default=str) for p in pages], dtype=str
            ),  # fmt: skip
            "status_code": pd.Series([p["status"] for p in pages], dtype="int64"),
            "fetched_at": pd.to_datetime([p["fetched_at"] for p in pages], utc=True),
            "payload": pd.Series([p["payload"] for p in pages], dtype=str),
            "run_id": run_id,
        }
    )


def normalize(conn: ConnectionConfig, stored: pd.DataFrame, day: date) -> RosterFrames:
    """Stored dialect pages -> the project's roster frames for the partition (fetched_on = the day: full scans)."""
    pages = stored.rename(columns={"status_code": "status", "request_params": "params"})
    if conn.provider == "canvas":
        pages = pages.assign(course_id=pd.to_numeric(pages["course_id"]).astype("Int64"))
        frames = normalize_canvas_pages(pages, conn.id)
        rosters, edges, class_edges = frames.course_rosters, frames.course_student_edges, frames.class_student_edges
    elif conn.provider == "oneroster":
        frames = normalize_oneroster_pages(pages, conn.id, day)
        rosters, edges, class_edges = frames.course_rosters, frames.course_student_edges, frames.class_student_edges
    else:
        frames = normalize_classroom_pages(pages, **classroom_identity(conn.options))
        rosters, edges = frames.course_rosters, frames.course_student_edges[["course_id", "student_id"]]
        class_edges = pd.DataFrame({"class_id": [], "course_id": [], "student_id": []}, dtype=str)
    if not capabilities(conn.provider).rosters_visible:
        rosters = rosters.assign(roster_status="not_exposed", student_count=pd.NA)
        edges, class_edges = edges.iloc[0:0], class_edges.iloc[0:0]
    part = {"connection_id": conn.id, "snapshot_date": pd.Timestamp(day)}
    rosters = rosters.assign(
        **part,
        roster_source=f"{conn.provider}:{TECHNIQUE[conn.provider]}",
        created_at=pd.NaT,
        updated_at=pd.to_datetime(rosters["updated_at"], utc=True),
        fetched_on=pd.Timestamp(day),
    )
    return RosterFrames(rosters, edges.assign(**part), class_edges.assign(**part))


def classroom_identity(options: ClassroomOptions) -> dict:
    """Classroom has no SIS id field: student ids are its own, or the directory's id for the profile email."""
    if options.identity == "provider":
        return {"identity": "provider"}
    directory = pd.read_csv(options.directory_path(), dtype=str, comment="#")
    return {"identity": "email", "directory": directory[["email", "student_id"]]}


def sync_row(conn: ConnectionConfig, day: date, pages: list[dict], stats: dict, duration: float,
             run_id: str) -> pd.DataFrame:  # fmt: skip
    """The day's sync_log row: a full scan (no dialect is polled incrementally yet), read by the dialect's paging."""
    listed = {endpoint: 0 for endpoint in ("course", "class")}
    for page in pages:
        if page["status"] == 200:
            count = _items(page["payload"], page["endpoint"])
            if page["endpoint"] == COURSE_ENDPOINT[conn.provider]:
                listed["course"] += count
            elif page["endpoint"] == CLASS_ENDPOINT[conn.provider]:
                listed["class"] += count
    return pd.DataFrame([{
        "connection_id": conn.id, "snapshot_date": pd.Timestamp(day), "mode": "full",
        "mode_reason": f"{conn.provider}: {capabilities(conn.provider).incremental_filter}",
        "technique": TECHNIQUE[conn.provider], "passes": 1, "catch_up_rounds": 0, "catch_up_converged": True,
        "updated_gte": pd.NaT, "high_water": pd.NaT, "base_snapshot_date": pd.NaT,
        "last_full_scan_date": pd.Timestamp(day), "courses_listed": listed["course"],
        "classes_listed": listed["class"], "requests": stats["requests"], "pages": stats["pages"],
        "retries": stats["retries"], "throttled": stats["throttled"], "server_errors": stats["server_errors"],
        "duration_seconds": duration, "run_id": run_id,
    }])  # fmt: skip


def _items(payload: str, endpoint: str) -> int:
    """Items on a page, whatever the envelope (a bare array, or an object with one list)."""
    try:
        body = json.loads(payload)
    except ValueError:
        return 0
    if isinstance(body, list):
        return len(body)
    lists = [v for v in body.values() if isinstance(v, list)] if isinstance(body, dict) else []
    return len(lists[0]) if lists else 0
