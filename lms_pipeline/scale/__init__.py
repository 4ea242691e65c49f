"""Scale-out on engines that already do it (issue 18): a PostgreSQL Dagster instance, Celery workers for steps, one
lake many writers share (a catalog in PostgreSQL, Parquet files) and connection groups as partitions.

Nothing here is imported by the single-machine default (``lms_pipeline.definitions``): ``make demo`` and
``make test`` keep the embedded SQLite instance and one DuckDB file. See docs/scale-out.md.
"""
