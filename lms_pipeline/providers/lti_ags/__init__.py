"""LTI Advantage Assignment and Grade Services 2.0 with NRPS (docs/providers.md §3, §9.5): a grade source of a
Unified connection (``grades.source: lti_ags``), not a roster provider."""
