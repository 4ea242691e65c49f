"""One paged scan per course for objects listed by ``course_id`` (contents, activities), under the connection's
request budget.

Cost is one request per course and endpoint plus any further pages: O(courses + pages), never one per student.
One client serves every listing, so one budget (``lms_pipeline.clients.budget``) bounds the requests in flight
and one throttled answer pauses them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from lms_pipeline.clients.budget import run_bounded
from lms_pipeline.clients.errors import LmsFetchError
from lms_pipeline.clients.http import FetchStats
from lms_pipeline.clients.unified import Page, UnifiedLmsClient

NOT_SUPPORTED_STATUS = 501  # a Unified.to integration without the object


@dataclass
class PerCourseScan:
    pages: list[tuple[str, Page]] = field(default_factory=list)  # (course_id, page), in a stable order
    unsupported: list[str] = field(default_factory=list)  # endpoints the integration lacks (answered 501)
    stats: FetchStats = field(default_factory=FetchStats)


def scan_per_course(
    open_client: Callable[[], AbstractContextManager[UnifiedLmsClient]],
    course_ids: Sequence[str],
    params: Mapping[str, Mapping[str, object]],
) -> PerCourseScan:
    """Page every endpoint in ``params`` once per course (``course_id`` filter), up to the client's
    ``max_concurrent_requests`` at once; pages come in course order, then ``params`` order, then offset. Any
    failure raises, so a caller stores all or nothing. An endpoint answering 501 for the first course is recorded
    as unsupported and skipped.
    """
    result = PerCourseScan()
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
