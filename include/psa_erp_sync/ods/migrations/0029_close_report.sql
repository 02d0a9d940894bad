-- The month-end close report (issue 14, deliverable 8): one immutable row per legal entity x
-- period x run x content, with the report as JSON (include/psa_erp_sync/reconcile/close_report.py).
-- A retry of a run that finds the same figures writes nothing; one that finds other figures (a
-- fix in between) adds a row beside the first. Nothing is ever updated or deleted.
CREATE SCHEMA IF NOT EXISTS close;
COMMENT ON SCHEMA close IS 'Month-end close reports per legal entity and period (immutable).';

CREATE TABLE close.report (
    report_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    legal_entity  text        NOT NULL,
    period        text        NOT NULL CHECK (period ~ '^[0-9]{4}-[0-9]{2}$'),  -- YYYY-MM
    run_id        text        NOT NULL,
    as_of         timestamptz NOT NULL,
    reconciled    boolean     NOT NULL,       -- every reconciliation area matched to the minor unit
    headline      jsonb       NOT NULL,       -- close_report.headline(): the figures the demo prints
    body          jsonb       NOT NULL,       -- the whole CloseReport (integer minor units, per currency)
    body_hash     text        NOT NULL,       -- sha256 of body
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (legal_entity, period, run_id, body_hash)
);
COMMENT ON TABLE close.report IS 'Month-end close report per legal entity, period and run: revenue recognized vs billed, WIP and deferred balances, postings by state, reconciliation to the cent, open exceptions, leakage. Immutable.';
CREATE INDEX report_period_idx ON close.report (period, legal_entity, created_at DESC);

CREATE FUNCTION close.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'close reports are immutable: % on %.% refused', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'raise_exception';
END;
$$;
CREATE TRIGGER report_immutable BEFORE UPDATE OR DELETE ON close.report
    FOR EACH ROW EXECUTE FUNCTION close.refuse_change();
