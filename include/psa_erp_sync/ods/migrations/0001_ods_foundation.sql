-- 0001: the ODS foundation. Forward-only: never edit an applied migration; add a new file.
-- Money is NUMERIC or integer minor units with an ISO 4217 currency, never floating point.

CREATE SCHEMA IF NOT EXISTS staging;
COMMENT ON SCHEMA staging IS 'Raw payloads exactly as received from source systems, before any validation.';
CREATE SCHEMA IF NOT EXISTS canonical;
COMMENT ON SCHEMA canonical IS 'Validated records in our canonical (v1) contracts; one current row per source record.';
CREATE SCHEMA IF NOT EXISTS ledger;
COMMENT ON SCHEMA ledger IS 'One row per intended ERP posting, keyed by a deterministic idempotency key, plus every attempt.';
CREATE SCHEMA IF NOT EXISTS inbox;
COMMENT ON SCHEMA inbox IS 'Events received from webhooks, unique by delivery id, claimed by event-driven runs.';
CREATE SCHEMA IF NOT EXISTS exceptions;
COMMENT ON SCHEMA exceptions IS 'Quarantined records and dead letters with reason, owner and status: the per-record error queue.';
CREATE SCHEMA IF NOT EXISTS forecast;
COMMENT ON SCHEMA forecast IS 'Immutable, versioned revenue forecast snapshots and their lines.';
CREATE SCHEMA IF NOT EXISTS audit;
COMMENT ON SCHEMA audit IS 'Append-only trail: every change with before/after, and per-run control totals.';

-- staging -----------------------------------------------------------------
CREATE TABLE staging.extract_run (
    run_key          text PRIMARY KEY,          -- "{dag_id}/{run_id}/{endpoint}": stable across task retries
    source_system    text        NOT NULL,
    endpoint         text        NOT NULL,
    window_from      timestamptz,                -- updated_since sent (incremental)
    sweep_from       date,                       -- first spent date re-read (sweep): absence there means deleted
    window_to        timestamptz NOT NULL,
    mode             text        NOT NULL CHECK (mode IN ('incremental', 'sweep', 'full')),
    extracted        integer     NOT NULL DEFAULT 0,
    staged_new       integer     NOT NULL DEFAULT 0,
    staged_unchanged integer     NOT NULL DEFAULT 0,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
COMMENT ON TABLE staging.extract_run IS 'One row per extract of one endpoint in one DAG run: window and counts, so extracted = staged is checkable.';

CREATE TABLE staging.raw_record (
    source_system text        NOT NULL,          -- e.g. psa
    endpoint      text        NOT NULL,          -- e.g. /v2/time_entries
    source_id     text        NOT NULL,
    payload_hash  text        NOT NULL,          -- sha256 of the canonical JSON of the payload
    payload       jsonb       NOT NULL,
    fetched_at    timestamptz NOT NULL,
    first_run_key text        NOT NULL,
    last_run_key  text        NOT NULL,
    PRIMARY KEY (source_system, endpoint, source_id, payload_hash)
);
COMMENT ON TABLE staging.raw_record IS 'Every distinct version of every source payload ever received; dedupe key is (source id, content hash).';
CREATE INDEX raw_record_run_idx ON staging.raw_record (last_run_key);

CREATE TABLE staging.watermark (
    source_system  text        NOT NULL,
    endpoint       text        NOT NULL,
    high_watermark timestamptz NOT NULL,         -- max(updated_at) seen; next window starts at this minus the overlap
    last_sweep_at  timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_system, endpoint)
);
COMMENT ON TABLE staging.watermark IS 'Incremental extract position per endpoint, advanced only after staging commits.';

-- canonical ---------------------------------------------------------------
CREATE TABLE canonical.time_entry (
    source_system   text         NOT NULL,
    source_id       text         NOT NULL,
    version_hash    text         NOT NULL,       -- payload hash of the version this row holds
    spent_date      date         NOT NULL,
    user_ref        text         NOT NULL,
    project_ref     text         NOT NULL,
    task_ref        text,
    legal_entity    text         NOT NULL,
    hours           numeric(9,2) NOT NULL CHECK (hours >= 0),
    billable        boolean      NOT NULL,
    bill_rate_minor bigint       NOT NULL CHECK (bill_rate_minor >= 0),
    amount_minor    bigint       NOT NULL,       -- hours x bill rate, rounded half-even to the minor unit
    currency        char(3)      NOT NULL,
    approved        boolean      NOT NULL,
    is_deleted      boolean      NOT NULL DEFAULT false,
    fingerprint     text         NOT NULL,       -- hash of (user, date, project, task, hours, notes): duplicate detection
    source_updated_at timestamptz NOT NULL,
    validated_at    timestamptz  NOT NULL DEFAULT now(),
    record          jsonb        NOT NULL,       -- the full canonical v1 record
    PRIMARY KEY (source_system, source_id)
);
COMMENT ON TABLE canonical.time_entry IS 'Current validated version of each PSA time entry (canonical TimeEntry v1).';
CREATE INDEX time_entry_period_idx ON canonical.time_entry (legal_entity, spent_date);
CREATE INDEX time_entry_fingerprint_idx ON canonical.time_entry (fingerprint);

CREATE TABLE canonical.expense_entry (
    source_system   text        NOT NULL,
    source_id       text        NOT NULL,
    version_hash    text        NOT NULL,
    spent_date      date        NOT NULL,
    user_ref        text        NOT NULL,
    project_ref     text        NOT NULL,
    legal_entity    text        NOT NULL,
    category        text        NOT NULL,
    billable        boolean     NOT NULL,
    amount_minor    bigint      NOT NULL,
    currency        char(3)     NOT NULL,
    approved        boolean     NOT NULL,
    is_deleted      boolean     NOT NULL DEFAULT false,
    fingerprint     text        NOT NULL,
    source_updated_at timestamptz NOT NULL,
    validated_at    timestamptz NOT NULL DEFAULT now(),
    record          jsonb       NOT NULL,
    PRIMARY KEY (source_system, source_id)
);
CREATE INDEX expense_entry_fingerprint_idx ON canonical.expense_entry (fingerprint);
COMMENT ON TABLE canonical.expense_entry IS 'Current validated version of each PSA expense line (canonical ExpenseEntry v1).';

-- ledger ------------------------------------------------------------------
CREATE TABLE ledger.posting (
    idempotency_key  text        PRIMARY KEY,    -- sha256(record type, source system, source id, approved version, action, sequence)
    seq              bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,  -- order of planning per source record
    record_type      text        NOT NULL,       -- ERP record type, e.g. timebill
    source_system    text        NOT NULL,
    source_id        text        NOT NULL,
    source_version   text        NOT NULL,
    external_id      text        NOT NULL,       -- the ERP external id the record is upserted by
    action           text        NOT NULL DEFAULT 'post' CHECK (action IN ('post', 'adjust', 'reverse')),
    state            text        NOT NULL CHECK (state IN ('pending', 'sent', 'confirmed', 'rejected', 'ambiguous', 'resolved', 'parked', 'superseded')),
    legal_entity     text,
    period           text,                       -- ERP accounting period the posting landed in
    amount_minor     bigint,
    currency         char(3),
    erp_internal_id  text,
    payload          jsonb       NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    last_error       jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE ledger.posting IS 'Intended ERP postings. Written before the ERP is called: pending -> sent -> confirmed | rejected | ambiguous -> resolved.';
CREATE INDEX posting_source_idx ON ledger.posting (record_type, source_system, source_id, seq);
CREATE INDEX posting_state_idx ON ledger.posting (state) WHERE state NOT IN ('confirmed', 'resolved');

CREATE TABLE ledger.attempt (
    id               bigserial   PRIMARY KEY,
    idempotency_key  text        NOT NULL REFERENCES ledger.posting (idempotency_key),
    attempt_no       integer     NOT NULL,
    batch_key        text,                       -- X-NetSuite-idempotency-key of the batch call
    dag_run_id       text,
    task_try         integer,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    outcome          text,                       -- confirmed, rejected, ambiguous, throttled, resolved-by-lookup ...
    http_status      integer,
    detail           jsonb,
    UNIQUE (idempotency_key, attempt_no)
);
COMMENT ON TABLE ledger.attempt IS 'Every attempt to send a posting, with its outcome; the trace of each record to the ERP.';

-- inbox -------------------------------------------------------------------
CREATE TABLE inbox.event (
    delivery_id    text        PRIMARY KEY,      -- the sender's delivery id: replay protection
    source_system  text        NOT NULL,
    event_type     text        NOT NULL,
    source_id      text,
    occurred_at    timestamptz,
    received_at    timestamptz NOT NULL DEFAULT now(),
    payload        jsonb       NOT NULL,
    status         text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'claimed', 'processed', 'quarantined')),
    claimed_by     text,
    claimed_at     timestamptz,
    processed_at   timestamptz
);
COMMENT ON TABLE inbox.event IS 'Durable inbox of received events; a 2xx is answered only after the row commits.';
CREATE INDEX event_pending_idx ON inbox.event (received_at) WHERE status = 'pending';

-- exceptions --------------------------------------------------------------
CREATE TABLE exceptions.item (
    id             bigserial   PRIMARY KEY,
    kind           text        NOT NULL CHECK (kind IN ('quarantine', 'dead_letter', 'validation', 'parked', 'leakage', 'reconciliation')),
    domain         text        NOT NULL,         -- data domain, e.g. time_expense
    source_system  text        NOT NULL,
    record_type    text        NOT NULL,
    source_id      text        NOT NULL,
    source_version text,
    reason_code    text        NOT NULL,
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- never personal data or free text
    legal_entity   text,
    owner          text        NOT NULL,         -- from config/ownership.yaml
    status         text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed', 'resolved', 'ignored')),
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now(),
    occurrences    integer     NOT NULL DEFAULT 1,
    last_run_id    text,
    UNIQUE (kind, source_system, record_type, source_id, reason_code)
);
COMMENT ON TABLE exceptions.item IS 'Quarantine and dead letters: one row per (record, reason), with owner and status for the error queue.';
CREATE INDEX item_open_idx ON exceptions.item (owner, reason_code) WHERE status = 'open';

-- forecast ----------------------------------------------------------------
CREATE TABLE forecast.snapshot (
    snapshot_id    text        PRIMARY KEY,      -- deterministic from (scenario, as_of, input data versions)
    scenario       text        NOT NULL CHECK (scenario IN ('base', 'best', 'worst')),
    as_of          date        NOT NULL,
    run_id         text        NOT NULL,
    data_versions  jsonb       NOT NULL,
    reporting_currency char(3) NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE forecast.snapshot IS 'Immutable forecast snapshots; a snapshot is never updated, a new one is written.';

CREATE TABLE forecast.line (
    snapshot_id    text        NOT NULL REFERENCES forecast.snapshot (snapshot_id),
    project_ref    text        NOT NULL,
    practice       text        NOT NULL,
    legal_entity   text        NOT NULL,
    layer          text        NOT NULL CHECK (layer IN ('actual', 'contracted', 'pipeline')),
    month          date        NOT NULL,
    currency       char(3)     NOT NULL,
    amount_minor   bigint      NOT NULL,
    reporting_amount_minor bigint NOT NULL,
    PRIMARY KEY (snapshot_id, project_ref, layer, month)
);
COMMENT ON TABLE forecast.line IS 'Monthly forecast amounts per project and confidence layer within a snapshot.';

-- audit -------------------------------------------------------------------
CREATE TABLE audit.change (
    id           bigserial   PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    actor        text        NOT NULL,           -- dag_id.task_id or a person's role, never a name
    action       text        NOT NULL,
    entity       text        NOT NULL,
    entity_key   text        NOT NULL,
    before       jsonb,
    after        jsonb,
    run_id       text
);
COMMENT ON TABLE audit.change IS 'Append-only trail of every change we make, with before and after images.';
CREATE INDEX change_entity_idx ON audit.change (entity, entity_key);

CREATE TABLE audit.control_total (
    id            bigserial   PRIMARY KEY,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    dag_id        text        NOT NULL,
    run_id        text        NOT NULL,
    record_type   text        NOT NULL,
    stage         text        NOT NULL,          -- psa_approved, extracted, staged, valid, quarantined, posted, erp_readback
    record_count  integer     NOT NULL,
    hours         numeric(14,2),
    amounts       jsonb       NOT NULL DEFAULT '{}'::jsonb,   -- {"USD": "123.45"} as decimal strings
    hash_total    text,
    UNIQUE (dag_id, run_id, record_type, stage)
);
COMMENT ON TABLE audit.control_total IS 'Per-run control totals at each stage: counts, hours, amounts per currency, hash total of source ids.';
