-- CRM simulator state (schema sim_crm). Money is numeric, never floating point.
CREATE TABLE IF NOT EXISTS account (
    id                        bigint      PRIMARY KEY,
    name                      text        NOT NULL,
    legal_entity              text,
    erp_customer_external_id  text,
    created_at                timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at                timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS account_updated_idx ON account (updated_at, id);

CREATE TABLE IF NOT EXISTS opportunity (
    id               bigint        PRIMARY KEY,
    account_id       bigint        NOT NULL,
    name             text          NOT NULL,
    stage            text          NOT NULL,
    probability      integer       NOT NULL CHECK (probability BETWEEN 0 AND 100),
    amount           numeric(18,2) NOT NULL,
    currency         char(3)       NOT NULL,
    close_date       date,
    expected_start   date,
    duration_months  integer,
    legal_entity     text,
    practice         text,
    billing_type     text,
    psa_project_id   bigint,
    is_won           boolean       GENERATED ALWAYS AS (stage = 'Closed Won') STORED,
    is_closed        boolean       GENERATED ALWAYS AS (stage IN ('Closed Won', 'Closed Lost')) STORED,
    created_at       timestamptz   NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz   NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS opportunity_updated_idx ON opportunity (updated_at, id);

CREATE TABLE IF NOT EXISTS change_order (
    id               bigint        PRIMARY KEY,
    opportunity_id   bigint        NOT NULL,
    amount_delta     numeric(18,2) NOT NULL,
    currency         char(3)       NOT NULL,
    status           text          NOT NULL,
    effective_date   date,
    approved_at      timestamptz,
    created_at       timestamptz   NOT NULL DEFAULT clock_timestamp(),
    updated_at       timestamptz   NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS change_order_updated_idx ON change_order (updated_at, id);

-- The event feed: append-only, ordered by seq. A redelivery appends the same event id again.
CREATE TABLE IF NOT EXISTS event (
    seq          bigserial   PRIMARY KEY,
    event_id     text        NOT NULL,
    type         text        NOT NULL,
    entity_id    bigint      NOT NULL,
    occurred_at  timestamptz NOT NULL,
    data         jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS event_id_idx ON event (event_id);
