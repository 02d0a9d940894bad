-- 0048: the ledger's open postings, apart (issue 16, deliverable 4: what grows with the ledger).
-- Forward-only: never edit; add a new file.
--
-- The posting engine asks the ledger by state on every pass and every round: how many are pending,
-- which are sent or ambiguous (an earlier attempt interrupted), the next page of pending ones, the
-- counts at the end. Migration 0006 dropped the index on ledger.posting.state so that state updates
-- stay HOT, so each of those was a sequential scan of the record type's whole ledger (every month
-- ever posted): 142-205 ms a statement at 109k rows, 503-926 ms at 609k, per pass and per round.
--
-- ledger.posting_open holds one row per posting that is not settled yet: pending, sent, ambiguous
-- (the unfinished states) and parked (waiting for finance; the outcome reports how many). It is
-- kept by statement-level triggers on ledger.posting, in the transaction of the state change, so
-- no writer (engine, planner, replay, service, a hand-written fix) can make it disagree with the
-- ledger, and a rolled-back transaction rolls back both. The state itself stays on ledger.posting
-- only: readers join by key (a posting moving between open states writes nothing here), and
-- ledger.posting keeps no index on state (its updates stay HOT).
-- Writers of ledger.posting wait for this migration's commit: no state change can fall between the
-- triggers' creation and the fill at the end.
LOCK TABLE ledger.posting IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE ledger.posting_open (
    record_type     text NOT NULL,   -- = ledger.posting.record_type
    idempotency_key text NOT NULL,   -- = ledger.posting.idempotency_key
    PRIMARY KEY (record_type, idempotency_key)
);
COMMENT ON TABLE ledger.posting_open IS
    'The keys of ledger.posting rows in state pending, sent, ambiguous or parked (kept by triggers on ledger.posting).';
-- Rows come and go with every batch: vacuumed after a few thousand deletions, not after a fifth of
-- a table that is nearly empty between passes (its dead index entries are what a reader would scan).
ALTER TABLE ledger.posting_open SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                                     autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000);

CREATE FUNCTION ledger.open_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO ledger.posting_open (record_type, idempotency_key)
    SELECT n.record_type, n.idempotency_key FROM new_rows n
    WHERE n.state IN ('pending', 'sent', 'ambiguous', 'parked');
    RETURN NULL;
END
$$;

-- Only a posting that enters or leaves the open states is written: pending -> sent -> ambiguous
-- -> pending moves write nothing here. One join of the statement's old and new rows by key (keys
-- and record types never change: ledger.posting_identity_fixed below).
CREATE FUNCTION ledger.open_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    WITH moved AS MATERIALIZED (
        SELECT n.record_type, n.idempotency_key, n.state IN ('pending', 'sent', 'ambiguous', 'parked') AS now_open
        FROM new_rows n JOIN old_rows b ON b.idempotency_key = n.idempotency_key
        WHERE (n.state IN ('pending', 'sent', 'ambiguous', 'parked'))
              <> (b.state IN ('pending', 'sent', 'ambiguous', 'parked'))
    ), settled AS (
        DELETE FROM ledger.posting_open o USING moved m
        WHERE NOT m.now_open AND o.record_type = m.record_type AND o.idempotency_key = m.idempotency_key
    )
    INSERT INTO ledger.posting_open (record_type, idempotency_key)
    SELECT record_type, idempotency_key FROM moved WHERE now_open;
    RETURN NULL;
END
$$;

-- A posting's key and record type are its identity (the ERP's idempotency key, the open list's
-- key): an update that would change either is refused. Row-level on those columns only: the
-- engine's state updates never name them and never call it.
CREATE FUNCTION ledger.refuse_identity_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'ledger.posting: the idempotency key and record type of a posting never change (%)',
        OLD.idempotency_key USING ERRCODE = 'insufficient_privilege';
END
$$;

-- 0006 refuses DELETE on the ledger; should that guard ever go, a deleted posting leaves the list.
CREATE FUNCTION ledger.open_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM ledger.posting_open o USING old_rows b
    WHERE o.record_type = b.record_type AND o.idempotency_key = b.idempotency_key;
    RETURN NULL;
END
$$;

CREATE FUNCTION ledger.open_truncated() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- DELETE, not TRUNCATE: a TRUNCATE naming both tables would find this one in use.
    DELETE FROM ledger.posting_open;
    RETURN NULL;
END
$$;

CREATE TRIGGER posting_identity_fixed BEFORE UPDATE OF idempotency_key, record_type ON ledger.posting
    FOR EACH ROW WHEN (OLD.idempotency_key IS DISTINCT FROM NEW.idempotency_key OR OLD.record_type IS DISTINCT FROM NEW.record_type)
    EXECUTE FUNCTION ledger.refuse_identity_change();
CREATE TRIGGER posting_open_insert AFTER INSERT ON ledger.posting
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.open_inserted();
CREATE TRIGGER posting_open_update AFTER UPDATE ON ledger.posting
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.open_updated();
CREATE TRIGGER posting_open_delete AFTER DELETE ON ledger.posting
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ledger.open_deleted();
CREATE TRIGGER posting_open_truncate AFTER TRUNCATE ON ledger.posting
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.open_truncated();

-- The postings open now (no writer of ledger.posting runs until this migration commits: see the
-- LOCK above).
INSERT INTO ledger.posting_open (record_type, idempotency_key)
SELECT record_type, idempotency_key FROM ledger.posting
WHERE state IN ('pending', 'sent', 'ambiguous', 'parked');
ANALYZE ledger.posting_open;

-- Room in ledger.posting's pages for both updates of each posting without pruning. 0035 set 50 and
-- measured 84 % HOT at 11.7k postings, with the old versions pruned in the page between the two
-- updates. During a posting pass the planner holds one snapshot for its whole candidate read, so
-- nothing updated after it started can be pruned: in the 600k peak (212,200 postings in) 50.5 % of
-- the updates were HOT
-- (the pending -> sent one; the outcome's found the page full and added an entry to every index,
-- its row version on another page). A ~230-byte row and its two new versions fit in a page filled
-- to 30 %: measured 100 % HOT with a snapshot held, a smaller heap than at 50 (7.8 against 8.8 MB
-- per 10,000 postings) and ~12 us less PostgreSQL CPU a posting (docs/performance.md,
-- perf-engine3). Pages written from now on; existing pages keep their layout.
ALTER TABLE ledger.posting SET (fillfactor = 30);
