"""IdempotentPostingOperator: post canonical records to the ERP with exactly-once effect."""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
    :param erp: the target ERP, ``netsuite`` or ``sap``: picks the hook of ``erp_conn_id`` and the
        posting adapter (:func:`psa_erp_sync.posting.adapter.adapter_for`). (templated)
    :param erp_conn_id: Airflow connection of the ERP.
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
        erp: str = "netsuite",
        erp_conn_id: str = "erp_default",
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

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.operators.invoicing import BILLING_TYPES, run_invoicing
        from psa_erp_sync.posting.engine import EngineSettings
        from psa_erp_sync.posting.service import post_record_type

        if self.record_type in BILLING_TYPES:  # billing documents a dead-letter replay released
            return run_invoicing(self, context, max_lines=None)
        if self.batch_size is not None and not 1 <= self.batch_size <= 100:
            raise ValueError("batch_size must be between 1 and 100 (the ERP's batch limit)")
        config = load_config()
        erp_hook = self._erp_hook()
        # This task's requests in flight; every process posting to the account shares its limit.
        limit = erp_hook.max_concurrency()
        concurrency = min(self.max_concurrency or limit, limit)
        ti = context["ti"]
        self.record_lineage_run(context, f"post:{self.record_type}")
        state: Any = context.get("task_state_store")
        if state is not None and state.get("outcome"):
            self.log.info("an earlier try got this far: %s; resuming from the ledger", state.get("outcome"))
        with erp_hook.get_client() as client:
            result = post_record_type(
                dsn=OdsHook(self.ods_conn_id).dsn(),
                client=erp_hook.adapter(client),
                record_type=self.record_type,
                config=config,
                settings=EngineSettings.from_config(
                    config, batch_size=self.batch_size, max_concurrency=concurrency
                ),
                run_id=context["run_id"],
                task_try=getattr(ti, "try_number", None),
            )
        if state is not None:
            state.set("outcome", result.outcome)
        self.plan_summary, self.outcome = result.plan, result.outcome
        outcome = result.outcome
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
        return {"plan": result.plan, "outcome": outcome}

    def _erp_hook(self) -> Any:
        """The hook of the target ERP's connection (both build a client and its posting adapter)."""
        if self.erp.strip().lower() == "sap":
            from psa_erp_sync.hooks.sap import SapHook

            return SapHook(self.erp_conn_id)
        from psa_erp_sync.hooks.erp import ErpHook

        return ErpHook(self.erp_conn_id)

    # -- OpenLineage (the provider finds the methods of LineageReportingOperator by name) ----------
    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.lineage import naming

        table = naming.CANONICAL_TABLE.get(self.record_type, self.record_type)
        inputs = [self.ods_dataset("canonical", table), self.ods_dataset("ledger", "posting")]
        outputs = [
            naming.erp_record(self._erp_hook().openlineage_namespace(), self.record_type),
            self.ods_dataset("ledger", "posting"),
            self.ods_dataset("exceptions", "item"),
        ]
        return inputs, outputs

    def lineage_run_facets(self) -> dict[str, Any]:
        from psa_erp_sync.lineage.facets import PostingOutcomeRunFacet

        return {"postingOutcome": PostingOutcomeRunFacet.from_outcome(self.outcome)} if self.outcome else {}
