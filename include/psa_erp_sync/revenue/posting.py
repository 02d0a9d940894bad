"""Post planned revenue journals to the ERPs as ``journalentry`` records, through the posting ledger.

``revenue.journal`` rows in state ``planned`` (never the parked ones: finance decides those) get a
``ledger.posting`` row with the journal's own deterministic idempotency key and external id,
committed before any ERP is called, **routed** like every posting: the ERP and account of the
journal's legal entity on its posting date (the last day of its recognition period, or the first
day of the open period the policy moved it to; never the processing time), stamped as
``target_erp``, ``erp_account`` and ``route_version`` (:mod:`psa_erp_sync.routing`). A journal
whose entity routes nowhere on that date gets no ledger row yet: a ``parked`` item
``NO_ERP_ROUTE`` until the routing file covers it. Then one pass per ERP account: the
:class:`~psa_erp_sync.posting.engine.PostingEngine` sends that account's rows like every posting
(batches, read-back before any resend, the account's budget shared by processes, the
``journalentry`` posting lock of the account): NetSuite through its client, SAP as balanced journal
entries (:class:`~psa_erp_sync.revenue.sap.RevenueSapAdapter`). A rerun finds the rows in the
ledger and sends nothing new.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from psa_erp_sync import money
from psa_erp_sync.config import Config
from psa_erp_sync.ods import connections
from psa_erp_sync.ods import exceptions as exception_queue
from psa_erp_sync.posting import budget, ledger
from psa_erp_sync.posting.adapter import SapAdapter, as_adapter
from psa_erp_sync.posting.engine import EngineSettings, PostingEngine
from psa_erp_sync.posting.service import LockSettings, PostingResult, merge_results, posting_lock, target_of
from psa_erp_sync.revenue.journals import RECORD_TYPE
from psa_erp_sync.revenue.store import SOURCE_SYSTEM

if TYPE_CHECKING:
    from psa_erp_sync.routing.route import Route, Router

log = logging.getLogger(__name__)

_UNPOSTED = """
    SELECT j.idempotency_key, j.external_id, j.legal_entity, j.currency, j.period_month, j.posting_period,
           j.posting_month, j.recognition_period, j.inputs_hash, j.debit_minor,
           array_agg(l.account ORDER BY l.line_no) AS accounts,
           array_agg(l.debit_minor ORDER BY l.line_no) AS debits,
           array_agg(l.credit_minor ORDER BY l.line_no) AS credits
    FROM revenue.journal j JOIN revenue.journal_line l ON l.idempotency_key = j.idempotency_key
    WHERE j.state = 'planned'
      AND NOT EXISTS (SELECT 1 FROM ledger.posting p WHERE p.idempotency_key = j.idempotency_key)
    GROUP BY j.idempotency_key ORDER BY j.idempotency_key
"""


# Rows routed to an ERP this task has no pass for: they wait, and the task says so.
_UNWORKED = """
    SELECT count(*) FROM ledger.posting
    WHERE record_type = %s AND source_system = 'revenue' AND state = 'pending' AND target_erp <> ALL(%s)
"""


def _month_end(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def posting_date(row: dict[str, Any]) -> date:
    """The date a planned journal books on: the last day of its recognition period, or the first
    day of the period the closed-period policy moved it to. Its route is this date's."""
    first = row["posting_month"]
    return first if first != row["period_month"] else _month_end(row["period_month"])


def journal_posting(row: dict[str, Any], route: Route | None = None) -> ledger.Posting:
    """The ledger row of a planned journal: its own key and external id, the lines as planned, and
    its ``route`` (None: NetSuite, the connection's own account)."""
    currency = str(row["currency"])
    key, ext = str(row["idempotency_key"]), str(row["external_id"])
    lines = []
    for account, debit, credit in zip(row["accounts"], row["debits"], row["credits"], strict=True):
        side = {"debit": money.format_minor(int(debit), currency)} if debit else {}
        side = side or {"credit": money.format_minor(int(credit), currency)}
        lines.append({"account": {"externalId": account}, **side})
    moved = row["posting_month"] != row["period_month"]
    payload = {
        "externalId": ext,
        # dated the last day of its recognition period, or the first day of the period it moved to
        "tranDate": str(posting_date(row)),
        "subsidiary": {"externalId": row["legal_entity"]},
        "currency": {"refName": currency},
        "postingPeriod": {"externalId": row["posting_period"]},
        "memo": f"revenue:{ext} key:{key[:16]}"
        + (f" orig-period:{row['recognition_period']}" if moved else ""),
        "line": {"items": lines},
    }
    return ledger.Posting(
        key,
        RECORD_TYPE,
        SOURCE_SYSTEM,
        ext,
        str(row["inputs_hash"])[:16],
        ext,
        "post",
        "pending",
        payload,
        str(row["legal_entity"]),
        str(row["posting_period"]),
        int(row["debit_minor"]),
        currency,
        target_erp=route.erp if route is not None else "netsuite",
        erp_account=route.account if route is not None else None,
        route_version=route.version if route is not None else None,
    )


def _unrouted(config: Config, row: dict[str, Any], message: str) -> exception_queue.Item:
    return exception_queue.Item(
        kind="parked",
        domain="revenue",
        source_system=SOURCE_SYSTEM,
        record_type=RECORD_TYPE,
        source_id=str(row["idempotency_key"]),
        reason_code="NO_ERP_ROUTE",
        owner=config.ownership.owner_for("revenue", str(row["legal_entity"])),
        detail={
            "external_id": str(row["external_id"]),
            "posting_date": str(posting_date(row)),
            "why": message,
        },
        legal_entity=str(row["legal_entity"]),
    )


def plan_journal_postings(
    conn: psycopg.Connection, *, config: Config | None = None, router: Router | None = None, run_id: str = ""
) -> int:
    """Ledger rows for the planned journals that have none yet, each stamped with the route of its
    legal entity on its posting date (one transaction); how many. A journal without a route gets
    no row (a ``NO_ERP_ROUTE`` item when ``config`` is given) and is planned once it has one."""
    from psa_erp_sync.routing.route import RouteNotFound
    from psa_erp_sync.routing.route import router as load_router

    routes = router or load_router()
    postings, unrouted = [], []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(_UNPOSTED).fetchall():
            try:
                route = routes.route(str(row["legal_entity"]), posting_date(row))
            except RouteNotFound as exc:
                log.warning("revenue journal %s has no ERP route: %s", row["external_id"], exc)
                if config is not None:
                    unrouted.append(_unrouted(config, row, str(exc)))
                continue
            postings.append(journal_posting(row, route))
        exception_queue.quarantine_many(conn, unrouted, run_id=run_id)
        return len(ledger.insert_planned(conn, postings))


def revenue_adapter(client_or_adapter: Any) -> Any:
    """The posting adapter of one ERP for revenue journals: SAP's gains the revenue journal entry
    (:class:`~psa_erp_sync.revenue.sap.RevenueSapAdapter`); NetSuite's (or a bare NetSuite client)
    posts journal entries as it is."""
    from psa_erp_sync.revenue.sap import RevenueSapAdapter

    adapter = as_adapter(client_or_adapter)
    if isinstance(adapter, SapAdapter) and not isinstance(adapter, RevenueSapAdapter):
        return RevenueSapAdapter(adapter.client, adapter.mapping)
    return adapter


def _post_account(
    *,
    dsn: str,
    adapter: Any,
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None,
    lock_settings: LockSettings,
) -> dict[str, Any]:
    """One ERP account's pass: its ``journalentry`` lock, its shared budget, its ledger rows."""
    target = target_of(adapter)
    erp_client = getattr(adapter, "client", adapter)
    with (
        posting_lock(dsn, RECORD_TYPE, lock_settings, target=target) as lock,
        budget.shared_by_processes(erp_client, dsn),
    ):
        engine = PostingEngine(
            dsn=dsn,
            client=adapter,
            record_type=RECORD_TYPE,
            config=config,
            settings=settings,
            dag_run_id=run_id,
            task_try=task_try,
            lock_check=lock.check,
            target=target,
        )
        return engine.run().as_dict()


def post_planned_journals(
    *,
    dsn: str,
    client: Any,
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None = None,
    lock_settings: LockSettings | None = None,
    adapters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Plan every planned revenue journal into the ledger with its route, then post each ERP
    account's rows: NetSuite through ``client`` (a client or its adapter), every other ERP through
    ``adapters`` (ERP name -> adapter or client, e.g. SAP's). The engine's outcome summed over the
    passes (each under ``by_erp``) plus ``planned``. A row routed to an ERP without a pass here
    stays pending (``still_pending``)."""
    lock_settings = lock_settings or LockSettings(wait_s=config.mappings.posting.lock_wait_seconds)
    with connections.connect(dsn) as conn:
        planned = plan_journal_postings(conn, config=config, run_id=run_id)
    passes = {"netsuite": client, **{erp: a for erp, a in (adapters or {}).items() if erp != "netsuite"}}
    results = {
        erp: PostingResult(
            {},
            _post_account(
                dsn=dsn,
                adapter=revenue_adapter(one),
                config=config,
                settings=settings,
                run_id=run_id,
                task_try=task_try,
                lock_settings=lock_settings,
            ),
        )
        for erp, one in passes.items()
    }
    _, outcome = merge_results(results)
    with connections.connect(dsn) as conn:
        row = conn.execute(_UNWORKED, (RECORD_TYPE, list(passes))).fetchone()
    outcome["still_pending"] = outcome.get("still_pending", 0) + int(row[0] if row else 0)
    log.info("revenue journals: %d newly in the ledger; %s", planned, outcome)
    return {"planned": planned, **outcome}
