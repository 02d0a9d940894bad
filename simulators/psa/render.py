"""Harvest-shaped JSON built inside PostgreSQL: one ``json_build_object`` per record kind.

Each kind is a :class:`Kind`: the base table and alias, the joins its JSON needs, and the JSON
expression. Lists, single reads and webhook payloads all render through these, so every
response of one kind has the same shape. Timestamps are rendered with second precision in UTC
(``2017-06-27T15:50:15Z``) like Harvest, although microseconds are stored.
"""

from __future__ import annotations

from dataclasses import dataclass


def ts(column: str) -> str:
    """SQL rendering a timestamptz as Harvest does: UTC, second precision, ``Z`` suffix."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""


def ref(alias: str, *fields: str, id_column: str | None = None) -> str:
    """``{"id": ..., "name": ...}``-style nested object, or JSON null when the join found nothing."""
    id_sql = id_column or f"{alias}.id"
    pairs = ", ".join(f"'{f}', {alias}.{f}" for f in fields)
    return f"json_build_object('id', {id_sql}, {pairs})"


def nullable_ref(alias: str, *fields: str) -> str:
    return f"CASE WHEN {alias}.id IS NULL THEN NULL ELSE {ref(alias, *fields)} END"


# Nested assignment objects are rendered inside the LATERAL subquery, so PostgreSQL's Memoize
# node renders each (project, user) or (project, task) pair once per page, not once per row.
UA_LATERAL = f"""LEFT JOIN LATERAL (
        SELECT json_build_object(
            'id', x.id, 'is_project_manager', x.is_project_manager, 'is_active', x.is_active,
            'use_default_rates', x.hourly_rate IS NULL, 'budget', x.budget,
            'created_at', {ts("x.created_at")}, 'updated_at', {ts("x.updated_at")},
            'hourly_rate', x.hourly_rate) AS j
          FROM user_assignments x
         WHERE x.project_id = {{alias}}.project_id AND x.user_id = {{alias}}.user_id
         ORDER BY x.id LIMIT 1) ua ON TRUE
"""

TA_LATERAL = f"""LEFT JOIN LATERAL (
        SELECT json_build_object(
            'id', x.id, 'billable', x.billable, 'is_active', x.is_active,
            'created_at', {ts("x.created_at")}, 'updated_at', {ts("x.updated_at")},
            'hourly_rate', x.hourly_rate, 'budget', x.budget) AS j
          FROM task_assignments x
         WHERE x.project_id = {{alias}}.project_id AND x.task_id = {{alias}}.task_id
         ORDER BY x.id LIMIT 1) ta ON TRUE
"""


# The user, project and client references as ready-made JSON (hash-joined by the planner).
REFS_LATERAL = """
    LEFT JOIN LATERAL (
        SELECT json_build_object('id', x.id, 'name', x.first_name || ' ' || x.last_name) AS j
          FROM users x WHERE x.id = {alias}.user_id) ur ON TRUE
    LEFT JOIN LATERAL (
        SELECT json_build_object('id', x.id, 'name', x.name, 'code', x.code) AS pj,
               CASE WHEN y.id IS NULL THEN NULL
                    ELSE json_build_object('id', y.id, 'name', y.name, 'currency', y.currency) END AS cj,
               x.is_billable
          FROM projects x LEFT JOIN clients y ON y.id = x.client_id
         WHERE x.id = {alias}.project_id) pr ON TRUE
"""


@dataclass(frozen=True)
class Kind:
    """How to read and render one Harvest record kind."""

    key: str  # the list key in responses, e.g. "time_entries"
    table: str
    alias: str
    joins: str
    json: str

    def select_json(self, where: str = "TRUE", *, source: str | None = None) -> str:
        """``SELECT id, json`` of every row matching ``where`` (written against the alias).

        ``source`` replaces the base table, e.g. a parenthesised, already limited page of rows.
        """
        return (
            f"SELECT {self.alias}.id AS id, {self.json} AS j "
            f"FROM {source or self.table} {self.alias} {self.joins} WHERE {where}"
        )


TIME_ENTRY = Kind(
    key="time_entries",
    table="time_entries",
    alias="te",
    joins=REFS_LATERAL.format(alias="te")
    + """
    LEFT JOIN tasks t ON t.id = te.task_id
    """
    + UA_LATERAL.format(alias="te")
    + TA_LATERAL.format(alias="te"),
    json=f"""json_build_object(
    'id', te.id,
    'spent_date', te.spent_date,
    'user', coalesce(ur.j, json_build_object('id', te.user_id, 'name', NULL)),
    'client', pr.cj,
    'project', coalesce(pr.pj, json_build_object('id', te.project_id, 'name', NULL, 'code', NULL)),
    'task', json_build_object('id', te.task_id, 'name', t.name),
    'user_assignment', ua.j,
    'task_assignment', ta.j,
    'hours', te.hours,
    'hours_without_timer', te.hours,
    'rounded_hours', (ceil(te.hours * 4) / 4)::numeric(12, 2),
    'notes', te.notes,
    'is_locked', te.is_locked,
    'locked_reason', te.locked_reason,
    'is_closed', te.is_closed,
    'is_billed', te.is_billed,
    'timer_started_at', NULL,
    'started_time', te.started_time,
    'ended_time', te.ended_time,
    'is_running', FALSE,
    'invoice', CASE WHEN te.invoice_id IS NULL THEN NULL
               ELSE json_build_object('id', te.invoice_id, 'number', te.invoice_number) END,
    'external_reference', te.external_reference,
    'billable', te.billable,
    'budgeted', coalesce(pr.is_billable, TRUE),
    'billable_rate', te.billable_rate,
    'cost_rate', te.cost_rate,
    'created_at', {ts("te.created_at")},
    'updated_at', {ts("te.updated_at")})""",
)

EXPENSE = Kind(
    key="expenses",
    table="expenses",
    alias="ex",
    joins="""
    LEFT JOIN users u ON u.id = ex.user_id
    LEFT JOIN projects p ON p.id = ex.project_id
    LEFT JOIN clients c ON c.id = p.client_id
    LEFT JOIN expense_categories ec ON ec.id = ex.expense_category_id
    """
    + UA_LATERAL.format(alias="ex"),
    # The published spec types the nested expense_category.unit_price as a string.
    json=f"""json_build_object(
    'id', ex.id,
    'client', {nullable_ref("c", "name", "currency")},
    'project', json_build_object('id', ex.project_id, 'name', p.name, 'code', p.code),
    'expense_category', json_build_object('id', ex.expense_category_id, 'name', ec.name,
                                          'unit_price', ec.unit_price::text, 'unit_name', ec.unit_name),
    'user', json_build_object('id', ex.user_id, 'name', u.first_name || ' ' || u.last_name),
    'user_assignment', ua.j,
    'receipt', NULL,
    'invoice', CASE WHEN ex.invoice_id IS NULL THEN NULL
               ELSE json_build_object('id', ex.invoice_id, 'number', ex.invoice_number) END,
    'notes', ex.notes,
    'units', ex.units,
    'total_cost', ex.total_cost,
    'billable', ex.billable,
    'is_closed', ex.is_closed,
    'is_locked', ex.is_locked,
    'is_billed', ex.is_billed,
    'locked_reason', ex.locked_reason,
    'spent_date', ex.spent_date,
    'created_at', {ts("ex.created_at")},
    'updated_at', {ts("ex.updated_at")})""",
)

CLIENT = Kind(
    key="clients",
    table="clients",
    alias="c",
    joins="",
    json=f"""json_build_object(
    'id', c.id, 'name', c.name, 'is_active', c.is_active, 'address', c.address,
    'statement_key', md5('client-' || c.id), 'currency', c.currency,
    'created_at', {ts("c.created_at")}, 'updated_at', {ts("c.updated_at")})""",
)

PROJECT = Kind(
    key="projects",
    table="projects",
    alias="p",
    joins="LEFT JOIN clients c ON c.id = p.client_id",
    json=f"""json_build_object(
    'id', p.id,
    'client', {nullable_ref("c", "name", "currency")},
    'name', p.name, 'code', p.code, 'is_active', p.is_active, 'is_billable', p.is_billable,
    'is_fixed_fee', p.is_fixed_fee, 'bill_by', p.bill_by, 'hourly_rate', p.hourly_rate,
    'budget', p.budget, 'budget_by', p.budget_by, 'budget_is_monthly', FALSE,
    'notify_when_over_budget', FALSE, 'over_budget_notification_percentage', 80.0,
    'over_budget_notification_date', NULL, 'show_budget_to_all', FALSE,
    'cost_budget', p.cost_budget, 'cost_budget_include_expenses', FALSE, 'fee', p.fee,
    'notes', p.notes, 'starts_on', to_char(p.starts_on, 'YYYY-MM-DD'),
    'ends_on', to_char(p.ends_on, 'YYYY-MM-DD'),
    'created_at', {ts("p.created_at")}, 'updated_at', {ts("p.updated_at")},
    'billing_type', p.billing_type, 'legal_entity', p.legal_entity,
    'currency', coalesce(p.currency, c.currency), 'practice', p.practice)""",
)

USER = Kind(
    key="users",
    table="users",
    alias="u",
    joins="",
    json=f"""json_build_object(
    'id', u.id, 'first_name', u.first_name, 'last_name', u.last_name, 'email', u.email,
    'telephone', '', 'timezone', u.timezone, 'has_access_to_all_future_projects', FALSE,
    'is_contractor', u.is_contractor, 'is_active', u.is_active, 'weekly_capacity', u.weekly_capacity,
    'default_hourly_rate', u.default_hourly_rate, 'cost_rate', u.cost_rate,
    'roles', json_build_array(), 'access_roles', json_build_array('member'), 'avatar_url', NULL,
    'created_at', {ts("u.created_at")}, 'updated_at', {ts("u.updated_at")},
    'legal_entity', u.legal_entity, 'practice', u.practice, 'employee_id', u.employee_id)""",
)

TASK = Kind(
    key="tasks",
    table="tasks",
    alias="t",
    joins="",
    json=f"""json_build_object(
    'id', t.id, 'name', t.name, 'billable_by_default', t.billable_by_default,
    'default_hourly_rate', t.default_hourly_rate, 'is_default', t.is_default, 'is_active', t.is_active,
    'created_at', {ts("t.created_at")}, 'updated_at', {ts("t.updated_at")})""",
)

USER_ASSIGNMENT = Kind(
    key="user_assignments",
    table="user_assignments",
    alias="ua",
    joins="LEFT JOIN projects p ON p.id = ua.project_id LEFT JOIN users u ON u.id = ua.user_id",
    json=f"""json_build_object(
    'id', ua.id,
    'project', json_build_object('id', ua.project_id, 'name', p.name, 'code', p.code),
    'user', json_build_object('id', ua.user_id, 'name', u.first_name || ' ' || u.last_name),
    'is_active', ua.is_active, 'is_project_manager', ua.is_project_manager,
    'use_default_rates', ua.hourly_rate IS NULL, 'hourly_rate', ua.hourly_rate, 'budget', ua.budget,
    'created_at', {ts("ua.created_at")}, 'updated_at', {ts("ua.updated_at")})""",
)

TASK_ASSIGNMENT = Kind(
    key="task_assignments",
    table="task_assignments",
    alias="ta",
    joins="LEFT JOIN projects p ON p.id = ta.project_id LEFT JOIN tasks t ON t.id = ta.task_id",
    json=f"""json_build_object(
    'id', ta.id,
    'project', json_build_object('id', ta.project_id, 'name', p.name, 'code', p.code),
    'task', json_build_object('id', ta.task_id, 'name', t.name),
    'is_active', ta.is_active, 'billable', ta.billable, 'hourly_rate', ta.hourly_rate,
    'budget', ta.budget, 'created_at', {ts("ta.created_at")}, 'updated_at', {ts("ta.updated_at")})""",
)

EXPENSE_CATEGORY = Kind(
    key="expense_categories",
    table="expense_categories",
    alias="ec",
    joins="",
    json=f"""json_build_object(
    'id', ec.id, 'name', ec.name, 'unit_name', ec.unit_name, 'unit_price', ec.unit_price,
    'is_active', ec.is_active, 'created_at', {ts("ec.created_at")}, 'updated_at', {ts("ec.updated_at")})""",
)

MILESTONE = Kind(
    key="milestones",
    table="milestones",
    alias="m",
    joins="LEFT JOIN projects p ON p.id = m.project_id",
    json=f"""json_build_object(
    'id', m.id,
    'project', json_build_object('id', m.project_id, 'name', p.name, 'code', p.code),
    'name', m.name, 'due_date', to_char(m.due_date, 'YYYY-MM-DD'), 'amount', m.amount,
    'currency', p.currency, 'status', m.status, 'completed_at', {ts("m.completed_at")},
    'created_at', {ts("m.created_at")}, 'updated_at', {ts("m.updated_at")})""",
)

SCHEDULE = Kind(
    key="schedule",
    table="schedule",
    alias="s",
    joins="LEFT JOIN users u ON u.id = s.user_id LEFT JOIN projects p ON p.id = s.project_id",
    json=f"""json_build_object(
    'id', s.id,
    'user', json_build_object('id', s.user_id, 'name', u.first_name || ' ' || u.last_name),
    'project', json_build_object('id', s.project_id, 'name', p.name, 'code', p.code),
    'week_start', to_char(s.week_start, 'YYYY-MM-DD'), 'hours', s.hours,
    'created_at', {ts("s.created_at")}, 'updated_at', {ts("s.updated_at")})""",
)

INVOICE = Kind(
    key="invoices",
    table="invoices",
    alias="inv",
    joins="""LEFT JOIN clients c ON c.id = inv.client_id
    LEFT JOIN LATERAL (
        SELECT coalesce(json_agg(json_build_object(
                   'id', li.id,
                   'project', CASE WHEN p.id IS NULL THEN NULL
                                   ELSE json_build_object('id', p.id, 'name', p.name, 'code', p.code) END,
                   'kind', li.kind, 'description', li.description, 'quantity', li.quantity,
                   'unit_price', li.unit_price, 'amount', li.amount, 'taxed', FALSE, 'taxed2', FALSE)
                 ORDER BY li.id), '[]'::json) AS j
          FROM invoice_line_items li LEFT JOIN projects p ON p.id = li.project_id
         WHERE li.invoice_id = inv.id) lines ON TRUE
    """,
    json=f"""json_build_object(
    'id', inv.id,
    'client', json_build_object('id', inv.client_id, 'name', c.name),
    'line_items', lines.j,
    'estimate', NULL, 'retainer', NULL, 'creator', NULL,
    'client_key', md5('invoice-' || inv.id),
    'number', inv.number, 'purchase_order', inv.purchase_order,
    'amount', inv.amount, 'due_amount', inv.due_amount,
    'tax', NULL, 'tax_amount', 0.0, 'tax2', NULL, 'tax2_amount', 0.0,
    'discount', NULL, 'discount_amount', 0.0,
    'subject', inv.subject, 'notes', inv.notes, 'currency', inv.currency, 'state', inv.state,
    'period_start', to_char(inv.period_start, 'YYYY-MM-DD'),
    'period_end', to_char(inv.period_end, 'YYYY-MM-DD'),
    'issue_date', to_char(inv.issue_date, 'YYYY-MM-DD'),
    'due_date', to_char(inv.due_date, 'YYYY-MM-DD'),
    'payment_term', 'custom', 'payment_options', '[]'::json,
    'sent_at', CASE WHEN inv.sent_at IS NULL THEN NULL ELSE {ts("inv.sent_at")} END,
    'paid_at', CASE WHEN inv.paid_at IS NULL THEN NULL ELSE {ts("inv.paid_at")} END,
    'paid_date', to_char(inv.paid_date, 'YYYY-MM-DD'),
    'closed_at', CASE WHEN inv.closed_at IS NULL THEN NULL ELSE {ts("inv.closed_at")} END,
    'recurring_invoice_id', NULL,
    'created_at', {ts("inv.created_at")}, 'updated_at', {ts("inv.updated_at")})""",
)

INVOICE_PAYMENT = Kind(
    key="invoice_payments",
    table="invoice_payments",
    alias="ip",
    joins="",
    json=f"""json_build_object(
    'id', ip.id, 'amount', ip.amount,
    'paid_at', {ts("ip.paid_at")}, 'paid_date', to_char(ip.paid_date, 'YYYY-MM-DD'),
    'recorded_by', NULL, 'recorded_by_email', NULL, 'notes', ip.notes,
    'transaction_id', NULL, 'payment_gateway', NULL,
    'created_at', {ts("ip.created_at")}, 'updated_at', {ts("ip.updated_at")})""",
)

INVOICE_MESSAGE = Kind(
    key="invoice_messages",
    table="invoice_messages",
    alias="im",
    joins="LEFT JOIN invoices inv ON inv.id = im.invoice_id",
    json=f"""json_build_object(
    'id', im.id, 'sent_by', NULL, 'sent_by_email', NULL, 'sent_from', NULL, 'sent_from_email', NULL,
    'include_link_to_client_invoice', FALSE, 'send_me_a_copy', FALSE, 'thank_you', FALSE,
    'reminder', FALSE, 'send_reminder_on', NULL, 'attach_pdf', FALSE, 'event_type', im.event_type,
    'recipients', '[]'::json, 'subject', 'Invoice #' || inv.number, 'body', NULL,
    'created_at', {ts("im.created_at")}, 'updated_at', {ts("im.updated_at")})""",
)
