"""Connection groups keep a big deployment under Dagster's partition advice; the single-machine layout is unchanged."""

from __future__ import annotations

import pytest

from lms_pipeline.config import Settings, load_settings
from lms_pipeline.definitions import ROSTER_JOB, build_defs
from lms_pipeline.partitions import day_by_connection
from lms_pipeline.scale import groups
from lms_pipeline_tests.scale_support import demo_config


def _yearly_partitions(partitions_def) -> int:  # noqa: ANN001 - a MultiPartitionsDefinition
    """Partitions of one asset after a year: 365 days times the keys of the other dimension."""
    other = [d for d in partitions_def.partitions_defs if d.name != "date"][0]
    return 365 * len(other.partitions_def.get_partition_keys())


@pytest.fixture(scope="module")
def two_thousand(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(demo_config(tmp_path_factory.mktemp("config"), 2000))


def test_two_thousand_connections_kept_a_year_stay_well_under_the_partition_advice_when_grouped(two_thousand):
    settings = two_thousand
    by_connection = _yearly_partitions(day_by_connection(settings))
    grouped = _yearly_partitions(groups.day_by_group(settings, 100))
    assert by_connection == 730_000 > groups.DAGSTER_PARTITION_ADVICE
    assert grouped == 36_500 <= groups.DAGSTER_PARTITION_ADVICE / 2
    assert grouped == groups.partitions_per_year(2000, 100)


def test_every_connection_is_in_exactly_one_group_and_groups_are_balanced(two_thousand):
    ids = two_thousand.connection_ids
    by_group = groups.members(ids, 100)
    assert sorted(c for members in by_group.values() for c in members) == sorted(ids)
    sizes = [len(m) for m in by_group.values()]
    assert max(sizes) <= 2 * 2000 / 100 and min(sizes) >= 1


def test_adding_connections_never_moves_an_existing_connection_to_another_group():
    ids = [f"tenant-{i:04d}" for i in range(2000)]
    before = {c: groups.group_of(c, 100) for c in ids}
    after = groups.members([*ids, *(f"new-{i}" for i in range(300))], 100)
    assert {c: g for g, members in after.items() for c in members if c in before} == before


def test_the_single_machine_job_still_partitions_by_day_and_connection():
    settings = load_settings()
    job = build_defs(settings).resolve_job_def(ROSTER_JOB)
    names = {d.name for d in job.partitions_def.partitions_defs}
    assert names == {"date", "connection"}
    assert set(job.partitions_def.partitions_defs[0].partitions_def.get_partition_keys()) == set(
        settings.connection_ids
    )
