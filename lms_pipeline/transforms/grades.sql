-- Grade strings -> a tri-state score, percents -> letters by each course's scheme (lms_pipeline.transforms.grades
-- runs these over the registered frames `grades`, `scored` and `schemes`).

-- name: parse
SELECT * EXCLUDE (_row) FROM (
WITH cleaned AS (
    SELECT *, upper(trim(raw_grade)) AS g FROM grades
)
SELECT * EXCLUDE (g),
    CASE
        WHEN raw_grade IS NULL THEN 'missing'
        WHEN g = '' THEN 'ungraded'
        WHEN g IN ('EX', 'EXCUSED', 'EXEMPT') THEN 'excused'
        WHEN g IN ('I', 'INC', 'INCOMPLETE') THEN 'incomplete'
        WHEN regexp_full_match(g, '([+-]?\d+(?:\.\d+)?)\s*%') THEN 'graded'
        WHEN regexp_full_match(g, '([+-]?\d+(?:\.\d+)?)\s*/\s*([+-]?\d+(?:\.\d+)?)')
             AND TRY_CAST(regexp_extract(g, '/\s*([+-]?\d+(?:\.\d+)?)', 1) AS DECIMAL(18, 6)) > 0 THEN 'graded'
        WHEN regexp_full_match(g, '([+-]?\d+(?:\.\d+)?)') AND (points_possible IS NULL OR points_possible > 0) THEN 'graded'
        WHEN regexp_full_match(g, '[A-F][+-]?') THEN 'graded'
        ELSE 'unparseable'
    END AS grade_status,
    CASE
        WHEN regexp_full_match(g, '([+-]?\d+(?:\.\d+)?)\s*%')
            THEN CAST(regexp_extract(g, '([+-]?\d+(?:\.\d+)?)', 1) AS DECIMAL(18, 6))
        WHEN regexp_full_match(g, '([+-]?\d+(?:\.\d+)?)\s*/\s*([+-]?\d+(?:\.\d+)?)')
             AND TRY_CAST(regexp_extract(g, '/\s*([+-]?\d+(?:\.\d+)?)', 1) AS DECIMAL(18, 6)) > 0
            THEN CAST(round(CAST(regexp_extract(g, '^([+-]?\d+(?:\.\d+)?)', 1) AS DOUBLE) * 100
                            / CAST(regexp_extract(g, '/\s*([+-]?\d+(?:\.\d+)?)', 1) AS DOUBLE), 6) AS DECIMAL(18, 6))
        WHEN regexp_full_match(g, '([+-]?\d+(?:\.\d+)?)') AND points_possible > 0
            THEN CAST(round(CAST(g AS DOUBLE) * 100 / points_possible, 6) AS DECIMAL(18, 6))
        WHEN regexp_full_match(g, '([+-]?\d+(?:\.\d+)?)') AND points_possible IS NULL
            THEN CAST(g AS DECIMAL(18, 6))  -- a bare number without points possible is a percent
    END AS percent,
    CASE WHEN regexp_full_match(g, '[A-F][+-]?') THEN g END AS letter_given
FROM cleaned
) ORDER BY _row;

-- name: letter
SELECT * EXCLUDE (_row) FROM (
WITH cutoffs AS (
    SELECT scheme, letter, CAST(lower_bound AS DECIMAL(18, 6)) AS lower_bound, rank, precision, rounding
    FROM schemes
), rounded AS (
    SELECT s.*, c.precision, c.rounding,
        CASE WHEN s.percent IS NULL THEN NULL
             WHEN c.rounding = 'floor'
                 THEN floor(CAST(s.percent AS DECIMAL(18, 6)) * pow(10, c.precision)::DECIMAL(18, 0))
                      / pow(10, c.precision)::DECIMAL(18, 0)
             ELSE round(CAST(s.percent AS DECIMAL(18, 6)) * pow(10, c.precision)::DECIMAL(18, 0), 0)
                  / pow(10, c.precision)::DECIMAL(18, 0)
        END AS rounded_percent
    FROM scored s
    LEFT JOIN (SELECT DISTINCT scheme, precision, rounding FROM cutoffs) c USING (scheme)
)
SELECT r.* EXCLUDE (precision, rounding),
    CASE WHEN r.rounded_percent IS NULL OR r.precision IS NULL THEN NULL
         ELSE coalesce(
             (SELECT c.letter FROM cutoffs c WHERE c.scheme = r.scheme AND c.lower_bound <= r.rounded_percent
              ORDER BY c.lower_bound DESC LIMIT 1),
             (SELECT c.letter FROM cutoffs c WHERE c.scheme = r.scheme ORDER BY c.lower_bound LIMIT 1))
    END AS letter
FROM rounded r
) ORDER BY _row;
