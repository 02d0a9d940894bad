"""Billing fixtures: an empty ODS (billing and master included) and helpers that write what the
extracts, the master-data sync and the posting flow would have left there."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from psa_erp_sync.billing.settings import BillingSettings

SCHEMAS = ("staging", "canonical", "ledger", "inbox", "exceptions", "forecast", "audit", "master", "billing")


@pytest.fixture
def ods(pg_dsn: str) -> Iterator[psycopg.Connection]:
    """A connection to an ODS with every table of the billing inputs and outputs empty."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables"
            " WHERE schemaname = ANY(%s)",
            (list(SCHEMAS),),
        ).fetchall()
        conn.execute("TRUNCATE " + ", ".join(t[0] for t in tables) + " RESTART IDENTITY CASCADE")
    with psycopg.connect(pg_dsn) as conn:
        yield conn


def settings(**overrides: Any) -> BillingSettings:
    return BillingSettings.model_validate({"version": 1, **overrides})


def project(
    conn: psycopg.Connection,
    ref: str,
    billing_type: str = "time_and_materials",
    *,
    customer: str | None = "psa-client-1",
    legal_entity: str = "LE-US1",
    currency: str = "USD",
) -> None:
    """A PSA project (forecast extract) and, with ``customer``, its ERP job under that customer."""
    conn.execute(
        "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type, is_active)"
        " VALUES (%s, 'Technology', %s, %s, %s, true)",
        (ref, legal_entity, currency, billing_type),
    )
    if customer:
        conn.execute(
            "INSERT INTO master.erp_record (record_type, external_id, internal_id, version_hash, parent,"
            " is_inactive, body) VALUES ('job', %s, %s, 'v', %s, false, '{}'::jsonb)",
            (f"psa-project-{ref}", f"j{ref}", customer),
        )
        conn.execute(
            "INSERT INTO master.erp_record (record_type, external_id, internal_id, version_hash,"
            " is_inactive, body) VALUES ('customer', %s, %s, 'v', false, '{}'::jsonb) ON CONFLICT DO NOTHING",
            (customer, f"c{customer}"),
        )


def entry(
    conn: psycopg.Connection,
    sid: str,
    project_ref: str,
    *,
    version: str = "v1",
    day: date = date(2026, 11, 3),
    hours: str = "2.00",
    rate: int = 15000,
    amount: int | None = None,
    approved: bool = True,
    billable: bool = True,
    deleted: bool = False,
    posted: bool = True,
    kind: str = "time",
    legal_entity: str = "LE-US1",
    currency: str = "USD",
) -> None:
    """Upsert the current version of a time entry (or an expense) and, with ``posted``, its
    confirmed ERP posting of that version."""
    amount = amount if amount is not None else int(Decimal(hours) * rate)
    fp = hashlib.sha256(sid.encode()).hexdigest()
    if kind == "time":
        conn.execute(
            """
            INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,
                project_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved,
                is_deleted, fingerprint, source_updated_at, record)
            VALUES ('psa', %s, %s, %s, 'u1', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), '{}'::jsonb)
            ON CONFLICT (source_system, source_id) DO UPDATE SET version_hash = EXCLUDED.version_hash,
                spent_date = EXCLUDED.spent_date, hours = EXCLUDED.hours, billable = EXCLUDED.billable,
                bill_rate_minor = EXCLUDED.bill_rate_minor, amount_minor = EXCLUDED.amount_minor,
                approved = EXCLUDED.approved, is_deleted = EXCLUDED.is_deleted, project_ref = EXCLUDED.project_ref
            """,
            (
                sid,
                version,
                day,
                project_ref,
                legal_entity,
                hours,
                billable,
                rate,
                amount,
                currency,
                approved,
                deleted,
                fp,
            ),
        )
    else:
        conn.execute(
            """
            INSERT INTO canonical.expense_entry (source_system, source_id, version_hash, spent_date, user_ref,
                project_ref, legal_entity, category, billable, amount_minor, currency, approved, is_deleted,
                fingerprint, source_updated_at, record)
            VALUES ('psa', %s, %s, %s, 'u1', %s, %s, 'travel', %s, %s, %s, %s, %s, %s, now(), '{}'::jsonb)
            ON CONFLICT (source_system, source_id) DO UPDATE SET version_hash = EXCLUDED.version_hash,
                spent_date = EXCLUDED.spent_date, billable = EXCLUDED.billable, amount_minor = EXCLUDED.amount_minor,
                approved = EXCLUDED.approved, is_deleted = EXCLUDED.is_deleted
            """,
            (sid, version, day, project_ref, legal_entity, billable, amount, currency, approved, deleted, fp),
        )
    if posted:
        record_type = "timebill" if kind == "time" else "expensereport"
        conn.execute(
            "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
            " external_id, action, state, legal_entity, amount_minor, currency)"
            " VALUES (%s, %s, 'psa', %s, %s, %s, 'post', 'confirmed', %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (
                f"{record_type}:{sid}:{version}",
                record_type,
                sid,
                version,
                f"x-{sid}",
                legal_entity,
                amount,
                currency,
            ),
        )


def milestone(
    conn: psycopg.Connection,
    mid: str,
    project_ref: str,
    amount: int,
    *,
    status: str = "signed_off",
    completed_on: date | None = date(2026, 11, 12),
) -> None:
    """A milestone as the forecast's full extract left it."""
    conn.execute(
        "INSERT INTO forecast.src_milestone VALUES (%s, %s, '2026-11-10', %s, %s, %s)"
        " ON CONFLICT (milestone_id) DO UPDATE SET amount_minor = EXCLUDED.amount_minor,"
        " status = EXCLUDED.status, completed_on = EXCLUDED.completed_on",
        (mid, project_ref, amount, status, completed_on),
    )


def invoice(conn: psycopg.Connection, document: str = "INV-1", *, where: str = "true") -> int:
    """What the invoicing step does: ready events become lines of a document. Where the invoicing
    migration (billing.document, which billing.event.document_ref references) is applied, a
    stand-in document row is written first."""
    if conn.execute("SELECT to_regclass('billing.document')").fetchone() != (None,):
        conn.execute(
            "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
            " external_id, state) VALUES (%s, 'invoice', 'billing', %s, 'x', %s, 'confirmed')"
            " ON CONFLICT DO NOTHING",
            (f"doc:{document}", document, document),
        )
        conn.execute(
            "INSERT INTO billing.document (document_ref, doc_type, group_key, customer_ref, project_ref, legal_entity,"
            " currency, cycle, doc_date, total_minor, line_count, members_hash, idempotency_key)"
            " VALUES (%s, 'invoice', 'g', 'c', 'p', 'LE-US1', 'USD', 'c', '2026-11-30', 0, 1, 'x', %s)"
            " ON CONFLICT DO NOTHING",
            (document, f"doc:{document}"),
        )
    cur = conn.execute(
        f"UPDATE billing.event SET state = 'invoiced', document_ref = %s WHERE state = 'ready' AND {where}",
        (document,),
    )
    return cur.rowcount


def events(conn: psycopg.Connection) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM billing.event ORDER BY created_at, event_ref").fetchall()
