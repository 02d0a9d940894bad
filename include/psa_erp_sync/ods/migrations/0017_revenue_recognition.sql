-- 0017: revenue recognition (include/psa_erp_sync/revenue/). Recognized revenue per project,
-- legal entity and period as computed (with the hash of the inputs it was computed from), and the
-- planned journal entries with their lines, keyed by a deterministic idempotency key and ready
-- for the posting ledger. Forward-only: never edit; add a new file. Money is integer minor units.
CREATE SCHEMA IF NOT EXISTS revenue;
COMMENT ON SCHEMA revenue IS 'Revenue recognition: recognized revenue per project, legal entity and period, and planned journals.';

CREATE TABLE revenue.recognition (
    seq                         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_ref                 text        NOT NULL,
    legal_entity                text        NOT NULL,
    period_month                date        NOT NULL CHECK (extract(day FROM period_month) = 1),
    currency                    char(3)     NOT NULL,
    inputs_hash                 text        NOT NULL,   -- sha256 of the contract's inputs
    billing_type                text        NOT NULL
        CHECK (billing_type IN ('time_and_materials', 'fixed_fee', 'milestone', 'retainer')),
    transaction_price_minor     bigint,                 -- NULL: T&M without a not-to-exceed
    cost_to_date_minor          bigint      NOT NULL,
    estimated_total_cost_minor  bigint      NOT NULL,   -- EAC as known at the period's end
    cum_revenue_minor           bigint      NOT NULL,
    period_revenue_minor        bigint      NOT NULL,
    cum_billed_minor            bigint      NOT NULL,
    contract_asset_minor        bigint      NOT NULL CHECK (contract_asset_minor >= 0),
    contract_liability_minor    bigint      NOT NULL CHECK (contract_liability_minor >= 0),
    expected_loss_minor         bigint      NOT NULL CHECK (expected_loss_minor >= 0),
    loss_provision_minor        bigint      NOT NULL CHECK (loss_provision_minor >= 0),
    run_id                      text        NOT NULL,
    computed_at                 timestamptz NOT NULL DEFAULT now(),
    CHECK (contract_asset_minor = 0 OR contract_liability_minor = 0),
    CHECK (transaction_price_minor IS NULL OR cum_revenue_minor <= transaction_price_minor),
    UNIQUE (project_ref, legal_entity, period_month, currency, inputs_hash)
);
COMMENT ON TABLE revenue.recognition IS 'Recognized revenue per project, legal entity and period, one row per distinct set of inputs (inputs_hash); a recompute with the same inputs writes nothing.';

CREATE VIEW revenue.recognition_latest AS
SELECT DISTINCT ON (project_ref, legal_entity, period_month, currency) *
FROM revenue.recognition
ORDER BY project_ref, legal_entity, period_month, currency, seq DESC;
COMMENT ON VIEW revenue.recognition_latest IS 'The latest recognition of each project, legal entity, period and currency.';

CREATE TABLE revenue.journal (
    idempotency_key     text        PRIMARY KEY,        -- posting.ledger.idempotency_key(identity, version)
    external_id         text        NOT NULL UNIQUE,    -- the ERP journalentry's external id
    project_ref         text        NOT NULL,
    legal_entity        text        NOT NULL,
    period_month        date        NOT NULL CHECK (extract(day FROM period_month) = 1),  -- recognition period
    currency            char(3)     NOT NULL,
    seq                 integer     NOT NULL CHECK (seq >= 1),   -- n-th journal of this period
    inputs_hash         text        NOT NULL,
    state               text        NOT NULL CHECK (state IN ('planned', 'parked')),
    posting_period      text,                            -- ERP period external id; NULL when parked
    posting_month       date,                            -- that period's first day; NULL when parked
    recognition_period  text,                            -- ERP period the revenue belongs to
    reason              text,                            -- why parked (PERIOD_CLOSED, PERIOD_UNKNOWN)
    debit_minor         bigint      NOT NULL CHECK (debit_minor > 0),
    credit_minor        bigint      NOT NULL,
    run_id              text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_minor = credit_minor),
    CHECK ((state = 'parked') = (posting_period IS NULL)),
    CHECK ((state = 'parked') = (posting_month IS NULL)),
    UNIQUE (project_ref, legal_entity, period_month, currency, seq)
);
COMMENT ON TABLE revenue.journal IS 'Planned revenue recognition journals (deltas against what was already planned for the period); posted to the ERP by the posting ledger (next step).';

CREATE TABLE revenue.journal_line (
    idempotency_key  text    NOT NULL REFERENCES revenue.journal (idempotency_key),
    line_no          integer NOT NULL CHECK (line_no >= 1),
    account          text    NOT NULL,
    role             text    NOT NULL
        CHECK (role IN ('revenue', 'contract_asset', 'contract_liability', 'loss_expense', 'loss_provision')),
    debit_minor      bigint  NOT NULL CHECK (debit_minor >= 0),
    credit_minor     bigint  NOT NULL CHECK (credit_minor >= 0),
    CHECK ((debit_minor = 0) <> (credit_minor = 0)),
    PRIMARY KEY (idempotency_key, line_no)
);
COMMENT ON TABLE revenue.journal_line IS 'Lines of a planned journal: one GL account each, a debit or a credit in minor units.';

-- A journal's lines must sum to its header at commit: debits equal credits, checked in the database.
CREATE FUNCTION revenue.check_journal_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM revenue.journal j
        LEFT JOIN revenue.journal_line l ON l.idempotency_key = j.idempotency_key
        WHERE j.idempotency_key = NEW.idempotency_key
        GROUP BY j.idempotency_key, j.debit_minor, j.credit_minor
        HAVING coalesce(sum(l.debit_minor), 0) <> j.debit_minor OR coalesce(sum(l.credit_minor), 0) <> j.credit_minor
    ) THEN
        RAISE EXCEPTION 'journal % does not balance with its lines', NEW.idempotency_key
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER journal_balanced AFTER INSERT ON revenue.journal
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION revenue.check_journal_balanced();

-- Planned journals and recognitions are history: never changed or removed in place.
CREATE FUNCTION revenue.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER recognition_append_only BEFORE UPDATE OR DELETE ON revenue.recognition
    FOR EACH ROW EXECUTE FUNCTION revenue.refuse_change();
CREATE TRIGGER journal_line_append_only BEFORE UPDATE OR DELETE ON revenue.journal_line
    FOR EACH ROW EXECUTE FUNCTION revenue.refuse_change();
