-- 0061: canonical's fingerprint indexes become hash indexes (issue 16, deliverable 2).
-- Forward-only: never edit; add a new file.
--
-- The fingerprint (a 64-character hex SHA-256) is only ever looked up by equality: validation's
-- duplicate check (validation/time_expense.py, _first_with_fingerprints) probes it once per valid
-- row of a chunk; no reader sorts, ranges or joins on it (it leaves canonical only inside
-- canonical.record_v1's document). A btree of it cost every row a validation writes ~17
-- comparisons of two 64-character strings through the database's collation (C.UTF-8: strcoll,
-- not memcmp) at a random leaf page, ~4 us of PostgreSQL's CPU a row of the COPY into canonical
-- (docs/performance.md, "perf-validation-pg8"); a hash index stores the 4-byte hash code and costs
-- ~1 us. Equality answers are the same (the collation is deterministic); the lookup probes the
-- hash bucket and rechecks the heap row, as the btree's bitmap scan did.

DROP INDEX canonical.time_entry_fingerprint_idx;
CREATE INDEX time_entry_fingerprint_idx ON canonical.time_entry USING hash (fingerprint);

DROP INDEX canonical.expense_entry_fingerprint_idx;
CREATE INDEX expense_entry_fingerprint_idx ON canonical.expense_entry USING hash (fingerprint);
