-- Posting throughput at month end. Every posting row is updated twice (pending -> sent -> confirmed)
-- and gets one attempt row, written before the ERP call and completed after it.
--
-- * posting_state_idx indexed the state itself, so every state change wrote a new entry into every
--   index of ledger.posting (four of them). The queries by state read a record type's unfinished
--   postings once per pass (a sequential scan of the ledger, as the planner's own pass already is)
--   or page through them in key order (the primary key), so the index is dropped. An update that
--   changes no indexed column and finds room in its page is then a HOT update: no index is touched.
-- * fillfactor 70 leaves that room in each page for the new versions of its rows.
-- * The foreign key from ledger.attempt to ledger.posting cost a row-level trigger per attempt
--   (more than half of marking a batch of 100 postings sent). Attempts are only ever inserted by the
--   statement that moves their posting to 'sent' (ledger.mark_sent: UPDATE ... RETURNING feeds the
--   INSERT), so the posting exists; what the key also guarded, that a posting is never deleted while
--   attempts point to it, is now enforced for every posting: the ledger is append-only.
DROP INDEX IF EXISTS ledger.posting_state_idx;
ALTER TABLE ledger.posting SET (fillfactor = 70);
ALTER TABLE ledger.attempt SET (fillfactor = 70);
ALTER TABLE ledger.attempt DROP CONSTRAINT IF EXISTS attempt_idempotency_key_fkey;

CREATE FUNCTION ledger.refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger.% is append-only: rows are never deleted (supersede or reverse instead)', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER posting_append_only BEFORE DELETE ON ledger.posting
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_delete();
CREATE TRIGGER attempt_append_only BEFORE DELETE ON ledger.attempt
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_delete();
