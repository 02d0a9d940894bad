-- 0002: revenue forecast. Source extracts (PSA projects, people, schedule, milestones; CRM
-- opportunities and change orders), snapshot metadata, contract balances, the capacity check,
-- publication state, immutability guards and the forecast vs actual vs previous views.
-- Forward-only: never edit; add a new file. Money is integer minor units, never floating point.

-- Extracted inputs: the current full read of each source, replaced atomically per extract. --
CREATE TABLE forecast.extract (
    source        text        PRIMARY KEY,      -- e.g. psa.projects, crm.opportunities
    content_hash  text        NOT NULL,         -- sha256 over the validated rows: the data version
    row_count     integer     NOT NULL,
    run_id        text        NOT NULL,
    extracted_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE forecast.extract IS 'Data version of each extracted forecast input (content hash of the validated rows).';

CREATE TABLE forecast.src_project (
    project_ref       text    PRIMARY KEY,
    practice          text    NOT NULL,
    legal_entity      text    NOT NULL,
    currency          char(3) NOT NULL,
    billing_type      text    NOT NULL CHECK (billing_type IN ('time_and_materials', 'fixed_fee', 'milestone', 'retainer')),
    is_active         boolean NOT NULL,
    starts_on         date,
    ends_on           date,
    hourly_rate_minor bigint  NOT NULL DEFAULT 0,
    fee_minor         bigint,
    budget_minor      bigint                   -- T&M: budget hours x hourly rate
);
COMMENT ON TABLE forecast.src_project IS 'PSA projects as the forecast needs them: billing type, dates, rates, fee, legal entity.';

CREATE TABLE forecast.src_person (
    user_ref                 text    PRIMARY KEY,
    legal_entity             text    NOT NULL,
    currency                 char(3) NOT NULL,
    is_active                boolean NOT NULL,
    weekly_capacity_seconds  integer NOT NULL,
    cost_rate_minor          bigint  NOT NULL
);
COMMENT ON TABLE forecast.src_person IS 'Capacity and cost rate per person: ids only, no names or emails.';

CREATE TABLE forecast.src_schedule (
    schedule_id  text         PRIMARY KEY,
    user_ref     text         NOT NULL,
    project_ref  text         NOT NULL,
    week_start   date         NOT NULL,
    hours        numeric(9,2) NOT NULL CHECK (hours >= 0)
);
COMMENT ON TABLE forecast.src_schedule IS 'PSA resource schedule: hours per person, project and week.';
CREATE INDEX src_schedule_project_idx ON forecast.src_schedule (project_ref, week_start);

CREATE TABLE forecast.src_milestone (
    milestone_id  text    PRIMARY KEY,
    project_ref   text    NOT NULL,
    due_date      date,
    amount_minor  bigint  NOT NULL,
    status        text    NOT NULL CHECK (status IN ('planned', 'completed', 'signed_off')),
    completed_on  date
);
COMMENT ON TABLE forecast.src_milestone IS 'PSA milestones: amount, due date, status and completion date.';

CREATE TABLE forecast.src_opportunity (
    opportunity_id   text    PRIMARY KEY,
    stage            text    NOT NULL,
    amount_minor     bigint  NOT NULL,
    currency         char(3) NOT NULL,
    expected_start   date,
    duration_months  integer NOT NULL,
    legal_entity     text    NOT NULL,
    practice         text    NOT NULL,
    billing_type     text,
    project_ref      text,                     -- set once won: the PSA project it became
    is_closed        boolean NOT NULL,
    is_won           boolean NOT NULL
);
COMMENT ON TABLE forecast.src_opportunity IS 'CRM opportunities: open pipeline by stage and the won contract values.';

CREATE TABLE forecast.src_change_order (
    change_order_id   text    PRIMARY KEY,
    opportunity_id    text    NOT NULL,
    amount_delta_minor bigint NOT NULL,
    currency          char(3) NOT NULL,
    status            text    NOT NULL,
    effective_date    date
);
COMMENT ON TABLE forecast.src_change_order IS 'CRM change orders; approved ones add to the contract value.';

-- Snapshots: more metadata on the 0001 table, and the per-contract and capacity outputs. ------
ALTER TABLE forecast.snapshot
    ADD COLUMN version       text,
    ADD COLUMN content_hash  text,               -- sha256 of the lines: what the planning platform gets
    ADD COLUMN line_count    integer,
    ADD COLUMN totals        jsonb;

CREATE INDEX snapshot_scenario_idx ON forecast.snapshot (scenario, as_of, created_at);

CREATE TABLE forecast.contract_balance (
    snapshot_id               text    NOT NULL REFERENCES forecast.snapshot (snapshot_id),
    project_ref               text    NOT NULL,
    billing_type              text    NOT NULL,
    legal_entity              text    NOT NULL,
    currency                  char(3) NOT NULL,
    transaction_price_minor   bigint  NOT NULL,
    cost_to_date_minor        bigint  NOT NULL,
    etc_minor                 bigint  NOT NULL,
    eac_minor                 bigint  NOT NULL,
    cum_revenue_minor         bigint  NOT NULL,
    prior_cum_revenue_minor   bigint,            -- from the previous snapshot of the scenario
    catch_up_minor            bigint  NOT NULL,  -- cum_revenue - prior: the period's cumulative catch-up
    cum_billed_minor          bigint  NOT NULL,
    contract_asset_minor      bigint  NOT NULL CHECK (contract_asset_minor >= 0),
    contract_liability_minor  bigint  NOT NULL CHECK (contract_liability_minor >= 0),
    expected_loss_minor       bigint  NOT NULL CHECK (expected_loss_minor >= 0),
    backlog_minor             bigint  NOT NULL,
    PRIMARY KEY (snapshot_id, project_ref),
    CHECK (contract_asset_minor = 0 OR contract_liability_minor = 0)
);
COMMENT ON TABLE forecast.contract_balance IS 'Per contract: cost-to-cost figures, contract asset (unbilled) or liability (deferred), expected loss, backlog. Never netted across contracts.';

CREATE TABLE forecast.capacity (
    snapshot_id      text    NOT NULL REFERENCES forecast.snapshot (snapshot_id),
    user_ref         text    NOT NULL,
    month            date    NOT NULL,
    scheduled_centi  bigint  NOT NULL,           -- hundredths of an hour
    available_centi  bigint  NOT NULL,
    over_allocated   boolean NOT NULL,
    PRIMARY KEY (snapshot_id, user_ref, month)
);
COMMENT ON TABLE forecast.capacity IS 'Scheduled vs available hours per person and month at snapshot time.';

CREATE TABLE forecast.publication (
    snapshot_id   text        NOT NULL REFERENCES forecast.snapshot (snapshot_id),
    target        text        NOT NULL,          -- e.g. planning
    status        text        NOT NULL,          -- created | unchanged
    content_hash  text        NOT NULL,          -- as the target computed it
    run_id        text        NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_id, target)
);
COMMENT ON TABLE forecast.publication IS 'Where each snapshot was pushed; the push is idempotent by snapshot id.';

-- Immutability: snapshots and everything hanging off them are written once. ----------------
CREATE FUNCTION forecast.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'forecast snapshots are immutable: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER snapshot_immutable BEFORE UPDATE OR DELETE ON forecast.snapshot
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();
CREATE TRIGGER line_immutable BEFORE UPDATE OR DELETE ON forecast.line
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();
CREATE TRIGGER contract_balance_immutable BEFORE UPDATE OR DELETE ON forecast.contract_balance
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();
CREATE TRIGGER capacity_immutable BEFORE UPDATE OR DELETE ON forecast.capacity
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();

-- Views ------------------------------------------------------------------------------------
CREATE VIEW forecast.snapshot_sequence AS
SELECT s.snapshot_id, s.scenario, s.as_of, s.created_at, s.run_id,
       lag(s.snapshot_id) OVER w AS previous_snapshot_id,
       row_number() OVER (PARTITION BY s.scenario ORDER BY s.as_of DESC, s.created_at DESC, s.snapshot_id DESC) = 1
           AS is_latest
FROM forecast.snapshot s
WINDOW w AS (PARTITION BY s.scenario ORDER BY s.as_of, s.created_at, s.snapshot_id);
COMMENT ON VIEW forecast.snapshot_sequence IS 'Each snapshot with the previous one of its scenario and whether it is the latest.';

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
