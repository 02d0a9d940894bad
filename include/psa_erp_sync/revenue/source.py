"""What revenue recognition reads from the ODS beyond the forecast's inputs (``forecast/inputs.py``
already reads projects, contract values, cost, delivered T&M and milestones):

- contract terms: the CRM's won amount (system of authority for contract value) and its approved
  change orders with their effective dates, or the PSA's fee (T&M: budget); the PSA's term dates;
- the estimate (EAC) each past period was recognized with (``revenue.recognition_latest``);
- the revenue the planned journals put in each posting month (``revenue.journal``);
- the ERP's accounting periods as the master-data sync last read them (``master.erp_record``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psa_erp_sync.posting.periods import PeriodBook
from psa_erp_sync.revenue.frames import ContractTerms
from psa_erp_sync.revenue.recognition import ChangeOrder, month_index, month_start

if TYPE_CHECKING:
    import psycopg


def contract_terms(conn: psycopg.Connection) -> dict[str, ContractTerms]:
    """Per PSA project: base contract value, approved change orders (effective-dated; one with no
    date counts from the start), and the term's start and end dates."""
    orders: dict[str, list[ChangeOrder]] = {}
    for ref, amount, effective in conn.execute(
        """
        SELECT o.project_ref, c.amount_delta_minor, c.effective_date
        FROM forecast.src_change_order c JOIN forecast.src_opportunity o ON o.opportunity_id = c.opportunity_id
        WHERE c.status = 'approved' AND o.is_won AND o.project_ref IS NOT NULL
        ORDER BY o.project_ref, c.effective_date NULLS FIRST, c.change_order_id
        """
    ).fetchall():
        month = month_index(effective) if effective is not None else 0
        orders.setdefault(str(ref), []).append(ChangeOrder(int(amount), month))
    terms: dict[str, ContractTerms] = {}
    # The first won opportunity (by id) of each project, found once for all projects: a lateral
    # subquery per project scanned every opportunity for each one (50,000 projects x 10,000
    # opportunities: 20 s of PostgreSQL CPU, docs/performance.md "perf-forecast2").
    for ref, value, starts_on, ends_on in conn.execute(
        """
        WITH won AS (
            SELECT DISTINCT ON (o.project_ref) o.project_ref, o.amount_minor FROM forecast.src_opportunity o
            WHERE o.is_won AND o.project_ref IS NOT NULL ORDER BY o.project_ref, o.opportunity_id
        )
        SELECT p.project_ref, coalesce(w.amount_minor, p.fee_minor, p.budget_minor), p.starts_on, p.ends_on
        FROM forecast.src_project p LEFT JOIN won w ON w.project_ref = p.project_ref
        """
    ).fetchall():  # all rows at once: iterating the cursor checked the result per row (50k rows)
        terms[str(ref)] = ContractTerms(
            value_minor=int(value) if value is not None else None,
            change_orders=tuple(orders.get(str(ref), ())),
            starts_on=starts_on,
            ends_on=ends_on,
        )
    return terms


def estimate_history(conn: psycopg.Connection, before: int) -> dict[str, dict[int, int]]:
    """Per project, the EAC each fixed-fee period before ``before`` was last recognized with."""
    out: dict[str, dict[int, int]] = {}
    for ref, period, eac in conn.execute(
        "SELECT project_ref, period_month, estimated_total_cost_minor FROM revenue.recognition_latest"
        " WHERE billing_type = 'fixed_fee' AND period_month < %s",
        (month_start(before),),
    ):
        out.setdefault(str(ref), {})[month_index(period)] = int(eac)
    return out


def journaled_revenue(conn: psycopg.Connection, before: int) -> dict[str, dict[int, int]]:
    """Per project, the revenue the planned journals credit in each ERP posting month before
    ``before`` (credit - debit of the revenue lines): what the ERP's books will hold."""
    out: dict[str, dict[int, int]] = {}
    for ref, month, amount in conn.execute(
        """
        SELECT j.project_ref, j.posting_month, sum(l.credit_minor - l.debit_minor)
        FROM revenue.journal j JOIN revenue.journal_line l ON l.idempotency_key = j.idempotency_key
        WHERE l.role = 'revenue' AND j.state = 'planned' AND j.posting_month < %s
        GROUP BY 1, 2
        """,
        (month_start(before),),
    ):
        out.setdefault(str(ref), {})[month_index(month)] = int(amount)
    return out


def accounting_periods(conn: psycopg.Connection) -> PeriodBook:
    """The ERP's accounting periods as ``master_data_sync`` last stored them (SuiteQL rows)."""
    rows = conn.execute(
        "SELECT body FROM master.erp_record WHERE record_type = 'accountingperiod' ORDER BY external_id"
    ).fetchall()
    return PeriodBook.from_rows(dict(row[0]) for row in rows)
