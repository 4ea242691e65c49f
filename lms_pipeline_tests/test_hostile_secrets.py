"""Nothing leaked to a hostile server, nothing a server echoes kept: every client against the hostile server on
127.0.0.1, where credentials in a URL, a next link to another origin and a token echoed in a field are tried."""

from __future__ import annotations

import pytest

from lms_pipeline_tests.hostile_client import outcome
from lms_pipeline_tests.hostile_server import HostileServer

TOKEN = "tok-hostile-0123456789abcdef"  # the bearer token, or the client secret of the OAuth dialects
PASSWORD = "pw-in-url-s3cret"
DIALECTS = ["unified", "canvas", "classroom", "lti", "sis", "oneroster"]
LINKED = ["canvas", "lti", "sis", "oneroster"]  # the dialects that page by following Link rel="next"
FIRST_ENDPOINT = {"unified": "course", "canvas": "courses", "classroom": "courses", "lti": "contexts",
                  "sis": "courses", "oneroster": "courses"}  # fmt: skip


def spec(dialect: str, url: str, **more: object) -> dict:
    return {"dialect": dialect, "base_url": url, "token": TOKEN, "max_pages": 5, **more}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_token_the_server_echoes_is_never_in_what_the_client_returns(dialect: str) -> None:
    with HostileServer("echo_token") as server:
        got = outcome(spec(dialect, server.url, secrets=[TOKEN, server.token]))
        assert got["ok"], got
        assert server.saw(TOKEN) or server.saw(server.token), "the server was asked with the credential"
    assert got["leaked"] == [], f"{dialect}: stored pages hold {got['leaked']}"


@pytest.mark.parametrize("dialect", LINKED)
def test_a_next_link_to_another_origin_is_refused_before_the_token_is_sent(dialect: str) -> None:
    with HostileServer("ok") as foreign, HostileServer("foreign_next", foreign_url=foreign.url) as server:
        got = outcome(spec(dialect, server.url))
        assert foreign.requests == [], f"{dialect}: the foreign origin was asked: {foreign.requests}"
    assert not got["ok"]
    message = got["message"]
    assert "'hostile-" in message and FIRST_ENDPOINT[dialect] in message, message
    assert foreign.url in message and "origin" in message, message  # the foreign origin, port included
    assert TOKEN not in message and server.token not in message


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_base_url_with_credentials_is_refused_before_anything_is_sent(dialect: str) -> None:
    # httpx would send pipeline:PASSWORD as Basic auth in place of the bearer token, and the URL would be stored
    # with every page. The connections file refuses such a URL (test_config); the clients refuse it too.
    with HostileServer("ok") as server:
        url = server.url.replace("http://", f"http://pipeline:{PASSWORD}@")
        got = outcome(spec(dialect, url, secrets=[PASSWORD, TOKEN]))
        assert server.requests == [], f"{dialect}: the server was asked: {server.requests[:1]}"
    assert not got["ok"] and "credentials" in got["message"], got
    assert "'hostile-" in got["message"], got["message"]
    assert got["leaked"] == [], got["message"]
