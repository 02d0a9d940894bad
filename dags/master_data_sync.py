"""
### Master data: ERP -> ODS -> PSA

**Owner:** finance-master-data · **Domain:** master data

The ERP is the system of authority for customers, legal entities (subsidiaries), currencies, tax
codes, accounting periods and projects (jobs) (`config/systems_of_authority.yaml`). This DAG reads
each of them incrementally with SuiteQL (`lastmodifieddate >= watermark - overlap`, never a strict
`>`), stages every distinct version (deduplicated by id and content hash), keeps the current
version in `master.erp_record`, and carries ERP-owned changes to the PSA: renames, merges (projects
move to the surviving client) and deactivations. It then publishes the `ods_master_data` asset,
on which `project_setup` is scheduled.

**Schedule:** hourly at :05; master data changes slowly and validation of new deals reads the ERP
synchronously anyway, so an hour of lag in the ODS copy is harmless.

**Operators:** any task may be retried or cleared: re-reads are deduplicated, and each change is
applied to the PSA once (absolute values).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import master_data, owner_digest


@dag(
    dag_id="master_data_sync",
    schedule="5 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=master_data.DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    tags=["domain:master-data", "erp", "psa"],
)
def master_data_sync() -> None:
    master_data.build()


master_data_sync()
