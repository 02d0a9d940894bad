"""JournalPostingOperator: planned revenue journals -> ERP journal entries, exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psa_erp_sync.operators.single_type import SingleTypePostingOperator, fail_while_pending, posting_pass

if TYPE_CHECKING:
    from airflow.sdk import Context


class JournalPostingOperator(SingleTypePostingOperator):
    """The idempotent posting operator for revenue journals: every ``revenue.journal`` in state
    ``planned`` gets its ledger row (the journal's own key and external id) before the ERP is
    called, then the posting engine sends it as a ``journalentry`` (batches, read-back before any
    resend, the account's shared budget, the ``journalentry`` posting lock). Each journal goes to the
    ERP its legal entity routes to on its posting date (``config/erp_routing.yaml``): NetSuite through
    ``erp_conn_id``, every other ERP in force (SAP) through the connection the routing file names.
    Parked journals wait for finance. A retried or cleared task resumes from the ledger.

    Takes the connections, concurrency and batch size (journals per batch call) of
    :class:`~psa_erp_sync.operators.single_type.SingleTypePostingOperator`.
    """

    posts_record_type = "journalentry"

    def execute(self, context: Context) -> dict[str, Any]:
        from contextlib import ExitStack

        from psa_erp_sync.revenue.posting import post_planned_journals

        with ExitStack() as stack:
            # Every other ERP the routing file sends anything to (SAP after a cutover): its own pass.
            adapters = {
                erp: hook.adapter(stack.enter_context(hook.get_client()))
                for erp, hook in self._erp_hooks()
                if erp != "netsuite"
            }
            outcome: dict[str, Any] = posting_pass(
                self, context, "post:journalentry", post_planned_journals, adapters=adapters
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
        fail_while_pending(outcome["still_pending"], "revenue journals")
        return outcome

    def lineage_datasets(self) -> tuple[list[Any], list[Any]]:
        from psa_erp_sync.lineage import naming

        inputs = [self.ods_dataset("revenue", "journal"), self.ods_dataset("revenue", "journal_line")]
        # NetSuite's journal entries, and every other ERP's the routing sends anything to (SAP's).
        others = [
            naming.erp_dataset(erp, hook.openlineage_namespace(), "journalentry")
            for erp, hook in self._erp_hooks()
            if erp != "netsuite"
        ]
        outputs = [
            naming.erp_record(self.erp_namespace(), "journalentry"),
            *others,
            self.ods_dataset("ledger", "posting"),
            self.ods_dataset("exceptions", "item"),
        ]
        return inputs, outputs
