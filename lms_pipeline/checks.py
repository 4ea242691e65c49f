"""Asset checks an operator scans across assets in the Dagster UI's Checks tab, one result per partition.

The pandera contract of every published table is checked again on what was *stored* (the assets validate before
writing; this says what analysts will read still holds it), next to the rules the change sets and the grade
reconciliation promise: unique edges, no drop from a course whose roster was not exposed, change-set arithmetic,
sync health, the grade match rate. Each rule is a plain function over the warehouse (``Outcome``); the Dagster
checks wrap them, grouped per step so each runs as soon as the tables it reads are written.

Blocking checks stop what comes after them in the run: a broken roster contract or duplicate edges stop the change
set (nothing of the day is published), a grade match rate below the threshold stops the write-back (a broken
mapping must not be written to the SIS). A blocking check runs after the asset is written (dagster-duckdb-notes.md
§d), which is why the mass-drop guard, whose change set must never be stored, stays inside its asset.

A table the asset refused to write (its pandera validation failed) never reaches these checks, whose step is
skipped; ``report_refused_contract`` (a failure hook on the daily job) records that refusal as a failed
``contract`` check of the table for the partition, so refusals show in the Checks tab too.

Check metadata carries counts and course ids, never a student id: the event log is not erased (lms_pipeline.privacy).
"""

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd

from lms_pipeline.config import Settings
from lms_pipeline.partitions import split_key
from lms_pipeline.resources import LmsApiResource, WarehouseResource
from lms_pipeline.schemas import SchemaViolation, validate
from lms_pipeline.warehouse import Warehouse, table

CONTRACT = "contract"
FRESHNESS_ASSET = "enrollment_change_sets"
KNOWN = "('exposed', 'empty')"


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
    rows, duplicates, where = store.query(
        f"""SELECT count(*), count(*) - count(DISTINCT ({group}, student_id)),
                   list(DISTINCT {group} ORDER BY {group}) FILTER (WHERE n > 1)
            FROM (SELECT *, count(*) OVER (PARTITION BY {group}, student_id) AS n FROM {table(name)}
                  WHERE connection_id = ? AND snapshot_date = ?)""",
        [connection_id, day],
    ).iloc[0]
    where = _ids(where)
    metadata = {"edges": int(rows), "duplicate_edges": int(duplicates), f"{group}s_with_duplicates": where[:10]}
    if duplicates:
        return Outcome(False, f"{duplicates} duplicate edge(s) in {len(where)} {group.removesuffix('_id')}(s), "
                       f"e.g. {', '.join(where[:5])}", metadata)  # fmt: skip
    return Outcome(True, f"{rows} edge(s), each once", metadata)


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
    found = store.query(
        f"""SELECT count(*) AS drops,
                   count(*) FILTER (WHERE c.roster_status = 'not_exposed' OR p.roster_status = 'not_exposed') AS bad,
                   list(DISTINCT x.course_id ORDER BY x.course_id)
                       FILTER (WHERE c.roster_status = 'not_exposed' OR p.roster_status = 'not_exposed') AS courses
            FROM {table("enrollment_changes")} x
            LEFT JOIN {table("course_rosters")} c ON c.connection_id = x.connection_id
                 AND c.snapshot_date = x.snapshot_date AND c.course_id = x.course_id
            LEFT JOIN {table("course_rosters")} p ON p.connection_id = x.connection_id
                 AND p.snapshot_date = x.previous_snapshot_date AND p.course_id = x.course_id
            WHERE x.connection_id = ? AND x.snapshot_date = ? AND x.change_type = 'dropped'""",
        [connection_id, day],
    ).iloc[0]
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
    found = store.query(
        f"""
        WITH rosters AS (
            SELECT coalesce(c.course_id, p.course_id) AS course_id
            FROM (SELECT * FROM {table("course_rosters")} WHERE connection_id = $1 AND snapshot_date = $2) c
            FULL JOIN (SELECT * FROM {table("course_rosters")} WHERE connection_id = $1 AND snapshot_date = $3) p
                USING (course_id)
            WHERE (c.roster_status IN {KNOWN} OR c.roster_status IS NULL)
              AND (p.roster_status IN {KNOWN} OR p.roster_status IS NULL)
        ),
        cur AS (SELECT course_id, count(*) AS n FROM {table("course_student_edges")}
                WHERE connection_id = $1 AND snapshot_date = $2 GROUP BY ALL),
        prev AS (SELECT course_id, count(*) AS n FROM {table("course_student_edges")}
                 WHERE connection_id = $1 AND snapshot_date = $3 GROUP BY ALL),
        changes AS (SELECT course_id, count(*) FILTER (WHERE change_type = 'added') AS added,
                           count(*) FILTER (WHERE change_type = 'dropped') AS dropped
                    FROM {table("enrollment_changes")} WHERE connection_id = $1 AND snapshot_date = $2 GROUP BY ALL),
        per_course AS (
            SELECT r.course_id, coalesce(prev.n, 0) + coalesce(added, 0) - coalesce(dropped, 0) AS expected,
                   coalesce(cur.n, 0) AS current
            FROM rosters r LEFT JOIN cur USING (course_id) LEFT JOIN prev USING (course_id)
            LEFT JOIN changes USING (course_id)
        )
        SELECT (SELECT count(*) FROM per_course) AS compared,
               (SELECT list(course_id ORDER BY course_id) FROM per_course WHERE expected <> current) AS off,
               (SELECT coalesce(sum(added), 0) FROM changes) AS added,
               (SELECT coalesce(sum(dropped), 0) FROM changes) AS dropped,
               (SELECT coalesce(sum(n), 0) FROM cur) AS current_edges
        """,
        [connection_id, day, previous],
    ).iloc[0]
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
    shares = store.query(
        f"""SELECT snapshot_date, count(*) FILTER (WHERE roster_status IN {KNOWN}) / count(*) AS share, count(*) AS n
            FROM {table("course_rosters")} WHERE connection_id = ? AND snapshot_date <= ?
              AND snapshot_date >= coalesce((SELECT max(snapshot_date) FROM {table("course_rosters")}
                                             WHERE connection_id = ? AND snapshot_date < ?), ?)
            GROUP BY ALL ORDER BY snapshot_date""",
        [connection_id, day, connection_id, day, day],
    )
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
    counts = store.query(
        f"""SELECT count(*) FILTER (WHERE status = 'match') AS matched,
                   count(*) FILTER (WHERE status IN ('match', 'score_mismatch')) AS compared
            FROM {table("grade_discrepancies")} WHERE connection_id = ? AND snapshot_date = ?""",
        [connection_id, day],
    ).iloc[0]
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
    old = store.query(
        f"""SELECT row_key, days_open FROM {table("roster_discrepancies")} WHERE connection_id = ? AND snapshot_date = ?
            AND status = 'missing_in_lms' AND days_open >= ? ORDER BY days_open DESC, row_key""",
        [connection_id, day, days],
    )
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
    sql = f"SELECT max(snapshot_date) AS d FROM {table('enrollment_change_sets')} WHERE connection_id = ?"
    found = store.query(sql, [connection_id])["d"].iloc[0]
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


# ---- Dagster wiring ---------------------------------------------------------------------------------------------

# Tables each check step covers: the tables one step of the daily job writes, checked as soon as they are stored.
STEP_TABLES: dict[str, tuple[str, ...]] = {
    "roster_checks": ("raw_course_pages", "sync_log", "course_rosters", "course_student_edges",
                      "class_student_edges"),
    "change_set_checks": ("enrollment_changes", "enrollment_change_sets"),
    "progress_checks": ("raw_progress_pages", "course_contents", "student_progress", "course_progress_summary"),
    "grade_checks": ("raw_grade_pages", "lms_grades", "grade_discrepancies"),
    "writeback_checks": ("grade_sync_log",),
    "roster_recon_checks": ("raw_sis_roster_pages", "roster_discrepancies"),
}  # fmt: skip
# A broken snapshot must not become a change set (nothing of the day is published then).
BLOCKING_CONTRACTS = frozenset({"course_rosters", "course_student_edges", "class_student_edges"})
DESCRIPTIONS = {
    CONTRACT: "The stored partition satisfies the table's pandera model (types, ranges, unique key). A frame the "
    "asset refused is recorded here as failed too.",
    "unique_edges": "One edge per (course or class, student). Blocking: the change set does not run.",
    "no_drops_when_not_exposed": "No drop from a course whose roster was not exposed on either day.",
    "change_set_arithmetic": "Per compared course, previous edges + added - dropped = current edges; the change-set "
    "row's counts equal the change rows'.",
    "sync_health": "Warns when more than checks.max_server_error_share of the sync's requests got a 5xx.",
    "exposure_share": "Warns when the share of courses exposing their roster falls by more than "
    "checks.max_exposure_fall from the previous day.",
    "missing_in_lms_age": "Warns when a student the SIS enrols has been missing from the LMS course for "
    "rosters.missing_in_lms_warn_days or more (a push that keeps failing).",
    "grade_match_rate": "At least checks.min_grade_match_rate of compared grades match. Blocking: the write-back "
    "of the day does not run.",
}


def _spec(name: str, asset: str, partitions_def: dg.PartitionsDefinition, blocking: bool = False) -> dg.AssetCheckSpec:
    with warnings.catch_warnings():  # partitioned checks are "preview" on the pinned version; the warning tells
        warnings.simplefilter("ignore", dg.PreviewWarning)  # operators nothing
        return dg.AssetCheckSpec(name, asset=asset, partitions_def=partitions_def, blocking=blocking,
                                 description=DESCRIPTIONS[name])  # fmt: skip


def _result(asset: str, name: str, outcome: Outcome, warn: bool = False) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset,
        check_name=name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.WARN if warn else dg.AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata=outcome.metadata,
    )


Rule = Callable[[Warehouse, Settings, str, date], Outcome]
WARNINGS = frozenset({"sync_health", "exposure_share", "missing_in_lms_age"})


def _contract_rule(name: str) -> Rule:
    return lambda store, settings, connection_id, day: contract(store, name, connection_id, day)


def _unique_rule(name: str) -> Rule:
    return lambda store, settings, connection_id, day: unique_edges(store, name, connection_id, day)


# (asset, check) -> the rule, per check step. Each step can be subset: rebuilding a day's snapshot without its
# fetch selects only the snapshot tables, and only their checks run.
STEP_RULES: dict[str, dict[tuple[str, str], Rule]] = {
    step: {(name, CONTRACT): _contract_rule(name) for name in names} for step, names in STEP_TABLES.items()
}
STEP_RULES["roster_checks"] |= {
    ("course_student_edges", "unique_edges"): _unique_rule("course_student_edges"),
    ("class_student_edges", "unique_edges"): _unique_rule("class_student_edges"),
    ("sync_log", "sync_health"): lambda store, settings, c, d: sync_health(
        store, c, d, settings.checks.max_server_error_share),
    ("course_rosters", "exposure_share"): lambda store, settings, c, d: exposure_share(
        store, c, d, settings.checks.max_exposure_fall),
}  # fmt: skip
STEP_RULES["change_set_checks"] |= {
    ("enrollment_changes", "no_drops_when_not_exposed"): lambda store, settings, c, d: no_drops_when_not_exposed(
        store, c, d),
    ("enrollment_change_sets", "change_set_arithmetic"): lambda store, settings, c, d: change_set_arithmetic(
        store, c, d),
}  # fmt: skip
STEP_RULES["grade_checks"] |= {("grade_discrepancies", "grade_match_rate"): grade_match_rate}
STEP_RULES["roster_recon_checks"] |= {("roster_discrepancies", "missing_in_lms_age"): missing_in_lms_age}
BLOCKING = frozenset({*((name, CONTRACT) for name in BLOCKING_CONTRACTS), ("course_student_edges", "unique_edges"),
                      ("class_student_edges", "unique_edges"),
                      ("grade_discrepancies", "grade_match_rate")})  # fmt: skip


def _check_step(step: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    rules = STEP_RULES[step]

    @dg.multi_asset_check(
        name=step,
        specs=[_spec(check, asset, partitions_def, (asset, check) in BLOCKING) for asset, check in rules],
        can_subset=True,
    )
    def run_checks(context: dg.AssetCheckExecutionContext, lms: LmsApiResource, warehouse: WarehouseResource):
        connection_id, day = split_key(context)
        store, settings = warehouse.warehouse(), lms.settings()
        for key in sorted(context.selected_asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name)):
            asset = key.asset_key.to_user_string()
            outcome = rules[(asset, key.name)](store, settings, connection_id, day)
            yield _result(asset, key.name, outcome, warn=key.name in WARNINGS)

    return run_checks


def build_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The partitioned checks of the daily job's tables, one step per step of the job they follow."""
    return [_check_step(step, partitions_def) for step in STEP_RULES]


def build_freshness_checks(settings: Settings) -> dg.AssetChecksDefinition:
    """One check per connection on ``enrollment_change_sets``, run by the freshness schedule: Dagster's own
    freshness policies judge an asset as a whole (any partition's materialization counts), so they cannot say
    which connection fell behind."""
    names = {conn_id: freshness_check_name(conn_id) for conn_id in settings.connection_ids}
    if len(set(names.values())) != len(names):
        clash = sorted(c for c in names if list(names.values()).count(names[c]) > 1)
        raise ValueError(f"connections {clash} map to the same freshness check name; rename one")
    by_name = {name: conn_id for conn_id, name in names.items()}

    @dg.multi_asset_check(
        name="connection_freshness",
        specs=[
            dg.AssetCheckSpec(
                name,
                asset=FRESHNESS_ASSET,
                description=f"Connection {conn_id!r} is fresh: its "
                f"last complete day is yesterday once {settings.freshness.deadline_hour_utc:02d}:00 "
                "UTC has passed.",
            )
            for conn_id, name in names.items()
        ],  # fmt: skip
        can_subset=True,
    )
    def connection_freshness(context: dg.AssetCheckExecutionContext, lms: LmsApiResource,
                             warehouse: WarehouseResource):  # fmt: skip
        store, current = warehouse.warehouse(), lms.settings()
        now = datetime.now(UTC)
        for key in context.selected_asset_check_keys:
            outcome = freshness(store, current, by_name[key.name], now)
            yield _result(FRESHNESS_ASSET, key.name, outcome)

    return connection_freshness


# ---- refused writes as failed contract checks --------------------------------------------------------------------

_REFUSED = re.compile(r"table (\w+): schema validation failed")


def refused_table(exc: BaseException | None) -> tuple[str, str] | None:
    """(table, message) when a step failed because a frame broke its table's pandera model; the assets raise a
    dg.Failure from the SchemaViolation, so the violation is the failure's context or named in its description."""
    seen = 0
    while exc is not None and seen < 5:  # a bounded walk of the exception chain
        if isinstance(exc, SchemaViolation):
            found = _REFUSED.search(str(exc))
            if found:
                return found.group(1), str(exc)
        text = getattr(exc, "description", None) or str(exc)
        found = _REFUSED.search(text)
        if found:
            return found.group(1), text
        exc, seen = exc.__context__, seen + 1
    return None


@dg.failure_hook(name="report_refused_contract")
def report_refused_contract(context: dg.HookContext) -> None:
    """Record a refusal (pandera failed before the write) as a failed ``contract`` check of the refused table."""
    refused = refused_table(context.op_exception)
    run = context.instance.get_run_by_id(context.run_id)
    partition = run.tags.get("dagster/partition") if run else None
    if refused is None or partition is None or not any(refused[0] in names for names in STEP_TABLES.values()):
        return
    name, message = refused
    context.instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(name),
            check_name=CONTRACT,
            passed=False,
            partition=partition,
            description=f"refused before the write (nothing was stored): {message}",
            metadata={"violation": message, "run_id": context.run_id, "step": context.step_key},
        )
    )
