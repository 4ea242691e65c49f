"""Every wait and every byte bounded: each client against a hostile server on 127.0.0.1 that trickles, bombs,
floods or nests, in a child process so a client that never returns is killed and its peak memory is its own.
Each ends in seconds with an error naming the connection, the request and the bound it hit."""

from __future__ import annotations

from datetime import date

import pytest
import yaml

from lms_pipeline.providers.http import LmsUnsafeResponseError
from lms_pipeline.resources import Endpoints, LmsApiResource
from lms_pipeline_tests.hostile_client import outcome, outcome_in_child
from lms_pipeline_tests.hostile_server import HostileServer

TOKEN = "tok-hostile-0123456789abcdef"
DIALECTS = ["unified", "canvas", "classroom", "lti", "sis", "oneroster"]
FIRST_ENDPOINT = {"unified": "course", "canvas": "courses", "classroom": "courses", "lti": "contexts",
                  "sis": "courses", "oneroster": "courses"}  # fmt: skip
CHILD_TIMEOUT = 40.0  # seconds: the hostile test fails (child killed) rather than hang
PEAK_RSS_MB = 500


def spec(dialect: str, url: str, **retry: float) -> dict:
    return {"dialect": dialect, "base_url": url, "token": TOKEN, "max_pages": 5, "retry": retry}


@pytest.mark.parametrize("behaviour", ["trickle", "trickle_headers"])
@pytest.mark.parametrize("dialect", ["unified", "canvas", "sis"])
def test_a_trickling_answer_is_cut_off_at_the_request_deadline(dialect: str, behaviour: str) -> None:
    # One byte every 0.25 s never trips a 5 s read timeout (httpx times each read, not the request): without a
    # total deadline the page would take minutes.
    with HostileServer(behaviour, trickle_seconds=0.25) as server:
        got = outcome_in_child(spec(dialect, server.url, timeout=5.0, deadline=2.0), CHILD_TIMEOUT)
    assert not got["ok"], got
    assert "'hostile-" in got["message"] and "deadline" in got["message"], got["message"]
    assert got["seconds"] < 15, got


@pytest.mark.parametrize("dialect", ["unified", "canvas", "sis"])
def test_a_gzip_bomb_is_stopped_at_the_size_cap_not_after_inflating(dialect: str) -> None:
    with HostileServer("gzip_bomb") as server:  # ~0.6 MB on the wire, 600 MB inflated
        got = outcome_in_child(spec(dialect, server.url), CHILD_TIMEOUT)
    assert not got["ok"], {k: v for k, v in got.items() if k != "message"}
    assert "max_response_mb" in (got["message"] or "") and "'hostile-" in got["message"], got["message"]
    assert got["peak_rss_mb"] < PEAK_RSS_MB, got


@pytest.mark.parametrize("behaviour", ["huge_page", "huge_declared"])
@pytest.mark.parametrize("dialect", ["unified", "canvas", "sis"])
def test_a_50_mb_page_is_refused_not_stored(dialect: str, behaviour: str) -> None:
    with HostileServer(behaviour) as server:
        got = outcome_in_child(spec(dialect, server.url), CHILD_TIMEOUT)
    assert not got["ok"], {k: v for k, v in got.items() if k != "message"}
    assert "max_response_mb" in (got["message"] or "") and "'hostile-" in got["message"], got["message"]
    assert got["peak_rss_mb"] < PEAK_RSS_MB, got


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw_deflate"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_compressed_page_is_read_exactly_as_sent(dialect: str, encoding: str) -> None:
    # The guard decodes gzip/deflate itself (to bound it): a well-behaved compressed page must come out unchanged.
    with HostileServer("ok") as server:
        plain = outcome(spec(dialect, server.url))
        server.behaviour = encoding
        compressed = outcome(spec(dialect, server.url))
    assert plain["ok"] and compressed["ok"], compressed
    assert compressed["texts"] == plain["texts"]


def test_an_encoding_the_client_did_not_ask_for_is_refused_by_name() -> None:
    with HostileServer("brotli") as server:
        got = outcome(spec("unified", server.url))
    assert got["error"] == "LmsUnsafeResponseError" and "'br'" in got["message"], got


@pytest.mark.parametrize("dialect", DIALECTS)
def test_deeply_nested_json_is_a_clear_error_naming_the_connection_and_endpoint(dialect: str) -> None:
    with HostileServer("deep_json") as server:
        got = outcome(spec(dialect, server.url))
    assert got["error"] != "RecursionError" and not got["ok"], got
    message = got["message"]
    assert "'hostile-" in message and "nested" in message and FIRST_ENDPOINT[dialect] in message, message


@pytest.mark.parametrize("dialect", DIALECTS)
def test_an_endless_listing_and_a_dropped_connection_end_in_errors_naming_the_connection(dialect: str) -> None:
    """The same full page forever ends at once (the second page, not max_pages) in an error naming the
    connection; a connection dropped mid-body ends at the retry budget."""
    with HostileServer("same_page_forever") as server:
        endless = outcome(spec(dialect, server.url))
        server.behaviour = "drop_mid_body"
        dropped = outcome(spec(dialect, server.url))
    stopped_by = "already read" if dialect in ("unified", "sis", "oneroster") else "repeats page 0"
    assert not endless["ok"] and stopped_by in endless["message"] and "'hostile-" in endless["message"], endless
    assert dropped["error"] == "LmsFetchError" and "'hostile-" in dropped["message"], dropped
    assert "peer closed connection" in dropped["message"], dropped


def test_the_connections_file_sets_each_clients_deadline_and_size_cap(tmp_path, monkeypatch) -> None:
    """``retry.request_deadline_seconds`` and ``retry.max_response_mb`` of a connection and of an SIS reach the
    clients the pipeline builds."""
    monkeypatch.setenv("HOSTILE_TOKEN", TOKEN)
    monkeypatch.setenv("HOSTILE_SIS_ID", "pipeline")
    with HostileServer("huge_declared") as server:
        limits = {"request_deadline_seconds": 1, "max_response_mb": 1, "base_delay_seconds": 0.01}
        config = {
            "start_date": "2026-09-01",
            "connections": [
                {
                    "id": "hostile-conn",
                    "provider": "unified",
                    "base_url": server.url,
                    "token_env": "HOSTILE_TOKEN",
                    "options": {"retry": limits},
                    "grades": {"sis": "hostile-sis"},
                }
            ],
            "sis": [
                {
                    "id": "hostile-sis",
                    "provider": "oneroster",
                    "base_url": server.url,
                    "client_id_env": "HOSTILE_SIS_ID",
                    "client_secret_env": "HOSTILE_TOKEN",
                    "retry": limits,
                }
            ],
        }
        path = tmp_path / "connections.yaml"
        path.write_text(yaml.safe_dump(config))
        lms = LmsApiResource(config_path=str(path), endpoints=Endpoints())  # live: both point at the hostile server
        day = date(2026, 9, 1)
        with lms.client("hostile-conn", day) as client, pytest.raises(LmsUnsafeResponseError, match="1 MB cap"):
            list(client.iter_pages("course"))
        server.behaviour = "trickle"
        with lms.sis_client("hostile-conn", day) as sis, pytest.raises(LmsUnsafeResponseError, match="1s deadline"):
            list(sis.iter_pages("rostering", "courses"))
