"""
### Revenue forecast refresh: ODS + PSA plans + CRM pipeline -> forecast snapshots -> planning

**Owner:** finance-integration · **Domain:** forecast

Extracts projects, people, the resource schedule and milestones from the PSA and opportunities
and change orders from the CRM, then computes the forecast for the next 12 months per project,
practice, legal entity and firm, in each currency and in the reporting currency: recognized
revenue actuals (posted approved time and expenses, fixed fee by cost-to-cost, milestones,
retainers), contracted backlog burned by resource plans, and the weighted pipeline as a separate
layer, for the base, best and worst scenarios. Each scenario is stored as an immutable snapshot
that records the run id and the input data versions, pushed to the planning platform and drawn
as a chart (PNG + HTML, firm and per legal entity). See docs/forecast.md.

**Schedule:** when posting, master data or project data change (Airflow Assets) and at least
daily at 05:30 UTC. Idempotent per (scenario, as-of, input data versions): a refresh on unchanged
inputs writes nothing new and the platform answers `unchanged`.
"""

from __future__ import annotations

from airflow.sdk import dag

from psa_erp_sync.flows import DEFAULT_ARGS, forecast, owner_digest


@dag(
    dag_id="revenue_forecast_refresh",
    schedule=forecast.schedule(),
    start_date=forecast.START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    **owner_digest(),  # each owner of new exception items gets one digest per run
    tags=["domain:forecast", "psa", "crm", "planning", "financial"],
)
def revenue_forecast_refresh() -> None:
    forecast.build()


revenue_forecast_refresh()
