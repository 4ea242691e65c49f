"""pandera models, one per table the pipeline writes: the schema is the data dictionary, the DuckDB DDL and the gate
before any write. ``models.py`` names them; ``pages``, ``rosters``, ``progress`` and ``grades`` define them;
``checks.py`` checks a frame or a stored partition against them; ``ddl.py`` turns them into DuckDB columns."""

from lms_pipeline.schemas.checks import SchemaViolation, check_stored, constraint_violation, validate
from lms_pipeline.schemas.grades import DISCREPANCY_STATUSES, GRADE_STATUSES, SYNC_OUTCOMES
from lms_pipeline.schemas.models import MODELS

__all__ = [
    "DISCREPANCY_STATUSES",
    "GRADE_STATUSES",
    "MODELS",
    "SYNC_OUTCOMES",
    "SchemaViolation",
    "check_stored",
    "constraint_violation",
    "validate",
]
