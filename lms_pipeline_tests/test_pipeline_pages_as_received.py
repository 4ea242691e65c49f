"""A fetched page is stored exactly as the provider sent it (no parse and re-serialize), and its snapshot is built
from that text inside the warehouse."""

from __future__ import annotations

from lms_pipeline_tests.conftest import START, Pipeline, failure_message

# Well-formed, but written as a server may write it: indented, non-ASCII kept as is, keys in its own order, a field
# the pipeline does not read, a trailing newline. Two items updated at the same second: a short page that ends the
# listing, and that a keyset re-poll from its high-water mark may read again.
BODY = (
    '[\n  {"name": "Émile Zola 101", "id": "crs-90001", "updated_at": "2026-09-01T01:00:00Z",\n'
    '   "student_ids": ["stu-1"], "students": [{"id": "stu-2", "name": "Zoë"}], "raw": {"x": [1, 2]}},\n'
    '  {"updated_at": "2026-09-01T01:00:00Z", "id": "crs-90002", "name": "Sans roster"}\n]\n'
)


def test_a_page_is_stored_byte_for_byte_as_received_and_normalized_from_that_text(pipeline: Pipeline) -> None:
    pipeline.app.inject_fault("conn-all", status=200, body=BODY, endpoint="course", offset=0, times=1000)
    result = pipeline.run("conn-all", START)
    assert result.success, failure_message(result)
    stored = pipeline.rows(
        "SELECT DISTINCT payload FROM lms.raw_course_pages WHERE connection_id = 'conn-all' AND endpoint = 'course'"
    )
    assert stored == {(BODY,)}
    rosters = pipeline.rows(
        "SELECT course_id, course_name, roster_status, student_count FROM lms.course_rosters "
        "WHERE connection_id = 'conn-all'"
    )
    assert rosters == {("crs-90001", "Émile Zola 101", "exposed", 2), ("crs-90002", "Sans roster", "not_exposed", None)}
    edges = pipeline.rows("SELECT course_id, student_id FROM lms.course_student_edges WHERE connection_id = 'conn-all'")
    assert edges == {("crs-90001", "stu-1"), ("crs-90001", "stu-2")}
