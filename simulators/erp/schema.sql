-- State of the ERP simulator (NetSuite SuiteTalk REST). Idempotent: run at every start.

-- One generic record store. Internal ids come from one sequence shared by all record types
-- (NetSuite numbers per type; a shared sequence keeps ids unique and is otherwise invisible).
CREATE TABLE IF NOT EXISTS record (
    id            bigserial PRIMARY KEY,
    type          text        NOT NULL,
    external_id   text        NOT NULL,
    body          jsonb       NOT NULL,
    is_inactive   boolean     NOT NULL DEFAULT false,
    -- Money and quantities copied out of the body as NUMERIC (the body keeps decimal strings).
    hours         numeric(12, 4),
    rate          numeric(18, 4),
    amount        numeric(18, 2),
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_modified timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT record_type_external_id_key UNIQUE (type, external_id)
);
CREATE INDEX IF NOT EXISTS record_type_last_modified ON record (type, last_modified, id);
CREATE INDEX IF NOT EXISTS record_type_id ON record (type, id);
CREATE INDEX IF NOT EXISTS record_period_subsidiary ON record ((body -> 'subsidiary' ->> 'externalId'))
    WHERE type = 'accountingperiod';

-- Async batch jobs ("our documented stand-in for NetSuite's async bulk"). The idempotency key is
-- recorded in the same transaction as the job's items.
CREATE TABLE IF NOT EXISTS batch_job (
    id              bigserial PRIMARY KEY,
    idempotency_key text        NOT NULL,
    type            text        NOT NULL,
    status          text        NOT NULL,
    item_count      integer     NOT NULL,
    succeeded_count integer     NOT NULL,
    failed_count    integer     NOT NULL,
    results         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    completed_at    timestamptz,
    CONSTRAINT batch_job_idempotency_key_key UNIQUE (idempotency_key)
);

-- Lines of transactions with a sublist (invoice/creditmemo "item", customerpayment "apply",
-- journalentry "line"), rewritten with their transaction; read by SuiteQL as ``transactionline``.
-- Same columns as ``record`` so the SuiteQL builder reads both.
CREATE TABLE IF NOT EXISTS record_line (
    id             bigserial PRIMARY KEY,
    transaction_id bigint      NOT NULL,
    type           text        NOT NULL DEFAULT 'transactionline',
    external_id    text        NOT NULL,
    body           jsonb       NOT NULL,
    is_inactive    boolean     NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    last_modified  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS record_line_transaction ON record_line (transaction_id);
CREATE INDEX IF NOT EXISTS record_line_last_modified ON record_line (last_modified, id);

-- What each customer payment (apply lines) or credit memo (createdFrom) applies to which invoice;
-- an invoice's amountRemaining is its total minus these.
CREATE TABLE IF NOT EXISTS application (
    source_id  bigint         NOT NULL,
    invoice_id bigint         NOT NULL,
    amount     numeric(18, 2) NOT NULL,
    PRIMARY KEY (source_id, invoice_id)
);
CREATE INDEX IF NOT EXISTS application_invoice ON application (invoice_id);
