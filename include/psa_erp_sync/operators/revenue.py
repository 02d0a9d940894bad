"""JournalPostingOperator: planned revenue journals -> ERP journal entries, exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from psa_erp_sync.operators.posting import IdempotentPostingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class JournalPostingOperator(IdempotentPostingOperator):
    """The idempotent posting operator for revenue journals: every ``revenue.journal`` in state
    ``planned`` gets its ledger row (the journal's own key and external id) before the ERP is
    called, then the posting engine sends it as a ``journalentry`` (batches, read-back before any
    resend, the account's shared budget, the ``journalentry`` posting lock). Parked journals wait
    for finance. A retried or cleared task resumes from the ledger.

    :param erp_conn_id: Airflow connection of the ERP.
    :param ods_conn_id: Airflow connection of the ODS.
    :param max_concurrency: this task's ERP requests in flight, at most the account's limit.
    :param batch_size: journals per batch call (at most 100); default ``posting.batch_size``.
    """

    template_fields: Sequence[str] = ("record_type",)

    def __init__(
        self,
        *,
        erp_conn_id: str = "erp_default",
        ods_conn_id: str = "ods_default",
        max_concurrency: int | None = None,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            record_type="journalentry",
            erp_conn_id=erp_conn_id,
            ods_conn_id=ods_conn_id,
            max_concurrency=max_concurrency,
            batch_size=batch_size,
            **kwargs,
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.hooks.ods import OdsHook
        from psa_erp_sync.posting.engine import EngineSettings
        from psa_erp_sync.revenue.posting import post_planned_journals

        config = load_config()
        erp_hook = ErpHook(self.erp_conn_id or "erp_default")
        limit = erp_hook.max_concurrency()
        self.record_lineage_run(context, "post:journalentry")
        with erp_hook.get_client() as client:
            outcome = post_planned_journals(
                dsn=OdsHook(self.ods_conn_id).dsn(),
                client=client,
                config=config,
                settings=EngineSettings.from_config(
                    config,
                    batch_size=self.batch_size,
                    max_concurrency=min(self.max_concurrency or limit, limit),
                ),
                run_id=context["run_id"],
                task_try=getattr(context["ti"], "try_number", None),
            )
        self.outcome = outcome
        self.log.info(
            "revenue journals: %d new in the ledger, posted %d, already posted %d, rejected %d, still pending %d",
            outcome["planned"],
            outcome["posted"],
            outcome["already_posted"],
            outcome["rejected"],
            outcome["still_pending"],
        )
        if outcome["still_pending"]:
            raise RuntimeError(
                f"{outcome['still_pending']} revenue journals are still pending after every round; "
                "retrying the task resumes from the ledger"
            )
        return outcome

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.lineage import naming

        inputs = [self.ods_dataset("revenue", "journal"), self.ods_dataset("revenue", "journal_line")]
        outputs = [
            naming.erp_record(
                ErpHook(self.erp_conn_id or "erp_default").openlineage_namespace(), "journalentry"
            ),
            self.ods_dataset("ledger", "posting"),
            self.ods_dataset("exceptions", "item"),
        ]
        return inputs, outputs
