-- What every page listing a JSON array of records must be, checked as a whole before any item is read
-- (lms_pipeline.providers.pages.register_pages creates it beside the registered frame `pages`).

-- name: json_list_problem
-- The CASE stops at the first failing test, so json_type never sees text that is not JSON; NULL: a good page.
CREATE OR REPLACE TEMP MACRO json_list_problem(status, payload) AS
    CASE
        WHEN status IS DISTINCT FROM 200 THEN 'status ' || coalesce(status::VARCHAR, 'missing') || ' is not a page'
        WHEN payload IS NULL THEN 'no body'
        WHEN NOT json_valid(payload) THEN 'the body is not JSON'
        WHEN json_type(payload) <> 'ARRAY' THEN 'the body is a JSON ' || lower(json_type(payload)) || ', not a list'
        WHEN list_bool_or(list_transform(json_type(payload, '$[*]'), lambda t: t <> 'OBJECT'))
            THEN 'the list holds an item that is not an object'
    END
