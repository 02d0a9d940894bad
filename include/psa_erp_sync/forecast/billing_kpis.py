"""Billing in the forecast: billed per contract and the cash KPIs, from the ERP billing read back
into the ODS (``billing.erp_*``, :mod:`psa_erp_sync.billing.readback`).

- **Billed per contract** = Σ invoice lines - Σ credit memo lines dated on or before the as-of date,
  voided invoices excluded. A line belongs to the project of the source it bills (a time entry or
  expense through the posting ledger's external id, a milestone, a retainer period
  ``<project>:<period>``), else to the project of the invoice's job.
- **Receivables** (per legal entity, customer and currency) = Σ invoices - Σ credit memos - Σ
  customer payments, each dated on or before the as-of date (voided invoices excluded).
- **DSO** = receivables / net billed in the period x period days, the period being the
  ``billing_kpis.dso_period_days`` days ending on the as-of date (``config/forecast.yaml``);
  undefined (NULL) when nothing was billed in the period.
- **Unbilled WIP ageing**: approved, billable, not deleted time and expense entries whose net
  invoiced amount (invoice lines - credit memo lines referencing them) is not positive, bucketed by
  days from approval to the as-of date (0-30, 31-60, 61-90, over 90). The approval date is the
  date of the PSA's last update of the approved version (``source_updated_at``), capped at the first
  invoice. For invoiced entries: the mean days from approval to the first invoice.
- **Revenue leakage**: unbilled WIP approved more than ``billing_kpis.leakage_days`` days before
  the as-of date.

A work entry's customer is the parent of its project's ERP job (``master.erp_record``; the job's
external id is ``config/mappings.yaml`` ``external_ids.job``), else the customer of the project's
setup, else ``unmapped``. Set-based SQL: the ODS does the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from psa_erp_sync.forecast import model

if TYPE_CHECKING:
    import pandas as pd
    import psycopg

    from psa_erp_sync.forecast.settings import ForecastSettings

UNMAPPED = "unmapped"

# Signed amount of a line or document: credit memos reduce what was billed (whatever sign the
# ERP gives their lines).
_SIGNED = "CASE WHEN i.record_type = 'invoice' THEN {amount} ELSE -abs({amount}) END"

# Each invoice / credit memo line (not voided, dated <= as_of) with the project it bills.
_BILLED_LINES = f"""
    SELECT coalesce(t.project_ref, e.project_ref, m.project_ref,
                    CASE WHEN l.source_type = 'retainerperiod' THEN split_part(l.source_id, ':', 1) END,
                    i.project_ref) AS project_ref,
           l.source_type, l.source_id, coalesce(pt.source_id, pe.source_id, l.source_id) AS entry_id,
           i.record_type, i.tran_date, l.currency, {_SIGNED.format(amount="l.amount_minor")} AS signed_minor
    FROM billing.erp_invoice_line l
    JOIN billing.erp_invoice i USING (record_type, internal_id)
    LEFT JOIN (SELECT DISTINCT external_id, source_id FROM ledger.posting WHERE record_type = 'timebill' AND NOT shadow) pt
           ON l.source_type = 'timebill' AND pt.external_id = l.source_id
    LEFT JOIN (SELECT DISTINCT external_id, source_id FROM ledger.posting WHERE record_type = 'expensereport' AND NOT shadow) pe
           ON l.source_type = 'expensereport' AND pe.external_id = l.source_id
    LEFT JOIN canonical.time_entry t
           ON l.source_type = 'timebill' AND t.source_id = coalesce(pt.source_id, l.source_id)
    LEFT JOIN canonical.expense_entry e
           ON l.source_type = 'expensereport' AND e.source_id = coalesce(pe.source_id, l.source_id)
    LEFT JOIN forecast.src_milestone m ON l.source_type = 'milestone' AND m.milestone_id = l.source_id
    WHERE NOT i.voided AND i.tran_date <= %(as_of)s
"""


def has_readback(conn: psycopg.Connection) -> bool:
    """Whether the ERP's invoices have been read back at least once (else billing is unknown)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM billing.erp_readback_watermark WHERE record_type = 'invoice')"
    ).fetchone()
    return bool(row and row[0])


def data_version(conn: psycopg.Connection) -> str:
    """The read-back's data version: rows held and the last change written (an overlap re-read
    writes nothing, so it does not make a new snapshot)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM billing.erp_invoice), (SELECT count(*) FROM billing.erp_payment),"
        " greatest((SELECT max(read_at) FROM billing.erp_invoice), (SELECT max(read_at) FROM billing.erp_payment))"
    ).fetchone()
    invoices, payments, last = row if row else (0, 0, None)
    return f"{invoices}:{payments}:{last.isoformat() if last else '-'}"


def billed_by_month(conn: psycopg.Connection, as_of: date) -> dict[str, dict[date, int]] | None:
    """Net billed per project and month (the month's first day) up to ``as_of``, in the project's
    currency (``forecast.src_project``), from the ERP read-back: what revenue recognition takes as
    billed. None before the first read-back (billing unknown). Lines in another currency than their
    project's are left out (the ERP bills a project in its currency)."""
    if not has_readback(conn):
        return None
    out: dict[str, dict[date, int]] = {}
    rows = conn.execute(
        f"SELECT b.project_ref, date_trunc('month', b.tran_date)::date, sum(b.signed_minor)::bigint"
        f" FROM ({_BILLED_LINES}) b JOIN forecast.src_project p ON p.project_ref = b.project_ref"
        " WHERE b.currency = p.currency GROUP BY 1, 2",
        {"as_of": as_of},
    )
    for ref, month, minor in rows:
        out.setdefault(str(ref), {})[month] = int(minor)
    return out


def billed_per_project(
    conn: psycopg.Connection, as_of: date, projects: pd.DataFrame, settings: ForecastSettings
) -> pd.Series:
    """Net billed to date per project (aligned with ``projects``), in the project's currency
    (another invoice currency is converted with the configured rate, half-even)."""
    import numpy as np
    import pandas as pd

    with conn.cursor() as cur:
        cur.execute(
            f"SELECT project_ref, currency, sum(signed_minor)::bigint FROM ({_BILLED_LINES}) b"
            " WHERE project_ref IS NOT NULL GROUP BY 1, 2",
            {"as_of": as_of},
        )
        rows = cur.fetchall()
    billed = pd.DataFrame(rows, columns=["project_ref", "currency", "minor"])
    currency_of = projects.set_index("project_ref")["currency"]
    billed = billed[billed["project_ref"].isin(currency_of.index)]
    if not len(billed):
        return pd.Series(np.zeros(len(projects), dtype=np.int64), index=projects.index)
    rate = {c: model.fx_factor(c, settings)[0] for c in settings.fx_rates}
    target = billed["project_ref"].map(currency_of)
    same = (billed["currency"] == target).to_numpy()
    src = billed["currency"].map(rate).fillna(0).to_numpy(dtype=np.int64)
    dst = target.map(rate).fillna(1).to_numpy(dtype=np.int64)
    minor = billed["minor"].to_numpy(dtype=np.int64)
    converted = np.where(same, minor, model.muldiv(minor, src, np.maximum(dst, 1)))
    per_project = pd.Series(converted, index=billed["project_ref"].to_numpy()).groupby(level=0).sum()
    return projects["project_ref"].map(per_project).fillna(0).astype("int64")


KPI_COLUMNS = (
    "legal_entity",
    "customer_ref",
    "currency",
    "receivables_minor",
    "billed_in_period_minor",
    "dso_period_days",
    "dso_days",
    "wip_0_30_minor",
    "wip_31_60_minor",
    "wip_61_90_minor",
    "wip_over_90_minor",
    "unbilled_entries",
    "invoiced_entries",
    "avg_days_to_invoice",
    "leakage_days",
    "leakage_entries",
    "leakage_minor",
)

_AR = f"""
    SELECT coalesce(i.legal_entity, '') AS le, coalesce(i.customer_ref, '{UNMAPPED}') AS cust, i.currency,
           sum({_SIGNED.format(amount="i.total_minor")}) AS billed_total,
           coalesce(sum({_SIGNED.format(amount="i.total_minor")})
                    FILTER (WHERE i.tran_date > %(as_of)s::date - %(period)s), 0) AS billed_period
    FROM billing.erp_invoice i WHERE NOT i.voided AND i.tran_date <= %(as_of)s GROUP BY 1, 2, 3
"""
_PAID = f"""
    SELECT coalesce(legal_entity, '') AS le, coalesce(customer_ref, '{UNMAPPED}') AS cust, currency,
           sum(payment_minor) AS paid
    FROM billing.erp_payment WHERE tran_date <= %(as_of)s GROUP BY 1, 2, 3
"""
_WORK = f"""
    WITH billed AS (
        SELECT source_type, entry_id, sum(signed_minor) AS net_minor,
               min(tran_date) FILTER (WHERE record_type = 'invoice') AS first_invoiced
        FROM ({_BILLED_LINES}) b WHERE source_type IN ('timebill', 'expensereport') GROUP BY 1, 2
    ), work AS (
        SELECT 'timebill' AS kind, source_id, project_ref, legal_entity, currency, amount_minor,
               (source_updated_at AT TIME ZONE 'UTC')::date AS updated_on
        FROM canonical.time_entry WHERE approved AND billable AND NOT is_deleted AND amount_minor > 0
        UNION ALL
        SELECT 'expensereport', source_id, project_ref, legal_entity, currency, amount_minor,
               (source_updated_at AT TIME ZONE 'UTC')::date
        FROM canonical.expense_entry WHERE approved AND billable AND NOT is_deleted AND amount_minor > 0
    ), entry AS (
        SELECT w.*, coalesce(b.net_minor, 0) > 0 AS invoiced, b.first_invoiced,
               CASE WHEN coalesce(b.net_minor, 0) > 0 THEN least(w.updated_on, b.first_invoiced)
                    ELSE w.updated_on END AS approved_on,
               coalesce(j.parent, s.customer_external_id, '{UNMAPPED}') AS cust
        FROM work w
        LEFT JOIN billed b ON b.source_type = w.kind AND b.entry_id = w.source_id
        LEFT JOIN master.erp_record j
               ON j.record_type = 'job' AND j.external_id = %(job_prefix)s || w.project_ref || %(job_suffix)s
        LEFT JOIN (SELECT DISTINCT ON (psa_project_id) psa_project_id::text AS project_ref, customer_external_id
                   FROM master.project_setup WHERE psa_project_id IS NOT NULL
                   ORDER BY psa_project_id, updated_at DESC) s ON s.project_ref = w.project_ref
    ), aged AS (
        SELECT e.*, %(as_of)s::date - e.approved_on AS age FROM entry e WHERE e.approved_on <= %(as_of)s
    )
    SELECT legal_entity AS le, cust, currency,
           coalesce(sum(amount_minor) FILTER (WHERE NOT invoiced AND age <= 30), 0) AS wip_0_30,
           coalesce(sum(amount_minor) FILTER (WHERE NOT invoiced AND age BETWEEN 31 AND 60), 0) AS wip_31_60,
           coalesce(sum(amount_minor) FILTER (WHERE NOT invoiced AND age BETWEEN 61 AND 90), 0) AS wip_61_90,
           coalesce(sum(amount_minor) FILTER (WHERE NOT invoiced AND age > 90), 0) AS wip_over_90,
           count(*) FILTER (WHERE NOT invoiced) AS unbilled,
           count(*) FILTER (WHERE invoiced) AS invoiced,
           round(avg(first_invoiced - approved_on) FILTER (WHERE invoiced), 1) AS avg_days,
           count(*) FILTER (WHERE NOT invoiced AND age > %(leakage)s) AS leaked,
           coalesce(sum(amount_minor) FILTER (WHERE NOT invoiced AND age > %(leakage)s), 0) AS leaked_minor
    FROM aged GROUP BY 1, 2, 3
"""


@dataclass(frozen=True)
class BillingKpiRow:
    """One row of ``forecast.billing_kpi`` (without the snapshot id)."""

    values: tuple[Any, ...]

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(KPI_COLUMNS, self.values, strict=True))


def compute(
    conn: psycopg.Connection, *, as_of: date, settings: ForecastSettings, job_external_id: str
) -> list[BillingKpiRow]:
    """The KPIs per legal entity, customer and currency as of ``as_of``.

    :param job_external_id: the ERP job external id format, e.g. ``psa-project-{id}``.
    """
    period = settings.billing_kpis.dso_period_days
    leakage = settings.billing_kpis.leakage_days
    prefix, _, suffix = job_external_id.partition("{id}")
    params = {
        "as_of": as_of,
        "period": period,
        "leakage": leakage,
        "job_prefix": prefix,
        "job_suffix": suffix,
    }
    sql = f"""
        WITH ar AS ({_AR}), paid AS ({_PAID}), wip AS ({_WORK}),
        keys AS (SELECT le, cust, currency FROM ar UNION SELECT le, cust, currency FROM paid
                 UNION SELECT le, cust, currency FROM wip)
        SELECT k.le, k.cust, k.currency,
               (coalesce(ar.billed_total, 0) - coalesce(paid.paid, 0))::bigint,
               coalesce(ar.billed_period, 0)::bigint,
               CASE WHEN coalesce(ar.billed_period, 0) > 0 THEN round(
                   (coalesce(ar.billed_total, 0) - coalesce(paid.paid, 0))::numeric * %(period)s
                   / ar.billed_period, 1) END,
               coalesce(w.wip_0_30, 0)::bigint, coalesce(w.wip_31_60, 0)::bigint,
               coalesce(w.wip_61_90, 0)::bigint, coalesce(w.wip_over_90, 0)::bigint,
               coalesce(w.unbilled, 0)::int, coalesce(w.invoiced, 0)::int, w.avg_days,
               coalesce(w.leaked, 0)::int, coalesce(w.leaked_minor, 0)::bigint
        FROM keys k
        LEFT JOIN ar USING (le, cust, currency)
        LEFT JOIN paid USING (le, cust, currency)
        LEFT JOIN wip w USING (le, cust, currency)
        ORDER BY 1, 2, 3
    """
    with conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall()
    return [BillingKpiRow((*r[:5], period, *r[5:13], leakage, *r[13:])) for r in rows]


def write(conn: psycopg.Connection, snap_id: str, rows: list[BillingKpiRow]) -> None:
    """Insert the KPIs of a snapshot (in the snapshot's transaction; the table is immutable)."""
    if not rows:
        return
    columns = ", ".join(("snapshot_id", *KPI_COLUMNS))
    marks = ", ".join(["%s"] * (len(KPI_COLUMNS) + 1))
    with conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO forecast.billing_kpi ({columns}) VALUES ({marks})",
            [(snap_id, *row.values) for row in rows],
        )
