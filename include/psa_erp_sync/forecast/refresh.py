"""One forecast refresh: read the inputs' data versions, compute and store a snapshot per
scenario (unless that exact snapshot exists), push them to the planning platform, draw the chart.

Plain Python taking a connection and clients: the operator adapts it to Airflow.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psa_erp_sync.forecast import billing_kpis, model, publish, store
from psa_erp_sync.forecast import inputs as forecast_inputs
from psa_erp_sync.forecast.settings import SCENARIOS, ForecastSettings

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.clients.planning import PlanningClient

log = logging.getLogger(__name__)


@dataclass
class RefreshOutcome:
    """What a refresh did: snapshot ids per scenario, whether each was new, pushes, chart files."""

    as_of: date
    data_versions: dict[str, str]
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    published: dict[str, str] = field(default_factory=dict)
    chart_html: str | None = None
    chart_pngs: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "data_versions": self.data_versions,
            "snapshots": self.snapshots,
            "published": self.published,
            "chart_html": self.chart_html,
            "chart_pngs": self.chart_pngs,
        }


def refresh(
    conn: psycopg.Connection,
    *,
    as_of: date,
    run_id: str,
    settings: ForecastSettings,
    planning: PlanningClient | None = None,
    chart_dir: Path | None = None,
    scenarios: tuple[str, ...] = SCENARIOS,
    job_external_id: str | None = None,
) -> RefreshOutcome:
    """Refresh the forecast as of ``as_of``; ``job_external_id`` is the ERP job external id format
    the billing KPIs find a project's customer by (default: ``config/mappings.yaml``'s)."""
    versions = forecast_inputs.data_versions(conn, settings)
    outcome = RefreshOutcome(as_of=as_of, data_versions=versions)
    todo: dict[str, str] = {}
    for scenario in scenarios:
        snap_id = store.snapshot_id(scenario, as_of, versions)
        if store.exists(conn, snap_id):
            row = conn.execute(
                "SELECT line_count, totals FROM forecast.snapshot WHERE snapshot_id = %s", (snap_id,)
            ).fetchone()
            assert row is not None
            outcome.snapshots[scenario] = {
                "snapshot_id": snap_id,
                "written": False,
                "lines": row[0],
                "totals": row[1],
            }
            log.info(
                "snapshot %s exists (same scenario, as-of and input versions): nothing to write", snap_id
            )
        else:
            todo[scenario] = snap_id
    if todo:
        loaded = forecast_inputs.load_inputs(conn, as_of=as_of, settings=settings, prior_snapshot_id=None)
        prior_ids = {s: forecast_inputs.previous_snapshot(conn, s, snap_id) for s, snap_id in todo.items()}
        priors = {s: _prior(conn, prior_id) for s, prior_id in prior_ids.items()}
        kpis = _billing_kpis(conn, as_of, settings, job_external_id)
        outcome.snapshots.update(
            _compute_and_write(conn, loaded, settings, todo, priors, kpis, run_id, versions, prior_ids)
        )
    outcome.snapshots = {s: outcome.snapshots[s] for s in scenarios}
    if planning is not None:
        for info in outcome.snapshots.values():
            receipt = publish.push(conn, planning, info["snapshot_id"], run_id=run_id)
            outcome.published[info["snapshot_id"]] = receipt.status
    if chart_dir is not None and "base" in outcome.snapshots:
        ids = {name: info["snapshot_id"] for name, info in outcome.snapshots.items()}
        previous = forecast_inputs.previous_snapshot(conn, "base", ids["base"])
        from psa_erp_sync.forecast import chart

        files = chart.write_charts(
            conn,
            snapshots=ids,
            previous=previous,
            out_dir=chart_dir / ids["base"],
            reporting_currency=settings.reporting_currency,
        )
        outcome.chart_html = str(files.html)
        outcome.chart_pngs = {k: str(v) for k, v in files.pngs.items()}
    return outcome


def _compute_and_write(
    conn: psycopg.Connection,
    loaded: model.ForecastInputs,
    settings: ForecastSettings,
    todo: dict[str, str],
    priors: dict[str, Any],
    kpis: list[billing_kpis.BillingKpiRow],
    run_id: str,
    versions: dict[str, str],
    prior_ids: dict[str, str | None],
) -> dict[str, dict[str, Any]]:
    """For :func:`refresh`: the scenarios in ``todo`` computed and written; scenario -> its
    outcome. Each scenario is written while the next one is computed (one transaction per snapshot)."""
    computed: dict[str, tuple[int, dict[str, Any]]] = {}

    def results() -> Iterator[model.ForecastResult]:
        for result in model.iter_scenarios(loaded, settings, tuple(todo), priors):
            result.billing_kpis = kpis
            computed[result.scenario] = (len(result.lines), result.totals)
            yield result

    written = store.write_as_computed(
        conn,
        results(),
        snap_ids=todo,
        run_id=run_id,
        data_versions=versions,
        reporting_currency=settings.reporting_currency,
    )
    out = {}
    for scenario, snap_id in todo.items():
        lines, totals = computed[scenario]
        out[scenario] = {
            "snapshot_id": snap_id,
            "written": written[scenario],
            "lines": lines,
            "totals": totals,
            "previous_snapshot_id": prior_ids[scenario],
        }
        log.info("snapshot %s: %d lines, written %s", snap_id, lines, written[scenario])
    return out


def _billing_kpis(
    conn: psycopg.Connection, as_of: date, settings: ForecastSettings, job_external_id: str | None
) -> list[billing_kpis.BillingKpiRow]:
    if job_external_id is None:
        from psa_erp_sync.config import load_config

        job_external_id = load_config().mappings.external_ids["job"]
    return billing_kpis.compute(conn, as_of=as_of, settings=settings, job_external_id=job_external_id)


def _prior(conn: psycopg.Connection, prior_id: str | None) -> Any:
    if prior_id is None:
        return None
    import pandas as pd

    rows = conn.execute(
        "SELECT project_ref, cum_revenue_minor FROM forecast.contract_balance WHERE snapshot_id = %s",
        (prior_id,),
    ).fetchall()
    return pd.DataFrame(rows, columns=["project_ref", "cum_revenue_minor"]).astype(
        {"project_ref": "object", "cum_revenue_minor": "int64"}
    )
