"""A Unified connection's course contents and learner activities: one paged scan per course and endpoint
(``course_id`` filter) under the connection's request budget (``per_course.py``)."""

from __future__ import annotations

from collections.abc import Sequence

from lms_pipeline.clients.per_course import scan_per_course
from lms_pipeline.providers.base import OpenClient, ProgressScan
from lms_pipeline.providers.unified.options import UnifiedOptions

CONTENT_FIELDS = ["id", "name", "course_ids", "is_active", "duration_minutes", "updated_at"]
# assigned_grade too: the grade reconciliation reads the same stored activity pages (one fetch, one raw store).
ACTIVITY_FIELDS = ["id", "course_id", "student_id", "content_id", "is_completed", "progress_percentage",
                   "started_at", "completed_at", "assigned_grade", "updated_at"]  # fmt: skip
# created_at order: a record updated while its course is paged keeps its place (where the integration sorts).
PARAMS = {
    "content": {"fields": CONTENT_FIELDS, "sort": "created_at", "order": "asc"},
    "activity": {"fields": ACTIVITY_FIELDS, "sort": "created_at", "order": "asc"},
}


class UnifiedProgress:
    """The ``ProgressSource`` of Unified connections (an integration without the objects answers 501)."""

    def disabled(self, options: UnifiedOptions) -> str | None:
        return None if options.fetch_progress else "disabled in the connections file (options.fetch_progress: false)"

    def scan(self, open_client: OpenClient, course_ids: Sequence[str], options: UnifiedOptions) -> ProgressScan:
        return scan_per_course(lambda: open_client(page_size=options.progress_page_size), course_ids, PARAMS)
