-- State of the PSA simulator (Harvest API v2 shape plus documented extensions), schema sim_psa.
-- Idempotent: every object is created IF NOT EXISTS. Money and hours are NUMERIC, never float.

CREATE TABLE IF NOT EXISTS clients (
    id          bigint PRIMARY KEY,
    name        text        NOT NULL,
    is_active   boolean     NOT NULL DEFAULT true,
    currency    text        NOT NULL DEFAULT 'USD',
    address     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS users (
    id                  bigint PRIMARY KEY,
    first_name          text        NOT NULL,
    last_name           text        NOT NULL,
    email               text,
    is_active           boolean     NOT NULL DEFAULT true,
    is_contractor       boolean     NOT NULL DEFAULT false,
    weekly_capacity     integer     NOT NULL DEFAULT 126000,
    default_hourly_rate numeric,
    cost_rate           numeric,
    legal_entity        text,
    practice            text,
    timezone            text        NOT NULL DEFAULT 'Etc/UTC',
    employee_id         text,       -- extension: the HR system's Employee_ID (Workday)
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE users ADD COLUMN IF NOT EXISTS employee_id text;

CREATE TABLE IF NOT EXISTS tasks (
    id                  bigint PRIMARY KEY,
    name                text        NOT NULL,
    billable_by_default boolean     NOT NULL DEFAULT true,
    default_hourly_rate numeric,
    is_default          boolean     NOT NULL DEFAULT false,
    is_active           boolean     NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS projects (
    id            bigint PRIMARY KEY,
    client_id     bigint,
    name          text        NOT NULL,
    code          text,
    is_active     boolean     NOT NULL DEFAULT true,
    is_billable   boolean     NOT NULL DEFAULT true,
    is_fixed_fee  boolean     NOT NULL DEFAULT false,
    bill_by       text        NOT NULL DEFAULT 'Project',
    budget        numeric,
    budget_by     text        NOT NULL DEFAULT 'none',
    cost_budget   numeric,
    fee           numeric,
    hourly_rate   numeric,
    starts_on     date,
    ends_on       date,
    notes         text,
    billing_type  text,
    legal_entity  text,
    currency      text,
    practice      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS projects_client_idx ON projects (client_id);

CREATE TABLE IF NOT EXISTS user_assignments (
    id                 bigint PRIMARY KEY,
    project_id         bigint      NOT NULL,
    user_id            bigint      NOT NULL,
    is_active          boolean     NOT NULL DEFAULT true,
    is_project_manager boolean     NOT NULL DEFAULT false,
    hourly_rate        numeric,
    budget             numeric,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS user_assignments_project_user_idx ON user_assignments (project_id, user_id);

CREATE TABLE IF NOT EXISTS task_assignments (
    id          bigint PRIMARY KEY,
    project_id  bigint      NOT NULL,
    task_id     bigint      NOT NULL,
    is_active   boolean     NOT NULL DEFAULT true,
    billable    boolean     NOT NULL DEFAULT true,
    hourly_rate numeric,
    budget      numeric,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS task_assignments_project_task_idx ON task_assignments (project_id, task_id);

CREATE TABLE IF NOT EXISTS expense_categories (
    id          bigint PRIMARY KEY,
    name        text        NOT NULL,
    unit_name   text,
    unit_price  numeric,
    is_active   boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS time_entries (
    id                 bigint PRIMARY KEY,
    spent_date         date        NOT NULL,
    user_id            bigint      NOT NULL,
    project_id         bigint      NOT NULL,
    task_id            bigint      NOT NULL,
    hours              numeric     NOT NULL DEFAULT 0,
    notes              text,
    billable           boolean     NOT NULL DEFAULT true,
    billable_rate      numeric,
    cost_rate          numeric,
    is_closed          boolean     NOT NULL DEFAULT false,
    is_locked          boolean     NOT NULL DEFAULT false,
    locked_reason      text,
    is_billed          boolean     NOT NULL DEFAULT false,
    invoice_id         bigint,
    invoice_number     text,
    external_reference jsonb,
    started_time       text,
    ended_time         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS time_entries_updated_idx ON time_entries (updated_at);
CREATE INDEX IF NOT EXISTS time_entries_spent_idx ON time_entries (spent_date);
CREATE INDEX IF NOT EXISTS time_entries_project_idx ON time_entries (project_id);
CREATE INDEX IF NOT EXISTS time_entries_user_idx ON time_entries (user_id);
CREATE SEQUENCE IF NOT EXISTS time_entries_new_id_seq START 5000000000;

CREATE TABLE IF NOT EXISTS expenses (
    id                  bigint PRIMARY KEY,
    spent_date          date        NOT NULL,
    user_id             bigint      NOT NULL,
    project_id          bigint      NOT NULL,
    expense_category_id bigint      NOT NULL,
    total_cost          numeric     NOT NULL DEFAULT 0,
    units               numeric,
    notes               text,
    billable            boolean     NOT NULL DEFAULT true,
    is_closed           boolean     NOT NULL DEFAULT false,
    is_locked           boolean     NOT NULL DEFAULT false,
    locked_reason       text,
    is_billed           boolean     NOT NULL DEFAULT false,
    invoice_id          bigint,
    invoice_number      text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS expenses_updated_idx ON expenses (updated_at);
CREATE INDEX IF NOT EXISTS expenses_spent_idx ON expenses (spent_date);
CREATE INDEX IF NOT EXISTS expenses_project_idx ON expenses (project_id);

CREATE TABLE IF NOT EXISTS milestones (
    id            bigint PRIMARY KEY,
    project_id    bigint      NOT NULL,
    name          text        NOT NULL,
    due_date      date,
    amount        numeric,
    status        text        NOT NULL DEFAULT 'planned' CHECK (status IN ('planned', 'completed', 'signed_off')),
    completed_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS milestones_project_idx ON milestones (project_id);

CREATE TABLE IF NOT EXISTS schedule (
    id          bigint PRIMARY KEY,
    user_id     bigint      NOT NULL,
    project_id  bigint      NOT NULL,
    week_start  date        NOT NULL,
    hours       numeric     NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS schedule_week_idx ON schedule (week_start);

-- The webhook tables are in simulators/common/webhooks.sql (shared with the ERP simulator).

-- Ids of projects, clients and users created through the API (seeded ids stay below these).
CREATE SEQUENCE IF NOT EXISTS projects_new_id_seq START 900000000;
CREATE SEQUENCE IF NOT EXISTS clients_new_id_seq START 900000000;
CREATE SEQUENCE IF NOT EXISTS users_new_id_seq START 900000000;

-- Invoices (Harvest v2 shape). Created through POST /v2/invoices, which marks the imported time
-- entries and expenses billed; payments move due_amount and, at zero, the state to paid.
CREATE TABLE IF NOT EXISTS invoices (
    id              bigserial PRIMARY KEY,
    client_id       bigint         NOT NULL,
    number          text           NOT NULL UNIQUE,
    purchase_order  text,
    subject         text,
    notes           text,
    currency        text           NOT NULL,
    state           text           NOT NULL DEFAULT 'draft'
                    CHECK (state IN ('draft', 'open', 'paid', 'closed')),
    amount          numeric(18, 2) NOT NULL,
    due_amount      numeric(18, 2) NOT NULL,
    issue_date      date           NOT NULL,
    due_date        date,
    period_start    date,
    period_end      date,
    sent_at         timestamptz,
    paid_at         timestamptz,
    paid_date       date,
    closed_at       timestamptz,
    created_at      timestamptz    NOT NULL DEFAULT clock_timestamp(),
    updated_at      timestamptz    NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS invoices_updated_idx ON invoices (updated_at);

CREATE TABLE IF NOT EXISTS invoice_line_items (
    id           bigserial PRIMARY KEY,
    invoice_id   bigint         NOT NULL,
    project_id   bigint,
    kind         text           NOT NULL,
    description  text,
    quantity     numeric        NOT NULL,
    unit_price   numeric        NOT NULL,
    amount       numeric(18, 2) NOT NULL
);
CREATE INDEX IF NOT EXISTS invoice_line_items_invoice_idx ON invoice_line_items (invoice_id);

CREATE TABLE IF NOT EXISTS invoice_payments (
    id          bigserial PRIMARY KEY,
    invoice_id  bigint         NOT NULL,
    amount      numeric(18, 2) NOT NULL,
    paid_at     timestamptz    NOT NULL,
    paid_date   date           NOT NULL,
    notes       text,
    created_at  timestamptz    NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz    NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS invoice_payments_invoice_idx ON invoice_payments (invoice_id);

-- State changes of invoices (Harvest: invoice messages with an event_type).
CREATE TABLE IF NOT EXISTS invoice_messages (
    id          bigserial PRIMARY KEY,
    invoice_id  bigint      NOT NULL,
    event_type  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
