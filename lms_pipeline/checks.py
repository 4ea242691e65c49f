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
from datetime import UTC, date, datetime

import dagster as dg

from lms_pipeline.check_rules import (
    CONTRACT,
    FRESHNESS_ASSET,
    Outcome,
    change_set_arithmetic,
    contract,
    exposure_share,
    freshness,
    freshness_check_name,
    grade_match_rate,
    missing_in_lms_age,
    no_drops_when_not_exposed,
    sync_health,
    unique_edges,
)
from lms_pipeline.config import Settings
from lms_pipeline.partitions import split_key
from lms_pipeline.resources import LmsApiResource, WarehouseResource
from lms_pipeline.schemas import SchemaViolation
from lms_pipeline.warehouse import Warehouse

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
