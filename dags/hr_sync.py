"""
### HR: Workday -> ODS -> PSA users and ERP employees

**Owner:** people-operations · **Domain:** HR (resources, home legal entity, cost rates)

HR is the system of authority for people, their legal entity and their cost rates
(`config/systems_of_authority.yaml`, domains `resource` and `cost_rate`). This DAG reads every
Workday worker (REST `/workers`, offset paging up to `total`, then each worker's detail) into
`hr.worker` and its effective-dated versions, and the `Worker_Cost_Rates` custom report (RaaS)
into `hr.cost_rate` (effective-dated). Future hires are kept and read again on every run until
their hire date. It then converges PSA users to HR (create on the hire date, update name, legal
entity and cost rate, deactivate from the termination date) and upserts each provisioned worker's
employee record in the ERP its legal entity routes to. A PSA-side edit of an HR-owned field is
overwritten and reported as a `propagation` exception for people-operations
(`HR_FIELD_EDITED_IN_PSA`). See docs/multi-erp.md, "HR authority".

**Schedule:** daily at 02:30 UTC: hires and terminations take effect by date, so one run per
day applies them on their day; cost rates feed the forecast, which refreshes daily too.

**Operators:** any task may be retried or cleared: ODS writes are upserts, a PSA user is looked up
(employee id, then email) before it is created, and PSA/ERP writes carry absolute values.
Connection `workday_default` (docs/deploying.md).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import dag

from psa_erp_sync.flows import hr, owner_digest


@dag(
    dag_id="hr_sync",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=hr.DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    tags=["domain:hr", "workday", "psa", "erp"],
)
def hr_sync() -> None:
    hr.build()


hr_sync()
