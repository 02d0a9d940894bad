-- Billing in the ODS: the billing event is the unit that is billed at most once, ever.
-- One row per billable source line and version (time entry, billable expense, signed-off
-- milestone, retainer billing period). A source that changes after it was invoiced gets a credit
-- line (a negative event pointing at the invoiced one) plus a new event for its new version; a
-- source that changes before it was invoiced withdraws its ready event. Invoices and credit memos
-- group ready events by the grouping key from config/billing.yaml and go through the posting
-- ledger like every ERP record.
CREATE SCHEMA IF NOT EXISTS billing;

CREATE TABLE billing.event (
    event_ref        text        PRIMARY KEY,   -- deterministic: kind, source system, source id, source version (+ ':credit')
    kind             text        NOT NULL CHECK (kind IN ('time', 'expense', 'milestone', 'retainer')),
    source_system    text        NOT NULL,
    source_id        text        NOT NULL,      -- time entry / expense / milestone id; '<project>:<period>' for a retainer period
    source_version   text        NOT NULL,      -- the canonical version_hash, or the milestone / retainer version
    billing_type     text        NOT NULL CHECK (billing_type IN ('time_and_materials', 'fixed_fee', 'milestone', 'retainer')),
    customer_ref     text        NOT NULL,
    project_ref      text        NOT NULL,
    legal_entity     text        NOT NULL,
    currency         char(3)     NOT NULL,      -- the transaction (invoice) currency
    cycle            text        NOT NULL,      -- billing cycle key, e.g. 'monthly:2026-11'
    event_date       date        NOT NULL,
    quantity         numeric(12, 2),            -- hours, for time; NULL otherwise
    rate_minor       bigint,                    -- bill rate per hour, for time; NULL otherwise
    amount_minor     bigint      NOT NULL,      -- signed: a credit line is negative
    credits_ref      text        REFERENCES billing.event (event_ref),  -- the invoiced event a credit line reverses
    state            text        NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'invoiced', 'withdrawn')),
    group_key        text        NOT NULL,      -- invoice grouping key (customer, project, legal entity, currency, cycle per config)
    document_ref     text,                      -- the invoice or credit memo this event is a line of; NULL while ready
    run_id           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((credits_ref IS NULL) = (amount_minor >= 0)),
    CHECK ((state = 'invoiced') = (document_ref IS NOT NULL))
);
COMMENT ON TABLE billing.event IS 'Billable source lines per version (ready -> invoiced | withdrawn); a credit line (negative, credits_ref) reverses an invoiced one. A source line is billed at most once, ever.';
CREATE INDEX event_ready_idx ON billing.event (group_key, event_ref) WHERE state = 'ready';
CREATE INDEX event_source_idx ON billing.event (kind, source_system, source_id);
CREATE INDEX event_project_idx ON billing.event (project_ref, legal_entity);
-- at most one credit line per invoiced event
CREATE UNIQUE INDEX event_one_credit_idx ON billing.event (credits_ref) WHERE credits_ref IS NOT NULL;
