"""Planner statistics of the ODS's bulk-loaded tables, refreshed by the pipeline itself.

A month-end extract stages hundreds of thousands of versions and validation queries them minutes
later. Autovacuum's ANALYZE lags such a load (it wakes once a minute, and some servers run with it
off): a table that was never analysed, or that grew tenfold since, is planned from a guess, and a
guess of "a few rows" turns a join into a nested loop over the whole table per row (validation's
sweep of vanished quarantined records sat over 8 minutes at 27k records that way). So the steps
that read after a bulk load call :func:`refresh` first: it ANALYZEs, on a connection of its own,
the tables whose statistics are missing or stale by autovacuum's own rule (changed rows above
``threshold + scale * rows``), and leaves the others alone.

- On its own connection, in autocommit: ANALYZE takes a SHARE UPDATE EXCLUSIVE lock, held until
  the end of the transaction that ran it, and two runs analysing in their own transactions would
  wait for each other's commits. Rows the caller's transaction has not committed are not sampled;
  they are the run's own writes, whose plans probe indexes anyway.
- Never blocking: a table another session is analysing (or vacuuming, or altering) is skipped
  after ``lock_timeout``; its statistics are being refreshed anyway.
- Never failing the run: a role that does not own a table gets PostgreSQL's warning and no
  ANALYZE (the owner's autovacuum is then the only source); any other error is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from psa_erp_sync.ods import connections

log = logging.getLogger(__name__)

# autovacuum_analyze_threshold and autovacuum_analyze_scale_factor's defaults
THRESHOLD = 50
SCALE = 0.1

_STALE = """
SELECT n.nspname, c.relname, c.reltuples, coalesce(s.n_mod_since_analyze, 0),
       s.last_analyze IS NULL AND s.last_autoanalyze IS NULL
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = ANY(%s::regclass[])
"""


@dataclass
class Refreshed:
    """What :func:`refresh` did: tables analysed, skipped as busy, and seconds spent."""

    analysed: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    seconds: float = 0.0


def stale(
    conn: psycopg.Connection[Any], tables: Sequence[str], *, threshold: int = THRESHOLD, scale: float = SCALE
) -> list[str]:
    """The tables of ``tables`` (qualified names) whose statistics are missing or stale."""
    out = []
    for schema, name, reltuples, changed, never in conn.execute(_STALE, (list(tables),)).fetchall():
        rows = max(float(reltuples), 0.0)
        if reltuples < 0 or never or changed > threshold + scale * rows:
            out.append(f"{schema}.{name}")
    return out


def refresh(
    conn: psycopg.Connection[Any],
    tables: Sequence[str],
    *,
    lock_timeout_ms: int = 1000,
    threshold: int = THRESHOLD,
    scale: float = SCALE,
) -> Refreshed:
    """ANALYZE the tables of ``tables`` whose statistics are missing or stale (see the module)."""
    started = time.monotonic()
    done = Refreshed()
    try:
        with connections.connect_like(conn, autocommit=True) as own:
            own.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(lock_timeout_ms)}ms")))
            for table in stale(own, tables, threshold=threshold, scale=scale):
                schema, name = table.split(".", 1)
                try:
                    own.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
                    done.analysed.append(table)
                except psycopg.errors.LockNotAvailable:
                    done.busy.append(table)
    except psycopg.Error as exc:  # statistics are an optimisation: never the reason a run fails
        log.warning("could not refresh the statistics of %s: %s", ", ".join(tables), exc)
    done.seconds = time.monotonic() - started
    if done.analysed or done.busy:
        log.info(
            "statistics refreshed for %s in %.2f s%s",
            ", ".join(done.analysed) or "no table",
            done.seconds,
            f" (being refreshed elsewhere: {', '.join(done.busy)})" if done.busy else "",
        )
    return done
