-- 0047: what the planner must look at again (issue 16, deliverable 4: what grows with the ledger).
-- Forward-only: never edit; add a new file.
--
-- The planner compared every approved canonical row of a record type with an aggregate of every
-- ledger row of that type on every pass: a pass over a month already posted cost as much as the
-- first. Whether a record needs planning changes only when
--   * its canonical row is inserted, deleted, or changes version, approval or deletion mark
--     (validation's upserts, the stream, anything else writing canonical: triggers, so no writer
--     can forget), or
--   * a posting of it that waited for replay (rejected or parked) is released (-> superseded),
-- or when a posting in flight settles after one of those (the planner keeps the record queued
-- while it is in flight). ledger.plan_queue collects those records; a pass plans the queued
-- records only, and deletes the entries it saw once they are planned (posting/planner.py).
--
-- ledger.plan_mark says whether the queue can be trusted per record type: a row exists once a full
-- plan completed after this migration with the triggers enabled. Until then (and whenever a
-- trigger is found disabled, e.g. during a restore) the planner plans in full.
CREATE TABLE ledger.plan_queue (
    record_type   text NOT NULL,                               -- ERP record type, e.g. timebill
    source_system text NOT NULL,
    source_id     text NOT NULL,
    xid           xid8 NOT NULL DEFAULT pg_current_xact_id()   -- the writing transaction: which pass saw it
);
COMMENT ON TABLE ledger.plan_queue IS
    'Records whose ERP state may differ from the approved set since the planner last looked (filled by triggers, emptied by the planner).';
CREATE INDEX plan_queue_record_idx ON ledger.plan_queue (record_type, source_system, source_id);
-- Emptied by every pass: vacuumed after a few thousand deletions, not after a fifth of a table
-- that is nearly empty between passes (its dead index entries are what a pass would scan).
ALTER TABLE ledger.plan_queue SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
                                   autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000);

CREATE TABLE ledger.plan_mark (
    record_type     text        PRIMARY KEY,
    full_planned_at timestamptz NOT NULL,                      -- the last full plan that left the queue trusted
    full_plans      bigint      NOT NULL DEFAULT 1
);
COMMENT ON TABLE ledger.plan_mark IS
    'Per record type: a full plan completed with the queue triggers enabled, so ledger.plan_queue holds every change since.';

-- Statement-level, from transition tables: one INSERT per statement, not a function call per row.
CREATE FUNCTION ledger.queue_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger.plan_queue (record_type, source_system, source_id)
    SELECT TG_ARGV[0], source_system, source_id FROM written;
    RETURN NULL;
END
$$;

-- An update matters only when it changes what the planner compares (version, approval, deletion):
-- a re-validation of the same content queues nothing.
CREATE FUNCTION ledger.queue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger.plan_queue (record_type, source_system, source_id)
    SELECT TG_ARGV[0], n.source_system, n.source_id
    FROM written n LEFT JOIN before o USING (source_system, source_id)
    WHERE o.source_id IS NULL
       OR (n.version_hash, n.approved, n.is_deleted) IS DISTINCT FROM (o.version_hash, o.approved, o.is_deleted);
    RETURN NULL;
END
$$;

CREATE TRIGGER time_entry_plan_insert AFTER INSERT ON canonical.time_entry
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION ledger.queue_written('timebill');
CREATE TRIGGER time_entry_plan_update AFTER UPDATE ON canonical.time_entry
    REFERENCING OLD TABLE AS before NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.queue_changed('timebill');
CREATE TRIGGER time_entry_plan_delete AFTER DELETE ON canonical.time_entry
    REFERENCING OLD TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION ledger.queue_written('timebill');

CREATE TRIGGER expense_entry_plan_insert AFTER INSERT ON canonical.expense_entry
    REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION ledger.queue_written('expensereport');
CREATE TRIGGER expense_entry_plan_update AFTER UPDATE ON canonical.expense_entry
    REFERENCING OLD TABLE AS before NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.queue_changed('expensereport');
CREATE TRIGGER expense_entry_plan_delete AFTER DELETE ON canonical.expense_entry
    REFERENCING OLD TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION ledger.queue_written('expensereport');

-- A posting released for replay (rejected or parked -> superseded): its record is planned again.
-- Row-level with WHEN: the engine's state updates never match, and never call the function.
CREATE FUNCTION ledger.queue_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ledger.plan_queue (record_type, source_system, source_id)
    VALUES (NEW.record_type, NEW.source_system, NEW.source_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER posting_plan_released AFTER UPDATE OF state ON ledger.posting
    FOR EACH ROW WHEN (OLD.state IN ('rejected', 'parked') AND NEW.state = 'superseded'
                       AND NEW.record_type IN ('timebill', 'expensereport'))
    EXECUTE FUNCTION ledger.queue_released();
