-- Invoice status back to the PSA (issue 14, deliverable 6): which PSA invoice mirrors each ERP
-- invoice, and what was last mirrored. Keyed by the ERP invoice's external id, so a retried,
-- duplicated or reordered webhook and the daily sweep all find the same PSA invoice.
CREATE SCHEMA IF NOT EXISTS billing;

CREATE TABLE billing.psa_invoice (
    erp_external_id  text        PRIMARY KEY,
    erp_internal_id  text        NOT NULL UNIQUE,
    psa_invoice_id   bigint      NOT NULL UNIQUE,
    psa_number       text        NOT NULL,
    erp_status       text        NOT NULL,   -- Open, Paid In Full, Voided (as last read)
    erp_modified_at  timestamptz,            -- the ERP's lastModifiedDate of that read: an older read never wins
    psa_state        text        NOT NULL CHECK (psa_state IN ('draft', 'open', 'paid', 'closed')),
    paid_minor       bigint      NOT NULL DEFAULT 0,  -- payments mirrored to the PSA, minor units
    currency         char(3)     NOT NULL,
    last_run_id      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.psa_invoice IS 'ERP invoice (external id) <-> PSA invoice id, and the state last mirrored to the PSA.';

-- The daily sweep's watermark: ERP invoices modified since it (minus an overlap) are read again.
CREATE TABLE billing.psa_status_sweep (
    name        text        PRIMARY KEY,
    swept_to    timestamptz NOT NULL,
    last_run_id text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE billing.psa_status_sweep IS 'Watermark of the daily ERP invoice status sweep (invoice.paid webhooks that were missed).';
