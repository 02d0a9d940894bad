"""HR repository (schema ``hr``): workers as effective-dated versions, effective-dated cost rates.

``hr.worker`` holds each worker as last read plus what we last wrote to its PSA user and ERP
employee; ``hr.worker_version`` the distinct versions with ``[valid_from, valid_to)``; and
``hr.cost_rate`` the rates, each effective from its date until the employee's next one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from psa_erp_sync.ods import exceptions


@dataclass(frozen=True)
class WorkerRecord:
    """A worker as read from HR (names are personal data: they stay in ``hr.worker`` only)."""

    employee_id: str
    worker_wid: str
    first_name: str
    last_name: str
    email: str | None
    legal_entity: str
    cost_center: str | None
    hire_date: date
    termination_date: date | None

    def effective_hash(self) -> str:
        """Hash of the effective-dated attributes (a new version when it changes)."""
        key = [
            self.legal_entity,
            self.cost_center,
            self.hire_date.isoformat(),
            self.termination_date.isoformat() if self.termination_date else None,
        ]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()

    def version_hash(self) -> str:
        """Hash of everything read (names and email included)."""
        key = [self.effective_hash(), self.worker_wid, self.first_name, self.last_name, self.email]
        return hashlib.sha256(json.dumps(key).encode()).hexdigest()


@dataclass(frozen=True)
class UpsertOutcome:
    new: bool
    changed: bool
    new_version: bool


def upsert_worker(conn: psycopg.Connection, w: WorkerRecord, *, as_of: date, run_id: str) -> UpsertOutcome:
    """Store the worker as read on ``as_of``; open a new effective-dated version when its legal
    entity, cost centre or dates changed.

    The first version is effective from the hire date. A later change is effective from
    ``max(as_of, hire date)``: Workday's worker detail shows the current values, not when they
    changed. Versions that start on or after that date (read ahead of their date and never in
    effect) are replaced; the version in effect until then ends there.
    """
    previous = conn.execute(
        "SELECT version_hash FROM hr.worker WHERE employee_id = %s FOR UPDATE", (w.employee_id,)
    ).fetchone()
    conn.execute(
        """
        INSERT INTO hr.worker AS h (employee_id, worker_wid, first_name, last_name, email, legal_entity,
            cost_center, hire_date, termination_date, version_hash, last_run_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (employee_id) DO UPDATE SET worker_wid = EXCLUDED.worker_wid,
            first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name, email = EXCLUDED.email,
            legal_entity = EXCLUDED.legal_entity, cost_center = EXCLUDED.cost_center,
            hire_date = EXCLUDED.hire_date, termination_date = EXCLUDED.termination_date,
            version_hash = EXCLUDED.version_hash, last_read_at = now(), last_run_id = EXCLUDED.last_run_id
        """,
        (
            w.employee_id,
            w.worker_wid,
            w.first_name,
            w.last_name,
            w.email,
            w.legal_entity,
            w.cost_center,
            w.hire_date,
            w.termination_date,
            w.version_hash(),
            run_id,
        ),
    )
    effective = w.effective_hash()
    current = conn.execute(
        "SELECT version_hash FROM hr.worker_version WHERE employee_id = %s ORDER BY valid_from DESC LIMIT 1",
        (w.employee_id,),
    ).fetchone()
    new_version = current is None or current[0] != effective
    if new_version:
        start = w.hire_date if current is None else max(as_of, w.hire_date)
        conn.execute(
            "DELETE FROM hr.worker_version WHERE employee_id = %s AND valid_from >= %s",
            (w.employee_id, start),
        )
        conn.execute(
            "UPDATE hr.worker_version SET valid_to = %s WHERE employee_id = %s"
            " AND valid_from < %s AND (valid_to IS NULL OR valid_to > %s)",
            (start, w.employee_id, start, start),
        )
        conn.execute(
            """
            INSERT INTO hr.worker_version (employee_id, valid_from, legal_entity, cost_center, hire_date,
                termination_date, version_hash, run_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
            """,
            (
                w.employee_id,
                start,
                w.legal_entity,
                w.cost_center,
                w.hire_date,
                w.termination_date,
                effective,
                run_id,
            ),
        )
    return UpsertOutcome(
        new=previous is None,
        changed=previous is not None and previous[0] != w.version_hash(),
        new_version=new_version,
    )


def version_on(conn: psycopg.Connection, employee_id: str, day: date) -> dict[str, Any] | None:
    """The worker version effective on ``day`` (None before the first one)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM hr.worker_version WHERE employee_id = %s AND valid_from <= %s"
            " AND (valid_to IS NULL OR valid_to > %s)",
            (employee_id, day, day),
        ).fetchone()


def replace_cost_rates(
    conn: psycopg.Connection, rates: Sequence[tuple[str, date, int, str]], *, run_id: str
) -> dict[str, int]:
    """Make ``hr.cost_rate`` equal the full report: upsert (employee, effective_from, rate_minor,
    currency) rows, delete rows the report no longer has. Returns counts."""
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS hr_rate_in (employee_id text, effective_from date,"
        " rate_minor bigint, currency text) ON COMMIT DROP"
    )
    conn.execute("TRUNCATE hr_rate_in")
    with conn.cursor() as cur, cur.copy("COPY hr_rate_in FROM STDIN") as copy:
        for row in rates:
            copy.write_row(row)
    written = conn.execute(
        """
        INSERT INTO hr.cost_rate AS r (employee_id, effective_from, rate_minor, currency, run_id)
        SELECT employee_id, effective_from, rate_minor, currency, %s FROM hr_rate_in
        ON CONFLICT (employee_id, effective_from) DO UPDATE SET rate_minor = EXCLUDED.rate_minor,
            currency = EXCLUDED.currency, run_id = EXCLUDED.run_id, read_at = now()
        WHERE (r.rate_minor, r.currency) IS DISTINCT FROM (EXCLUDED.rate_minor, EXCLUDED.currency)
        """,
        (run_id,),
    ).rowcount
    removed = conn.execute(
        "DELETE FROM hr.cost_rate r WHERE NOT EXISTS (SELECT 1 FROM hr_rate_in i"
        " WHERE i.employee_id = r.employee_id AND i.effective_from = r.effective_from)"
    ).rowcount
    return {"rates": len(rates), "written": written, "removed": removed}


def rate_on(conn: psycopg.Connection, employee_id: str, day: date) -> tuple[int, str] | None:
    """The employee's cost rate effective on ``day``: (minor units, currency), or None."""
    row = conn.execute(
        "SELECT rate_minor, currency FROM hr.cost_rate WHERE employee_id = %s AND effective_from <= %s"
        " ORDER BY effective_from DESC LIMIT 1",
        (employee_id, day),
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def psa_user_rate_on(conn: psycopg.Connection, user_ref: str, day: date) -> tuple[int, str] | None:
    """The HR cost rate of a PSA user on ``day`` (``hr.psa_user_cost_rate_on``), or None."""
    row = conn.execute(
        "SELECT rate_minor, currency FROM hr.psa_user_cost_rate_on(%s, %s)", (user_ref, day)
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def workers(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM hr.worker ORDER BY employee_id").fetchall()


def record_psa(
    conn: psycopg.Connection, employee_id: str, *, psa_user_id: int, applied: Mapping[str, Any]
) -> None:
    conn.execute(
        "UPDATE hr.worker SET psa_user_id = %s, psa_applied = %s, psa_applied_at = now() WHERE employee_id = %s",
        (psa_user_id, Jsonb(dict(applied)), employee_id),
    )


def record_erp(
    conn: psycopg.Connection, employee_id: str, *, target: str, applied: Mapping[str, Any]
) -> None:
    conn.execute(
        "UPDATE hr.worker SET erp_target = %s, erp_applied = %s, erp_applied_at = now() WHERE employee_id = %s",
        (target, Jsonb(dict(applied)), employee_id),
    )


def employee_ids(conn: psycopg.Connection) -> Iterable[str]:
    return [r[0] for r in conn.execute("SELECT employee_id FROM hr.worker ORDER BY 1")]


def resolve_reason(
    conn: psycopg.Connection,
    source_system: str,
    record_type: str,
    source_ids: Sequence[str],
    reason_code: str,
) -> int:
    """Resolve the open ``propagation`` items of one reason for these records (a write that failed
    and now succeeded); other reasons of the same record stay as they are."""
    return exceptions.resolve_for(
        conn,
        kind="propagation",
        source_system=source_system,
        record_type=record_type,
        source_ids=source_ids,
        reason_code=reason_code,
    )
