-- When the PSA read behind a canonical row began (a lower bound of the moment its state was
-- true at the source; for a deleted row, when the read that found it gone began). Canonical
-- upserts keep the newest version by (source updated_at, source_read_at), so a run that read an
-- older version and commits last cannot overwrite a newer one, and a deletion is undone only by a
-- read that began after it was seen (docs/streaming.md, "Ordering"). NULL: written before 0010.
ALTER TABLE canonical.time_entry ADD COLUMN source_read_at timestamptz;
ALTER TABLE canonical.expense_entry ADD COLUMN source_read_at timestamptz;
COMMENT ON COLUMN canonical.time_entry.source_read_at IS 'Start of the PSA read this row (or its deletion) comes from; the tiebreak after source_updated_at.';
COMMENT ON COLUMN canonical.expense_entry.source_read_at IS 'Start of the PSA read this row (or its deletion) comes from; the tiebreak after source_updated_at.';
