"""One invoicing pass: ready billing events -> ERP invoices, then credit memos, exactly once.

The same path as every ERP posting (:mod:`psa_erp_sync.posting`): the posting locks of
``invoice`` and ``creditmemo`` (one pass at a time, whoever runs it), the ERP account's request
budget shared by every process, the periods read once, documents planned into the ledger before
any call (:mod:`psa_erp_sync.billing.invoices`), then the
:class:`~psa_erp_sync.posting.engine.PostingEngine` per record type: batches, deterministic batch
keys, 429 backoff, read-back by external id before anything is sent again. Invoices go first: a
credit memo is planned only once the invoice it credits is in the ERP (``createdFrom``).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from psa_erp_sync.billing import invoices
from psa_erp_sync.config import Config
from psa_erp_sync.ods import connections
from psa_erp_sync.posting import budget
from psa_erp_sync.posting.engine import EngineSettings, PostingEngine
from psa_erp_sync.posting.periods import PERIOD_QUERY, PeriodBook
from psa_erp_sync.posting.service import LockSettings, PostingLock, posting_lock
from psa_erp_sync.validation.fx import RateBook

log = logging.getLogger(__name__)

DOC_TYPES: tuple[invoices.DocType, ...] = ("invoice", "creditmemo")


@dataclass(frozen=True)
class InvoicingResult:
    plan: dict[str, Any]
    outcome: dict[str, dict[str, Any]]  # per document type, the engine's outcome
    documents: dict[str, int]  # billing.document per state after the pass
    totals: dict[str, Any] = field(default_factory=dict)  # invoices.run_totals of the run (lineage facet)

    @property
    def still_pending(self) -> int:
        return sum(int(o.get("still_pending", 0)) for o in self.outcome.values())


def invoice_ready_events(
    *,
    dsn: str,
    client: Any,
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None = None,
    lock_settings: LockSettings | None = None,
    max_lines: int = invoices.MAX_LINES,
) -> InvoicingResult:
    """Invoice every ready billing event and credit every ready credit line whose invoice is in
    the ERP. Raises :class:`~psa_erp_sync.posting.service.PostingLockBusy` /
    ``PostingLockLost`` like every posting pass (both retryable); a retry resumes from the ledger."""
    lock_settings = lock_settings or LockSettings(wait_s=config.mappings.posting.lock_wait_seconds)
    with ExitStack() as stack:
        locks = [stack.enter_context(posting_lock(dsn, t, lock_settings)) for t in DOC_TYPES]
        stack.enter_context(budget.shared_by_processes(client, dsn))
        periods = PeriodBook.from_rows(client.suiteql(PERIOD_QUERY))
        plan: dict[str, Any] = {}
        outcome: dict[str, dict[str, Any]] = {}
        for doc_type in DOC_TYPES:
            with connections.connect(dsn, autocommit=True) as conn:
                invoices.sync_documents(conn)  # a credit memo needs its invoice `posted`
                rates = RateBook.from_ods(conn)
                remaining = invoices.remaining_on_credited(conn, client) if doc_type == "creditmemo" else None
                replayed = invoices.replan_released(
                    conn,
                    doc_type=doc_type,
                    config=config,
                    periods=periods,
                    rates=rates,
                    run_id=run_id,
                    remaining=remaining,
                )
                plan[doc_type] = invoices.plan_documents(
                    conn,
                    doc_type=doc_type,
                    config=config,
                    periods=periods,
                    run_id=run_id,
                    max_lines=max_lines,
                    rates=rates,
                    remaining=remaining,
                ).as_dict() | {"replayed": replayed}
            engine = PostingEngine(
                dsn=dsn,
                client=client,
                record_type=doc_type,
                config=config,
                settings=settings,
                dag_run_id=run_id,
                task_try=task_try,
                lock_check=_checker(locks),
            )
            outcome[doc_type] = engine.run().as_dict()
        with connections.connect(dsn, autocommit=True) as conn:
            documents = invoices.sync_documents(conn)
            totals = invoices.run_totals(conn, run_id)
    log.info("invoicing planned %s; documents now %s", plan, documents)
    return InvoicingResult(plan, outcome, documents, totals)


def _checker(locks: list[PostingLock]) -> Any:
    def check() -> None:
        for lock in locks:
            lock.check()

    return check
