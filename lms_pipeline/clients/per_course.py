"""One paged scan per course for objects listed by ``course_id`` (contents, activities), a few courses at a time.

Cost is one request per course and endpoint plus any further pages: O(courses + pages), never one per student.
Concurrency is bounded: ``concurrency`` workers, each with its own client (its own retries and 429 backoff), so a
rate-limited provider sees at most that many requests in flight from one connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields

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
    *,
    concurrency: int = 2,
) -> PerCourseScan:
    """Page every endpoint in ``params`` once per course (``course_id`` filter); any failure raises, so a caller
    stores all or nothing. An endpoint answering 501 for the first course is recorded as unsupported and skipped.
    """
    result = PerCourseScan()
    endpoints = list(params)
    if not course_ids:
        return result
    first, rest = course_ids[0], list(course_ids[1:])
    probe: list[tuple[str, Page]] = []
    with open_client() as client:  # the first course alone: finds unsupported endpoints with one request each
        for endpoint in list(endpoints):
            try:
                probe += [(first, p) for p in client.iter_pages(endpoint, {**params[endpoint], "course_id": first})]
            except LmsFetchError as exc:
                if exc.status != NOT_SUPPORTED_STATUS:
                    raise
                endpoints.remove(endpoint)
                result.unsupported.append(endpoint)
        _add(result.stats, client.stats)
    chunks = [rest[k::concurrency] for k in range(concurrency)]

    def work(chunk: list[str]) -> tuple[list[tuple[str, Page]], FetchStats]:
        out: list[tuple[str, Page]] = []
        with open_client() as client:
            for course in chunk:
                for endpoint in endpoints:
                    out += [(course, p) for p in client.iter_pages(endpoint, {**params[endpoint], "course_id": course})]
            return out, client.stats

    pages = probe
    if endpoints and rest:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="per-course") as pool:
            for chunk_pages, stats in pool.map(work, [c for c in chunks if c]):  # re-raises a worker's error
                pages += chunk_pages
                _add(result.stats, stats)
    order = {course: i for i, course in enumerate(course_ids)}
    result.pages = sorted(pages, key=lambda cp: (order[cp[0]], endpoints.index(cp[1].endpoint), cp[1].offset))
    return result


def _add(total: FetchStats, part: FetchStats) -> None:
    for f in fields(FetchStats):
        setattr(total, f.name, getattr(total, f.name) + getattr(part, f.name))
