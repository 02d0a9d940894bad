"""
### Billing read-back: ERP -> ODS

**Owner:** billing (`config/systems_of_authority.yaml`, invoice) · **Domain:** billing

The ERP is the system of authority for invoices, credit memos, customer payments and journal
entries (`config/systems_of_authority.yaml`). This DAG reads each of them incrementally with SuiteQL
(`lastmodifieddate >= watermark - overlap`, never a strict `>`), with their lines from
`transactionline` (the source each invoice line bills, what each payment applies to, journal
debits and credits), and keeps the last version of each record in `billing.erp_*`. The revenue
forecast reads them: billed per contract, contract asset and liability from real billing, DSO,
unbilled WIP ageing and revenue leakage (`docs/billing.md`, "Billing in the ODS and the forecast").

**Schedule:** hourly at :35; payments and invoice states change during the day, and the forecast
refresh and the close report only need them as of the hour.

**Operators:** any task may be retried or cleared: re-reads inside the overlap write nothing.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import billing_readback, owner_digest


@dag(
    dag_id="billing_readback",
    schedule="35 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=billing_readback.DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),  # an owner digest per run, like every DAG (the read-back opens no items today)
    tags=["domain:billing", "erp"],
)
def billing_readback_dag() -> None:
    billing_readback.build()


billing_readback_dag()
