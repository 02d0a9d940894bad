-- 0060: a refresh stores its scenario-free rows once (issue 16, deliverable 6, forecast part).
-- Forward-only: never edit; add a new file.
--
-- The "actual" layer of the lines (revenue recognized up to the as-of month) and the capacity
-- check do not depend on the scenario: a refresh computes them once (forecast.model.prepare) and
-- each of its three snapshots stored them again (~1/3 of forecast.line_series' rows and all of
-- forecast.capacity_series', three times). Now a snapshot may name, in shares_from, a snapshot
-- written earlier by the same refresh whose actual-layer series and capacity series are exactly
-- the ones it would store (the store compares them before relying on it); it then stores only
-- its contracted and pipeline series, and the views forecast.line and forecast.capacity give its
-- actual lines and capacity rows from the snapshot it names. What the views return for every
-- snapshot is unchanged, so every reader of the views (forecast.monthly, forecast.rollup,
-- forecast.forecast_vs_actual, the chart, the planning push, the trace) is unchanged. Snapshots
-- stay immutable (the header refuses UPDATE and DELETE, so shares_from never changes and the
-- snapshot named can never go away); existing snapshots have shares_from NULL and read as before.

ALTER TABLE forecast.snapshot
    ADD COLUMN shares_from text REFERENCES forecast.snapshot (snapshot_id)
        CHECK (shares_from <> snapshot_id);
COMMENT ON COLUMN forecast.snapshot.shares_from IS
    'NULL, or the snapshot (same refresh) whose actual-layer line series and capacity series this snapshot''s views read: stored once per refresh.';

CREATE OR REPLACE VIEW forecast.line AS
SELECT s.snapshot_id, s.project_ref, s.practice, s.legal_entity, s.layer,
       (s.first_month + make_interval(months => (u.i - 1)::int))::date AS month,
       s.currency, u.amount_minor, coalesce(u.reporting_amount_minor, u.amount_minor) AS reporting_amount_minor
FROM forecast.line_series s
CROSS JOIN LATERAL unnest(s.amount_minor, s.reporting_amount_minor)
    WITH ORDINALITY AS u(amount_minor, reporting_amount_minor, i)
WHERE u.amount_minor IS NOT NULL
UNION ALL
SELECT h.snapshot_id, s.project_ref, s.practice, s.legal_entity, s.layer,
       (s.first_month + make_interval(months => (u.i - 1)::int))::date AS month,
       s.currency, u.amount_minor, coalesce(u.reporting_amount_minor, u.amount_minor) AS reporting_amount_minor
FROM forecast.snapshot h
JOIN forecast.line_series s ON s.snapshot_id = h.shares_from AND s.layer = 'actual'
CROSS JOIN LATERAL unnest(s.amount_minor, s.reporting_amount_minor)
    WITH ORDINALITY AS u(amount_minor, reporting_amount_minor, i)
WHERE u.amount_minor IS NOT NULL;
COMMENT ON VIEW forecast.line IS 'Monthly forecast amounts per project and confidence layer within a snapshot (one row per month, from forecast.line_series; a snapshot''s actual layer from the snapshot it shares_from, if any).';

CREATE OR REPLACE VIEW forecast.capacity AS
SELECT s.snapshot_id, s.user_ref,
       (s.first_month + make_interval(months => (u.i - 1)::int))::date AS month,
       u.scheduled_centi, u.available_centi, u.scheduled_centi > u.available_centi AS over_allocated
FROM forecast.capacity_series s
CROSS JOIN LATERAL unnest(s.scheduled_centi, s.available_centi)
    WITH ORDINALITY AS u(scheduled_centi, available_centi, i)
WHERE u.scheduled_centi IS NOT NULL
UNION ALL
SELECT h.snapshot_id, s.user_ref,
       (s.first_month + make_interval(months => (u.i - 1)::int))::date AS month,
       u.scheduled_centi, u.available_centi, u.scheduled_centi > u.available_centi AS over_allocated
FROM forecast.snapshot h
JOIN forecast.capacity_series s ON s.snapshot_id = h.shares_from
CROSS JOIN LATERAL unnest(s.scheduled_centi, s.available_centi)
    WITH ORDINALITY AS u(scheduled_centi, available_centi, i)
WHERE u.scheduled_centi IS NOT NULL;
COMMENT ON VIEW forecast.capacity IS 'Scheduled vs available hours per person and month at snapshot time (one row per month, from forecast.capacity_series; a snapshot''s from the snapshot it shares_from, if any).';
