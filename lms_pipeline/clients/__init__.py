"""HTTP clients for LMS APIs. Plain httpx: nothing here knows about Dagster."""
