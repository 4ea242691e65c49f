"""Read one listing with one of the project's clients and report what happened, for the hostile-server tests.

``outcome(spec)`` runs in the test's process; ``outcome_in_child(spec, timeout)`` runs it in a child Python process,
so a client that never returns is killed (and the test fails saying so instead of hanging) and the peak memory
(``ru_maxrss``) is the client's own, not the test runner's. The child's address space is capped (``RLIMIT_AS``) so
a client that inflates a bomb fails with MemoryError instead of taking the machine.

A spec: ``{"dialect": unified|canvas|classroom|lti|sis|oneroster, "base_url", "token", "retry": {RetrySettings
fields}, "max_pages", "secrets": [texts that must not appear in anything the client returned]}``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

from lms_pipeline.providers.canvas.client import CanvasClient
from lms_pipeline.providers.classroom.client import ClassroomClient
from lms_pipeline.providers.http import LmsClientError, RetrySettings
from lms_pipeline.providers.lti_ags.client import LtiAgsClient
from lms_pipeline.providers.oneroster.client import OneRosterClient
from lms_pipeline.providers.oneroster.rostering import OneRosterRosterReader
from lms_pipeline.providers.unified.client import UnifiedLmsClient

CHILD_ADDRESS_SPACE = 3 << 30  # bytes; far above the 500 MB a bounded client may use, far below the machine's


def _read(spec: dict[str, Any]) -> list[str]:
    """Every text the client handed back for the dialect's first listing: page URLs and payloads."""
    dialect, url, token = spec["dialect"], spec["base_url"], spec["token"]
    common = {"retry": RetrySettings(**{"base_delay": 0.01, "max_delay": 0.05, **spec.get("retry", {})}),
              "max_pages": spec.get("max_pages", 50)}  # fmt: skip
    if dialect == "unified":
        with UnifiedLmsClient("hostile-conn", url, token, page_size=10, **common) as client:
            return [json.dumps(p.items) for p in client.iter_pages("course")]
    if dialect == "sis":
        with OneRosterClient("hostile-sis", url, "pipeline-client", token, page_size=10, **common) as client:
            return [f"{p.url} {json.dumps(p.items)}" for p in client.iter_pages("rostering", "courses")]
    if dialect == "canvas":
        with CanvasClient("hostile-conn", url, token, per_page=10, **common) as client:
            pages = client.course_pages()
    elif dialect == "classroom":
        with ClassroomClient("hostile-conn", url, token, page_size=10, **common) as client:
            pages = list(client.iter_pages("courses"))
    elif dialect == "lti":
        with LtiAgsClient("hostile-conn", url, token, limit=10, **common) as client:
            pages = client.context_pages()
    elif dialect == "oneroster":
        with OneRosterRosterReader("hostile-conn", url, "pipeline-client", token, page_size=10, **common) as client:
            pages = client.course_pages()
    else:
        raise ValueError(f"unknown dialect {dialect!r}")
    return [f"{p.url} {p.payload}" for p in pages]


def outcome(spec: dict[str, Any]) -> dict[str, Any]:
    """What the client did: ``ok`` and the pages read, or the error it raised (type, message, endpoint); which of
    ``spec["secrets"]`` appear in anything it returned or raised; how long it took."""
    started = time.monotonic()
    texts: list[str] = []
    out: dict[str, Any] = {"ok": False, "pages": 0, "error": None, "message": None, "endpoint": None}
    try:
        texts = _read(spec)
        out.update(ok=True, pages=len(texts), texts=texts if sum(map(len, texts)) < 1 << 20 else None)
    except LmsClientError as exc:
        out.update(error=type(exc).__name__, message=str(exc), endpoint=exc.endpoint)
        texts = [str(exc), repr(exc.args)]
    except Exception as exc:  # noqa: BLE001 (reported, not handled: the test says which error it wanted)
        out.update(error=type(exc).__name__, message=str(exc)[:2000])
        texts = [str(exc)]
    out["leaked"] = [s for s in spec.get("secrets", []) if any(s in text for text in texts)]
    out["returned_bytes"] = sum(len(text) for text in texts)
    out["seconds"] = round(time.monotonic() - started, 3)
    return out


def outcome_in_child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """``outcome`` in a child process, plus its peak RSS (MB); fails the test if the child is still reading after
    ``timeout`` seconds (it is killed then)."""
    try:
        done = subprocess.run([sys.executable, "-m", __name__, json.dumps(spec)], capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the {spec['dialect']} client was still reading after {timeout:g}s (killed)") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise AssertionError(f"the child exited {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))
    result = outcome(json.loads(sys.argv[1]))
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
