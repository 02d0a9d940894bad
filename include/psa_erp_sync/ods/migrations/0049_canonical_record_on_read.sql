-- The canonical v1 record of a row, built on read from its typed columns (issue 16, deliverable 2).
--
-- ``canonical.*.record`` repeated the row's own columns as JSONB (570 of a time entry's ~850
-- bytes): validation encoded it, COPY parsed it, the insert wrote it a second time, and nothing
-- outside validation read it (posting, forecast, billing, reconciliation, trace and the API read
-- the typed columns; the planner drops it from its rows). It was also not kept current: a
-- deletion at the source or a newer read of the same content changed the columns, not the
-- record. Validation no longer writes it: rows it writes from now on hold NULL; rows written
-- before keep what they had. ``canonical.record_v1(row)`` gives the record of any row, from the
-- columns, as the v1 contract (the same field values the stored record had: hours as numeric
-- text at two places, the update time in UTC; ``contracts.records.from_row`` and
-- ``contracts.v1`` read both).
ALTER TABLE canonical.time_entry ALTER COLUMN record DROP NOT NULL;
ALTER TABLE canonical.expense_entry ALTER COLUMN record DROP NOT NULL;
COMMENT ON COLUMN canonical.time_entry.record IS
    'Not written since migration 0049 (NULL); the record of a row is canonical.record_v1(row), from the columns.';
COMMENT ON COLUMN canonical.expense_entry.record IS
    'Not written since migration 0049 (NULL); the record of a row is canonical.record_v1(row), from the columns.';

CREATE FUNCTION canonical.record_v1(c canonical.time_entry) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'contract_version', 'v1',
        'source_system', c.source_system,
        'source_id', c.source_id,
        'version_hash', c.version_hash,
        'spent_date', c.spent_date::text,
        'user_ref', c.user_ref,
        'project_ref', c.project_ref,
        'task_ref', c.task_ref,
        'legal_entity', c.legal_entity,
        'hours', c.hours::text,
        'billable', c.billable,
        'bill_rate_minor', c.bill_rate_minor,
        'amount_minor', c.amount_minor,
        'currency', c.currency::text,
        'approved', c.approved,
        'is_deleted', c.is_deleted,
        'fingerprint', c.fingerprint,
        'source_updated_at', to_char(c.source_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    );
COMMENT ON FUNCTION canonical.record_v1(canonical.time_entry) IS
    'The canonical TimeEntry v1 record of a row, from its columns (migration 0049).';

CREATE FUNCTION canonical.record_v1(c canonical.expense_entry) RETURNS jsonb
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN jsonb_build_object(
        'contract_version', 'v1',
        'source_system', c.source_system,
        'source_id', c.source_id,
        'version_hash', c.version_hash,
        'spent_date', c.spent_date::text,
        'user_ref', c.user_ref,
        'project_ref', c.project_ref,
        'legal_entity', c.legal_entity,
        'category', c.category,
        'billable', c.billable,
        'amount_minor', c.amount_minor,
        'currency', c.currency::text,
        'approved', c.approved,
        'is_deleted', c.is_deleted,
        'fingerprint', c.fingerprint,
        'source_updated_at', to_char(c.source_updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    );
COMMENT ON FUNCTION canonical.record_v1(canonical.expense_entry) IS
    'The canonical ExpenseEntry v1 record of a row, from its columns (migration 0049).';
