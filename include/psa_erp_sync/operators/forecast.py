"""ForecastRefreshOperator: refresh the revenue forecast into immutable snapshots and publish them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psa_erp_sync.operators.base import LineageReportingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

SNAPSHOT_TABLES = (
    "snapshot",
    "line_series",
    "contract_balance",
    "capacity_series",
)  # written (line, capacity: views)


def default_chart_dir() -> Path:
    """``PSA_ERP_SYNC_FORECAST_DIR``, else ``.local/forecast`` of the checkout."""
    env = os.environ.get("PSA_ERP_SYNC_FORECAST_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / ".local" / "forecast"


def _hash_total(ids: list[str]) -> str:
    """A decimal hash total of the snapshot ids (the facet's hashTotal is digits only)."""
    import hashlib

    return str(int(hashlib.sha256("\n".join(ids).encode()).hexdigest()[:15], 16))


#: What each source extract reads and writes (the datasets its lineage reports).
SOURCE_DATASETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # Projects, people (capacity, cost rates), the resource schedule and milestones.
    "psa": (
        ("/v2/projects", "/v2/users", "/v2/x/schedule", "/v2/x/milestones"),
        ("forecast.src_project", "forecast.src_person", "forecast.src_schedule", "forecast.src_milestone"),
    ),
    # Opportunities (open pipeline, won contract values) and change orders.
    "crm": (
        ("/api/v1/opportunities", "/api/v1/change_orders"),
        ("forecast.src_opportunity", "forecast.src_change_order"),
    ),
}


class ForecastSourceExtractOperator(LineageReportingOperator):
    """Extract the forecast's inputs from one source system (a full read, replaced atomically per
    source, recording a content hash: the data version a snapshot cites). Retrying is safe.

    :param system: ``psa`` or ``crm``.
    :param source_conn_id: Airflow connection of that system; default ``{system}_default``.
    :param ods_conn_id: Airflow connection of the ODS.
    """

    ui_color = "#e8e0f7"

    def __init__(
        self,
        *,
        system: str,
        source_conn_id: str | None = None,
        ods_conn_id: str = "ods_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.system = system
        self.source_conn_id = source_conn_id
        self.ods_conn_id = ods_conn_id
        self.summary: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.forecast import inputs
        from psa_erp_sync.hooks.crm import CrmHook
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.hooks.psa import PsaHook

        if self.system not in SOURCE_DATASETS:
            raise ValueError(f"system must be one of {sorted(SOURCE_DATASETS)}, not {self.system!r}")
        self.record_lineage_run(context, self.task_id)
        run_id = context["run_id"]
        conn_id = self.source_conn_id or f"{self.system}_default"
        with OdsHook(self.ods_conn_id).get_conn() as conn:
            if self.system == "psa":
                with PsaHook(conn_id).get_client() as psa:
                    summary = inputs.extract_psa(conn, psa, run_id=run_id, config=load_config())
            else:
                with CrmHook(conn_id).get_client() as crm:
                    summary = inputs.extract_crm(conn, crm, run_id=run_id)
        self.log.info("extracted %s", {k: v["rows"] for k, v in summary.items()})
        self.summary = {
            k: {"rows": v["rows"], "content_hash": v["content_hash"][:16]} for k, v in summary.items()
        }
        return self.summary

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.lineage.refs import DatasetRef, resolve

        reads, writes = SOURCE_DATASETS.get(self.system, ((), ()))
        conn_ids = {"ods": self.ods_conn_id}
        if self.source_conn_id:
            conn_ids[self.system] = self.source_conn_id
        return (
            resolve([DatasetRef(self.system, path) for path in reads], conn_ids),
            resolve([DatasetRef("ods", table) for table in writes], conn_ids),
        )


class ForecastRefreshOperator(LineageReportingOperator):
    """Compute the revenue forecast (actuals, contracted backlog, weighted pipeline) per scenario,
    store each as an immutable snapshot keyed by (scenario, as-of, input data versions), push it
    to the planning platform and draw the chart.

    Idempotent: with unchanged inputs the snapshot ids are the same, nothing new is written and the
    planning platform answers ``unchanged``.

    :param as_of: the as-of date ``YYYY-MM-DD``; default: the run's data interval end (or when it
        was due), never the wall clock. (templated)
    :param scenarios: scenarios to refresh (``base``, ``best``, ``worst``).
    :param ods_conn_id: Airflow connection of the ODS.
    :param erp_conn_id: Airflow connection of the ERP (named in lineage: actuals are ERP postings).
    :param planning_conn_id: Airflow connection of the planning platform; None skips the push.
    :param chart_dir: where the chart goes (a folder per base snapshot). (templated)
    """

    template_fields: Sequence[str] = ("as_of", "chart_dir")
    ui_color = "#e8e0f7"

    def __init__(
        self,
        *,
        as_of: str | None = None,
        scenarios: Sequence[str] = ("base", "best", "worst"),
        ods_conn_id: str = "ods_default",
        erp_conn_id: str = "erp_default",
        planning_conn_id: str | None = "planning_default",
        chart_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.as_of = as_of
        self.scenarios = tuple(scenarios)
        self.ods_conn_id = ods_conn_id
        self.erp_conn_id = erp_conn_id
        self.planning_conn_id = planning_conn_id
        self.chart_dir = chart_dir
        self.outcome: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from contextlib import nullcontext

        from psa_erp_sync.forecast.refresh import refresh
        from psa_erp_sync.forecast.settings import SCENARIOS, load_forecast_settings
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.hooks.planning import PlanningHook
        from psa_erp_sync.operators.context import run_as_of

        self.record_lineage_run(context, "forecast")
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenarios {sorted(unknown)}; known: {SCENARIOS}")
        as_of = date.fromisoformat(self.as_of) if self.as_of else run_as_of(context).date()
        settings = load_forecast_settings()
        planning = PlanningHook(self.planning_conn_id).get_client() if self.planning_conn_id else None
        chart_dir = Path(self.chart_dir) if self.chart_dir else default_chart_dir()
        with OdsHook(self.ods_conn_id).get_conn() as conn, planning or nullcontext():
            outcome = refresh(
                conn,
                as_of=as_of,
                run_id=context["run_id"],
                settings=settings,
                planning=planning,
                chart_dir=chart_dir,
                scenarios=self.scenarios,
            )
        self.outcome = outcome.as_dict()
        for scenario, info in outcome.snapshots.items():
            self.log.info(
                "%s: snapshot %s, %d lines, %s",
                scenario,
                info["snapshot_id"],
                info["lines"],
                "written" if info["written"] else "already existed",
            )
        self.log.info("chart: %s", outcome.chart_html)
        return {
            "as_of": as_of.isoformat(),
            "snapshots": {
                k: {"snapshot_id": v["snapshot_id"], "written": v["written"], "lines": v["lines"]}
                for k, v in outcome.snapshots.items()
            },
            "published": outcome.published,
            "chart_html": outcome.chart_html,
        }

    # -- OpenLineage (methods of LineageReportingOperator, found by name by the provider) -------
    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.forecast.inputs import ODS_INPUTS
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.hooks.planning import PlanningHook
        from psa_erp_sync.lineage import naming

        # Actuals are the ERP's posted records, read from the ledger's confirmed rows, which the
        # posting DAG's reconcile_erp proved equal to an ERP read-back before publishing the
        # posting asset this DAG runs on. So the ERP record types are inputs, next to the ledger.
        erp_namespace = ErpHook(self.erp_conn_id).openlineage_namespace()
        # Likewise billing and revenue: billed per contract and the cash KPIs are the ERP's invoices and
        # credit memos as read back (billing.erp_*), and the months with revenue journals show the
        # ERP's journal entries (revenue.journal, posted through the ledger by post_journals).
        inputs = [
            naming.erp_record(erp_namespace, rt)
            for rt in ("timebill", "expensereport", "invoice", "creditmemo", "journalentry")
        ]
        inputs += [self.ods_dataset(schema, table) for schema, table in ODS_INPUTS]
        # Stored snapshots are read back: the previous one of each scenario for the cumulative
        # catch-up, and this run's for the planning push (built from the stored lines).
        inputs += [self.ods_dataset("forecast", "snapshot"), self.ods_dataset("forecast", "line")]
        outputs = [self.ods_dataset("forecast", table) for table in SNAPSHOT_TABLES]
        if self.planning_conn_id:
            planning = PlanningHook(self.planning_conn_id).openlineage_namespace()
            outputs.append(naming.http(planning, naming.PLANNING_SNAPSHOTS))
        return inputs, outputs

    def lineage_run_facets(self) -> dict[str, Any]:
        from psa_erp_sync.lineage.facets import ControlTotalsRunFacet

        if self.outcome is None:
            return {}
        counts: dict[str, int] = {}
        amounts: dict[str, str] = {}
        for scenario, info in self.outcome["snapshots"].items():
            counts[f"lines.{scenario}"] = int(info["lines"])
            counts[f"written.{scenario}"] = int(bool(info["written"]))
            totals = info.get("totals") or {}
            if scenario == "base":  # forecast amounts per currency, in minor units
                amounts = {
                    cur: str(v) for cur, v in sorted(totals.get("amount_minor_by_currency", {}).items())
                }
        counts["published"] = len(self.outcome["published"])
        return {
            "controlTotals": ControlTotalsRunFacet(
                counts=counts,
                amounts=amounts,
                hashTotal=_hash_total(sorted(v["snapshot_id"] for v in self.outcome["snapshots"].values())),
            )
        }
