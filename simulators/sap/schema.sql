-- State of the SAP S/4HANA simulator (OData V2). Idempotent: run at every start.

CREATE TABLE IF NOT EXISTS company_code (
    company_code text PRIMARY KEY,
    name         text NOT NULL,
    currency     text NOT NULL
);

-- Person work agreements (the employment an employee books time under), per company code.
CREATE TABLE IF NOT EXISTS work_agreement (
    external_id          text NOT NULL,
    company_code         text NOT NULL REFERENCES company_code,
    person_work_agreement text NOT NULL,
    PRIMARY KEY (external_id, company_code)
);

-- Posting periods per company code (the real system assigns a period variant; flattened here).
-- A period that is not here is not open.
CREATE TABLE IF NOT EXISTS posting_period (
    company_code text    NOT NULL REFERENCES company_code,
    fiscal_year  integer NOT NULL,
    period       integer NOT NULL CHECK (period BETWEEN 1 AND 16),
    start_date   date    NOT NULL,
    end_date     date    NOT NULL,
    is_open      boolean NOT NULL,
    PRIMARY KEY (company_code, fiscal_year, period)
);

CREATE SEQUENCE IF NOT EXISTS timesheet_record_no;

-- CATS records. Key: work agreement + company code + record number (12 digits). An approved record
-- is never changed in place: a change marks it 50 and creates a successor naming it as predecessor.
CREATE TABLE IF NOT EXISTS timesheet_record (
    pwa_external_id       text        NOT NULL,
    company_code          text        NOT NULL,
    record                text        NOT NULL,
    person_work_agreement text        NOT NULL,
    sheet_date            date        NOT NULL,
    status                text        NOT NULL CHECK (status IN ('10', '20', '30', '40', '50', '60')),
    predecessor           text        NOT NULL DEFAULT '',
    released_on_save      boolean     NOT NULL,
    hours                 numeric(8, 2) NOT NULL,
    data_fields           jsonb       NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    changed_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (pwa_external_id, company_code, record),
    CONSTRAINT timesheet_record_no_key UNIQUE (record)
);
CREATE INDEX IF NOT EXISTS timesheet_record_date ON timesheet_record (pwa_external_id, company_code, sheet_date);

CREATE SEQUENCE IF NOT EXISTS accounting_document_no START 100000000;

-- Journal entries: one header per accounting document, balanced items (debit S, credit H).
CREATE TABLE IF NOT EXISTS journal_entry (
    company_code          text    NOT NULL REFERENCES company_code,
    fiscal_year           integer NOT NULL,
    accounting_document   text    NOT NULL,
    document_type         text    NOT NULL,
    document_date         date    NOT NULL,
    posting_date          date    NOT NULL,
    fiscal_period         integer NOT NULL,
    document_reference_id text    NOT NULL DEFAULT '',
    header_text           text    NOT NULL DEFAULT '',
    currency              text    NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (company_code, fiscal_year, accounting_document)
);

CREATE TABLE IF NOT EXISTS journal_entry_item (
    company_code        text    NOT NULL,
    fiscal_year         integer NOT NULL,
    accounting_document text    NOT NULL,
    item                integer NOT NULL,
    gl_account          text    NOT NULL,
    amount              numeric(23, 2) NOT NULL,
    currency            text    NOT NULL,
    debit_credit        text    NOT NULL CHECK (debit_credit IN ('S', 'H')),
    item_text           text    NOT NULL DEFAULT '',
    cost_center         text    NOT NULL DEFAULT '',
    wbs_element         text    NOT NULL DEFAULT '',
    PRIMARY KEY (company_code, fiscal_year, accounting_document, item),
    FOREIGN KEY (company_code, fiscal_year, accounting_document) REFERENCES journal_entry ON DELETE CASCADE
);

-- Master data of our stand-in service ZPSA_MASTERDATA_SRV (docs/simulators.md): work agreements
-- (above, with the person's names and dates), customers and WBS elements per company code.
ALTER TABLE work_agreement ADD COLUMN IF NOT EXISTS first_name text NOT NULL DEFAULT '';
ALTER TABLE work_agreement ADD COLUMN IF NOT EXISTS last_name text NOT NULL DEFAULT '';
ALTER TABLE work_agreement ADD COLUMN IF NOT EXISTS start_date date;
ALTER TABLE work_agreement ADD COLUMN IF NOT EXISTS end_date date;
ALTER TABLE work_agreement ADD COLUMN IF NOT EXISTS is_inactive boolean NOT NULL DEFAULT false;
CREATE SEQUENCE IF NOT EXISTS work_agreement_no START 50100000;

CREATE TABLE IF NOT EXISTS customer (
    customer      text    NOT NULL,
    company_code  text    NOT NULL REFERENCES company_code,
    customer_name text    NOT NULL,
    currency      text    NOT NULL,
    is_blocked    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (customer, company_code)
);

CREATE TABLE IF NOT EXISTS wbs_element (
    wbs_element  text    NOT NULL,
    company_code text    NOT NULL REFERENCES company_code,
    description  text    NOT NULL,
    customer     text    NOT NULL,
    currency     text    NOT NULL,
    is_closed    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (wbs_element, company_code),
    FOREIGN KEY (customer, company_code) REFERENCES customer
);

-- Customer invoices as FI documents (docs/simulators.md, "Customer invoices and payments"): a
-- customer (debtor) item names a customer of the company code; an item may reference the invoice
-- it applies to (a credit memo or a payment, SAP's REBZG); an open item is cleared once what
-- references it covers it.
ALTER TABLE journal_entry_item ADD COLUMN IF NOT EXISTS customer text NOT NULL DEFAULT '';
ALTER TABLE journal_entry_item ADD COLUMN IF NOT EXISTS invoice_reference text NOT NULL DEFAULT '';
ALTER TABLE journal_entry_item ADD COLUMN IF NOT EXISTS invoice_reference_fiscal_year integer;
ALTER TABLE journal_entry_item ADD COLUMN IF NOT EXISTS clearing_document text NOT NULL DEFAULT '';
ALTER TABLE journal_entry_item ADD COLUMN IF NOT EXISTS clearing_date date;
ALTER TABLE journal_entry ADD COLUMN IF NOT EXISTS changed_at timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE INDEX IF NOT EXISTS journal_entry_item_reference
    ON journal_entry_item (company_code, invoice_reference_fiscal_year, invoice_reference);

-- Foreign-currency documents (docs/simulators.md, "Amounts in company code currency"): the rate a
-- document was translated at (1 transaction currency = rate company code currency; NULL when the
-- document is in a foreign currency and the poster sent none: the simulator has no rate table) and
-- each item's amount in the company code's currency.
ALTER TABLE journal_entry ADD COLUMN IF NOT EXISTS exchange_rate numeric;
ALTER TABLE journal_entry ADD COLUMN IF NOT EXISTS company_code_currency text;
ALTER TABLE journal_entry_item ADD COLUMN IF NOT EXISTS amount_company_code numeric(23, 2);
