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

import psycopg

from psa_erp_sync.billing import invoices
from psa_erp_sync.config import Config
from psa_erp_sync.ods import connections
from psa_erp_sync.posting import budget, ledger
from psa_erp_sync.posting.engine import EngineSettings, PostingEngine
from psa_erp_sync.posting.periods import PERIOD_QUERY, PeriodBook
from psa_erp_sync.posting.service import LockSettings, PostingLock, posting_lock, target_of
from psa_erp_sync.routing import route as routing
from psa_erp_sync.routing.route import Router
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
    sap: Any = None,
    router: Router | None = None,
) -> InvoicingResult:
    """Invoice every ready billing event and credit every ready credit line whose invoice is in
    the ERP. Each document goes where ``config/erp_routing.yaml`` routes its legal entity on its
    date (``router``, default the file in force; a credit memo where its invoice is), and each
    ERP's documents are sent by that ERP's engine: NetSuite through ``client``, SAP through ``sap``
    (a :class:`~psa_erp_sync.billing.sap.SapBillingAdapter`, required when the routing names SAP).
    Raises :class:`~psa_erp_sync.posting.service.PostingLockBusy` / ``PostingLockLost`` like every
    posting pass (both retryable); a retry resumes from the ledger."""
    lock_settings = lock_settings or LockSettings(wait_s=config.mappings.posting.lock_wait_seconds)
    router = router if router is not None else routing.router()
    adapters: dict[str, Any] = {"netsuite": client}
    if "sap" in router.erps_in_force():
        if sap is None:
            raise ValueError(
                "config/erp_routing.yaml routes legal entities to SAP: the pass needs its adapter"
            )
        adapters["sap"] = sap
    with ExitStack() as stack:
        targets = {erp: target_of(adapter) for erp, adapter in adapters.items()}
        locks = [
            stack.enter_context(posting_lock(dsn, t, lock_settings, target=target))
            for t in DOC_TYPES
            for target in targets.values()
        ]
        stack.enter_context(budget.shared_by_processes(client, dsn))
        routes = invoices.Routes(router, _books(adapters))
        plan: dict[str, Any] = {}
        outcome: dict[str, dict[str, Any]] = {}
        for doc_type in DOC_TYPES:
            plan[doc_type] = _plan(dsn, doc_type, config, routes, adapters, run_id, max_lines)
            outcome[doc_type] = _send(
                dsn, doc_type, adapters, targets, config, settings, run_id, task_try, _checker(locks)
            )
        with connections.connect(dsn, autocommit=True) as conn:
            documents = invoices.sync_documents(conn)
            totals = invoices.run_totals(conn, run_id)
    log.info("invoicing planned %s; documents now %s", plan, documents)
    return InvoicingResult(plan, outcome, documents, totals)


def _books(adapters: dict[str, Any]) -> dict[str, PeriodBook]:
    """Each ERP's own periods (NetSuite's by SuiteQL, as before adapters)."""
    books = {}
    for erp, adapter in adapters.items():
        rows = adapter.read_periods() if hasattr(adapter, "read_periods") else adapter.suiteql(PERIOD_QUERY)
        books[erp] = PeriodBook.from_rows(rows)
    return books


def _plan(
    dsn: str,
    doc_type: invoices.DocType,
    config: Config,
    routes: invoices.Routes,
    adapters: dict[str, Any],
    run_id: str,
    max_lines: int,
) -> dict[str, Any]:
    """Plan the documents of one type (replayed ones first), each routed to its ERP."""
    with connections.connect(dsn, autocommit=True) as conn:
        if doc_type == "creditmemo" and not _credits_to_plan(conn):
            return invoices.InvoicePlan().as_dict() | {"replayed": 0}
        invoices.sync_documents(conn)  # a credit memo needs its invoice `posted`
        rates = RateBook.from_ods(conn)
        remaining: dict[str, int] | None = None
        if doc_type == "creditmemo":
            remaining = {}
            for erp, adapter in adapters.items():
                remaining |= invoices.remaining_on_credited(conn, adapter, erp=erp)
        periods = routes.books["netsuite"]
        replayed = invoices.replan_released(
            conn,
            doc_type=doc_type,
            config=config,
            periods=periods,
            rates=rates,
            run_id=run_id,
            remaining=remaining,
            routes=routes,
        )
        return invoices.plan_documents(
            conn,
            doc_type=doc_type,
            config=config,
            periods=periods,
            run_id=run_id,
            max_lines=max_lines,
            rates=rates,
            remaining=remaining,
            routes=routes,
        ).as_dict() | {"replayed": replayed}


#: Whether planning credit memos can find anything: a ready credit line (whatever its invoice's
#: state: planned, or flagged while the invoice is parked or rejected) or a credit memo document
#: (one a replay released, or whose credited invoice's amount due is read). Without either, the
#: step's mirror update, rate and ERP reads and queries would plan nothing.
_CREDITS_TO_PLAN = """
SELECT EXISTS (SELECT 1 FROM billing.event WHERE state = 'ready' AND credits_ref IS NOT NULL)
    OR EXISTS (SELECT 1 FROM billing.document WHERE doc_type = 'creditmemo')
"""


def _credits_to_plan(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(_CREDITS_TO_PLAN).fetchone()
    return bool(row and row[0])


def _send(
    dsn: str,
    doc_type: str,
    adapters: dict[str, Any],
    targets: dict[str, ledger.Target],
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None,
    lock_check: Any,
) -> dict[str, Any]:
    """One engine per ERP, each working only its ERP account's rows; the outcomes summed, each
    ERP's under ``by_erp`` when there are several."""
    results = {
        erp: PostingEngine(
            dsn=dsn,
            client=adapter,
            record_type=doc_type,
            config=config,
            settings=settings,
            dag_run_id=run_id,
            task_try=task_try,
            lock_check=lock_check,
            target=targets[erp],
        )
        .run()
        .as_dict()
        for erp, adapter in adapters.items()
    }
    if len(results) == 1:
        return next(iter(results.values()))
    merged: dict[str, Any] = {}
    for result in results.values():
        for name, value in result.items():
            if isinstance(value, int) and not isinstance(value, bool):
                merged[name] = merged.get(name, 0) + value
            else:
                merged.setdefault(name, value)
    merged["by_erp"] = results
    return merged


def _checker(locks: list[PostingLock]) -> Any:
    def check() -> None:
        for lock in locks:
            lock.check()

    return check
