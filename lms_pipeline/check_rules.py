"""The rules the asset checks apply, each a plain function over the warehouse returning an ``Outcome`` (verdict,
description, metadata): the stored partition still satisfies its pandera model, unique edges, no drop from a course
whose roster was not exposed, change-set arithmetic, sync health, exposure share, the grade match rate, freshness.
``lms_pipeline.checks`` wraps them as Dagster checks; tests call them directly."""

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd

from lms_pipeline import statements
from lms_pipeline.config import Settings
from lms_pipeline.schemas import SchemaViolation, validate
from lms_pipeline.warehouse import Warehouse

SQL = statements.load(Path(__file__).with_suffix(".sql"))
CONTRACT = "contract"
FRESHNESS_ASSET = "enrollment_change_sets"


@dataclass(frozen=True)
class Outcome:
    """One check's verdict on one partition, with what an operator needs to judge it."""

    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def contract(store: Warehouse, name: str, connection_id: str, day: date) -> Outcome:
    """The stored partition of ``name`` still satisfies its pandera model (types, ranges, unique key)."""
    rows = store.read_partition(name, connection_id, day)
    try:
        validate(name, rows)
    except SchemaViolation as exc:
        return Outcome(False, str(exc), {"rows": len(rows), "violation": str(exc)})
    return Outcome(True, f"{len(rows)} stored row(s) satisfy the {name} contract", {"rows": len(rows)})


def unique_edges(store: Warehouse, name: str, connection_id: str, day: date) -> Outcome:
    """One edge per (course or class, student): a duplicate would count a student twice in every change set."""
    group = "class_id" if name == "class_student_edges" else "course_id"
    statement = "class_edges_per_student" if group == "class_id" else "course_edges_per_student"
    rows, duplicates, where = _run(store, statement, connection_id=connection_id, day=day).iloc[0]
    where = _ids(where)
    metadata = {"edges": int(rows), "duplicate_edges": int(duplicates), f"{group}s_with_duplicates": where[:10]}
    if duplicates:
        return Outcome(False, f"{duplicates} duplicate edge(s) in {len(where)} {group.removesuffix('_id')}(s), "
                       f"e.g. {', '.join(where[:5])}", metadata)  # fmt: skip
    return Outcome(True, f"{rows} edge(s), each once", metadata)


def _run(store: Warehouse, name: str, **params: object) -> pd.DataFrame:
    """One named statement of check_rules.sql over the warehouse, its values bound."""
    with store.session() as conn:
        return statements.run(conn, SQL[name], params).df()


def _ids(value: object) -> list[str]:
    """A DuckDB list from a pandas frame: NA when the aggregate saw no row."""
    return [] if value is None or (not hasattr(value, "__len__") and pd.isna(value)) else [str(v) for v in value]


def _change_set(store: Warehouse, connection_id: str, day: date) -> pd.Series | None:
    found = store.read_partition("enrollment_change_sets", connection_id, day)
    return None if found.empty else found.iloc[0]


def no_drops_when_not_exposed(store: Warehouse, connection_id: str, day: date) -> Outcome:
    """No drop from a course whose roster was not exposed on either day: "the provider did not tell us" is never
    "everyone left" (docs/decisions.md, "Not exposed is not empty")."""
    change_set = _change_set(store, connection_id, day)
    if change_set is None or change_set["is_baseline"]:
        return Outcome(True, "no change set to compare (baseline or not written)", {"drops_checked": 0})
    found = _run(store, "drops_from_unexposed_rosters", connection_id=connection_id, day=day).iloc[0]
    courses = _ids(found["courses"])
    metadata = {"drops_checked": int(found["drops"]), "drops_from_unexposed_rosters": int(found["bad"]),
                "courses": courses[:10]}  # fmt: skip
    if found["bad"]:
        return Outcome(False, f"{found['bad']} drop(s) from course(s) whose roster was not exposed: "
                       f"{', '.join(courses[:5])}", metadata)  # fmt: skip
    return Outcome(True, f"{found['drops']} drop(s), none from a course whose roster was not exposed", metadata)


def change_set_arithmetic(store: Warehouse, connection_id: str, day: date) -> Outcome:
    """Per compared course (roster known, or the course absent, on each day), previous edges + added - dropped =
    current edges; and the change-set row's counts are the change rows' counts."""
    change_set = _change_set(store, connection_id, day)
    if change_set is None or change_set["is_baseline"]:
        return Outcome(True, "no change set to compare (baseline or not written)", {"courses_compared": 0})
    previous = pd.Timestamp(change_set["previous_snapshot_date"]).date()
    found = _run(store, "change_set_arithmetic", connection_id=connection_id, day=day, previous=previous).iloc[0]
    off = _ids(found["off"])
    totals = {"added": (int(found["added"]), int(change_set["added"])),
              "dropped": (int(found["dropped"]), int(change_set["dropped"])),
              "current_edges": (int(found["current_edges"]), int(change_set["current_edges"]))}  # fmt: skip
    wrong_totals = [f"{k}: change rows/edges say {rows}, the change-set row says {row}"
                    for k, (rows, row) in totals.items() if rows != row]  # fmt: skip
    metadata = {"courses_compared": int(found["compared"]), "courses_not_adding_up": len(off),
                "courses": off[:10], "previous_snapshot_date": str(previous)}  # fmt: skip
    if off or wrong_totals:
        problems = ([f"{len(off)} course(s) where previous + added - dropped != current: {', '.join(off[:5])}"]
                    if off else []) + wrong_totals  # fmt: skip
        return Outcome(False, "; ".join(problems), metadata)
    return Outcome(True, f"{found['compared']} compared course(s) add up against {previous}", metadata)


def sync_health(store: Warehouse, connection_id: str, day: date, max_server_error_share: float) -> Outcome:
    """A sync that needed many 5xx retries succeeded, but the provider is struggling: a warning, not a stop."""
    sync = store.read_partition("sync_log", connection_id, day)
    if sync.empty:
        return Outcome(True, "no sync_log row", {})
    row = sync.iloc[0]
    requests, errors = int(row["requests"]), int(row["server_errors"])
    share = errors / requests if requests else 0.0
    metadata = {"requests": requests, "server_errors": errors, "server_error_share": round(share, 4),
                "max_server_error_share": max_server_error_share, "retries": int(row["retries"]),
                "throttled": int(row["throttled"]), "sync_seconds": float(row["duration_seconds"])}  # fmt: skip
    if share > max_server_error_share:
        return Outcome(False, f"{errors} of {requests} requests ({share:.1%}) got a 5xx, above "
                       f"max_server_error_share {max_server_error_share:.0%}", metadata)  # fmt: skip
    return Outcome(True, f"{errors} of {requests} requests got a 5xx ({share:.1%})", metadata)


def exposure_share(store: Warehouse, connection_id: str, day: date, max_fall: float) -> Outcome:
    """The share of courses whose roster is known (exposed or empty) should not fall sharply day over day: a
    provider that stops exposing rosters yields no drops (by design), so only this warns that data went dark."""
    shares = _run(store, "exposure_shares", connection_id=connection_id, day=day)
    today = shares[shares["snapshot_date"] == pd.Timestamp(day)]
    if today.empty:
        return Outcome(True, "no course_rosters stored", {})
    share = float(today["share"].iloc[0])
    metadata = {"exposed_share": round(share, 4), "courses": int(today["n"].iloc[0]), "max_exposure_fall": max_fall}
    if len(shares) < 2:
        return Outcome(True, f"{share:.1%} of courses expose their roster (no earlier day)", metadata)
    before = float(shares["share"].iloc[0])
    fall = before - share
    previous = pd.Timestamp(shares["snapshot_date"].iloc[0]).date()
    metadata |= {"previous_exposed_share": round(before, 4), "previous_snapshot_date": str(previous),
                 "exposure_fall": round(fall, 4)}  # fmt: skip
    if fall > max_fall:
        return Outcome(False, f"the share of courses exposing their roster fell from {before:.1%} to {share:.1%}, "
                       f"more than max_exposure_fall {max_fall:.0%}", metadata)  # fmt: skip
    return Outcome(True, f"{share:.1%} of courses expose their roster ({before:.1%} the day before)", metadata)


def grade_match_rate(store: Warehouse, settings: Settings, connection_id: str, day: date) -> Outcome:
    """Of the grades compared (match or score_mismatch), at least ``min_grade_match_rate`` match: far fewer says a
    mapping or scheme went wrong, and the write-back would then write it into the SIS."""
    threshold = settings.checks.min_grade_match_rate
    if settings.sis_of(connection_id) is None:
        return Outcome(True, "no grades.sis for this connection: nothing reconciled", {"compared": 0})
    counts = _run(store, "grade_match_counts", connection_id=connection_id, day=day).iloc[0]
    matched, compared = int(counts["matched"]), int(counts["compared"])
    rate = matched / compared if compared else 1.0
    metadata = {"match_rate": round(rate, 4), "matched": matched, "compared": compared,
                "min_grade_match_rate": threshold}  # fmt: skip
    if rate < threshold:
        return Outcome(False, f"{matched} of {compared} compared grades match ({rate:.1%}), below "
                       f"min_grade_match_rate {threshold:.0%}: check the mapping files and grading schemes; the "
                       "write-back of this day did not run", metadata)  # fmt: skip
    return Outcome(True, f"{matched} of {compared} compared grades match ({rate:.1%})", metadata)


def missing_in_lms_age(store: Warehouse, settings: Settings, connection_id: str, day: date) -> Outcome:
    """No student the SIS enrols has been missing from the LMS course for ``missing_in_lms_warn_days`` or more: a
    late add that never arrives sees no coursework and gets no grades."""
    conn = settings.connection(connection_id)
    if conn.rosters is None:
        return Outcome(True, "no rosters.sis for this connection: nothing reconciled", {"old_missing_in_lms": 0})
    days = conn.rosters.missing_in_lms_warn_days
    old = _run(store, "old_missing_in_lms", connection_id=connection_id, day=day, days=days)
    metadata = {"old_missing_in_lms": len(old), "missing_in_lms_warn_days": days,
                "oldest_days": int(old["days_open"].max()) if len(old) else 0}  # fmt: skip
    if len(old):
        shown = ", ".join(
            f"{k} ({d} days)" for k, d in zip(old["row_key"].head(5), old["days_open"].head(5), strict=True)
        )
        return Outcome(False, f"{len(old)} student(s) enrolled in the SIS have been missing from the LMS course for "
                       f"{days} days or more: {shown}; see roster_discrepancies", metadata)  # fmt: skip
    return Outcome(True, f"no missing_in_lms row has lasted {days} days", metadata)


def last_complete_day(store: Warehouse, connection_id: str) -> date | None:
    """The newest day whose change set was published (passed or accepted): what analysts can rely on."""
    found = _run(store, "last_complete_day", connection_id=connection_id)["d"].iloc[0]
    return None if pd.isna(found) else pd.Timestamp(found).date()


def freshness(store: Warehouse, settings: Settings, connection_id: str, now: datetime) -> Outcome:
    """Stale when, past ``freshness.deadline_hour_utc``, yesterday (UTC) is not the connection's last complete
    day; before the deadline the day before yesterday is the one due."""
    now = now.astimezone(UTC)
    deadline_hour = settings.freshness.deadline_hour_utc
    due = now.date() - timedelta(days=1 if now.hour >= deadline_hour else 2)
    due = max(due, settings.start_date - timedelta(days=1))  # nothing is due before the first partition
    last = last_complete_day(store, connection_id)
    metadata = {"last_complete_day": str(last) if last else "none", "due_day": str(due),
                "deadline_hour_utc": deadline_hour, "evaluated_at": now.isoformat(timespec="seconds")}  # fmt: skip
    if due < settings.start_date or (last is not None and last >= due):
        return Outcome(True, f"{connection_id}: fresh (last complete day {last or 'none'}, due {due})", metadata)
    days_late = (due - last).days if last else None
    if days_late is not None:
        metadata["days_missing"] = days_late
    return Outcome(False, f"{connection_id}: stale: last complete day {last or 'none'}, but {due} was due by "
                   f"{deadline_hour:02d}:00 UTC. Look for a failed or held run of partition '{connection_id}|{due}' "
                   "in the UI (Runs, filtered by the partition) or a stopped schedule.", metadata)  # fmt: skip


def freshness_check_name(connection_id: str) -> str:
    """Check names allow letters, digits and _ only; a connection id also has - and ."""
    return "fresh_" + re.sub(r"[^A-Za-z0-9_]", "_", connection_id)
