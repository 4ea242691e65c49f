"""The connections file: clear errors that name the connection and the field."""

from __future__ import annotations

import pytest
import yaml

from lms_pipeline.config import ConfigError, load_settings


def write(tmp_path, data) -> str:
    path = tmp_path / "connections.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


def conn(**overrides) -> dict:
    return {"id": "canvas-east", "provider": "unified", "token_env": "LMS_TOKEN", **overrides}


def test_the_shipped_connections_file_is_valid() -> None:
    settings = load_settings()
    assert len(settings.connections) >= 3 and all(c.embedded for c in settings.connections)


def test_an_invalid_field_is_reported_with_connection_and_field(tmp_path) -> None:
    path = write(tmp_path, {"start_date": "2026-09-01",
                            "connections": [conn(), conn(id="moodle", options={"page_size": 500})]})  # fmt: skip
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert "connection 'moodle' (connections[1]), field 'options.page_size'" in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("connections", "needle"),
    [
        ([conn(), conn()], "appears more than once"),
        ([conn(id="bad|id")], "field 'id'"),
        ([conn(provider="schoology")], "field 'provider'"),
        ([conn(base_url="ftp://x")], "field 'base_url'"),
        (
            [conn(base_url="http://127.0.0.1:1", simulator={"seed": 1})],
            "'simulator' is only for the embedded",
        ),
        ([conn(options={"page_sise": 10})], "field 'options.page_sise': Extra inputs are not permitted"),
    ],
)
def test_bad_connections_are_refused_with_a_clear_reason(tmp_path, connections, needle) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_settings(write(tmp_path, {"start_date": "2026-09-01", "connections": connections}))
    assert needle in str(err.value)


def test_missing_or_broken_file_names_the_path(tmp_path) -> None:
    with pytest.raises(ConfigError, match="connections file not found"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(write(tmp_path, "connections: [\n"))


def test_env_var_overrides_the_duckdb_path(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LMS_PIPELINE_DUCKDB", str(tmp_path / "x.duckdb"))
    assert load_settings().warehouse_path() == tmp_path / "x.duckdb"


SECRET = "hunter2-s3cret"
LIVE_SIS = {"id": "district-sis", "provider": "oneroster", "base_url": "https://sis.example.org",
            "client_id_env": "SIS_ID", "client_secret_env": "SIS_SECRET"}  # fmt: skip


def url_fields(url: str) -> list[tuple[dict, str]]:
    """A connections file with ``url`` in one URL field, and how the error must name that place."""
    roster = conn(id="or-east", provider="oneroster", options={"client_id": "pipeline"})
    return [
        ({"connections": [conn(base_url=url)]}, "connection 'canvas-east' (connections[0]), field 'base_url'"),
        ({"connections": [{**roster, "options": {"client_id": "pipeline", "token_url": url}}]},
         "connection 'or-east' (connections[0]), field 'options.token_url'"),
        ({"connections": [conn(base_url="https://lms.example.org", grades={"sis": "district-sis",
                                                                             "source": "lti_ags",
                                                                             "lti_base_url": url})],
          "sis": [LIVE_SIS]}, "connection 'canvas-east' (connections[0]), field 'grades.lti_base_url'"),
        ({"connections": [conn()], "sis": [{**LIVE_SIS, "base_url": url}]},
         "sis 'district-sis' (sis[0]), field 'base_url'"),
        ({"connections": [conn()], "sis": [{**LIVE_SIS, "token_url": url}]},
         "sis 'district-sis' (sis[0]), field 'token_url'"),
    ]  # fmt: skip


@pytest.mark.parametrize(("data", "where"), url_fields(f"https://pipeline:{SECRET}@lms.example.org"))
def test_a_url_with_credentials_is_refused_naming_the_field_and_never_the_secret(tmp_path, data, where) -> None:
    # httpx would send user:password as Basic auth instead of the bearer token, and the URL (password included)
    # would be stored with every raw page and quoted in errors and logs.
    path = write(tmp_path, {"start_date": "2026-09-01", **data})
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert where in message and path in message and "credentials" in message, message
    assert SECRET not in message and "pipeline:" not in message, message


@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("http://[::1", "not a valid URL"),
        ("https://lms.example.org/api?access_token=" + SECRET, "query string"),
        ("https://lms.example.org/api#" + SECRET, "fragment"),
        ("https://:443/api", "no host"),
        ("https://lms.example.org:99999", "not a valid URL"),
    ],
)
def test_a_malformed_url_or_one_with_a_query_is_refused_naming_the_connection_and_field(tmp_path, url, cause) -> None:
    for data, where in url_fields(url):
        with pytest.raises(ConfigError) as err:
            load_settings(write(tmp_path, {"start_date": "2026-09-01", **data}))
        assert where in str(err.value) and cause in str(err.value), str(err.value)
        assert SECRET not in str(err.value)


def test_a_duplicate_key_is_refused_naming_the_key_and_both_lines(tmp_path) -> None:
    # A second write_back block would silently replace the first, turning dry_run: true off.
    text = """\
start_date: 2026-09-01
connections:
  - {id: canvas-east, provider: unified, token_env: LMS_TOKEN}
sis:
  - id: district-sis
    provider: oneroster
    base_url: https://sis.example.org
    client_id_env: SIS_ID
    client_secret_env: SIS_SECRET
    write_back:
      enabled: true
      dry_run: true
    write_back:
      enabled: true
"""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    message = str(err.value)
    assert path in message and "duplicate key 'write_back'" in message and "line 13" in message, message
    assert "line 10" in message, message


def test_yaml_merge_keys_still_work(tmp_path) -> None:
    text = """\
start_date: 2026-09-01
defaults: &defaults {provider: unified, token_env: LMS_TOKEN}
connections:
  - {<<: *defaults, id: canvas-east}
"""
    with pytest.raises(ConfigError, match="field 'defaults'"):  # the anchor's key is not a Settings field
        load_settings(write(tmp_path, text))
    text = """\
start_date: 2026-09-01
connections:
  - &east {id: canvas-east, provider: unified, token_env: LMS_TOKEN}
  - {<<: *east, id: canvas-west}
"""
    assert load_settings(write(tmp_path, text)).connection_ids == ["canvas-east", "canvas-west"]


def test_a_warehouse_file_named_like_the_schema_is_refused_naming_the_field(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "start_date: 2026-09-01\nwarehouse: data/lms.duckdb\n"
        "connections:\n  - id: c1\n    provider: unified\n    token_env: T\n"
    )
    with pytest.raises(ConfigError, match=r"field 'warehouse'.*'lms.duckdb' clashes with the warehouse's schema"):
        load_settings(path)
