"""``python -m lms_pipeline.simulator serve``: serve the embedded connections' worlds on 127.0.0.1.

Point a connection at it with ``base_url: http://127.0.0.1:<port>`` and ``options.simulated_clock: true`` (the
pipeline then sends the partition date); tokens are read from each connection's ``token_env``.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date

from lms_pipeline.config import ConfigError, load_settings
from lms_pipeline.simulator.server import serve_forever
from lms_pipeline.simulator.systems import simulated_systems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lms_pipeline.simulator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the simulated LMS API over HTTP")
    serve.add_argument("--config", help="connections file (default: LMS_PIPELINE_CONFIG or data/connections.yaml)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--date", type=date.fromisoformat, help="as-of date when a request sends no date header")
    serve.add_argument("--latency-ms", type=float, default=0, help="added to every answer, as a real provider's")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    embedded = [c for c in settings.connections if c.embedded]
    missing = [c.token_env for c in embedded if not os.environ.get(c.token_env)]
    missing += [v for s in settings.sis if s.embedded for v in (s.client_id_env, s.client_secret_env)
                if not os.environ.get(v)]  # fmt: skip
    if missing:
        print(f"set the token env var(s) first: {', '.join(missing)}", file=sys.stderr)
        return 2
    router, _ = simulated_systems(
        settings,
        {c.id: os.environ[c.token_env] for c in embedded},
        {s.id: (os.environ[s.client_id_env], os.environ[s.client_secret_env]) for s in settings.sis if s.embedded},
    )
    if args.date:
        for app in router.apps.values():
            app.clock = lambda: args.date
    print(f"serving {', '.join(c.id for c in embedded)} on http://{args.host}:{args.port}/<dialect>/<connection>/..."
          " and the embedded SIS at /sis/<sis_id>/...")  # fmt: skip
    serve_forever(router, args.host, args.port, args.latency_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
