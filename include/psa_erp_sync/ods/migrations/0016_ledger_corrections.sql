-- 0016: correcting records (issue 13, item 9). Forward-only: never edit; add a new file.
--
-- For a `post_to_first_open` legal entity, a correction (adjust or reverse) of a record the ERP
-- holds in a closed period is not parked: a second ERP record of the same PSA entry, a journal
-- entry in the first open period, carries the difference (docs/posting.md "Closed periods").
-- Its ledger row names the external id of the record it corrects; NULL for every ordinary posting
-- (the record itself). No new state: a correcting row moves through the same states, guarded by
-- the same ALLOWED_FROM (posting/ledger.py). Adding a nullable column without a default rewrites
-- nothing.
ALTER TABLE ledger.posting ADD COLUMN corrects text;
COMMENT ON COLUMN ledger.posting.corrects IS
    'External id of the ERP record this correcting record (a journal entry in an open period) corrects; NULL for the record itself.';
