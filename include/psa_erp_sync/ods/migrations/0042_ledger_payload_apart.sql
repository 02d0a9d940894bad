-- 0042: the ledger posting's payload in a table of its own (issue 16, deliverable 4: what grows with
-- the ledger). Forward-only: never edit; add a new file.
--
-- A posting row is updated twice (pending -> sent -> outcome) and carried its ~450-byte jsonb
-- payload inline (below the 2 KB TOAST threshold): every state update wrote a new copy of it, the
-- per-pass scans by state read it, and the planner's candidate query aggregated it over every
-- ledger row of the record type on every pass. The payload is written once, when the posting is
-- planned, and never changes: it now lives in ledger.posting_payload, keyed by the idempotency key,
-- written by the same statement that inserts the posting (ledger.insert_planned), and read by key
-- where it is needed (when sending, and the planner's and read-backs' held record).
--
-- ledger.posting_full is the posting row with its payload, for readers that want both (a LEFT JOIN
-- on the primary key: a query that does not name `payload` does not read the payload table). Its
-- column list is fixed when it is created: a column added to ledger.posting later needs the view
-- recreated by that migration.
--
-- Existing payloads are copied once; the column is then dropped (no table rewrite: the old row
-- versions keep their bytes until they are next updated or vacuumed out).
CREATE TABLE ledger.posting_payload (
    idempotency_key text  PRIMARY KEY,   -- = ledger.posting.idempotency_key
    payload         jsonb NOT NULL       -- what is sent to the ERP, as planned
);
COMMENT ON TABLE ledger.posting_payload IS
    'The ERP payload of each ledger.posting row, written once when it is planned (never updated): apart, so state updates do not copy it.';

INSERT INTO ledger.posting_payload (idempotency_key, payload)
SELECT idempotency_key, payload FROM ledger.posting;

ALTER TABLE ledger.posting DROP COLUMN payload;

-- Append-only and written once, as the ledger is (0006): never deleted, never changed.
CREATE TRIGGER posting_payload_append_only BEFORE DELETE ON ledger.posting_payload
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_delete();

CREATE FUNCTION ledger.refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.% is written once: a planned payload never changes (plan a new posting instead)', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER posting_payload_written_once BEFORE UPDATE ON ledger.posting_payload
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_update();

CREATE VIEW ledger.posting_full AS
SELECT p.*, pp.payload
FROM ledger.posting p LEFT JOIN ledger.posting_payload pp ON pp.idempotency_key = p.idempotency_key;
COMMENT ON VIEW ledger.posting_full IS
    'ledger.posting with its payload (ledger.posting_payload), for readers of both.';
