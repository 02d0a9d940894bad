"""The planner's cost on a month already mostly posted, full against incremental (migration 0047).

Seeds ``--records`` approved time entries straight into canonical and the ledger (each one posted
and confirmed, with a ~450-byte payload, as the engine leaves them), then runs ``--rounds`` rounds:
``--changed`` records get a new version, the pass plans them (``full`` and ``changed`` alternated on
the same database, so both see the same ledger), and the planned rows are confirmed. Prints per
round the wall time, this process's CPU, the CPU of the PostgreSQL backends of the database (read
from /proc, so only for a server on this machine) and the load average, as JSON.

    PSA_ERP_SYNC_DSN=postgresql://postgres@127.0.0.1:5432/postgres \\
        python -m devtools.bench_planner --records 100000 --database pln_bench_100k
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

from psa_erp_sync.config import load_config
from psa_erp_sync.ods import migrate
from psa_erp_sync.posting import planner
from psa_erp_sync.posting.periods import PeriodBook

ENTITIES = ("LE-US1", "LE-US2", "LE-UK1")
MONTH = (date(2026, 11, 1), date(2026, 11, 30))
TICK = os.sysconf("SC_CLK_TCK")


class BackendCpu:
    """CPU seconds of the server processes serving ``database`` (by their process title), polled."""

    def __init__(self, database: str) -> None:
        self.needle = f" {database} ".encode()
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _ticks(self) -> dict[int, int]:
        out = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if self.needle not in (entry / "cmdline").read_bytes().replace(b"\0", b" ") + b" ":
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                out[int(entry.name)] = int(fields[11]) + int(fields[12])
            except OSError:
                continue
        return out

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            for pid, ticks in self._ticks().items():
                self.first.setdefault(pid, 0)
                self.last[pid] = ticks

    def __enter__(self) -> BackendCpu:
        self.first = dict(self._ticks())  # already running: only what they spend from now counts
        self.last = dict(self.first)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for pid, ticks in self._ticks().items():
            self.last[pid] = ticks

    @property
    def seconds(self) -> float:
        return sum(self.last[pid] - self.first.get(pid, 0) for pid in self.last) / TICK


def _periods() -> PeriodBook:
    return PeriodBook.from_rows(
        {
            "externalid": f"{e}-2026-11",
            "subsidiary": e,
            "startdate": MONTH[0],
            "enddate": MONTH[1],
            "closed": "F",
        }
        for e in ENTITIES
    )


def seed(dsn: str, records: int) -> None:
    """``records`` approved entries, each posted and confirmed (key, payload, route) in the ledger."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,
                project_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved,
                fingerprint, source_updated_at, record)
            SELECT 'psa', i::text, md5('v1-' || i), %(first)s::date + (i %% 30), (i %% 997)::text, (i %% 211)::text,
                   (ARRAY['LE-US1', 'LE-US2', 'LE-UK1'])[1 + i %% 3], 7.50, true, 15000, 112500,
                   CASE WHEN i %% 3 = 2 THEN 'GBP' ELSE 'USD' END, true, md5('f' || i), now(), '{}'::jsonb
            FROM generate_series(1, %(n)s) i
            """,
            {"n": records, "first": MONTH[0]},
        )
        conn.execute(
            """
            WITH c AS (SELECT source_id, version_hash, legal_entity, spent_date, currency,
                              substr(md5('k' || source_id), 1, 40) AS k FROM canonical.time_entry),
            p AS (
                INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,
                    external_id, action, state, legal_entity, period, amount_minor, currency, attempts,
                    erp_internal_id, target_erp, route_version)
                SELECT k, 'timebill', 'psa', source_id, version_hash, 'psa-te-' || source_id, 'post', 'confirmed',
                       legal_entity, legal_entity || '-2026-11', 112500, currency, 1, 'ns-' || source_id, 'netsuite', 1
                FROM c ORDER BY source_id::int
            )
            INSERT INTO ledger.posting_payload (idempotency_key, payload)
            SELECT k, jsonb_build_object('externalId', 'psa-te-' || source_id, 'tranDate', spent_date,
                'employee', jsonb_build_object('externalId', 'psa-emp-123'),
                'customer', jsonb_build_object('externalId', 'psa-prj-456'),
                'subsidiary', jsonb_build_object('externalId', legal_entity),
                'currency', jsonb_build_object('refName', currency), 'isBillable', true,
                'memo', 'psa:' || source_id || ' v:' || substr(version_hash, 1, 12) || ' key:' || substr(k, 1, 16),
                'postingPeriod', jsonb_build_object('externalId', legal_entity || '-2026-11'),
                'hours', '7.50', 'rate', '150.00')
            FROM c
            """
        )
        conn.execute("VACUUM ANALYZE canonical.time_entry")
        conn.execute("VACUUM ANALYZE ledger.posting")
        conn.execute("VACUUM ANALYZE ledger.posting_payload")


def change(dsn: str, records: int, count: int, round_no: int) -> None:
    """A new version of ``count`` records spread over the month (a re-approval, a correction)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "UPDATE canonical.time_entry SET version_hash = md5(version_hash || %(r)s), amount_minor = amount_minor + 1"
            " WHERE source_id = ANY(%(ids)s)",
            {
                "r": str(round_no),
                "ids": [str(1 + (i * 7919 + round_no * 104729) % records) for i in range(count)],
            },
        )


def one_pass(dsn: str, database: str, *, full: bool, run: str) -> dict[str, Any]:
    config, periods = load_config(), _periods()
    load = os.getloadavg()
    with psycopg.connect(dsn, autocommit=True) as conn, BackendCpu(database) as backend:
        cpu, wall = time.process_time(), time.perf_counter()
        result = planner.plan(
            conn, record_type="timebill", config=config, periods=periods, dag_run_id=run, full=full
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        conn.execute("UPDATE ledger.posting SET state = 'confirmed' WHERE state = 'pending'")
    return {
        "scope": result.scope,
        "planned": result.planned,
        "superseded": result.superseded,
        "wall_s": round(wall, 3),
        "client_cpu_s": round(cpu, 3),
        "backend_cpu_s": round(backend.seconds, 3),
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--changed", type=int, default=500, help="records with a new version per round")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of (full, changed) passes")
    parser.add_argument("--database", default="pln_bench_planner", help="dropped and recreated")
    parser.add_argument("--keep", action="store_true", help="reuse the database if it exists (no seeding)")
    args = parser.parse_args(argv)
    server = os.environ.get("PSA_ERP_SYNC_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    dsn = psycopg.conninfo.make_conninfo(server, dbname=args.database)
    started = time.perf_counter()
    with psycopg.connect(server, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (args.database,)).fetchone()
        if not (args.keep and exists):
            conn.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{args.database}"')
    if not (args.keep and exists):
        migrate.apply(dsn)
        seed(dsn, args.records)
    seeded = time.perf_counter() - started
    first = one_pass(dsn, args.database, full=True, run="first")  # trusts the queue, empties it
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        for full in (True, False) if r % 2 == 0 else (False, True):
            change(dsn, args.records, args.changed, len(rounds) + 1)
            rounds.append(one_pass(dsn, args.database, full=full, run=f"r{len(rounds) + 1}"))
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM ledger.posting").fetchone()
    print(
        json.dumps(
            {
                "records": args.records,
                "ledger_rows": row[0] if row else None,
                "changed_per_round": args.changed,
                "seed_s": round(seeded, 1),
                "first_full_pass": first,
                "rounds": rounds,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
