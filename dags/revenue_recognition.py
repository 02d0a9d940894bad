"""
### Revenue recognition: ODS -> recognized revenue per project, legal entity and period -> planned journals

**Owner:** finance-integration · **Domain:** revenue

For the month that just ended (or the `period` param, `YYYY-MM`, on demand for an open period),
per project and legal entity, computes recognized revenue under ASC 606: time and materials as
delivered, fixed fee by cost-to-cost with cumulative catch-up and the full expected-loss
provision, milestones on sign-off, retainers ratably. It stores the recognition with the hash of
its inputs (`revenue.recognition`) and plans the balanced journal (revenue, contract asset /
unbilled receivable, contract liability / deferred revenue, loss provision), one per contract,
never netted across contracts. A recompute plans only the delta against what is already planned
for the period; a closed period's delta goes to the first open period or is parked, per the legal
entity's policy. The month before is recomputed first (`periods_back`) to catch late changes.

**Posting:** `post_journals` then sends every planned journal (`revenue.journal`, state `planned`)
to the ERP as a `journalentry` through the posting ledger and engine (ledger row first, read-back
before any resend), each to the ERP its legal entity routes to on its posting date
(`config/erp_routing.yaml`: NetSuite, or SAP after a cutover); parked journals wait for finance.
`reconcile_journals` reads each routed ERP back against the ledger (control totals per ERP).

**Schedule:** monthly, the 1st at 06:00 UTC; trigger manually with `period` for an open month.
Idempotent: same inputs write nothing new. See docs/billing.md, "Revenue recognition".
"""

from __future__ import annotations

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, close_deadlines, owner_digest, revenue


@dag(
    dag_id="revenue_recognition",
    schedule=revenue.schedule(),
    start_date=revenue.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=revenue.PARAMS,
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    **close_deadlines("revenue_recognition"),  # per legal entity: a missed close deadline alerts its owner
    tags=["domain:revenue", "erp", "financial"],
)
def revenue_recognition() -> None:
    revenue.build()


revenue_recognition()
