"""What the spec contract tests share: a WSGI recorder that keeps every request and answer as they crossed the
wire, and validators for the JSON Schemas in ``spec_schemas/`` (written from docs/providers.md §9)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import jsonschema

SCHEMAS = Path(__file__).parent / "spec_schemas"

# jsonschema checks "uri" and "date-time" only with optional packages the lock does not hold: these two say what
# the specs mean (an absolute URI; an ISO 8601 date-time with its zone).
FORMATS = jsonschema.FormatChecker()


@FORMATS.checks("uri")
def _absolute_uri(value: object) -> bool:
    parts = urlsplit(str(value))
    return bool(parts.scheme and (parts.netloc or parts.path))


@FORMATS.checks("date-time", raises=ValueError)
def _zoned_date_time(value: object) -> bool:
    return datetime.fromisoformat(str(value)).tzinfo is not None


def load_schema(name: str) -> dict:
    return json.loads((SCHEMAS / name).read_text())


def violations(document: dict, definition: str, instance: object, shown: int = 5) -> list[str]:
    """The first ``shown`` ways ``instance`` breaks ``#/$defs/<definition>`` of ``document``, path first."""
    validator = jsonschema.Draft202012Validator({**document, "$ref": f"#/$defs/{definition}"}, format_checker=FORMATS)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in
            validator.iter_errors(instance)][:shown]  # fmt: skip


class Exchange(NamedTuple):
    """One request and its answer, as they crossed the wire."""

    method: str
    path: str
    query: str
    headers: dict[str, str]  # request headers, lower-case names
    body: bytes
    status: int
    response_headers: dict[str, str]  # lower-case names
    response_body: bytes


class Recorder:
    """WSGI middleware keeping every exchange with the app it wraps."""

    def __init__(self, app: Callable) -> None:
        self.app, self.exchanges = app, []

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(body)
        answer: dict = {}

        def record_start(status: str, headers: list, exc_info: object = None) -> object:
            answer.update(status=int(status.split()[0]), headers={k.lower(): v for k, v in headers})
            return start_response(status, headers, exc_info)

        payload = b"".join(self.app(environ, record_start))
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        self.exchanges.append(Exchange(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                                       environ.get("QUERY_STRING", ""), headers, body, answer["status"],
                                       answer["headers"], payload))  # fmt: skip
        return [payload]
