"""One posting pass for one ERP record type: read periods, plan, work the ledger.

Shared by :class:`~psa_erp_sync.operators.posting.IdempotentPostingOperator` and the command
line (``python -m psa_erp_sync.posting``), so both take exactly the same path.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from psa_erp_sync.config import Config
from psa_erp_sync.posting import budget, ledger, planner
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
    # The lock first: a pass waiting for it holds none of the account's request slots.
    with posting_lock(dsn, record_type), budget.shared_by_processes(client, dsn):
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
    with psycopg.connect(dsn) as conn:
        already_pending = ledger.count_in_state(conn, record_type, ["pending"])
    engine = PostingEngine(
        dsn=dsn,
        client=client,
        record_type=record_type,
        config=config,
        settings=settings,
        dag_run_id=run_id,
        task_try=task_try,
    )
    planning = _PlanningThread(
        dsn, record_type=record_type, config=config, periods=periods, run_id=run_id, chunk=settings.plan_chunk
    )
    planning.start()
    try:
        outcome = engine.run(planning.chunks(), already_pending=already_pending).as_dict()
    finally:
        planning.stop()
    plan = planning.plan
    if plan is None:  # the engine consumed the feed to its end, so the planner finished or raised
        raise RuntimeError(f"planning {record_type} ended without a plan")
    log.info("planned %s", plan.as_dict())
    with psycopg.connect(dsn) as conn:
        closed = close_settled_exceptions(conn, record_type)
    if closed:
        log.info("closed %d dead-letter / parked items whose records are now posted", closed)
    return PostingResult(plan.as_dict(), outcome)


class _PlanningThread:
    """The planner in a thread of its own, handing each committed chunk to the engine.

    The queue is bounded (memory stays a few chunks, whatever the month's size): a planner that
    runs ahead of the ERP waits. Planning is 20-30 % of a posting pass; overlapped with sending,
    the pass takes little more than the sending.
    """

    _DONE = object()

    def __init__(
        self, dsn: str, *, record_type: str, config: Config, periods: PeriodBook, run_id: str, chunk: int
    ) -> None:
        self.dsn = dsn
        self.chunk = chunk
        self.record_type = record_type
        self.config = config
        self.periods = periods
        self.run_id = run_id
        self.plan: planner.Plan | None = None
        self.error: BaseException | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"plan-{record_type}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: Any) -> None:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _main(self) -> None:
        try:
            with psycopg.connect(self.dsn) as conn:
                self.plan = planner.plan(
                    conn, record_type=self.record_type, config=self.config, periods=self.periods,
                    dag_run_id=self.run_id, chunk=self.chunk, on_chunk=self._put,
                )  # fmt: skip
        except _Stopped:
            return
        except BaseException as exc:  # handed to the engine's thread, which raises it
            self.error = exc
        try:
            self._put(self._DONE)
        except _Stopped:
            return

    def chunks(self) -> Iterator[list[ledger.Posting]]:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def stop(self) -> None:
        """Stop a planner the engine no longer listens to (the engine failed), and wait for it."""
        self._stopping.set()
        self._thread.join()


class _Stopped(Exception):
    pass


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
