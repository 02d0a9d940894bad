-- 0003: governed master data (ERP -> ODS), propagation to the PSA, project setup state and
-- cross-references, change orders and validation verdicts. Forward-only: never edit, add a file.

CREATE SCHEMA IF NOT EXISTS master;
COMMENT ON SCHEMA master IS 'ERP-owned master data as last synced, what we propagated, project setup state and cross-references.';

CREATE TABLE master.erp_record (
    record_type    text        NOT NULL,          -- customer, subsidiary, currency, taxcode, accountingperiod, job
    external_id    text        NOT NULL,
    internal_id    text        NOT NULL,
    version_hash   text        NOT NULL,          -- staging payload hash of the version held
    name           text,                          -- companyName / name / periodName / itemId
    subsidiary     text,                          -- legal entity code (external id)
    currency       text,
    tax_code       text,
    parent         text,                          -- job: its customer
    country        text,
    merged_into    text,                          -- customer merged into another (ERP custom field)
    contract_minor bigint,                        -- job: contract value in minor units
    is_inactive    boolean     NOT NULL,
    last_modified  timestamptz,
    body           jsonb       NOT NULL,          -- the SuiteQL row as received
    synced_at      timestamptz NOT NULL DEFAULT now(),
    last_run_id    text,
    PRIMARY KEY (record_type, external_id)
);
COMMENT ON TABLE master.erp_record IS 'Current version of each ERP master record (customers, legal entities, currencies, tax codes, periods, jobs).';
CREATE INDEX erp_record_name_idx ON master.erp_record (record_type, lower(name));

CREATE TABLE master.propagation (
    id             bigserial   PRIMARY KEY,
    record_type    text        NOT NULL,          -- customer or job
    external_id    text        NOT NULL,
    change         text        NOT NULL CHECK (change IN ('rename', 'deactivate', 'reactivate', 'merge')),
    version_hash   text        NOT NULL,          -- the ERP version that asked for it
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status         text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'applied', 'skipped')),
    psa_ref        text,                          -- e.g. clients/17, projects/42
    created_run_id text        NOT NULL,
    applied_run_id text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    applied_at     timestamptz,
    UNIQUE (record_type, external_id, change, version_hash)
);
COMMENT ON TABLE master.propagation IS 'ERP-owned changes to carry to the PSA (rename, merge, deactivation); applied once each.';
CREATE INDEX propagation_pending_idx ON master.propagation (id) WHERE status = 'pending';

CREATE TABLE master.validation_verdict (
    domain         text        NOT NULL,          -- e.g. project_setup, time_expense
    record_key     text        NOT NULL,
    ok             boolean     NOT NULL,
    reason_codes   text[]      NOT NULL DEFAULT '{}',
    run_id         text        NOT NULL,
    validated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (domain, record_key)
);
COMMENT ON TABLE master.validation_verdict IS 'Latest ERP validation verdict per record: nothing is activated unless ok.';

CREATE TABLE master.project_setup (
    opportunity_id   bigint      PRIMARY KEY,
    job_external_id  text        NOT NULL UNIQUE, -- ERP job external id (crm-opp-{id}); also the PSA project code
    state            text        NOT NULL CHECK (state IN ('pending', 'rejected', 'erp_job', 'psa_project', 'linked')),
    customer_external_id text,
    legal_entity     text,
    currency         char(3),
    contract_minor   bigint,
    spec             jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- what to create: name, practice, billing type, dates
    erp_internal_id  text,
    psa_client_id    bigint,
    psa_project_id   bigint,
    last_run_id      text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE master.project_setup IS 'Closed-won -> ERP job -> PSA project, one committed step at a time: a re-run resumes, never duplicates.';

CREATE TABLE master.change_order (
    change_order_id    bigint      PRIMARY KEY,
    opportunity_id     bigint      NOT NULL,
    amount_delta_minor bigint      NOT NULL,
    currency           char(3)     NOT NULL,
    job_external_id    text        NOT NULL,
    contract_minor     bigint      NOT NULL,      -- contract value set in the ERP and PSA when applied
    applied_run_id     text        NOT NULL,
    applied_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE master.change_order IS 'Approved CRM change orders applied to the ERP contract value and the PSA budget.';

CREATE TABLE master.crm_cursor (
    consumer    text        PRIMARY KEY,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE master.crm_cursor IS 'Position in the CRM event feed per consumer, advanced after the events are recorded.';

CREATE TABLE master.leakage_run (
    run_id          text        PRIMARY KEY,
    leaked_count    integer     NOT NULL,
    amounts         jsonb       NOT NULL,         -- {"USD": "1234.00"} decimal strings per currency
    jobs_missing    integer     NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE master.leakage_run IS 'Revenue leakage found per run: approved change orders absent from the ERP contract values.';
