"""One paged scan per course for objects listed by ``course_id`` (contents, activities), under the connection's
request budget.

Cost is one request per course and endpoint plus any further pages: O(courses + pages), never one per student.
One client serves every listing, so one budget (``lms_pipeline.providers.http``) bounds the requests in flight
and one throttled answer pauses them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager

from lms_pipeline.clients.unified import Page, UnifiedLmsClient
from lms_pipeline.providers.base import ProgressScan
from lms_pipeline.providers.http import LmsFetchError, run_bounded

NOT_SUPPORTED_STATUS = 501  # a Unified.to integration without the object


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

        def listing(course: str, endpoint: str) -> list[tuple[str, Page]]:
            return [(course, p) for p in client.iter_pages(endpoint, {**params[endpoint], "course_id": course})]

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
