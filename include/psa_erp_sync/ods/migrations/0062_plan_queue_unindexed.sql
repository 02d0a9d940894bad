-- 0062: ledger.plan_queue without its index (issue 16, deliverable 2).
-- Forward-only: never edit; add a new file.
--
-- The queue's btree (record_type, source_system, source_id) cost every row written into canonical
-- (validation's COPY, the stream, the posting release trigger: each queues its records) ~2.7 us of
-- PostgreSQL's CPU a row, three text comparisons through the database's collation per level, for
-- no reader that uses its order or its keys: the planner's reads of the queue
-- (posting/planner.py: QUEUED, the queue's count in _queue_scope, the in-flight records of
-- _IN_FLIGHT, _dequeue's DELETE) each take every queued entry of one record type, and there are
-- two. A sequential scan of the queue is what they need: it holds the changes since the last pass
-- (a month's worth at most, ~1 row a canonical record, and a pass over more than
-- FULL_ABOVE_SHARE of the table plans in full), and is vacuumed after each large dequeue as before
-- (docs/performance.md, "perf-validation-pg9").

DROP INDEX ledger.plan_queue_record_idx;
