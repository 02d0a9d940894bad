-- HR (Workday) in the ODS: workers as effective-dated versions, effective-dated cost rates, and what
-- we last wrote to each PSA user (to tell an HR change from a PSA-side edit of an HR-owned field).
CREATE SCHEMA IF NOT EXISTS hr;

-- The current state of each worker as last read, keyed by the Employee_ID.
CREATE TABLE hr.worker (
    employee_id      text        PRIMARY KEY,
    worker_wid       text        NOT NULL,
    first_name       text        NOT NULL,
    last_name        text        NOT NULL,
    email            text,
    legal_entity     text        NOT NULL,
    cost_center      text,
    hire_date        date        NOT NULL,
    termination_date date,
    version_hash     text        NOT NULL,
    first_read_at    timestamptz NOT NULL DEFAULT now(),
    last_read_at     timestamptz NOT NULL DEFAULT now(),
    last_run_id      text,
    -- the PSA user the worker maps to, and what we last wrote to it (HR-owned fields only)
    psa_user_id      bigint,
    psa_applied      jsonb,
    psa_applied_at   timestamptz,
    -- the ERP the worker's legal entity routes to, and what we last wrote to its employee record
    erp_target       text,
    erp_applied      jsonb,
    erp_applied_at   timestamptz
);
COMMENT ON TABLE hr.worker IS 'Workday workers as last read (HR is the authority for people, legal entity, cost centre and dates); psa_applied holds the HR-owned values last written to the PSA user.';
CREATE UNIQUE INDEX worker_psa_user_idx ON hr.worker (psa_user_id) WHERE psa_user_id IS NOT NULL;

-- Every distinct version of a worker with the dates it is effective: [valid_from, valid_to).
-- A version read before it takes effect (a future hire, a transfer dated ahead) starts on its own
-- date; the version it replaces ends there.
CREATE TABLE hr.worker_version (
    employee_id      text        NOT NULL REFERENCES hr.worker (employee_id),
    valid_from       date        NOT NULL,
    valid_to         date,
    legal_entity     text        NOT NULL,
    cost_center      text,
    hire_date        date        NOT NULL,
    termination_date date,
    version_hash     text        NOT NULL,
    run_id           text,
    read_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (employee_id, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);
COMMENT ON TABLE hr.worker_version IS 'Effective-dated worker versions (legal entity, cost centre, hire and termination dates); no names.';

-- Effective-dated cost rates from the Workday cost-rate report: a rate holds from effective_from
-- until the next row of the same employee.
CREATE TABLE hr.cost_rate (
    employee_id    text        NOT NULL,
    effective_from date        NOT NULL,
    rate_minor     bigint      NOT NULL CHECK (rate_minor >= 0),
    currency       text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    run_id         text,
    read_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (employee_id, effective_from)
);
COMMENT ON TABLE hr.cost_rate IS 'Effective-dated hourly cost rates per employee from HR (integer minor units of currency).';

-- The HR cost rate of a PSA user on a day (the user's worker's rate effective that day), or no row.
CREATE FUNCTION hr.psa_user_cost_rate_on(p_user_ref text, p_day date)
RETURNS TABLE (rate_minor bigint, currency text)
LANGUAGE sql STABLE AS $$
    SELECT r.rate_minor, r.currency
    FROM hr.worker w JOIN hr.cost_rate r ON r.employee_id = w.employee_id
    WHERE w.psa_user_id::text = p_user_ref AND r.effective_from <= p_day
    ORDER BY r.effective_from DESC
    LIMIT 1
$$;
COMMENT ON FUNCTION hr.psa_user_cost_rate_on(text, date) IS 'HR cost rate effective on a day for a PSA user (via hr.worker.psa_user_id); no row when HR has none.';

-- A PSA-side edit of an HR-owned field is a propagation exception (kind propagation).
ALTER TABLE exceptions.item DROP CONSTRAINT item_kind_check;
ALTER TABLE exceptions.item ADD CONSTRAINT item_kind_check CHECK (
    kind IN ('quarantine', 'dead_letter', 'validation', 'parked', 'leakage', 'reconciliation', 'propagation')
);
