-- LTI AGS pages -> LMS grades, and the contents and students grade matching needs (lms_pipeline.providers.lti_ags.
-- grades runs these, in this order, over the registered frame `pages`).

-- name: page_problems
-- A page is checked as a whole before any item is read: the CASE stops at the first failing test, so json_type
-- never sees text that is not JSON.
SELECT endpoint, course_id, page_index, url, NULL AS position,
    CASE
        WHEN endpoint NOT IN ('contexts', 'lineitems', 'results', 'memberships') THEN 'unknown endpoint ' || endpoint
        WHEN status IS DISTINCT FROM 200 THEN 'status ' || coalesce(status::VARCHAR, 'missing') || ' is not a page'
        WHEN payload IS NULL THEN 'no body'
        WHEN NOT json_valid(payload) THEN 'the body is not JSON'
        WHEN endpoint = 'memberships' AND json_type(payload, '$.members') IS DISTINCT FROM 'ARRAY'
            THEN 'the body is not a membership container (an object with a members list)'
        WHEN endpoint <> 'memberships' AND json_type(payload) <> 'ARRAY'
            THEN 'the body is a JSON ' || lower(json_type(payload)) || ', not a list'
        WHEN endpoint = 'memberships' AND list_bool_or(list_transform(json_type(payload, '$.members[*]'),
                                                                      lambda t: t <> 'OBJECT'))
            THEN 'the members list holds an item that is not an object'
        WHEN endpoint <> 'memberships' AND list_bool_or(list_transform(json_type(payload, '$[*]'),
                                                                       lambda t: t <> 'OBJECT'))
            THEN 'the list holds an item that is not an object'
    END AS problem
FROM pages;

-- name: items
CREATE OR REPLACE TEMP TABLE items AS
SELECT endpoint, course_id, page_index, url, unnest(list) AS item, generate_subscripts(list, 1) - 1 AS position
FROM (
    SELECT *, CAST(CASE WHEN endpoint = 'memberships' THEN json_extract(payload, '$.members') ELSE payload END
                   AS JSON[]) AS list
    FROM pages WHERE endpoint IN ('lineitems', 'results', 'memberships')
);

-- name: item_problems
SELECT endpoint, course_id, page_index, url, position,
    CASE
        WHEN endpoint = 'lineitems' AND json_type(item, '$.id') IS DISTINCT FROM 'VARCHAR'
            THEN 'is a line item without a string id'
        WHEN endpoint = 'lineitems' AND json_type(item, '$.resourceId') NOT IN ('VARCHAR', 'NULL')
            THEN 'is a line item whose resourceId is not a string'
        WHEN endpoint = 'memberships' AND json_type(item, '$.user_id') IS DISTINCT FROM 'VARCHAR'
            THEN 'is a member without a string user_id'
        WHEN endpoint <> 'results' THEN NULL
        WHEN json_type(item, '$.userId') IS DISTINCT FROM 'VARCHAR' THEN 'is a result without a string userId'
        WHEN json_type(item, '$.scoreOf') IS DISTINCT FROM 'VARCHAR' THEN 'is a result without a string scoreOf'
        WHEN json_type(item, '$.resultScore') NOT IN ('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL')
            THEN 'is a result whose resultScore is not a number'
        WHEN json_type(item, '$.resultMaximum') NOT IN ('UBIGINT', 'BIGINT', 'DOUBLE', 'NULL')
            OR TRY_CAST(item->>'resultMaximum' AS DECIMAL(38, 6)) <= 0
            THEN 'is a result whose resultMaximum is not a number > 0'
    END AS problem
FROM items;

-- name: tables
CREATE OR REPLACE TEMP TABLE line_items AS
SELECT DISTINCT course_id, item->>'id' AS lineitem_id,
       coalesce(item->>'resourceId', 'lti-lineitem:' || (item->>'id')) AS content_id
FROM items WHERE endpoint = 'lineitems';

-- a result read twice (the listing shifted while paged) counts once: the copy read last
CREATE OR REPLACE TEMP TABLE results AS
SELECT course_id, page_index, url, position, item->>'scoreOf' AS lineitem_id, item->>'userId' AS lti_user_id,
       CAST(item->>'resultScore' AS DECIMAL(38, 6)) AS score,
       coalesce(CAST(item->>'resultMaximum' AS DECIMAL(38, 6)), 1) AS maximum,  -- AGS: 1 when absent
       item->>'comment' AS comment
FROM items WHERE endpoint = 'results'
QUALIFY row_number() OVER (PARTITION BY course_id, item->>'scoreOf', item->>'userId'
                           ORDER BY page_index DESC, position DESC) = 1;

CREATE OR REPLACE TEMP TABLE identities AS
SELECT item->>'user_id' AS lti_user_id, min(trim(item->>'lis_person_sourcedid')) AS student_id
FROM items WHERE endpoint = 'memberships' AND nullif(trim(item->>'lis_person_sourcedid'), '') IS NOT NULL
GROUP BY ALL
HAVING count(DISTINCT trim(item->>'lis_person_sourcedid')) = 1;  -- two SIS ids for one sub: not matched;

-- name: link_problems
SELECT 'results' AS endpoint, r.course_id, r.page_index, r.url, r.position,
       'is a result of ' || r.lineitem_id || ', a line item its context did not list' AS problem
FROM results r ANTI JOIN line_items l USING (course_id, lineitem_id)
UNION ALL
SELECT 'lineitems', course_id, NULL, NULL, NULL,
       'lists ' || count(*) || ' line items for content ' || content_id || ': ' || string_agg(lineitem_id, ', ')
FROM line_items GROUP BY course_id, content_id HAVING count(*) > 1;

-- name: grades
-- Decimal division in DuckDB goes through DOUBLE, so the percent is divided in integers: micro-units of score and
-- maximum, rounded half away from zero to micro-percent.
CREATE TEMP TABLE grades AS
WITH scaled AS (
    SELECT *, CAST(score * 1000000 AS HUGEINT) AS s, CAST(maximum * 1000000 AS HUGEINT) AS m FROM results
)
SELECT r.course_id, l.content_id, coalesce(i.student_id, 'lti-user:' || r.lti_user_id) AS student_id,
       CASE WHEN r.score IS NOT NULL THEN _text(r.score) || '/' || _text(r.maximum) END AS raw_grade,
       CAST(r.score AS DOUBLE) AS score_given, CAST(r.maximum AS DOUBLE) AS score_maximum,
       CAST(CAST(sign(r.s) * ((2 * abs(r.s) * 100000000 + r.m) // (2 * r.m)) AS DECIMAL(38, 0)) * 0.000001
            AS DECIMAL(18, 6)) AS percent,
       CASE WHEN r.score IS NOT NULL THEN 'graded' ELSE 'ungraded' END AS grade_status,
       r.lti_user_id, i.student_id IS NOT NULL AS identity_matched, r.comment
FROM scaled r JOIN line_items l USING (course_id, lineitem_id) LEFT JOIN identities i USING (lti_user_id)
ORDER BY 1, 2, 3;

-- name: duplicates
SELECT 'results' AS endpoint, course_id, NULL AS page_index, NULL AS url, NULL AS position,
       'gives ' || count(*) || ' results to student ' || student_id || ' for content ' || content_id
       || ' (LTI users ' || string_agg(lti_user_id, ', ' ORDER BY lti_user_id) || ')' AS problem
FROM grades GROUP BY course_id, content_id, student_id HAVING count(*) > 1;

-- name: side_contents
-- Line items name their content (``label``) and point to it (``resourceId``): what title matching needs.
SELECT DISTINCT course_id, coalesce(i.resourceId, 'lti-lineitem:' || i.id) AS content_id, i.label AS name
FROM (SELECT course_id, unnest(from_json(payload, '[{"id": "VARCHAR", "label": "VARCHAR",
                                                 "resourceId": "VARCHAR"}]')) AS i
      FROM pages WHERE endpoint = 'lineitems')
ORDER BY 1, 2;

-- name: side_students
-- NRPS members with a sourced id and an email: the LMS side of the email match with the SIS.
SELECT DISTINCT m.lis_person_sourcedid AS student_id, m.email AS email
FROM (SELECT unnest(from_json(payload, '{"members": [{"lis_person_sourcedid": "VARCHAR",
                                                      "email": "VARCHAR"}]}').members) AS m
      FROM pages WHERE endpoint = 'memberships')
WHERE m.lis_person_sourcedid IS NOT NULL AND m.email IS NOT NULL
ORDER BY 1, 2;
