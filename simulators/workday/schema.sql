-- State of the Workday HR simulator, schema sim_workday. Idempotent: every object IF NOT EXISTS.
-- Money is NUMERIC, never float.

CREATE TABLE IF NOT EXISTS workers (
    id               text PRIMARY KEY,              -- the worker's WID (32 hex characters)
    employee_id      text        NOT NULL UNIQUE,   -- Employee_ID, the business key (on the PSA user too)
    first_name       text        NOT NULL,
    last_name        text        NOT NULL,
    email            text,
    business_title   text,
    company          text        NOT NULL,          -- Company_Reference_ID = the ERP subsidiary code (LE-US1)
    cost_center      text,
    hire_date        date        NOT NULL,
    termination_date date,
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE IF NOT EXISTS cost_rates (
    employee_id    text        NOT NULL,
    effective_date date        NOT NULL,
    cost_rate      numeric     NOT NULL CHECK (cost_rate >= 0),
    currency       text        NOT NULL,
    PRIMARY KEY (employee_id, effective_date)
);

CREATE TABLE IF NOT EXISTS access_tokens (
    token       text PRIMARY KEY,
    client_id   text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
