"""Models of the tables that store what was fetched: the raw pages (one column shape for rosters, progress and grades,
written by ``providers.pages.page_rows``) and the sync log. ``sql`` in a field's metadata names its DuckDB type where
the pandas dtype does not say it (``schemas.ddl``)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

UTC = {"unit": "us", "tz": "UTC"}
JSON = {"sql": "JSON"}
# Course pages keep their bodies uncompressed. DuckDB compresses long strings with ZSTD a vector (2,048 rows) at a
# time, so reading one page of a big day decompresses ~400 MB, and the normalizer reads a day in batches of pages
# (providers/unified/rosters.py, BATCH_BYTES) to bound its memory; uncompressed, a batch reads only its own pages. The
# cost is disk: the bodies as received, about 7x their ZSTD size (README, Performance). VARCHAR, not JSON: a refusal
# kept as a page is stored whatever its body (a OneRoster 403 need not be JSON); the normalizers judge every body.
UNCOMPRESSED_TEXT = {"sql": "VARCHAR USING COMPRESSION uncompressed"}
# A listing's name as its provider calls it. Which names a provider lists is its own (providers/<name>/): its
# normalizer refuses a page of a listing it does not know, so a new provider needs no change here.
LISTING_NAME = r"^[A-Za-z_]{1,64}$"


class _Partitioned(pa.DataFrameModel):
    connection_id: Series[str] = pa.Field(description="LMS connection the row came from (partition dimension)")
    snapshot_date: Series[pd.Timestamp] = pa.Field(description="day of the snapshot (partition dimension)")

    class Config:
        coerce = True
        strict = True


class _RawPage(_Partitioned):
    """The columns every stored page has: what was asked, when it came, and the body as fetched."""

    course_id: Series[str] = pa.Field(nullable=True, description="the course a per-course listing belongs to")
    page_index: Series[int] = pa.Field(ge=0, description="0-based position of the page in its listing")
    page_offset: Series[int] = pa.Field(ge=0, description="offset query parameter of the request (0 where paging "
                                        "follows links or tokens)")  # fmt: skip
    url: Series[str] = pa.Field(nullable=True, description="the URL requested (a next link as given); never a secret")
    request_params: Series[str] = pa.Field(description="query parameters sent, as JSON; never a secret", metadata=JSON)
    fetched_at: Series[pd.DatetimeTZDtype] = pa.Field(dtype_kwargs=UTC, description="when the response arrived")
    status_code: Series[int] = pa.Field(
        isin=[200, 401, 403],
        description="200, or 401/403: a listing refused (Canvas answers 401), kept as the reason it is unknown",
    )
    attempts: Series[int] = pa.Field(ge=1, description="attempts the page took (retries + 1)")
    item_count: Series[int] = pa.Field(ge=0, description="records on the page")
    payload: Series[str] = pa.Field(description="the response body as fetched (OneRoster: its records' array)",
                                    metadata=JSON)  # fmt: skip
    total_count: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, ge=0, description="a total the server announced (X-Total-Count, or the body's totalCount)",
        metadata={"sql": "BIGINT"},
    )  # fmt: skip
    run_id: Series[str] = pa.Field(nullable=True, description="Dagster run that fetched the page")


class RawCoursePage(_RawPage):
    """Every roster page of one connection's sync, whatever its provider: a refused roster's page is kept (it is
    why that roster is not_exposed)."""

    provider: Series[str] = pa.Field(description="the connection's provider (which normalizer reads the page)")
    endpoint: Series[str] = pa.Field(
        str_matches=LISTING_NAME,
        description="what was listed: Unified course or class; Canvas courses, enrollments, sections; Classroom "
        "courses, aliases, students; OneRoster courses, classes, academicSessions, enrollments",
    )
    payload: Series[str] = pa.Field(description="the response body as fetched (OneRoster: its records' array)",
                                    metadata=UNCOMPRESSED_TEXT)  # fmt: skip

    class Config:
        unique = ["connection_id", "snapshot_date", "endpoint", "course_id", "url", "page_index"]


class RawProgressPage(_RawPage):
    endpoint: Series[str] = pa.Field(isin=["content", "activity"], description="API object listed")
    course_id: Series[str] = pa.Field(description="the course_id filter of the request (one scan per course)")
    status_code: Series[int] = pa.Field(eq=200, description="HTTP status of the stored response")

    class Config:
        unique = ["connection_id", "snapshot_date", "endpoint", "course_id", "page_index"]


class RawGradePage(_RawPage):
    system: Series[str] = pa.Field(isin=["lms", "sis"], description="lms: the LMS student list; sis: the SIS")
    collection: Series[str] = pa.Field(
        str_matches=LISTING_NAME,
        description="object listed: the SIS's users, classes, lineItems, results; the LMS's student list (Unified), "
        "its courses, assignments, submissions and grading standards (Canvas), or its courses, aliases, students, "
        "courseWork and studentSubmissions (Google Classroom), or LTI contexts, lineitems, results and memberships",
    )  # fmt: skip

    class Config:
        unique = ["connection_id", "snapshot_date", "system", "collection", "course_id", "url", "page_index"]


class SyncLog(_Partitioned):
    mode: Series[str] = pa.Field(isin=["full", "incremental"], description="full scan or updated_gte poll")
    mode_reason: Series[str] = pa.Field(description="why this mode was chosen, in words")
    technique: Series[str] = pa.Field(
        description="how the listing was paged: keyset_updated_at, repeat_until_stable or single_pass (per endpoint "
        "when they differ, e.g. 'course=keyset_updated_at; class=repeat_until_stable')"
    )
    passes: Series[int] = pa.Field(ge=1, description="most full passes one endpoint needed (repeat_until_stable)")
    catch_up_rounds: Series[int] = pa.Field(
        ge=0, description="re-polls from each keyset endpoint's high-water mark until nothing newer came"
    )
    catch_up_converged: Series[bool] = pa.Field(
        description="false: the listing still changed after the last round (endpoints are as of their last read)"
    )
    updated_gte: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=UTC, description="updated_gte of an incremental poll (null for a full scan)"
    )
    high_water: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=UTC, description="newest updated_at the snapshot has seen: the next poll's start"
    )
    base_snapshot_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="snapshot an incremental poll's changes were applied to (null for a full scan)"
    )
    last_full_scan_date: Series[pd.Timestamp] = pa.Field(description="the full scan this snapshot descends from")
    courses_listed: Series[int] = pa.Field(ge=0, description="course records returned (duplicates included)")
    classes_listed: Series[int] = pa.Field(ge=0, description="class records returned (duplicates included)")
    requests: Series[int] = pa.Field(ge=0, description="HTTP requests sent, retries included")
    pages: Series[int] = pa.Field(ge=0, description="pages read, including discarded passes")
    retries: Series[int] = pa.Field(ge=0, description="requests retried")
    throttled: Series[int] = pa.Field(ge=0, description="429 answers")
    server_errors: Series[int] = pa.Field(ge=0, description="retryable 5xx answers")
    duration_seconds: Series[float] = pa.Field(ge=0, description="wall time of the fetch")
    run_id: Series[str] = pa.Field(nullable=True, description="Dagster run that fetched")

    class Config:
        unique = ["connection_id", "snapshot_date"]
