"""A long-running consumer of the inbox: webhook accepted -> ERP confirmed without an Airflow task
per burst (issue 16, deliverable 6; docs/streaming.md, "The consumer").

It LISTENs on the inbox channel (the NOTIFY the inbox insert fires in the same transaction; a
short poll catches a lost notification) and processes each burst at once with the stream's own
steps (:func:`~psa_erp_sync.stream.time_expense.process_claimed`: re-read by id, stage, validate,
post through the ledger, settle). What costs time per run stays warm across bursts: the ODS
connections, the PSA and ERP HTTP clients, the account budget's connection, and the ERP's
accounting periods (cached for ``periods_ttl_s``). The posting lock is still taken per burst, so
a batch pass is never shut out for the consumer's lifetime.

Claims: the consumer claims as ``consumer:<id>`` and renews its claims every ``renew_every_s``
from a thread of its own. Another consumer takes over claims of a ``consumer:`` claimer that were
not renewed for ``takeover_after`` (a dead consumer); the asset-triggered DAG run takes over any
claim after the inbox's 10-minute lease. A consumer restarted under the same id (Airflow's retry
of the same run) takes its own claims back at once. The ledger stays the final guard.

After ``lifetime_s`` it returns, so the ``@continuous`` DAG starts the next run (new code, fresh
connections). No Airflow imports: the DAG's step and ``python -m`` hand in the clients.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from psa_erp_sync.config import Config
from psa_erp_sync.ods import inbox
from psa_erp_sync.posting.service import PostingLockBusy
from psa_erp_sync.stream.time_expense import SOURCE, Burst, StreamResult, process_claimed

log = logging.getLogger(__name__)

CLAIMER_PREFIX = "consumer:"


@dataclass(frozen=True)
class ConsumerSettings:
    """How the consumer waits, claims and keeps things warm (``config/mappings.yaml`` has none of
    these: the DAG's step and the command line pass them)."""

    lifetime_s: float = 600.0  # then return: the @continuous DAG starts the next run
    poll_s: float = 1.0  # wait at most this long for a NOTIFY before looking anyway
    limit: int = 500  # events per claim
    periods_ttl_s: float = 30.0  # the ERP's accounting periods are read again after this
    takeover_after: timedelta = timedelta(seconds=60)  # a consumer's claims not renewed this long
    renew_every_s: float = 10.0  # this consumer's claims are renewed this often
    lock_poll_s: float = 0.05  # between posting-lock attempts while a batch pass holds it
    max_failures: int = 5  # consecutive failed bursts before the consumer gives up (Airflow retries)
    reference_max_age: timedelta = timedelta(minutes=15)

    def __post_init__(self) -> None:
        if self.renew_every_s * 3 > self.takeover_after.total_seconds():
            raise ValueError("renew_every_s must be at most a third of takeover_after")


@dataclass
class ConsumerStats:
    bursts: int = 0
    claimed: int = 0
    failures: int = 0
    lock_busy: int = 0
    periods_reads: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "results"} | {"last": self.results[-3:]}


class CachedPeriods:
    """An ERP adapter whose ``read_periods`` answer is kept for ``ttl_s``; everything else is the
    adapter's. A period closed in the ERP meanwhile is seen at most ``ttl_s`` late: the same window
    a batch pass has, which reads the periods once at its start; a posting the ERP then refuses
    for its closed period is parked by the engine as in the batch."""

    def __init__(self, adapter: Any, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._adapter = adapter
        self._ttl_s = ttl_s
        self._clock = clock
        self._periods: list[dict[str, Any]] | None = None
        self._read_at = 0.0
        self.reads = 0

    def read_periods(self) -> list[dict[str, Any]]:
        now = self._clock()
        if self._periods is None or now - self._read_at > self._ttl_s:
            self._periods = self._adapter.read_periods()
            self._read_at = now
            self.reads += 1
        return list(self._periods)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)


class _ClaimKeeper:
    """Renews the consumer's claims every ``every_s`` on a connection of its own (a thread)."""

    def __init__(self, dsn: str, claimer: str, every_s: float) -> None:
        self.dsn = dsn
        self.claimer = claimer
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="inbox-claim-keeper", daemon=True)

    def _main(self) -> None:
        conn: psycopg.Connection | None = None
        while not self._stop.wait(self.every_s):
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        self.dsn, autocommit=True, application_name="psa_erp_sync consumer"
                    )
                inbox.renew(conn, run_id=self.claimer, source_system=SOURCE)
            except psycopg.Error as exc:  # the next beat reconnects; the takeover lease is 3 beats
                log.warning("consumer: renewing claims failed (%s)", type(exc).__name__)
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> _ClaimKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def claimer_id(name: str) -> str:
    """The ``claimed_by`` of a consumer named ``name`` (a DAG run id, or a host and pid)."""
    return f"{CLAIMER_PREFIX}{name}"


class Consumer:
    """Claims and processes bursts until ``settings.lifetime_s`` passes or ``stop`` is set."""

    def __init__(
        self,
        *,
        dsn: str,
        psa_client: Any,
        erp_client: Any,
        config: Config,
        name: str,
        settings: ConsumerSettings | None = None,
        engine_settings: Any = None,
        stop: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_burst: Callable[[StreamResult], None] | None = None,
    ) -> None:
        self.dsn = dsn
        self.psa_client = psa_client
        self.erp_client = erp_client
        self.config = config
        self.claimer = claimer_id(name)
        self.settings = settings or ConsumerSettings()
        self.engine_settings = engine_settings
        self.stop = stop or threading.Event()
        self.clock = clock
        self.on_burst = on_burst
        self.stats = ConsumerStats()

    def _adapter(self) -> Any:
        """The ERP adapter with cached periods; during a transition (a mapping ERP name ->
        adapter) one per ERP, each pass then governing its own budget as in the batch."""
        from psa_erp_sync.posting.adapter import as_adapter

        if isinstance(self.erp_client, Mapping):
            return {
                erp: CachedPeriods(as_adapter(a), self.settings.periods_ttl_s)
                for erp, a in self.erp_client.items()
            }
        return CachedPeriods(as_adapter(self.erp_client), self.settings.periods_ttl_s)

    def _lock_settings(self) -> Any:
        from psa_erp_sync.posting.service import LockSettings

        return LockSettings(
            wait_s=self.config.mappings.posting.lock_wait_seconds, poll_s=self.settings.lock_poll_s
        )

    def run(self) -> ConsumerStats:
        """The loop: claim and process until nothing is pending, then wait for a NOTIFY."""
        from psa_erp_sync.posting import budget

        deadline = self.clock() + self.settings.lifetime_s
        adapter = self._adapter()
        with ExitStack() as stack:
            listen = stack.enter_context(psycopg.connect(self.dsn, autocommit=True))
            listen.execute(f"LISTEN {inbox.CHANNEL}")
            conn = stack.enter_context(
                psycopg.connect(self.dsn, autocommit=True, application_name="psa_erp_sync consumer")
            )
            if isinstance(adapter, CachedPeriods):  # the budget's connection stays open across bursts
                stack.enter_context(budget.shared_by_processes(getattr(adapter, "client", adapter), self.dsn))
            stack.enter_context(_ClaimKeeper(self.dsn, self.claimer, self.settings.renew_every_s))
            lock_settings = self._lock_settings()
            log.info("consumer %s: listening on %s", self.claimer, inbox.CHANNEL)
            while not self.stop.is_set() and self.clock() < deadline:
                claimed = self._burst(conn, adapter, lock_settings)
                if not claimed:  # drained: wait for the next announcement
                    _wait(listen, min(self.settings.poll_s, max(0.0, deadline - self.clock())))
        adapters = adapter.values() if isinstance(adapter, dict) else [adapter]
        self.stats.periods_reads = sum(a.reads for a in adapters)
        log.info("consumer %s: done %s", self.claimer, self.stats.as_dict())
        return self.stats

    def _burst(self, conn: psycopg.Connection, adapter: Any, lock_settings: Any) -> int:
        """Claim and process one batch; the number claimed. A failed burst keeps its claims (the
        next attempt, by this consumer or after its death another, takes them)."""
        started = self.clock()
        try:
            events = inbox.claim(
                conn,
                run_id=self.claimer,
                source_system=SOURCE,
                event_types=inbox.TIME_EXPENSE_EVENTS,
                limit=self.settings.limit,
                takeover=(CLAIMER_PREFIX, self.settings.takeover_after),
            )
            if not events:
                return 0
            burst = Burst(
                dsn=self.dsn,
                psa_client=self.psa_client,
                erp_client=adapter,
                config=self.config,
                run_id=self.claimer,
                run_key_prefix=f"{self.claimer}/{events[0].seq}-{uuid.uuid4().hex[:8]}",
                as_of=datetime.now(UTC),
                engine_settings=self.engine_settings,
                reference_max_age=self.settings.reference_max_age,
                lock_settings=lock_settings,
            )
            result: StreamResult = process_claimed(conn, events, burst, started=started, clock=self.clock)
        except PostingLockBusy as exc:
            # A batch pass of the same record type holds the lock past the bound: not a failure of
            # this consumer. The burst's claims stay (renewed); the next burst tries again.
            self.stats.lock_busy += 1
            log.info("consumer %s: %s; trying again", self.claimer, exc)
            return 0
        except Exception:
            self.stats.failures += 1
            if self.stats.failures >= self.settings.max_failures:
                raise
            # Short: the usual cause is transient (the ODS refusing connections for a moment, an
            # ERP hiccup) and every second here is latency; the fifth failure fails the task.
            pause = min(5.0, 0.25 * 2.0**self.stats.failures)
            log.exception("consumer %s: burst failed; retrying its claims in %.0f s", self.claimer, pause)
            self.stop.wait(pause)
            return 0
        self.stats.failures = 0
        self.stats.bursts += 1
        self.stats.claimed += result.claimed
        self.stats.results.append(result.as_dict())
        del self.stats.results[:-10]
        if self.on_burst is not None:
            self.on_burst(result)
        return result.claimed


def _wait(listen: psycopg.Connection, timeout: float) -> None:
    """Until a time & expense NOTIFY of the PSA arrives or ``timeout`` passes."""
    wanted = {f"{SOURCE}:{event}" for event in inbox.TIME_EXPENSE_EVENTS}
    for note in listen.notifies(timeout=timeout):
        if note.payload in wanted:
            return


def main(argv: list[str] | None = None) -> int:
    """``python -m psa_erp_sync.stream.consumer``: one consumer against the given PSA and NetSuite
    (the DAG ``time_expense_stream_consumer`` is the deployed path; this serves the benchmark,
    the tests and a host without Airflow)."""
    import os
    import socket

    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.budget import account_limit
    from psa_erp_sync.posting.engine import EngineSettings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--psa-url", required=True)
    parser.add_argument("--psa-account", default="1")
    parser.add_argument("--erp-url", required=True)
    parser.add_argument("--erp-account", default="A1")
    parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--lifetime", type=float, default=600.0)
    parser.add_argument("--takeover-after", type=float, default=60.0)
    parser.add_argument("--renew-every", type=float, default=10.0)
    parser.add_argument("--bursts-to", help="append each burst's figures to this file (JSON lines)")
    parser.add_argument(
        "--concurrency", type=int, default=None, help="the ERP account's limit (default: the environment's)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = ConsumerSettings(
        lifetime_s=args.lifetime,
        takeover_after=timedelta(seconds=args.takeover_after),
        renew_every_s=args.renew_every,
    )
    psa_token = os.environ.get("PSA_ERP_SYNC_PSA_TOKEN", "local")
    erp_token = os.environ.get("PSA_ERP_SYNC_ERP_TOKEN", "local")
    config = load_config()
    limit = args.concurrency or account_limit({"account_id": args.erp_account})
    with (
        HarvestClient(base_url=args.psa_url, token=psa_token, account_id=args.psa_account) as psa,
        NetSuiteClient(
            base_url=args.erp_url, account_id=args.erp_account, token=erp_token, concurrency_limit=limit
        ) as erp,
    ):
        Consumer(
            dsn=args.dsn,
            psa_client=psa,
            erp_client=erp,
            config=config,
            name=args.name,
            settings=settings,
            engine_settings=EngineSettings.from_config(config, max_concurrency=limit, progress_every_s=60.0),
            on_burst=_burst_writer(args.bursts_to) if args.bursts_to else None,
        ).run()
    return 0


def _burst_writer(path: str) -> Callable[[StreamResult], None]:
    """Append each burst's figures (when, how many events, seconds per step) as a JSON line."""
    import json

    def write(result: StreamResult) -> None:
        line = {"at": datetime.now(UTC).isoformat(), "claimed": result.claimed, "seconds": result.seconds}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")

    return write


if __name__ == "__main__":
    raise SystemExit(main())
