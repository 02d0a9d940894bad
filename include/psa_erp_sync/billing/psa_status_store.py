"""ODS side of the invoice status mirror: ERP invoice <-> PSA invoice (``billing.psa_invoice``), the
per-invoice lock, and the sweep's watermark (``billing.psa_status_sweep``; migration 0025)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from psa_erp_sync.money import to_minor

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.clients.erp_models import ErpInvoice
    from psa_erp_sync.clients.psa_models import Invoice

_LOCK_CLASS = 14_006  # advisory lock namespace of this mirror (issue 14, deliverable 6)


@dataclass(frozen=True)
class Mirror:
    """One ``billing.psa_invoice`` row: the ERP invoice, the PSA invoice that shows it, and what it shows."""

    erp_external_id: str
    erp_internal_id: str
    psa_invoice_id: int
    psa_number: str
    erp_status: str
    erp_modified_at: datetime | None
    psa_state: str
    paid_minor: int
    currency: str

    @classmethod
    def of(cls, external_id: str, invoice: ErpInvoice, shown: Invoice) -> Mirror:
        return cls(
            erp_external_id=external_id,
            erp_internal_id=str(invoice.id),
            psa_invoice_id=shown.id,
            psa_number=shown.number,
            erp_status=invoice.status or "",
            erp_modified_at=invoice.last_modified_date,
            psa_state=shown.state,
            paid_minor=to_minor(shown.amount - shown.due_amount, shown.currency),
            currency=shown.currency,
        )


@contextmanager
def locked(conn: psycopg.Connection, external_id: str) -> Iterator[None]:
    """Hold the session advisory lock of one ERP invoice (``conn`` in autocommit)."""
    key = zlib.crc32(external_id.encode()) - 2**31
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_CLASS, key))
    try:
        yield
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_CLASS, key))


_COLUMNS = (
    "erp_external_id, erp_internal_id, psa_invoice_id, psa_number, erp_status, erp_modified_at,"
    " psa_state, paid_minor, currency"
)


def get(conn: psycopg.Connection, external_id: str) -> Mirror | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM billing.psa_invoice WHERE erp_external_id = %s", (external_id,)
    ).fetchone()
    return None if row is None else Mirror(*row)


def save(conn: psycopg.Connection, mirror: Mirror, run_id: str) -> None:
    """Upsert the mirror row (one statement). ``erp_modified_at`` never moves back."""
    conn.execute(
        f"""INSERT INTO billing.psa_invoice ({_COLUMNS}, last_run_id)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (erp_external_id) DO UPDATE SET
                erp_internal_id = EXCLUDED.erp_internal_id, psa_invoice_id = EXCLUDED.psa_invoice_id,
                psa_number = EXCLUDED.psa_number, erp_status = EXCLUDED.erp_status,
                erp_modified_at = GREATEST(billing.psa_invoice.erp_modified_at, EXCLUDED.erp_modified_at),
                psa_state = EXCLUDED.psa_state, paid_minor = EXCLUDED.paid_minor,
                currency = EXCLUDED.currency, last_run_id = EXCLUDED.last_run_id, updated_at = now()""",
        (
            mirror.erp_external_id,
            mirror.erp_internal_id,
            mirror.psa_invoice_id,
            mirror.psa_number,
            mirror.erp_status,
            mirror.erp_modified_at,
            mirror.psa_state,
            mirror.paid_minor,
            mirror.currency,
            run_id,
        ),
    )


def watermark(conn: psycopg.Connection, name: str) -> datetime | None:
    row = conn.execute("SELECT swept_to FROM billing.psa_status_sweep WHERE name = %s", (name,)).fetchone()
    return None if row is None else row[0]


def advance_watermark(conn: psycopg.Connection, name: str, swept_to: datetime, run_id: str) -> None:
    """Move the sweep's watermark forward (never back)."""
    conn.execute(
        """INSERT INTO billing.psa_status_sweep (name, swept_to, last_run_id) VALUES (%s, %s, %s)
           ON CONFLICT (name) DO UPDATE SET
               swept_to = GREATEST(billing.psa_status_sweep.swept_to, EXCLUDED.swept_to),
               last_run_id = EXCLUDED.last_run_id, updated_at = now()""",
        (name, swept_to, run_id),
    )
