-- 0007: compact forecast line storage, so that a refresh of 50,000 projects x 12 months writes its
-- three snapshots within the benchmark budget (docs/forecast.md, "Performance").
--
-- forecast.line (one row per snapshot x project x layer x month, with a per-row foreign key) becomes
-- forecast.line_series: one row per snapshot x project x layer holding the monthly amounts as
-- bigint[] from first_month on (a NULL element is a month without a line; the reporting amounts
-- are NULL when they equal the amounts, i.e. in the reporting currency). A view named
-- forecast.line unnests it and exposes exactly the old columns, so existing readers
-- (forecast.monthly, forecast.rollup, forecast.forecast_vs_actual, the per-record trace, the planning
-- push, the chart) keep working. The existing rows are moved, not dropped.
--
-- forecast.capacity becomes forecast.capacity_series (one row per snapshot x person, months as
-- arrays) behind a view of the same name and columns, for the same reason.
--
-- The per-row foreign keys of the snapshot children (line, contract_balance, capacity) become one
-- statement-level check per INSERT: every inserted row must name an existing snapshot. The store
-- writes a snapshot's header and its rows in one transaction, so the header commits with them.
-- Immutability is unchanged: UPDATE and DELETE are refused on the table and on the view.
-- Forward-only: never edit; add a new file.

CREATE TABLE forecast.line_series (
    snapshot_id             text     NOT NULL,
    project_ref             text     NOT NULL,
    layer                   text     NOT NULL CHECK (layer IN ('actual', 'contracted', 'pipeline')),
    practice                text     NOT NULL,
    legal_entity            text     NOT NULL,
    currency                char(3)  NOT NULL,
    first_month             date     NOT NULL CHECK (extract(day FROM first_month) = 1),
    amount_minor            bigint[] NOT NULL,  -- element i: month first_month + i - 1; NULL: no line
    reporting_amount_minor  bigint[],           -- NULL: equal to amount_minor (reporting currency)
    PRIMARY KEY (snapshot_id, project_ref, layer),
    CHECK (array_ndims(amount_minor) = 1 AND array_lower(amount_minor, 1) = 1),
    CHECK (reporting_amount_minor IS NULL
           OR (array_ndims(reporting_amount_minor) = 1 AND array_lower(reporting_amount_minor, 1) = 1
               AND cardinality(reporting_amount_minor) = cardinality(amount_minor)))
);
COMMENT ON TABLE forecast.line_series IS 'Forecast lines, compact: the monthly amounts of one project and layer within a snapshot as arrays from first_month. Read through the view forecast.line.';

-- Move the existing lines: one series per (snapshot, project, layer), NULL in months without a line.
INSERT INTO forecast.line_series (snapshot_id, project_ref, layer, practice, legal_entity, currency,
                                  first_month, amount_minor, reporting_amount_minor)
SELECT k.snapshot_id, k.project_ref, k.layer, k.practice, k.legal_entity, k.currency, k.first_month,
       array_agg(l.amount_minor ORDER BY m.i),
       CASE WHEN bool_and(l.reporting_amount_minor IS NOT DISTINCT FROM l.amount_minor) THEN NULL
            ELSE array_agg(l.reporting_amount_minor ORDER BY m.i) END
FROM (
    SELECT snapshot_id, project_ref, layer, practice, legal_entity, currency,
           min(month) AS first_month, max(month) AS last_month
    FROM forecast.line
    GROUP BY snapshot_id, project_ref, layer, practice, legal_entity, currency
) k
CROSS JOIN LATERAL generate_series(
    0, (extract(year FROM age(k.last_month, k.first_month)) * 12 + extract(month FROM age(k.last_month, k.first_month)))::int
) AS m(i)
LEFT JOIN forecast.line l
       ON l.snapshot_id = k.snapshot_id AND l.project_ref = k.project_ref AND l.layer = k.layer
      AND l.month = (k.first_month + make_interval(months => m.i))::date
GROUP BY k.snapshot_id, k.project_ref, k.layer, k.practice, k.legal_entity, k.currency, k.first_month;

DO $$
BEGIN
    IF (SELECT count(*) FROM forecast.line)
       <> (SELECT count(*) FROM forecast.line_series s, unnest(s.amount_minor) AS a WHERE a IS NOT NULL) THEN
        RAISE EXCEPTION 'forecast.line -> forecast.line_series: line counts differ';
    END IF;
END;
$$;

-- The views read forecast.line: drop them with the table and create them again on the view.
DROP VIEW forecast.forecast_vs_actual;
DROP VIEW forecast.monthly;
DROP VIEW forecast.rollup;
DROP TABLE forecast.line;

CREATE VIEW forecast.line AS
SELECT s.snapshot_id, s.project_ref, s.practice, s.legal_entity, s.layer,
       (s.first_month + make_interval(months => (u.i - 1)::int))::date AS month,
       s.currency, u.amount_minor, coalesce(u.reporting_amount_minor, u.amount_minor) AS reporting_amount_minor
FROM forecast.line_series s
CROSS JOIN LATERAL unnest(s.amount_minor, s.reporting_amount_minor)
    WITH ORDINALITY AS u(amount_minor, reporting_amount_minor, i)
WHERE u.amount_minor IS NOT NULL;
COMMENT ON VIEW forecast.line IS 'Monthly forecast amounts per project and confidence layer within a snapshot (one row per month, from forecast.line_series).';

CREATE VIEW forecast.monthly AS
SELECT l.snapshot_id, l.legal_entity, l.month,
       sum(l.reporting_amount_minor) FILTER (WHERE l.layer = 'actual')     AS actual_minor,
       sum(l.reporting_amount_minor) FILTER (WHERE l.layer = 'contracted') AS contracted_minor,
       sum(l.reporting_amount_minor) FILTER (WHERE l.layer = 'pipeline')   AS pipeline_minor
FROM forecast.line l
GROUP BY l.snapshot_id, l.legal_entity, l.month;
COMMENT ON VIEW forecast.monthly IS 'Reporting-currency totals per snapshot, legal entity, month and layer.';

CREATE VIEW forecast.forecast_vs_actual AS
SELECT q.snapshot_id, q.scenario, q.as_of, m.legal_entity, m.month,
       coalesce(m.contracted_minor, 0) + coalesce(m.pipeline_minor, 0) AS forecast_minor,
       coalesce(m.contracted_minor, 0) AS contracted_minor,
       coalesce(m.pipeline_minor, 0) AS pipeline_minor,
       latest.actual_minor AS actual_minor,             -- as known by the latest snapshot of the scenario
       q.previous_snapshot_id,
       coalesce(prev.contracted_minor, 0) + coalesce(prev.pipeline_minor, 0) AS previous_forecast_minor
FROM forecast.snapshot_sequence q
JOIN forecast.monthly m ON m.snapshot_id = q.snapshot_id
LEFT JOIN forecast.snapshot_sequence lq ON lq.scenario = q.scenario AND lq.is_latest
LEFT JOIN forecast.monthly latest
       ON latest.snapshot_id = lq.snapshot_id AND latest.legal_entity = m.legal_entity AND latest.month = m.month
LEFT JOIN forecast.monthly prev
       ON prev.snapshot_id = q.previous_snapshot_id AND prev.legal_entity = m.legal_entity AND prev.month = m.month;
COMMENT ON VIEW forecast.forecast_vs_actual IS 'Per snapshot, legal entity and month: forecast (contracted + pipeline), the actual as later recognized, and the previous snapshot''s forecast.';

CREATE VIEW forecast.rollup AS
SELECT l.snapshot_id, l.layer, l.month, l.currency,
       CASE WHEN grouping(l.project_ref) = 0 THEN 'project'
            WHEN grouping(l.practice) = 0 THEN 'practice'
            WHEN grouping(l.legal_entity) = 0 THEN 'legal_entity'
            ELSE 'firm' END AS level,
       l.legal_entity, l.practice, l.project_ref,
       sum(l.amount_minor)::bigint AS amount_minor,
       sum(l.reporting_amount_minor)::bigint AS reporting_amount_minor
FROM forecast.line l
GROUP BY l.snapshot_id, l.layer, l.month, l.currency, ROLLUP (l.legal_entity, l.practice, l.project_ref);
COMMENT ON VIEW forecast.rollup IS 'Project -> practice -> legal entity -> firm totals per snapshot, layer, month and currency (amount in the currency and in the reporting currency).';

-- Immutability: the series are written once; the view refuses changes like the table did. ------
CREATE TRIGGER line_series_immutable BEFORE UPDATE OR DELETE ON forecast.line_series
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();
CREATE TRIGGER line_immutable INSTEAD OF UPDATE OR DELETE ON forecast.line
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();

-- Snapshot children name an existing snapshot: one set-based check per INSERT statement. ------
CREATE FUNCTION forecast.check_snapshot_exists() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing text;
BEGIN
    SELECT n.snapshot_id INTO missing
    FROM (SELECT DISTINCT snapshot_id FROM new_rows) n
    WHERE NOT EXISTS (SELECT 1 FROM forecast.snapshot s WHERE s.snapshot_id = n.snapshot_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert into %.% names snapshot % which does not exist', TG_TABLE_SCHEMA, TG_TABLE_NAME, missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER line_series_snapshot_exists AFTER INSERT ON forecast.line_series
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION forecast.check_snapshot_exists();

ALTER TABLE forecast.contract_balance DROP CONSTRAINT contract_balance_snapshot_id_fkey;
CREATE TRIGGER contract_balance_snapshot_exists AFTER INSERT ON forecast.contract_balance
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION forecast.check_snapshot_exists();

-- The capacity check, compact the same way: one row per snapshot x person with the monthly
-- scheduled and available hours as arrays; the view forecast.capacity gives the old rows and
-- derives over_allocated (scheduled > available), which is how the model sets it.
CREATE TABLE forecast.capacity_series (
    snapshot_id      text     NOT NULL,
    user_ref         text     NOT NULL,
    first_month      date     NOT NULL CHECK (extract(day FROM first_month) = 1),
    scheduled_centi  bigint[] NOT NULL,        -- hundredths of an hour; NULL element: no row that month
    available_centi  bigint[] NOT NULL,
    PRIMARY KEY (snapshot_id, user_ref),
    CHECK (array_ndims(scheduled_centi) = 1 AND array_lower(scheduled_centi, 1) = 1),
    CHECK (array_ndims(available_centi) = 1 AND array_lower(available_centi, 1) = 1
           AND cardinality(available_centi) = cardinality(scheduled_centi))
);
COMMENT ON TABLE forecast.capacity_series IS 'Capacity check, compact: scheduled and available hours per person and month from first_month, as arrays. Read through the view forecast.capacity.';

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM forecast.capacity WHERE over_allocated <> (scheduled_centi > available_centi)) THEN
        RAISE EXCEPTION 'forecast.capacity: over_allocated differs from scheduled > available; not moved';
    END IF;
END;
$$;

INSERT INTO forecast.capacity_series (snapshot_id, user_ref, first_month, scheduled_centi, available_centi)
SELECT k.snapshot_id, k.user_ref, k.first_month,
       array_agg(c.scheduled_centi ORDER BY m.i), array_agg(c.available_centi ORDER BY m.i)
FROM (
    SELECT snapshot_id, user_ref, min(month) AS first_month, max(month) AS last_month
    FROM forecast.capacity
    GROUP BY snapshot_id, user_ref
) k
CROSS JOIN LATERAL generate_series(
    0, (extract(year FROM age(k.last_month, k.first_month)) * 12 + extract(month FROM age(k.last_month, k.first_month)))::int
) AS m(i)
LEFT JOIN forecast.capacity c
       ON c.snapshot_id = k.snapshot_id AND c.user_ref = k.user_ref
      AND c.month = (k.first_month + make_interval(months => m.i))::date
GROUP BY k.snapshot_id, k.user_ref, k.first_month;

DO $$
BEGIN
    IF (SELECT count(*) FROM forecast.capacity)
       <> (SELECT count(*) FROM forecast.capacity_series s, unnest(s.scheduled_centi) AS a WHERE a IS NOT NULL) THEN
        RAISE EXCEPTION 'forecast.capacity -> forecast.capacity_series: row counts differ';
    END IF;
END;
$$;

DROP TABLE forecast.capacity;

CREATE VIEW forecast.capacity AS
SELECT s.snapshot_id, s.user_ref,
       (s.first_month + make_interval(months => (u.i - 1)::int))::date AS month,
       u.scheduled_centi, u.available_centi, u.scheduled_centi > u.available_centi AS over_allocated
FROM forecast.capacity_series s
CROSS JOIN LATERAL unnest(s.scheduled_centi, s.available_centi)
    WITH ORDINALITY AS u(scheduled_centi, available_centi, i)
WHERE u.scheduled_centi IS NOT NULL;
COMMENT ON VIEW forecast.capacity IS 'Scheduled vs available hours per person and month at snapshot time (one row per month, from forecast.capacity_series).';

CREATE TRIGGER capacity_series_immutable BEFORE UPDATE OR DELETE ON forecast.capacity_series
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();
CREATE TRIGGER capacity_immutable INSTEAD OF UPDATE OR DELETE ON forecast.capacity
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();
CREATE TRIGGER capacity_series_snapshot_exists AFTER INSERT ON forecast.capacity_series
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION forecast.check_snapshot_exists();
