-- Billing documents in both currencies, and credit memos not applied to their invoice
-- (docs/billing.md "Invoices exactly once", "Foreign currency"). A document in a currency other
-- than its legal entity's functional currency carries the ERP's exchange rate for its date
-- (master.currency_rate); the document keeps the transaction total (total_minor, currency) and the
-- functional total at that rate, rounded half-even once. NULL functional columns (documents planned
-- before this migration) mean rate 1. A credit memo larger than the amount remaining on its
-- invoice is sent stand-alone (applied = false): NetSuite refuses to apply more than is due.
ALTER TABLE billing.document
    ADD COLUMN functional_currency     char(3),
    ADD COLUMN functional_total_minor  bigint CHECK (functional_total_minor >= 0),
    ADD COLUMN fx_rate                 numeric(24, 10) CHECK (fx_rate > 0),
    ADD COLUMN fx_rate_date            date,
    ADD COLUMN applied                 boolean NOT NULL DEFAULT true;
COMMENT ON COLUMN billing.document.functional_total_minor IS 'The total in the legal entity''s functional currency at fx_rate (half-even once); NULL before 0031 (rate 1).';
COMMENT ON COLUMN billing.document.applied IS 'A credit memo: applied to its invoice (createdFrom) or stand-alone because it exceeded the amount remaining.';
