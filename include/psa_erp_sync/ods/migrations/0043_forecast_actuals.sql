-- 0043: the forecast's actuals kept incrementally (issue 16, deliverable 6, forecast part).
-- Forward-only: never edit; add a new file.
--
-- A refresh derived a year of actuals from the ledger every time: the latest confirmed posting of
-- every source record (a DISTINCT ON over the whole ledger) joined with every canonical time and
-- expense entry, and every time entry priced with its person's cost rate. Now each source record's
-- contribution is kept (forecast.actual_source) with its sums per project and month
-- (forecast.actual_month), and a refresh re-derives only the records changed since the last one
-- (include/psa_erp_sync/forecast/actuals.py), with the same SQL as the full derivation.
--
-- What changed is captured by statement-level triggers into forecast.actual_change (a queue: one
-- row per changed source record). A refresh deletes the queue rows it sees and re-derives those
-- records in one transaction, so nothing is lost or counted twice: a change committed later stays
-- queued for the next refresh (a high-water mark such as ledger.posting.seq or updated_at cannot
-- say that: numbers and timestamps are taken before commit, so a mark read at one moment may pass
-- a change that commits later). Statement-level triggers with transition tables cost one INSERT
-- per statement, not a function call per row, on the posting and validation writes; an UPDATE of
-- a posting that neither was nor becomes a confirmed timebill or expense report queues nothing.
-- Cost rates are not triggered: a refresh compares a fingerprint of each person's rates with the
-- one its actuals were priced with (forecast.actual_cost_rate).
--
-- A TRUNCATE of the sources empties forecast.actual_state: the next refresh rebuilds everything.

CREATE TABLE forecast.actual_change (
    kind          text NOT NULL,      -- time_entry | expense_entry (the canonical table)
    source_system text NOT NULL,
    source_id     text NOT NULL
);
COMMENT ON TABLE forecast.actual_change IS
    'Source records whose forecast actuals may have changed, queued by triggers on canonical and the ledger; consumed by the forecast refresh.';

CREATE TABLE forecast.actual_source (
    kind          text   NOT NULL,    -- time_entry | expense_entry
    source_system text   NOT NULL,
    source_id     text   NOT NULL,
    project_ref   text   NOT NULL,
    spent_date    date   NOT NULL,
    month         integer NOT NULL,   -- year * 12 + month - 1 of spent_date
    user_ref      text,               -- time: whose cost rate prices it
    revenue_minor bigint,             -- posted revenue counted; NULL: no confirmed post/adjust
    cost_currency text,               -- NULL: no cost (an expense, or a user without a person row)
    cost_centi    bigint,             -- centi-hours x cost rate, in cost_currency
    PRIMARY KEY (kind, source_system, source_id)
);
COMMENT ON TABLE forecast.actual_source IS
    'Each approved, undeleted source record''s contribution to the forecast actuals (revenue, cost), as the full derivation computes it.';
CREATE INDEX actual_source_user_idx ON forecast.actual_source (user_ref) WHERE user_ref IS NOT NULL;
CREATE INDEX actual_source_month_idx ON forecast.actual_source (month, spent_date);

CREATE TABLE forecast.actual_month (
    project_ref   text    NOT NULL,
    month         integer NOT NULL,
    currency      text    NOT NULL,   -- the cost currency; '' for revenue (summed across currencies)
    revenue_minor bigint  NOT NULL,
    revenue_n     integer NOT NULL,   -- source records counted in revenue_minor
    cost_centi    bigint  NOT NULL,
    cost_n        integer NOT NULL,
    PRIMARY KEY (project_ref, month, currency)
);
COMMENT ON TABLE forecast.actual_month IS
    'forecast.actual_source summed per project, month and cost currency; a cell with no source record is deleted.';

CREATE TABLE forecast.actual_cost_rate (
    user_ref    text PRIMARY KEY,
    fingerprint text NOT NULL         -- md5 of the PSA rate and the HR rates the actuals were priced with
);
COMMENT ON TABLE forecast.actual_cost_rate IS
    'The cost rates (PSA person and HR intervals) each person''s actuals were priced with, as a fingerprint.';

CREATE TABLE forecast.actual_state (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    built_at   timestamptz NOT NULL,
    caught_up_at timestamptz NOT NULL
);
COMMENT ON TABLE forecast.actual_state IS
    'Present once the actuals were built; no row: the next refresh rebuilds them from the sources.';

CREATE FUNCTION forecast.queue_canonical_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO forecast.actual_change (kind, source_system, source_id)
    SELECT TG_ARGV[0], c.source_system, c.source_id FROM changed c;
    RETURN NULL;
END
$$;

-- An update queues the rows whose forecast inputs changed (the columns forecast/actuals.py reads),
-- not the read-time bookkeeping (source_read_at, source_updated_at) that validation also updates.
CREATE FUNCTION forecast.queue_time_entry_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO forecast.actual_change (kind, source_system, source_id)
    SELECT 'time_entry', n.source_system, n.source_id
    FROM new_rows n JOIN old_rows o ON o.source_system = n.source_system AND o.source_id = n.source_id
    WHERE (n.project_ref, n.spent_date, n.user_ref, n.hours, n.billable, n.approved, n.is_deleted)
          IS DISTINCT FROM (o.project_ref, o.spent_date, o.user_ref, o.hours, o.billable, o.approved, o.is_deleted)
    UNION ALL  -- a changed key (the flows never change one) changes the old record too
    SELECT 'time_entry', o.source_system, o.source_id FROM old_rows o
    WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.source_system = o.source_system AND n.source_id = o.source_id);
    RETURN NULL;
END
$$;

CREATE FUNCTION forecast.queue_expense_entry_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO forecast.actual_change (kind, source_system, source_id)
    SELECT 'expense_entry', n.source_system, n.source_id
    FROM new_rows n JOIN old_rows o ON o.source_system = n.source_system AND o.source_id = n.source_id
    WHERE (n.project_ref, n.spent_date, n.billable, n.approved, n.is_deleted)
          IS DISTINCT FROM (o.project_ref, o.spent_date, o.billable, o.approved, o.is_deleted)
    UNION ALL
    SELECT 'expense_entry', o.source_system, o.source_id FROM old_rows o
    WHERE NOT EXISTS (SELECT 1 FROM new_rows n WHERE n.source_system = o.source_system AND n.source_id = o.source_id);
    RETURN NULL;
END
$$;

CREATE FUNCTION forecast.queue_posting_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO forecast.actual_change (kind, source_system, source_id)
    SELECT CASE c.record_type WHEN 'timebill' THEN 'time_entry' ELSE 'expense_entry' END, c.source_system, c.source_id
    FROM changed c
    WHERE c.record_type IN ('timebill', 'expensereport') AND c.state IN ('confirmed', 'resolved') AND NOT c.shadow;
    RETURN NULL;
END
$$;

CREATE FUNCTION forecast.queue_posting_update() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO forecast.actual_change (kind, source_system, source_id)
    SELECT CASE c.record_type WHEN 'timebill' THEN 'time_entry' ELSE 'expense_entry' END, c.source_system, c.source_id
    FROM (SELECT record_type, source_system, source_id, state, shadow FROM new_rows
          UNION ALL
          SELECT record_type, source_system, source_id, state, shadow FROM old_rows) c
    WHERE c.record_type IN ('timebill', 'expensereport') AND c.state IN ('confirmed', 'resolved') AND NOT c.shadow;
    RETURN NULL;
END
$$;

CREATE FUNCTION forecast.forget_actuals() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM forecast.actual_state;
    RETURN NULL;
END
$$;

CREATE TRIGGER forecast_actuals_insert AFTER INSERT ON canonical.time_entry
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forecast.queue_canonical_change('time_entry');
CREATE TRIGGER forecast_actuals_update AFTER UPDATE ON canonical.time_entry
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION forecast.queue_time_entry_update();
CREATE TRIGGER forecast_actuals_delete AFTER DELETE ON canonical.time_entry
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forecast.queue_canonical_change('time_entry');
CREATE TRIGGER forecast_actuals_truncate AFTER TRUNCATE ON canonical.time_entry
    FOR EACH STATEMENT EXECUTE FUNCTION forecast.forget_actuals();

CREATE TRIGGER forecast_actuals_insert AFTER INSERT ON canonical.expense_entry
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forecast.queue_canonical_change('expense_entry');
CREATE TRIGGER forecast_actuals_update AFTER UPDATE ON canonical.expense_entry
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION forecast.queue_expense_entry_update();
CREATE TRIGGER forecast_actuals_delete AFTER DELETE ON canonical.expense_entry
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forecast.queue_canonical_change('expense_entry');
CREATE TRIGGER forecast_actuals_truncate AFTER TRUNCATE ON canonical.expense_entry
    FOR EACH STATEMENT EXECUTE FUNCTION forecast.forget_actuals();

CREATE TRIGGER forecast_actuals_insert AFTER INSERT ON ledger.posting
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION forecast.queue_posting_change();
CREATE TRIGGER forecast_actuals_update AFTER UPDATE ON ledger.posting
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION forecast.queue_posting_update();
CREATE TRIGGER forecast_actuals_truncate AFTER TRUNCATE ON ledger.posting
    FOR EACH STATEMENT EXECUTE FUNCTION forecast.forget_actuals();
