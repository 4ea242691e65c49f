"""What the Dagster UI shows of every table asset: its column schema (from the pandera model) and its table name."""

from __future__ import annotations

import warnings

import dagster as dg
from dagster_pandera import pandera_schema_to_dagster_type

from lms_pipeline.schemas import MODELS
from lms_pipeline.warehouse import table


def table_metadata(name: str) -> dict:
    """Static metadata: the UI's Columns tab reads only ``dagster/column_schema``."""
    with warnings.catch_warnings():  # beta API, pinned version: the warning tells operators nothing
        warnings.simplefilter("ignore", dg.BetaWarning)
        schema = pandera_schema_to_dagster_type(MODELS[name]).metadata["schema"].schema
    return {"dagster/column_schema": schema, "dagster/table_name": table(name)}


def table_spec(name: str, deps: list, description: str) -> dg.AssetSpec:
    """An output of a multi-asset: one warehouse table, described for the UI."""
    return dg.AssetSpec(name, deps=deps, kinds={"duckdb"}, metadata=table_metadata(name), description=description)
