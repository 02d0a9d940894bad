-- 0064: a refresh stores its contract balances once when they are equal across its snapshots
-- (issue 16, deliverable 6, forecast part). Forward-only: never edit; add a new file.
--
-- A contract's balances (cost-to-cost figures, asset or liability, backlog, the catch-up against
-- the scenario's previous snapshot) come out equal in every scenario of a refresh whenever the
-- scenarios' previous snapshots agree (always on a first refresh): 50,000 rows stored three times.
-- As migration 0060 did for the actual-layer series, a snapshot may now name, in balances_from,
-- a snapshot written earlier by the same refresh whose balances are exactly the ones it would
-- store (the store compares them before relying on it); it then stores none of its own.
--
-- The table is renamed forecast.contract_balance_row and forecast.contract_balance becomes a
-- view with the same columns: a snapshot's own rows, and through its header the rows of the
-- snapshot it names. What the view returns for every snapshot is unchanged, so every reader is
-- unchanged; snapshots stored before 0064 have balances_from NULL and read exactly as before.
-- Snapshots stay immutable (the header refuses UPDATE and DELETE, so balances_from never changes
-- and the snapshot named never goes away); the view refuses UPDATE and DELETE and passes an
-- INSERT to the table, whose statement-level check now also refuses rows for a snapshot that
-- takes its balances from another (the view would show both).

ALTER TABLE forecast.snapshot
    ADD COLUMN balances_from text REFERENCES forecast.snapshot (snapshot_id)
        CHECK (balances_from <> snapshot_id);
COMMENT ON COLUMN forecast.snapshot.balances_from IS
    'NULL, or the snapshot (same refresh) whose contract balances this snapshot''s view forecast.contract_balance reads: stored once per refresh.';

ALTER TABLE forecast.contract_balance RENAME TO contract_balance_row;
COMMENT ON TABLE forecast.contract_balance_row IS 'Per contract: cost-to-cost figures, contract asset (unbilled) or liability (deferred), expected loss, backlog, as stored. Read through the view forecast.contract_balance.';

CREATE VIEW forecast.contract_balance AS
SELECT b.snapshot_id, b.project_ref, b.billing_type, b.legal_entity, b.currency,
       b.transaction_price_minor, b.cost_to_date_minor, b.etc_minor, b.eac_minor, b.cum_revenue_minor,
       b.prior_cum_revenue_minor, b.catch_up_minor, b.cum_billed_minor, b.contract_asset_minor,
       b.contract_liability_minor, b.expected_loss_minor, b.backlog_minor
FROM forecast.contract_balance_row b
UNION ALL
SELECT h.snapshot_id, b.project_ref, b.billing_type, b.legal_entity, b.currency,
       b.transaction_price_minor, b.cost_to_date_minor, b.etc_minor, b.eac_minor, b.cum_revenue_minor,
       b.prior_cum_revenue_minor, b.catch_up_minor, b.cum_billed_minor, b.contract_asset_minor,
       b.contract_liability_minor, b.expected_loss_minor, b.backlog_minor
FROM forecast.snapshot h
JOIN forecast.contract_balance_row b ON b.snapshot_id = h.balances_from;
COMMENT ON VIEW forecast.contract_balance IS 'Per contract: cost-to-cost figures, contract asset (unbilled) or liability (deferred), expected loss, backlog. Never netted across contracts (from forecast.contract_balance_row; a snapshot''s from the snapshot it balances_from, if any).';

CREATE FUNCTION forecast.insert_contract_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO forecast.contract_balance_row VALUES (NEW.*);
    RETURN NEW;
END;
$$;

CREATE TRIGGER contract_balance_immutable INSTEAD OF UPDATE OR DELETE ON forecast.contract_balance
    FOR EACH ROW EXECUTE FUNCTION forecast.refuse_change();
CREATE TRIGGER contract_balance_insert INSTEAD OF INSERT ON forecast.contract_balance
    FOR EACH ROW EXECUTE FUNCTION forecast.insert_contract_balance();

-- The rows' snapshot exists and takes no balances from another: one set-based check per INSERT.
CREATE FUNCTION forecast.check_balance_snapshot() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing text;
    shared text;
BEGIN
    SELECT n.snapshot_id, s.balances_from INTO missing, shared
    FROM (SELECT DISTINCT snapshot_id FROM new_rows) n
    LEFT JOIN forecast.snapshot s ON s.snapshot_id = n.snapshot_id
    WHERE s.snapshot_id IS NULL OR s.balances_from IS NOT NULL
    LIMIT 1;
    IF FOUND AND shared IS NULL THEN
        RAISE EXCEPTION 'insert into %.% names snapshot % which does not exist', TG_TABLE_SCHEMA, TG_TABLE_NAME, missing
            USING ERRCODE = 'foreign_key_violation';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'insert into %.% names snapshot % whose balances are those of %', TG_TABLE_SCHEMA, TG_TABLE_NAME, missing, shared
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER contract_balance_snapshot_exists ON forecast.contract_balance_row;
CREATE TRIGGER contract_balance_snapshot_exists AFTER INSERT ON forecast.contract_balance_row
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION forecast.check_balance_snapshot();
