"""Google Classroom API v1 (docs/providers.md §5): courses, aliases, students, courseWork and submissions, token
paging to the end; no SIS ids (students identified through the school's directory)."""
