"""A Unified connection's course contents and learner activities: one paged scan per course and endpoint
(``course_id`` filter), under the connection's request budget.

Cost is one request per course and endpoint plus any further pages: O(courses + pages), never one per student.
One client serves every listing, so one budget (``RequestBudget``) bounds the requests in flight and one throttled
answer pauses them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace

from lms_pipeline.providers.base import OpenClient, ProgressScan, RawPage
from lms_pipeline.providers.http import LmsFetchError, run_bounded
from lms_pipeline.providers.unified.client import UnifiedLmsClient
from lms_pipeline.providers.unified.options import UnifiedOptions

NOT_SUPPORTED_STATUS = 501  # a Unified.to integration without the object

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


def scan_per_course(
    open_client: Callable[[], AbstractContextManager[UnifiedLmsClient]],
    course_ids: Sequence[str],
    params: Mapping[str, Mapping[str, object]],
) -> ProgressScan:
    """Page every endpoint in ``params`` once per course (``course_id`` filter), up to the client's
    ``max_concurrent_requests`` at once; pages come in course order, then ``params`` order, then offset. Any
    failure raises, so a caller stores all or nothing. An endpoint answering 501 for the first course is recorded
    as unsupported and skipped.
    """
    result = ProgressScan()
    if not course_ids:
        return result
    endpoints = list(params)
    first = course_ids[0]
    with open_client() as client:
        result.stats = client.stats

        def listing(course: str, endpoint: str) -> list[RawPage]:
            return [replace(p, course_id=course) for p in client.iter_pages(endpoint, {**params[endpoint],
                                                                                     "course_id": course})]  # fmt: skip

        # The first course alone: finds unsupported endpoints with one request each, before the fan-out.
        for endpoint in list(endpoints):
            try:
                result.pages += listing(first, endpoint)
            except LmsFetchError as exc:
                if exc.status != NOT_SUPPORTED_STATUS:
                    raise
                endpoints.remove(endpoint)
                result.unsupported.append(endpoint)
        tasks = [(lambda c=course, e=endpoint: listing(c, e)) for course in course_ids[1:] for endpoint in endpoints]
        for pages in run_bounded(tasks, client.budget):
            result.pages += pages
    return result
