"""The embedded systems of a connections file: every embedded connection's world served by its provider's simulator
app (``/lms``, ``/canvas``, ``/classroom``, ``/oneroster``, ``/lti``) and every embedded SIS (``/sis``), behind one
WSGI router on 127.0.0.1: what the tests, the demo and the simulator CLI serve, and what ``definitions.py`` points
the embedded connections at. Nothing here imports Dagster.
"""

from __future__ import annotations

import atexit
import secrets
import threading
from contextlib import ExitStack
from typing import Any

from lms_pipeline.config import ConnectionConfig, Settings, SisConfig
from lms_pipeline.grade_inputs import load_schemes
from lms_pipeline.providers import registry
from lms_pipeline.providers.base import Endpoint
from lms_pipeline.simulator.server import Router, serve_in_thread
from lms_pipeline.simulator.world import World, WorldSpec


def world_spec(settings: Settings, conn: ConnectionConfig) -> WorldSpec:
    params = conn.world.model_dump()
    params["start_date"] = params["start_date"] or settings.start_date
    return WorldSpec(connection_id=conn.id, **params)


def sis_world(settings: Settings, sis: SisConfig, lms_world: World) -> Any:
    """The embedded SIS mirroring the one embedded connection that names it; it grades letter line items with
    the same scheme file the pipeline reads, as a real SIS would have its own scheme."""
    conn = next(c for c in settings.connections if c.grades and c.grades.sis == sis.id)
    schemes, courses = load_schemes(sis.path("grading_schemes"), conn.id)

    def scheme_for(course_id: str):  # noqa: ANN202 (a GradingScheme or None)
        name = courses.get(course_id, courses.get("*"))
        return schemes.get(name) if name else None

    return registry.provider(sis.provider).sis.world(sis, lms_world, scheme_for)


def simulated_systems(
    settings: Settings, tokens: dict[str, str], sis_credentials: dict[str, tuple[str, str]]
) -> tuple[Router, dict[str, World]]:
    """Every embedded connection's world in its provider's dialect and every embedded SIS, behind one router."""
    embedded = [c for c in settings.connections if c.embedded]
    worlds = {c.id: World(world_spec(settings, c)) for c in embedded}
    apps: dict[str, Any] = {}
    for provider in registry.PROVIDERS.values():
        served = [c for c in embedded if provider.serves(c)]
        credentials = {c.id: provider.simulator_credentials(c, tokens[c.id]) for c in served}
        apps[provider.mount] = provider.simulator_app([worlds[c.id] for c in served], credentials)
    sis_list = [s for s in settings.sis if s.embedded]
    for sis_source in {p.sis.mount: p.sis for p in registry.PROVIDERS.values() if p.sis is not None}.values():
        entries = [s for s in sis_list if registry.provider(s.provider).sis is sis_source]
        mirrored = [next(c.id for c in embedded if c.grades and c.grades.sis == s.id) for s in entries]
        apps[sis_source.mount] = sis_source.simulator_app(
            [sis_world(settings, s, worlds[c]) for s, c in zip(entries, mirrored, strict=True)],
            {s.id: sis_credentials[s.id] for s in entries},
        )
    return Router(apps), worlds


class _EmbeddedServer:
    """One server per process for the connections without a base_url, served on 127.0.0.1 (real HTTP).

    A connection whose token env var is unset gets an ephemeral per-process token shared by client and simulator,
    so the demo runs with no secrets set while live connections still require theirs.
    """

    _lock = threading.Lock()
    _servers: dict[tuple, tuple[str, dict, dict[str, World], Router]] = {}
    _stack = ExitStack()

    @classmethod
    def serve(cls, settings: Settings) -> tuple[str, dict, dict[str, World], Router]:
        embedded = [c for c in settings.connections if c.embedded]
        sis_list = [s for s in settings.sis if s.embedded]
        # The key holds what defines the worlds, not options such as write_back: the SIS keeps its written
        # grades when an operator switches write-back on between runs.
        key = (tuple((c.id, c.provider, repr(world_spec(settings, c)), c.token_env, c.grades and c.grades.source)
                     for c in embedded),
               tuple((s.id, repr(s.simulator), s.grading_schemes) for s in sis_list))  # fmt: skip
        with cls._lock:
            if key not in cls._servers:
                tokens: dict = {c.id: c.secret() or secrets.token_urlsafe(24) for c in embedded}
                credentials = {s.id: s.credentials() or ("lms-pipeline", secrets.token_urlsafe(24)) for s in sis_list}
                router, worlds = simulated_systems(settings, tokens, credentials)
                tokens.update({("sis", sis): pair for sis, pair in credentials.items()})
                base_url = cls._stack.enter_context(serve_in_thread(router, host="127.0.0.1", port=0))
                cls._servers[key] = (base_url, tokens, worlds, router)
            return cls._servers[key]


atexit.register(_EmbeddedServer._stack.close)


def connection_endpoint(settings: Settings, conn: ConnectionConfig, provider: Any) -> Endpoint:
    """Where ``provider``'s client of the embedded connection ``conn`` sends its requests, and its token."""
    server, tokens, _, _ = _EmbeddedServer.serve(settings)
    return Endpoint(provider.embedded_base_url(server, conn.id), tokens[conn.id])


def sis_endpoint(settings: Settings, sis: SisConfig) -> tuple[str, tuple[str, str]]:
    """(base URL, (client id, client secret)) of an embedded SIS."""
    server, secrets_by_system, _, _ = _EmbeddedServer.serve(settings)
    mount = registry.provider(sis.provider).sis.mount
    return f"{server}/{mount}/{sis.id}", secrets_by_system[("sis", sis.id)]


def embedded_worlds(settings: Settings) -> dict[str, World]:
    """The worlds this process's embedded server serves: their truth includes the mid-scan churn it applied,
    which a fresh World would not know."""
    return _EmbeddedServer.serve(settings)[2]


def embedded_sis(settings: Settings) -> Any:
    """The embedded SIS app of this process (tests read its worlds' truth and request log)."""
    (sis_app,) = [
        _EmbeddedServer.serve(settings)[3].apps[p.sis.mount] for p in registry.PROVIDERS.values() if p.sis is not None
    ]
    return sis_app
