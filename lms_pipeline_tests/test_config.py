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
