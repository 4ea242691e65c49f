"""OneRoster 1.2 (docs/providers.md §2, §9.1, §9.2): rostering connections (courses, classes, terms, enrollments)
and the SIS gradebook grades are reconciled against and written back to."""
