"""IdempotentPostingOperator: post canonical records to the ERP with exactly-once effect."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

log = logging.getLogger(__name__)

PERIOD_QUERY = (
    "SELECT externalid, subsidiary, startdate, enddate, closed, alllocked, arlocked, aplocked "
    "FROM accountingperiod ORDER BY startdate"
)


class IdempotentPostingOperator(BaseOperator):
    """Make the ERP hold exactly the currently approved source records of one ERP record type.

    Plans ``post`` / ``adjust`` / ``reverse`` actions into the posting ledger (a row is written
    before the ERP is called, keyed by a deterministic idempotency key), applies the closed-period
    policy, then works the ledger: upserts by external id in batches via the async batch endpoint,
    bounded concurrency, 429 ``Retry-After`` with backoff and jitter, and read-back by external id
    after any ambiguous failure. A retried or cleared task resumes from the ledger.

    :param record_type: ERP record type, ``timebill`` or ``expensereport``. (templated)
    :param erp_conn_id: Airflow connection of the ERP.
    :param ods_conn_id: Airflow connection of the ODS.
    :param max_concurrency: concurrent ERP requests; default: the connection's ``max_concurrency``
        extra (the account's limit, shared by every integration of the account).
    :param batch_size: records per batch call (at most 100).
    """

    template_fields: Sequence[str] = ("record_type",)
    ui_color = "#d9f2e6"

    def __init__(
        self,
        *,
        record_type: str,
        erp_conn_id: str = "erp_default",
        ods_conn_id: str = "ods_default",
        max_concurrency: int | None = None,
        batch_size: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record_type = record_type
        self.erp_conn_id = erp_conn_id
        self.ods_conn_id = ods_conn_id
        self.max_concurrency = max_concurrency
        self.batch_size = batch_size
        self.plan_summary: dict[str, Any] | None = None
        self.outcome: dict[str, Any] | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.posting import planner
        from psa_erp_sync.posting.engine import EngineSettings, PostingEngine
        from psa_erp_sync.posting.periods import PeriodBook

        if self.batch_size > 100 or self.batch_size < 1:
            raise ValueError("batch_size must be between 1 and 100 (the ERP's batch limit)")
        config = load_config()
        erp_hook = ErpHook(self.erp_conn_id)
        ods = OdsHook(self.ods_conn_id)
        concurrency = self.max_concurrency or erp_hook.max_concurrency(
            config.mappings.posting.max_concurrency
        )
        run_id = context["run_id"]
        ti = context["ti"]
        with erp_hook.get_client() as client:
            periods = PeriodBook.from_rows(client.suiteql(PERIOD_QUERY))
            with ods.get_conn() as conn, conn.transaction():
                plan = planner.plan(
                    conn, record_type=self.record_type, config=config, periods=periods, dag_run_id=run_id
                )
            self.plan_summary = plan.as_dict()
            self.log.info("planned %s", self.plan_summary)
            state: Any = context.get("task_state_store")
            if state is not None:
                previous = state.get("outcome")
                if previous:
                    self.log.info(
                        "an earlier try of this task got this far: %s; resuming from the ledger", previous
                    )
            engine = PostingEngine(
                dsn=ods.dsn(),
                client=client,
                record_type=self.record_type,
                config=config,
                settings=EngineSettings(batch_size=self.batch_size, max_concurrency=concurrency),
                dag_run_id=run_id,
                task_try=getattr(ti, "try_number", None),
            )
            outcome = engine.run().as_dict()
            if state is not None:
                state.set("outcome", outcome)
        self.outcome = outcome
        self.log.info(
            "posted %d, already posted %d, ambiguous resolved %d, reversed %d, rejected %d, parked %d, still pending %d",
            outcome["posted"], outcome["already_posted"], outcome["ambiguous_resolved"], outcome["reversed"],
            outcome["rejected"], outcome["parked"], outcome["still_pending"],
        )  # fmt: skip
        if outcome["still_pending"]:
            raise RuntimeError(
                f"{outcome['still_pending']} {self.record_type} postings are still pending after every round; "
                "retrying the task resumes from the ledger"
            )
        return {"plan": self.plan_summary, "outcome": outcome}
