-- 0071: no column statistics for the ledger's jsonb documents (issue 16, deliverable 4: the ledger's
-- server-side cost). Forward-only: never edit; add a new file.
--
-- ANALYZE of ledger.posting_payload spent ~90 % of its CPU on the payload column (0.37 of 0.40 s at
-- 90,000 rows, machine PostgreSQL 15: every sampled document detoasted, compared and sorted for a
-- histogram and most-common values), and autovacuum analyzes the table two or three times during a
-- month's posting pass on the bench's server (docs/performance.md, perf-post8). No statement
-- compares or groups whole documents: the readers take fields (`payload->>'tranDate'`,
-- `payload->>'custbody_psa_hours'`, whose estimates never come from the column's statistics) or
-- join by idempotency key (whose statistics stay). The same for the posting's last error and the
-- attempt's detail, read only as fields of a row found by key.
ALTER TABLE ledger.posting_payload ALTER COLUMN payload SET STATISTICS 0;
ALTER TABLE ledger.posting ALTER COLUMN last_error SET STATISTICS 0;
ALTER TABLE ledger.attempt ALTER COLUMN detail SET STATISTICS 0;
-- (Statistics gathered before stay in pg_statistic, unused; ANALYZE no longer refreshes them.)
