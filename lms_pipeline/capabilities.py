"""What each provider dialect exposes, as data: the pipeline reads it to choose full or incremental syncs and to
mark rosters it cannot see as not exposed, and the capability matrix in docs/providers.md is generated from it (a
test keeps the two equal). Facts from docs/providers.md; "used" says what lms-pipeline does with them today.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Capabilities:
    provider: str
    course_rosters: str  # how course-level membership is read
    section_rosters: str
    incremental_filter: str  # the provider's change filter, and whether the pipeline polls with it
    deletions_visible: str  # how a drop shows up
    not_exposed_signal: str  # what makes a roster unknown (never read as empty)
    grades: str
    grading_scheme: str
    write_back: str
    incremental_sync: bool  # the pipeline polls incrementally between full scans (else: a full scan every day)
    rosters_visible: bool = True  # False: every course is not_exposed, whatever the pages say


CAPABILITIES: dict[str, Capabilities] = {
    c.provider: c
    for c in (
        # Unified list options differ per integration and object (docs/providers.md §1.6, §9.4); the simulator has
        # a switch for each: WorldSpec.supports_updated_gte / supports_sort (Udemy, Teachable), ignores_paging
        # ("limit_offset": `-none-`, every answer the whole list, e.g. Moodle courses; "offset": the first page
        # served forever), rollover_days (a bulk update putting pages of records in one updated_at second),
        # unstable_ties (records tied on the sort key served in a new order per request).
        Capabilities(
            provider="unified",
            course_rosters="`Course.student_ids` / `students[]`, per course when the integration gives them",
            section_rosters="`Class.student_ids`, some integrations",
            incremental_filter="`updated_gte` (used: keyset polls between full scans; a bulk update in one second is "
            "paged with overlap); lists whose integration ignores `limit`/`offset` (`-none-`) are read whole "
            "(`unpaged_endpoints`)",
            deletions_visible="no tombstone: a student vanishes; a full scan diffs by id",
            not_exposed_signal="roster keys absent on the course",
            grades="`activity.assigned_grade` (used: lms_grades)",
            grading_scheme="no: configured per course (`grading_schemes.yaml`)",
            write_back="no (the SIS is written, over OneRoster)",
            incremental_sync=True,
        ),
        Capabilities(
            provider="canvas",
            course_rosters="the account's courses (`/accounts/:account_id/courses`, `options.account_id`, default "
            "`self`; the token needs `read_course_list`), then `/courses/:id/enrollments`: StudentEnrollment, explicit "
            "`state[]` (Rack reads only `k[]` as a list)",
            section_rosters="yes: `course_section_id` of each enrollment",
            incremental_filter="none for enrollments (full scan daily)",
            deletions_visible="`deleted`, `inactive`, `completed` states (not enrolled); `invited` is pending",
            not_exposed_signal="401 (or 403) `unauthorized` on a course's enrollments (the same 401 on the account's "
            "course list fails the run, naming the account and `read_course_list`)",
            grades="assignments and submissions (used: lms_grades; the score is compared, excused stays excused)",
            grading_scheme="`/courses/:id/grading_standards` (read and stored; letters use the configured scheme)",
            write_back="LTI AGS scores (not used)",
            incremental_sync=False,
        ),
        Capabilities(
            provider="oneroster",
            course_rosters="enrollments of each class (`role=student`, `status: active`, the day inside the optional "
            "`beginDate`..`endDate`, end excluded), union over the course's classes; no course active flag: a course "
            "is active while one of its classes is `active` and the day is inside one of its `terms` "
            "(`academicSessions` dates) and the course's `schoolYear`. Listings read to their end by `Link` next + "
            "`X-Total-Count`, or totals in the body (Timeback), or offsets to an empty page (a silently capped "
            "`limit` is never trusted); next links to the configured origin only",
            section_rosters="yes: classes",
            incremental_filter="`filter=dateLastModified>'...'` (not used yet: full scan daily)",
            deletions_visible="`status: tobedeleted` (legacy 1.0 `inactive`), an `endDate` that has passed (status "
            "left `active`), or rows vanish; all read as not enrolled. A stopped class: its term ended, or it is "
            "`tobedeleted`",
            not_exposed_signal="403 `forbidden` on a class's enrollments",
            grades="gradebook results (the SIS side of reconciliation)",
            grading_scheme="`scoreScales` (letter line items compared on `textScore`)",
            write_back="yes: `PUT /results/{sourcedId}` at an id minted from (line item, student); 201 with no "
            "body (200, 204 and 409 handled as vendor variants); never without proving whose result it is",
            incremental_sync=False,
        ),
        Capabilities(
            provider="google_classroom",
            course_rosters="`courses/{id}/students` (`pageToken`; the simulator's answers are checked against "
            "Google's discovery document)",
            section_rosters="no",
            incremental_filter="none (full scan daily)",
            deletions_visible="no tombstone: a student vanishes; a full scan diffs by id",
            not_exposed_signal="403 `PERMISSION_DENIED` on a course's students",
            grades="courseWork / studentSubmissions `assignedGrade` (used: lms_grades; a `draftGrade` never counts; no "
            "excused or text grade exists)",
            grading_scheme="no",
            write_back="`assignedGrade` (not used)",
            incremental_sync=False,
        ),
        Capabilities(
            provider="lti_ags",
            course_rosters="NRPS memberships (identity only: `lis_person_sourcedid`)",
            section_rosters="no",
            incremental_filter="none",
            deletions_visible="NRPS `status: Deleted` or `Inactive`",
            not_exposed_signal="403 on a service without its scope",
            grades="line items and results (`resultScore`/`resultMaximum`; used with `grades.source: lti_ags`); "
            "ungraded learners omitted; line item ids may carry a query (results: `/results` before it); every "
            'page found by `Link: rel="next"` alone, to the configured origin only',
            grading_scheme="no",
            write_back="scores (`POST {lineitem}/scores`; not used)",
            incremental_sync=False,
            rosters_visible=False,
        ),
    )
}

_COLUMNS = {
    "provider": "provider", "course_rosters": "course rosters", "section_rosters": "section rosters",
    "incremental_filter": "incremental filter", "deletions_visible": "deletions visible",
    "not_exposed_signal": "roster unknown when", "grades": "grades", "grading_scheme": "grading scheme",
    "write_back": "write-back",
}  # fmt: skip


def capabilities(provider: str) -> Capabilities:
    return CAPABILITIES[provider]


def markdown_table() -> str:
    """The capability matrix of docs/providers.md."""
    names = [f.name for f in fields(Capabilities) if f.name in _COLUMNS]
    lines = ["| " + " | ".join(_COLUMNS[n] for n in names) + " |", "|" + "---|" * len(names)]
    lines += ["| " + " | ".join(str(getattr(c, n)) for n in names) + " |" for c in CAPABILITIES.values()]
    return "\n".join(lines)
