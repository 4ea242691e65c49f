"""The connections file (``data/connections.yaml``) as validated settings.

Errors name the file, the connection and the field, because a typo in one connection of twenty must be found
without reading a traceback. Nothing here imports Dagster: the simulator CLI and the demo read it too.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from lms_pipeline.operator_options import (
    AlertsOptions,
    ChecksOptions,
    ExportsOptions,
    FreshnessOptions,
    RetentionOptions,
)
from lms_pipeline.providers import registry
from lms_pipeline.providers.base import Provider
from lms_pipeline.providers.options import REPO_ROOT, CommonOptions, RetryOptions, Strict, http_url
from lms_pipeline.unique_yaml import DuplicateKeyError, UniqueKeyLoader

DEFAULT_CONFIG_PATH = REPO_ROOT / "data" / "connections.yaml"
CONFIG_ENV = "LMS_PIPELINE_CONFIG"
DUCKDB_ENV = "LMS_PIPELINE_DUCKDB"

# Dagster multi-partition keys join dimensions with "|" and reject "[ ] ,": a connection id must avoid them.
CONNECTION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ConfigError(ValueError):
    """The connections file is missing, unreadable or invalid; the message says where and what."""


class SimulatorWorld(Strict):
    """World parameters for the embedded simulator (see ``lms_pipeline.simulator.WorldSpec``)."""

    seed: int = 0
    start_date: date | None = None
    n_courses: int = Field(60, ge=0, le=100_000)
    mean_roster_size: int = Field(25, ge=0, le=10_000)
    n_students: int = Field(1500, ge=1, le=10_000_000)
    roster_exposure: Literal["all", "mixed", "none"] = "all"
    not_exposed_share: float = Field(0.2, ge=0, le=1)
    exposure_flip_prob: float = Field(0.05, ge=0, le=1)
    roster_fields: Literal["student_ids", "students", "both", "mixed"] = "both"
    classes: Literal["none", "no_rosters", "rosters"] = "none"
    drop_prob: float = Field(0.02, ge=0, le=1)
    adds_per_course: float = Field(0.6, ge=0)
    reenrol_prob: float = Field(0.1, ge=0, le=1)
    new_courses_per_day: float = Field(1.0, ge=0)
    deactivate_prob: float = Field(0.01, ge=0, le=1)
    clear_roster_on_deactivate: float = Field(0.5, ge=0, le=1)
    remove_prob: float = Field(0.005, ge=0, le=1)
    missing_timestamps_share: float = Field(0.05, ge=0, le=1)
    supports_updated_gte: bool = True
    rate_limit_every: int = Field(0, ge=0)
    retry_after_seconds: float | None = Field(None, ge=0, le=60)
    supports_sort: bool = True
    churn_share: float = Field(0.0, ge=0, le=1)
    churn_per_request: int = Field(1, ge=1, le=10_000)
    progress: bool = True
    contents_per_course: int = Field(5, ge=2, le=100)
    guest_share: float = Field(0.2, ge=0, le=1)
    world_id: str | None = Field(None, description="connections with the same world_id (and seed) see one world")


class GradesOptions(Strict):
    """Grade reconciliation of this connection against an SIS (``sis`` names an entry of the file's ``sis`` list)."""

    sis: str
    source: str = Field(
        "native",
        description="where LMS grades are read: native = the dialect's own (Unified activities, Canvas or "
        "Classroom submissions); or a grade-only provider of the registry, e.g. lti_ags = the platform's LTI "
        "Assignment and Grade Services (Unified connections)",
    )
    lti_base_url: str | None = Field(None, description="LTI platform root; absent: the embedded platform")

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        """``native`` or a provider that is only a grade source (no connection options of its own)."""
        sources = ["native", *(p.name for p in registry.PROVIDERS.values() if p.options is None and p.grades)]
        if value not in sources:
            raise ValueError(f"must be one of {', '.join(sources)}, got {value!r}")
        return value

    @field_validator("lti_base_url")
    @classmethod
    def _lti_url(cls, value: str | None) -> str | None:
        return http_url(value)


class RostersOptions(Strict):
    """Roster reconciliation of this connection against an SIS's rostering side (``roster_discrepancies``)."""

    sis: str = Field(description="an entry of the file's ``sis`` list: its OneRoster 1.2 rostering is the roster of "
                     "record")  # fmt: skip
    missing_in_lms_warn_days: int = Field(
        3, ge=1, le=365, description="the check warns when a missing_in_lms row has lasted this many days or more"
    )


class ConnectionConfig(Strict):
    """What every connection has; the ``provider`` field picks the dialect and its options model."""

    id: str = Field(pattern=CONNECTION_ID_PATTERN)
    provider: str
    base_url: str | None = Field(None, description="absent: the embedded simulator serves this connection")
    token_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$", description="name of the env var holding the token")
    options: CommonOptions = CommonOptions()
    simulator: SimulatorWorld | None = None
    grades: GradesOptions | None = Field(None, description="reconcile this connection's grades against an SIS")
    rosters: RostersOptions | None = Field(None, description="reconcile this connection's rosters against an SIS")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @model_validator(mode="after")
    def _simulator_only_when_embedded(self) -> ConnectionConfig:
        if self.base_url is not None and self.simulator is not None:
            raise ValueError("'simulator' is only for the embedded simulator: remove it or remove base_url")
        return self

    @model_validator(mode="after")
    def _grade_source_of_the_provider(self) -> ConnectionConfig:
        if self.grades is None:
            return self
        if not registry.provider(self.provider).grade_sources:
            raise ValueError(f"grades: a {self.provider} connection has no grades to reconcile (grades come from "
                             "Unified activities or LTI AGS, Canvas or Classroom submissions)")  # fmt: skip
        if self.grades.source not in registry.provider(self.provider).grade_sources:
            allowed = [p.name for p in registry.connection_providers() if self.grades.source in p.grade_sources]
            raise ValueError(f"grades.source {self.grades.source!r} is for {', '.join(allowed)} connections only")
        return self

    @property
    def embedded(self) -> bool:
        return self.base_url is None

    @property
    def simulated_clock(self) -> bool:
        """True when the source can answer as of any date (a simulator); False for a live LMS."""
        if self.options.simulated_clock is None:
            return self.embedded
        return self.options.simulated_clock

    @property
    def world(self) -> SimulatorWorld:
        return self.simulator or SimulatorWorld()

    def secret(self) -> str | None:
        """The connection's token, from the environment variable the file names (None when unset)."""
        return os.environ.get(self.token_env) or None


def _connection_model(provider: Provider) -> type[ConnectionConfig]:
    """A connection of one provider: ``provider`` is its name (the union's tag), ``options`` its options model (no
    default when the model has required fields: OneRoster's client_id)."""
    options = provider.options
    required = any(f.is_required() for f in options.model_fields.values())  # type: ignore[union-attr]
    return create_model(
        f"{options.__name__.removesuffix('Options')}Connection",  # type: ignore[union-attr]
        __base__=ConnectionConfig,
        provider=(Literal[provider.name], ...),
        options=(options, ... if required else options()),  # type: ignore[misc]
    )


PROVIDERS = tuple(p.name for p in registry.connection_providers())
AnyConnection = Annotated[
    Union[tuple(_connection_model(p) for p in registry.connection_providers())],  # noqa: UP007 (built at run time)
    Field(discriminator="provider"),
]


class SisSimulator(Strict):
    """Parameters of the embedded SIS (``lms_pipeline.providers.oneroster.sis_world.SisSpec``)."""

    seed: int = 0
    token_ttl_seconds: float = Field(300.0, gt=0, le=86_400)
    rate_limit_every: int = Field(0, ge=0)
    # Vendor deviations from the OneRoster 1.2 gradebook spec (all off: the default SIS follows it).
    ignores_filter: bool = Field(False, description="listings ignore `filter` and return every record")
    put_status: Literal[201, 200, 204] = Field(201, description="PUT success: 201 no body (spec), 200 or 204")
    conflict_on_duplicate: bool = Field(False, description="409 on a PUT creating a second result for a pair")
    drop_after_writes: int = Field(0, ge=0, description="drop the connection after this many writes (0: never)")
    drops: int = Field(1, ge=1, description="how many writes are dropped then")
    drop_applies_write: bool = Field(True, description="a dropped write lands before its answer is lost")


class WriteBack(Strict):
    enabled: bool = Field(False, description="write differing LMS grades to the SIS (off by default)")
    dry_run: bool = Field(False, description="log what would be written (outcome would_write), write nothing")


class SisConfig(Strict):
    """A school's SIS holding the grades of record (OneRoster 1.2 gradebook)."""

    id: str = Field(pattern=CONNECTION_ID_PATTERN)
    provider: Literal["oneroster"]
    base_url: str | None = Field(None, description="absent: the embedded SIS simulator on 127.0.0.1")
    token_url: str | None = Field(None, description="OAuth2 token endpoint; default {base_url}/oauth/token")
    client_id_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    client_secret_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    student_map: str = Field("data/grades/student_map.csv", description="analyst-edited LMS user -> SIS user rows")
    assignment_map: str = Field(
        "data/grades/assignment_map.csv", description="analyst-edited LMS content -> SIS line item rows"
    )
    grading_schemes: str = Field("data/grades/grading_schemes.yaml", description="letter schemes per course")
    score_tolerance: float = Field(0.5, ge=0, le=10, description="percentage points within which scores match")
    write_back: WriteBack = WriteBack()
    retry: RetryOptions = RetryOptions()
    simulator: SisSimulator | None = None

    @field_validator("base_url", "token_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @property
    def embedded(self) -> bool:
        return self.base_url is None

    def credentials(self) -> tuple[str, str] | None:
        """(client id, client secret) from the environment variables the file names (None when either is unset)."""
        client_id, secret = os.environ.get(self.client_id_env), os.environ.get(self.client_secret_env)
        return (client_id, secret) if client_id and secret else None

    def path(self, name: str) -> Path:
        """One of the files this SIS entry names, relative to the repo root unless absolute."""
        raw = Path(getattr(self, name))
        return raw if raw.is_absolute() else REPO_ROOT / raw


class Settings(Strict):
    start_date: date = Field(description="first daily partition")
    warehouse: str = Field("data/lms_warehouse.duckdb", description="DuckDB file, relative to the repo root")
    connections: list[AnyConnection] = Field(min_length=1)
    sis: list[SisConfig] = Field(default_factory=list, description="SIS tenants grades are reconciled against")
    checks: ChecksOptions = ChecksOptions()
    freshness: FreshnessOptions = FreshnessOptions()
    alerts: AlertsOptions = AlertsOptions()
    retention: RetentionOptions = RetentionOptions()
    exports: ExportsOptions = ExportsOptions()

    @field_validator("warehouse")
    @classmethod
    def _not_named_like_a_schema(cls, value: str) -> str:
        # DuckDB names the catalog after the file: "lms.duckdb" with the schema "lms" makes "lms.<table>" ambiguous.
        if Path(value).stem in ("lms", "lms_staging"):
            raise ValueError(
                f"a file named {Path(value).name!r} clashes with the warehouse's schema of the same name "
                "(DuckDB names the catalog after the file); name it otherwise, e.g. warehouse.duckdb"
            )
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> Settings:
        seen: set[str] = set()
        for conn in self.connections:
            if conn.id in seen:
                raise ValueError(f"connection id {conn.id!r} appears more than once")
            seen.add(conn.id)
        sis_ids = [s.id for s in self.sis]
        if len(set(sis_ids)) != len(sis_ids):
            raise ValueError(f"an sis id appears more than once in {sis_ids}")
        for conn in self.connections:
            if conn.grades is not None and conn.grades.sis not in sis_ids:
                raise ValueError(f"connection {conn.id!r}, field 'grades.sis': no sis entry {conn.grades.sis!r}")
        for conn in self.connections:
            if conn.rosters is not None and (conn.grades is None or conn.grades.sis != conn.rosters.sis):
                # The identity of a student (mapping file, then exact email) comes from the grade reconciliation's
                # inputs: the LMS student list it stores and its student mapping file.
                raise ValueError(f"connection {conn.id!r}, field 'rosters.sis': {conn.rosters.sis!r} must also be "
                                 "the connection's 'grades.sis' (the roster reconciliation matches students with "
                                 "the grade reconciliation's student list and mapping file)")  # fmt: skip
        for sis in self.sis:
            users = [c for c in self.connections if c.grades and c.grades.sis == sis.id]
            if sis.embedded and (len(users) != 1 or not users[0].embedded):
                raise ValueError(f"sis {sis.id!r}: the embedded SIS simulator mirrors one embedded connection's "
                                 f"world; {len(users)} connection(s) name it in 'grades.sis'")  # fmt: skip
        return self

    def sis_of(self, connection_id: str) -> SisConfig | None:
        """The SIS this connection's grades are reconciled against, if any."""
        conn = self.connection(connection_id)
        return next((s for s in self.sis if conn.grades and s.id == conn.grades.sis), None)

    def roster_sis_of(self, connection_id: str) -> SisConfig | None:
        """The SIS whose rostering this connection's rosters are reconciled against, if any."""
        conn = self.connection(connection_id)
        return next((s for s in self.sis if conn.rosters and s.id == conn.rosters.sis), None)

    def connection(self, connection_id: str) -> ConnectionConfig:
        for conn in self.connections:
            if conn.id == connection_id:
                return conn
        raise KeyError(f"no connection {connection_id!r} in the connections file")

    @property
    def connection_ids(self) -> list[str]:
        return [c.id for c in self.connections]

    def warehouse_path(self) -> Path:
        """The live DuckDB file: ``LMS_PIPELINE_DUCKDB`` wins over the file's ``warehouse`` entry."""
        raw = os.environ.get(DUCKDB_ENV) or self.warehouse
        path = Path(raw)
        return path if path.is_absolute() else REPO_ROOT / path

    def exports_path(self) -> Path:
        """Root of the daily exports: ``exports.path`` (relative to the repo root), else exports/ beside the
        warehouse file (data/exports for the default warehouse)."""
        if self.exports.path is None:
            return self.warehouse_path().parent / "exports"
        path = Path(self.exports.path)
        return path if path.is_absolute() else REPO_ROOT / path


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_settings(path: Path | str | None = None) -> Settings:
    """Read and validate the connections file (default: ``LMS_PIPELINE_CONFIG`` or data/connections.yaml)."""
    path = Path(path) if path is not None else config_path()
    try:
        raw = yaml.load(path.read_text(), Loader=UniqueKeyLoader)  # a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"{path}: connections file not found (set {CONFIG_ENV} or create it)") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'start_date' and 'connections'")
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(path, raw, exc)) from None


def _describe(path: Path, raw: dict[str, Any], exc: ValidationError) -> str:
    """Turn pydantic's locations into 'connection <id>, field <a.b>' phrases."""
    lines = [f"{path}: invalid connections file"]
    connections = raw.get("connections") if isinstance(raw.get("connections"), list) else []
    sis_entries = raw.get("sis") if isinstance(raw.get("sis"), list) else []
    for err in exc.errors():
        loc = list(err["loc"])
        where = "top level"
        if len(loc) >= 2 and loc[0] == "connections" and isinstance(loc[1], int):
            idx = loc[1]
            entry = connections[idx] if idx < len(connections) else None
            cid = entry.get("id") if isinstance(entry, dict) else None
            where = f"connection {cid!r} (connections[{idx}])" if cid else f"connections[{idx}]"
            loc = loc[2:]
            if loc and loc[0] in PROVIDERS:  # the discriminated union's tag, not a field
                loc = loc[1:]
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc = ["provider"]
        elif len(loc) >= 2 and loc[0] == "sis" and isinstance(loc[1], int):
            idx = loc[1]
            entry = sis_entries[idx] if idx < len(sis_entries) else None
            sid = entry.get("id") if isinstance(entry, dict) else None
            where = f"sis {sid!r} (sis[{idx}])" if sid else f"sis[{idx}]"
            loc = loc[2:]
        field = ".".join(str(p) for p in loc) or "(entry)"
        lines.append(f"  - {where}, field '{field}': {err['msg']}")
    return "\n".join(lines)
