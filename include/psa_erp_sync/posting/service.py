"""One posting pass for one ERP record type: read periods, plan, work the ledger.

Shared by :class:`~psa_erp_sync.operators.posting.IdempotentPostingOperator` and the command
line (``python -m psa_erp_sync.posting``), so both take exactly the same path.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from psa_erp_sync.config import Config
from psa_erp_sync.posting import planner
from psa_erp_sync.posting.engine import EngineSettings, PostingEngine
from psa_erp_sync.posting.periods import PeriodBook

log = logging.getLogger(__name__)

PERIOD_QUERY = (
    "SELECT externalid, subsidiary, startdate, enddate, closed, alllocked, arlocked, aplocked "
    "FROM accountingperiod ORDER BY startdate"
)


@dataclass(frozen=True)
class PostingResult:
    plan: dict[str, Any]
    outcome: dict[str, Any]


@contextmanager
def posting_lock(dsn: str, record_type: str) -> Iterator[None]:
    """One posting pass per ERP record type at a time, whoever runs it: the batch DAG, a replay, the
    stream, the command line (a session advisory lock, released if the process dies)."""
    key = f"psa_erp_sync.posting.{record_type}"
    with psycopg.connect(dsn, autocommit=True) as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
        try:
            yield
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (key,))


def post_record_type(
    *,
    dsn: str,
    client: Any,
    record_type: str,
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None = None,
) -> PostingResult:
    with posting_lock(dsn, record_type):
        return _post_locked(
            dsn=dsn, client=client, record_type=record_type, config=config, settings=settings, run_id=run_id,
            task_try=task_try,
        )  # fmt: skip


def _post_locked(
    *,
    dsn: str,
    client: Any,
    record_type: str,
    config: Config,
    settings: EngineSettings,
    run_id: str,
    task_try: int | None,
) -> PostingResult:
    periods = PeriodBook.from_rows(client.suiteql(PERIOD_QUERY))
    with psycopg.connect(dsn) as conn, conn.transaction():
        plan = planner.plan(conn, record_type=record_type, config=config, periods=periods, dag_run_id=run_id)
    log.info("planned %s", plan.as_dict())
    engine = PostingEngine(
        dsn=dsn,
        client=client,
        record_type=record_type,
        config=config,
        settings=settings,
        dag_run_id=run_id,
        task_try=task_try,
    )
    outcome = engine.run().as_dict()
    with psycopg.connect(dsn) as conn:
        closed = close_settled_exceptions(conn, record_type)
    if closed:
        log.info("closed %d dead-letter / parked items whose records are now posted", closed)
    return PostingResult(plan.as_dict(), outcome)


def close_settled_exceptions(conn: psycopg.Connection, record_type: str) -> int:
    """Open dead letters and parked items of records whose latest posting is now confirmed: the
    record reached the ERP (a later version, or after a fix), so nothing is left for the owner."""
    cur = conn.execute(
        """
        UPDATE exceptions.item e SET status = 'resolved', last_seen = now()
        WHERE e.status = 'open' AND e.kind IN ('dead_letter', 'parked') AND e.record_type = %(kind)s
          AND EXISTS (
              SELECT 1 FROM ledger.posting p WHERE p.record_type = %(rt)s AND p.source_system = e.source_system
                AND p.source_id = e.source_id AND p.state IN ('confirmed', 'resolved')
                AND p.seq = (SELECT max(seq) FROM ledger.posting m WHERE m.record_type = %(rt)s
                             AND m.source_system = e.source_system AND m.source_id = e.source_id))
        """,
        {"kind": planner.KINDS[record_type], "rt": record_type},
    )
    return cur.rowcount
