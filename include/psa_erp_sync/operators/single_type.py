"""Posting operators for one fixed ERP record type on one ERP connection: the billing documents'
:class:`~psa_erp_sync.operators.billing.InvoicePostingOperator` and the revenue journals'
:class:`~psa_erp_sync.operators.revenue.JournalPostingOperator` share their constructor, the way
they run a posting pass and the way they fail while records are still pending."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from psa_erp_sync.operators.posting import IdempotentPostingOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class SingleTypePostingOperator(IdempotentPostingOperator):
    """The idempotent posting operator with its record type fixed by the subclass
    (``posts_record_type``) and one ERP connection.

    :param erp_conn_id: Airflow connection of the ERP.
    :param ods_conn_id: Airflow connection of the ODS.
    :param max_concurrency: this task's ERP requests in flight, at most the account's limit.
    :param batch_size: records per batch call (at most 100); default ``posting.batch_size``.
    """

    posts_record_type: ClassVar[str]
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
            record_type=self.posts_record_type,
            erp_conn_id=erp_conn_id,
            ods_conn_id=ods_conn_id,
            max_concurrency=max_concurrency,
            batch_size=batch_size,
            **kwargs,
        )

    def erp_namespace(self) -> str:
        """The OpenLineage namespace of the ERP connection."""
        from psa_erp_sync.hooks.erp import ErpHook

        return ErpHook(self.erp_conn_id or "erp_default").openlineage_namespace()


def posting_pass(
    op: IdempotentPostingOperator, context: Context, step: str, post: Callable[..., Any], **arguments: Any
) -> Any:
    """Record the try's lineage run as ``step`` and call ``post`` (a domain posting pass) with the
    ODS DSN, a client of ``op``'s ERP connection, the configuration, engine settings (``op``'s
    batch size, its concurrency capped at the account's limit), the run id and the try number."""
    from psa_erp_sync.config import load_config
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.posting.engine import EngineSettings

    config = load_config()
    erp_hook = ErpHook(op.erp_conn_id or "erp_default")
    limit = erp_hook.max_concurrency()
    settings = EngineSettings.from_config(
        config, batch_size=op.batch_size, max_concurrency=min(op.max_concurrency or limit, limit)
    )
    op.record_lineage_run(context, step)
    with erp_hook.get_client() as client:
        return post(
            dsn=OdsHook(op.ods_conn_id).dsn(),
            client=client,
            config=config,
            settings=settings,
            run_id=context["run_id"],
            task_try=getattr(context["ti"], "try_number", None),
            **arguments,
        )


def fail_while_pending(still_pending: int, what: str) -> None:
    """Records left pending after every round fail the try: a retry resumes from the ledger."""
    if still_pending:
        raise RuntimeError(
            f"{still_pending} {what} are still pending after every round; retrying the task resumes from the ledger"
        )
