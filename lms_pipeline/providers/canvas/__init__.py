"""Canvas LMS REST (docs/providers.md §4, §9.3): the account's courses, each course's enrollments and sections,
and for grades its assignments, grading standards and submissions, paged along ``Link: rel="next"``."""
