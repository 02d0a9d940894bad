"""
### Project setup: CRM closed-won -> ERP job -> PSA project, and change orders

**Owner:** sales-operations · **Domain:** project setup

A closed-won opportunity in the CRM (the system of authority for opportunities, contract values
and change orders) is validated synchronously against the ERP - customer, legal entity, currency,
tax code, contract value - by `ERPValidationOperator` (bulk SuiteQL, per-run cache, a verdict
and reason code per record; failures go to the exception queue with their owner). Only then is
the project created: the ERP job by external id `crm-opp-{id}`, then the PSA project with its
budget and rate card (found by that code before any create, because the PSA has no idempotency
key), then the PSA id is written back onto the ERP job. Approved change orders update the ERP
contract value and the PSA budget; approved change orders missing from the ERP are reported as
revenue leakage (count and amount) in the run output and the exception queue.

**Schedule:** on the `ods_master_data` asset (after each master-data sync, hourly), so deals are
validated against fresh master data. Trigger manually with `opportunity_ids` to re-run a deal an
owner has fixed; rejected deals are re-validated on every run anyway.

**Operators:** idempotent and crash-safe: each step commits its result before the next starts; a
re-run after a failure between the ERP and PSA steps completes what is missing, creating nothing twice.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.assets import MASTER_DATA
from psa_erp_sync.flows import owner_digest
from psa_erp_sync.flows import project_setup as flow


@dag(
    dag_id="project_setup",
    schedule=[MASTER_DATA],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=flow.DEFAULT_ARGS,
    params=flow.params(),
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    tags=["domain:project-setup", "crm", "erp", "psa", "financial"],
)
def project_setup() -> None:
    flow.build()


project_setup()
