"""IdempotentPostingOperator: post canonical records to the ERP with exactly-once effect."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from psa_erp_sync.operators.base import LineageReportingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)


class IdempotentPostingOperator(LineageReportingOperator):
    """Make the ERP hold exactly the currently approved source records of one ERP record type.

    Plans ``post`` / ``adjust`` / ``reverse`` actions into the posting ledger (a row is written
    before the ERP is called, keyed by a deterministic idempotency key), applies the closed-period
    policy, then works the ledger: upserts by external id in batches via the async batch endpoint,
    bounded concurrency, 429 ``Retry-After`` with backoff and jitter, and read-back by external id
    after any ambiguous failure. A retried or cleared task resumes from the ledger.

    :param record_type: ERP record type, ``timebill`` or ``expensereport``; ``invoice`` or
        ``creditmemo`` runs the invoicing pass (a dead-letter replay of billing documents). (templated)
    :param erp: None (default): every ERP the routing file in force sends anything to
        (``config/erp_routing.yaml``, :meth:`psa_erp_sync.routing.route.Router.erps_in_force`), one
        pass each through the connection the file names, so each ledger row reaches the ERP its
        route names (the first pass plans every route; each pass sends its ERP account's rows).
        ``netsuite`` or ``sap``: that ERP only. (templated)
    :param erp_conn_id: Airflow connection of ``erp`` (default: the one the routing file names).
    :param ods_conn_id: Airflow connection of the ODS.
    :param max_concurrency: this task's ERP requests in flight, at most the account's limit in the
        current environment (``erp.concurrency`` in ``config/environments/<env>.yaml``, through
        :func:`psa_erp_sync.posting.budget.account_limit`); every request also takes a slot of the
        account's budget shared by all processes (:mod:`psa_erp_sync.posting.budget`). Run the task
        in the account's pool (:func:`psa_erp_sync.hooks.erp.account_pool`).
    :param batch_size: records per batch call (at most 100); default: ``posting.batch_size`` of
        ``config/mappings.yaml``.
    """

    template_fields: Sequence[str] = ("record_type", "erp")
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        record_type: str,
        erp: str | None = None,
        erp_conn_id: str | None = None,
        ods_conn_id: str = "ods_default",
        max_concurrency: int | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record_type = record_type
        self.erp = erp
        self.erp_conn_id = erp_conn_id
        self.ods_conn_id = ods_conn_id
        self.max_concurrency = max_concurrency
        self.batch_size = batch_size
        self.plan_summary: dict[str, Any] | None = None
        self.outcome: dict[str, Any] | None = None
        self.routes: list[dict[str, Any]] = []

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.operators.invoicing import BILLING_TYPES, run_invoicing
        from psa_erp_sync.posting import ledger
        from psa_erp_sync.posting.engine import EngineSettings
        from psa_erp_sync.posting.service import post_routed

        if self.record_type in BILLING_TYPES:  # billing documents a dead-letter replay released
            return run_invoicing(self, context, max_lines=None)
        if self.batch_size is not None and not 1 <= self.batch_size <= 100:
            raise ValueError("batch_size must be between 1 and 100 (the ERP's batch limit)")
        config = load_config()
        ti = context["ti"]
        self.record_lineage_run(context, f"post:{self.record_type}")
        state: Any = context.get("task_state_store")
        if state is not None and state.get("outcome"):
            self.log.info("an earlier try got this far: %s; resuming from the ledger", state.get("outcome"))
        with ExitStack() as stack:
            hooks = dict(self._erp_hooks())
            adapters = {
                erp: hook.adapter(stack.enter_context(hook.get_client())) for erp, hook in hooks.items()
            }
            # This task's requests in flight; every process posting to the account shares its limit.
            limits = {
                erp: min(self.max_concurrency or hook.max_concurrency(), hook.max_concurrency())
                for erp, hook in hooks.items()
            }
            plan, outcome = post_routed(
                dsn=OdsHook(self.ods_conn_id).dsn(),
                adapters=adapters,
                record_type=self.record_type,
                config=config,
                settings_for=lambda erp: EngineSettings.from_config(
                    config, batch_size=self.batch_size, max_concurrency=limits[erp]
                ),
                run_id=context["run_id"],
                task_try=getattr(ti, "try_number", None),
            )
        with OdsHook(self.ods_conn_id).get_conn() as conn:
            self.routes = ledger.routes_of_run(conn, self.record_type, context["run_id"])
        if state is not None:
            state.set("outcome", outcome)
        self.plan_summary, self.outcome = plan, outcome
        self.log.info(
            "posted %d, already posted %d, ambiguous resolved %d, reversed %d, rejected %d, parked %d, still pending %d",
            outcome["posted"],
            outcome["already_posted"],
            outcome["ambiguous_resolved"],
            outcome["reversed"],
            outcome["rejected"],
            outcome["parked"],
            outcome["still_pending"],
        )
        if outcome["still_pending"]:
            raise RuntimeError(
                f"{outcome['still_pending']} {self.record_type} postings are still pending after every round; "
                "retrying the task resumes from the ledger"
            )
        return {"plan": plan, "outcome": outcome}

    def _erps(self) -> list[tuple[str, str]]:
        """(ERP, connection) of each pass: ``erp`` alone, or every ERP routed to."""
        from psa_erp_sync.routing.route import router

        routing = router()
        if self.erp:
            erp = self.erp.strip().lower()
            known = routing.routing.erps
            default = known[erp].connection if erp in known else "erp_default"
            return [(erp, self.erp_conn_id or default)]
        return [(erp, routing.routing.connection_of(erp)) for erp in routing.erps_in_force()]

    def _erp_hooks(self) -> list[tuple[str, Any]]:
        """The hook of each target ERP's connection (both build a client and its posting adapter)."""
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.hooks.sap import SapHook

        return [(erp, SapHook(conn) if erp == "sap" else ErpHook(conn)) for erp, conn in self._erps()]

    # -- OpenLineage (the provider finds the methods of LineageReportingOperator by name) ----------
    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.lineage import naming

        table = naming.CANONICAL_TABLE.get(self.record_type, self.record_type)
        inputs = [self.ods_dataset("canonical", table), self.ods_dataset("ledger", "posting")]
        # One dataset per ERP posted to, each in that ERP's own namespace.
        outputs = [
            *(
                naming.erp_dataset(erp, hook.openlineage_namespace(), self.record_type)
                for erp, hook in self._erp_hooks()
            ),
            self.ods_dataset("ledger", "posting"),
            self.ods_dataset("exceptions", "item"),
        ]
        return inputs, outputs

    def lineage_run_facets(self) -> dict[str, Any]:
        from psa_erp_sync.lineage import naming
        from psa_erp_sync.lineage.facets import ErpRoutesRunFacet, PostingOutcomeRunFacet

        if not self.outcome:
            return {}
        facets: dict[str, Any] = {"postingOutcome": PostingOutcomeRunFacet.from_outcome(self.outcome)}
        # Where the records went: each ERP's dataset (its own namespace) per legal entity and dates.
        datasets = {
            erp: naming.erp_dataset(erp, hook.openlineage_namespace(), self.record_type)
            for erp, hook in self._erp_hooks()
        }
        routes = [
            {"namespace": datasets[r["erp"]].namespace, "dataset": datasets[r["erp"]].name, **r}
            for r in self.routes
            if r["erp"] in datasets
        ]
        facets["erpRoutes"] = ErpRoutesRunFacet(recordType=self.record_type, routes=routes)
        return facets


class ParallelRunReconciliationOperator(LineageReportingOperator):
    """Reconcile every parallel run of the routing file in force from both ERPs' read-backs, per
    legal entity x period x project x ERP, to the cent (:mod:`psa_erp_sync.reconcile.parallel_run`).

    Writes ``routing.parallel_check`` and a ``routing.parallel_difference`` row per difference, then
    **fails** when there is any difference, naming each (line, amounts, records). Without a parallel
    run in force it does nothing (no ERP is called).

    :param record_types: ERP record types to reconcile. (templated)
    :param ods_conn_id: Airflow connection of the ODS.
    """

    template_fields: Sequence[str] = ("record_types",)
    ui_color = "#e6f4ea"

    def __init__(
        self,
        *,
        record_types: Sequence[str] = ("timebill", "expensereport"),
        ods_conn_id: str = "ods_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record_types = record_types
        self.ods_conn_id = ods_conn_id
        self.report: dict[str, Any] | None = None

    def _hooks(self) -> list[tuple[str, Any]]:
        """The hook of every ERP a parallel run in force names (primary and secondary)."""
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.hooks.sap import SapHook
        from psa_erp_sync.routing.route import router

        routes = router()
        erps = {r.erp for w in routes.parallel_windows() for r in (w.primary, w.secondary)}
        return [
            (erp, SapHook(conn) if erp == "sap" else ErpHook(conn))
            for erp, conn in ((e, routes.routing.connection_of(e)) for e in sorted(erps))
        ]

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.reconcile.parallel_run import reconcile_parallel_runs
        from psa_erp_sync.routing.route import router

        self.record_lineage_run(context, "reconcile_parallel_run")
        windows = router().parallel_windows()
        if not windows:
            self.log.info("no parallel run in config/erp_routing.yaml: nothing to reconcile")
            self.report = {"windows": []}
            return self.report
        with ExitStack() as stack:
            adapters = {
                erp: hook.adapter(stack.enter_context(hook.get_client())) for erp, hook in self._hooks()
            }
            conn = stack.enter_context(OdsHook(self.ods_conn_id).get_conn())
            conn.autocommit = True
            checks = reconcile_parallel_runs(
                conn, windows, adapters, run_id=context["run_id"], record_types=tuple(self.record_types)
            )
        self.report = {"windows": [c.as_dict() for c in checks]}
        for c in checks:
            self.log.info(
                "parallel run %s %s..%s: %d lines compared, reconciled",
                c.window.legal_entity,
                c.window.first_day,
                c.window.last_day,
                c.report.compared,
            )
        return self.report

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.lineage import naming

        inputs = [self.ods_dataset("ledger", "posting")]
        inputs += [
            naming.erp_record(hook.openlineage_namespace(), rt)
            for _, hook in self._hooks()
            for rt in self.record_types
        ]
        outputs = [
            self.ods_dataset("routing", "parallel_check"),
            self.ods_dataset("routing", "parallel_difference"),
        ]
        return inputs, outputs
