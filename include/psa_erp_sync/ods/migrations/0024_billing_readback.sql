-- 0024: billing as the ERP holds it, read back into the ODS (include/psa_erp_sync/billing/readback.py),
-- and the forecast's billing KPIs per snapshot. The ERP is the system of authority for invoices,
-- credit memos, payments and journals: these tables are its last-read copy, one row per ERP record
-- (keyed by the ERP internal id; the external id is unique where the record has one), replaced when
-- a newer version is read (last version wins), never deleted by a read (a voided invoice is kept
-- with its state). Money is integer minor units in the record's currency.
-- Forward-only: never edit; add a new file.
CREATE SCHEMA IF NOT EXISTS billing;

-- Invoices and credit memos share NetSuite's transaction shape: one table, told apart by record_type.
CREATE TABLE billing.erp_invoice (
    record_type          text        NOT NULL CHECK (record_type IN ('invoice', 'creditmemo')),
    internal_id          text        NOT NULL,
    external_id          text,                       -- our external id (ERP-native records have none)
    tran_id              text,
    tran_date            date        NOT NULL,
    due_date             date,
    customer_ref         text,                       -- NetSuite entity (customer external id)
    job_ref              text,                       -- NetSuite job (project external id)
    project_ref          text,                       -- the PSA project the job maps to (NULL: unmapped)
    legal_entity         text,                       -- subsidiary external id
    currency             char(3)     NOT NULL,
    total_minor          bigint      NOT NULL,       -- as the ERP holds it (a credit memo is positive)
    amount_remaining_minor bigint,                   -- invoice only
    status               text,                       -- Open | Paid In Full | Voided (invoice)
    voided               boolean     NOT NULL DEFAULT false,
    created_from_ref     text,                       -- credit memo: the invoice it applies to
    last_modified        timestamptz NOT NULL,
    version_hash         text        NOT NULL,       -- sha256 of the header and its lines as read
    body                 jsonb       NOT NULL,       -- the SuiteQL row as received
    read_run_id          text        NOT NULL,
    read_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (record_type, internal_id)
);
CREATE UNIQUE INDEX erp_invoice_external_idx ON billing.erp_invoice (record_type, external_id) WHERE external_id IS NOT NULL;
CREATE INDEX erp_invoice_customer_idx ON billing.erp_invoice (legal_entity, customer_ref, tran_date);
CREATE INDEX erp_invoice_project_idx ON billing.erp_invoice (project_ref);
COMMENT ON TABLE billing.erp_invoice IS 'ERP invoices and credit memos as last read back (overlap window, last version wins; voided invoices kept with their state).';

CREATE TABLE billing.erp_invoice_line (
    record_type      text    NOT NULL,
    internal_id      text    NOT NULL,              -- the transaction
    line_no          integer NOT NULL,              -- NetSuite linesequencenumber
    source_type      text,                          -- timebill | expensereport | milestone | retainerperiod
    source_id        text,                          -- our external id of the source (time entry, expense, milestone, project:period)
    quantity         numeric(14, 4),
    rate             numeric(18, 4),
    amount_minor     bigint  NOT NULL,              -- as the ERP holds it (a credit memo line is positive)
    currency         char(3) NOT NULL,
    description      text,
    PRIMARY KEY (record_type, internal_id, line_no),
    FOREIGN KEY (record_type, internal_id) REFERENCES billing.erp_invoice (record_type, internal_id) ON DELETE CASCADE
);
CREATE INDEX erp_invoice_line_source_idx ON billing.erp_invoice_line (source_type, source_id);
COMMENT ON TABLE billing.erp_invoice_line IS 'Lines of ERP invoices and credit memos, each with the source it bills (time entry, expense, milestone, retainer period).';

CREATE TABLE billing.erp_payment (
    internal_id      text        PRIMARY KEY,
    external_id      text        UNIQUE,
    tran_id          text,
    tran_date        date        NOT NULL,
    customer_ref     text,
    legal_entity     text,
    currency         char(3)     NOT NULL,
    payment_minor    bigint      NOT NULL,
    last_modified    timestamptz NOT NULL,
    version_hash     text        NOT NULL,
    body             jsonb       NOT NULL,
    read_run_id      text        NOT NULL,
    read_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erp_payment_customer_idx ON billing.erp_payment (legal_entity, customer_ref, tran_date);
COMMENT ON TABLE billing.erp_payment IS 'ERP customer payments as last read back.';

CREATE TABLE billing.erp_payment_application (
    payment_internal_id  text    NOT NULL REFERENCES billing.erp_payment (internal_id) ON DELETE CASCADE,
    line_no              integer NOT NULL,
    invoice_internal_id  text,                      -- NetSuite appliedto (NULL: unapplied)
    amount_minor         bigint  NOT NULL,
    PRIMARY KEY (payment_internal_id, line_no)
);
CREATE INDEX erp_payment_application_invoice_idx ON billing.erp_payment_application (invoice_internal_id);
COMMENT ON TABLE billing.erp_payment_application IS 'What each ERP customer payment applies to which invoice.';

CREATE TABLE billing.erp_journal (
    internal_id      text        PRIMARY KEY,
    external_id      text        UNIQUE,
    tran_id          text,
    tran_date        date        NOT NULL,
    legal_entity     text,
    currency         char(3)     NOT NULL,
    amount_minor     bigint,                        -- the signed net effect, when the ERP carries it
    memo             text,
    posting_period   text,
    last_modified    timestamptz NOT NULL,
    version_hash     text        NOT NULL,
    body             jsonb       NOT NULL,
    read_run_id      text        NOT NULL,
    read_at          timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.erp_journal IS 'ERP journal entries as last read back (revenue journals and corrections included).';

CREATE TABLE billing.erp_journal_line (
    journal_internal_id  text    NOT NULL REFERENCES billing.erp_journal (internal_id) ON DELETE CASCADE,
    line_no              integer NOT NULL,
    account              text,
    debit_minor          bigint  CHECK (debit_minor >= 0),
    credit_minor         bigint  CHECK (credit_minor >= 0),
    currency             char(3) NOT NULL,
    memo                 text,
    PRIMARY KEY (journal_internal_id, line_no)
);
COMMENT ON TABLE billing.erp_journal_line IS 'Debit and credit lines of ERP journal entries.';

CREATE TABLE billing.erp_readback_watermark (
    record_type      text        PRIMARY KEY,       -- invoice | creditmemo | customerpayment | journalentry
    high_watermark   timestamptz,                   -- newest lastmodifieddate read; the next read starts an overlap before it
    last_run_id      text        NOT NULL,
    last_read        integer     NOT NULL,
    last_changed     integer     NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.erp_readback_watermark IS 'Read-back high watermark per ERP billing record type, advanced in the transaction that writes the rows.';

-- The forecast's cash KPIs, written once with each snapshot (immutable like the snapshot). -----
CREATE TABLE forecast.billing_kpi (
    snapshot_id              text          NOT NULL REFERENCES forecast.snapshot (snapshot_id),
    legal_entity             text          NOT NULL,
    customer_ref             text          NOT NULL,   -- ERP customer external id ('unmapped' when unknown)
    currency                 char(3)       NOT NULL,
    receivables_minor        bigint        NOT NULL,   -- open invoices - credit memos - payments, dated <= as_of
    billed_in_period_minor   bigint        NOT NULL,   -- invoices - credit memos dated in the DSO period
    dso_period_days          integer       NOT NULL,
    dso_days                 numeric(10, 1),           -- receivables / billed in period x period days; NULL: nothing billed
    wip_0_30_minor           bigint        NOT NULL,   -- unbilled approved billable work by days since approval
    wip_31_60_minor          bigint        NOT NULL,
    wip_61_90_minor          bigint        NOT NULL,
    wip_over_90_minor        bigint        NOT NULL,
    unbilled_entries         integer       NOT NULL,
    invoiced_entries         integer       NOT NULL,   -- approved billable entries invoiced by as_of
    avg_days_to_invoice      numeric(10, 1),           -- approval -> first invoice, over those entries
    leakage_days             integer       NOT NULL,   -- N (config/forecast.yaml billing_kpis.leakage_days)
    leakage_entries          integer       NOT NULL,   -- approved billable work not invoiced within N days
    leakage_minor            bigint        NOT NULL,
    PRIMARY KEY (snapshot_id, legal_entity, customer_ref, currency)
);
COMMENT ON TABLE forecast.billing_kpi IS 'Per snapshot, legal entity, customer and currency: receivables, DSO, unbilled WIP ageing and revenue leakage (work not invoiced within N days), from the ERP billing read back.';
CREATE TRIGGER billing_kpi_immutable BEFORE UPDATE OR DELETE ON forecast.billing_kpi
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();
