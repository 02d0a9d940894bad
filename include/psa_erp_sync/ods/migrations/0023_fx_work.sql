-- Foreign-currency work: a project billed in a currency other than its legal entity's functional
-- currency (a EUR entity serving a USD customer in USD) is posted in the transaction currency with
-- the exchange rate the ERP uses for the date, and both amounts are kept (docs/billing.md,
-- "Foreign currency").

-- The ERP's currency rates (NetSuite ``currencyrate``) as last read: 1 transaction_currency =
-- exchange_rate base_currency from effective_date on. Refreshed by the master-data sync
-- (include/psa_erp_sync/masterdata/fx.py); validation reads the rate in force on an entry's date.
CREATE TABLE master.currency_rate (
    base_currency        char(3)     NOT NULL,
    transaction_currency char(3)     NOT NULL,
    effective_date       date        NOT NULL,
    exchange_rate        numeric(24, 10) NOT NULL CHECK (exchange_rate > 0),
    source               text        NOT NULL DEFAULT 'erp:currencyrate',  -- where the rate was read
    external_id          text,                                   -- the ERP record's external id
    read_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (base_currency, transaction_currency, effective_date)
);
COMMENT ON TABLE master.currency_rate IS 'ERP currency rates as last read: 1 transaction_currency = exchange_rate base_currency from effective_date.';

-- Both amounts of every canonical entry: amount_minor/currency are the transaction amount; the
-- functional amount is in the legal entity's currency at fx_rate (the ERP's rate in force on
-- fx_rate_date), rounded half-even once. NULL functional columns (rows validated before this
-- migration) mean the transaction amount is the functional amount (rate 1).
ALTER TABLE canonical.time_entry
    ADD COLUMN functional_amount_minor bigint,
    ADD COLUMN functional_currency     char(3),
    ADD COLUMN fx_rate                 numeric(24, 10) CHECK (fx_rate > 0),
    ADD COLUMN fx_rate_date            date,
    ADD COLUMN fx_rate_source          text;
ALTER TABLE canonical.expense_entry
    ADD COLUMN functional_amount_minor bigint,
    ADD COLUMN functional_currency     char(3),
    ADD COLUMN fx_rate                 numeric(24, 10) CHECK (fx_rate > 0),
    ADD COLUMN fx_rate_date            date,
    ADD COLUMN fx_rate_source          text;

-- The ledger keeps both amounts of what it sends: amount_minor/currency (transaction) and the
-- functional amount at the rate carried in the payload (``exchangeRate``). NULL for correcting
-- journals and reversals, and for rows written before this migration.
ALTER TABLE ledger.posting
    ADD COLUMN functional_amount_minor bigint,
    ADD COLUMN functional_currency     char(3),
    ADD COLUMN fx_rate                 numeric(24, 10);
