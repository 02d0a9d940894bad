"""The ERP's currency rates into the ODS (``master.currency_rate``), the rates foreign-currency
work is validated and posted with (:mod:`psa_erp_sync.validation.fx`).

NetSuite keeps its rates as ``currencyrate`` records (1 transaction currency = ``exchangeRate``
base currency from ``effectiveDate`` on). They are few (a handful of pairs, one a day at most), so
every sync reads them all through SuiteQL and mirrors them in two statements: a rate the ERP
corrected overwrites the old one, a rate it no longer has is removed (entries already validated
keep the rate they were booked at).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Protocol

import psycopg
from pydantic import ValidationError

from psa_erp_sync.clients.erp_models import CurrencyRate
from psa_erp_sync.validation.fx import ERP_SOURCE

log = logging.getLogger(__name__)

QUERY = "SELECT * FROM currencyrate ORDER BY id"


class SuiteQLSource(Protocol):
    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]: ...


def sync_currency_rates(conn: psycopg.Connection, client: SuiteQLSource) -> dict[str, int]:
    """Read every ERP currency rate into ``master.currency_rate`` (validated at the boundary; a
    malformed one is skipped and counted). Returns counts: read, written (new or changed), removed,
    invalid."""
    rows: list[tuple[str, str, Any, str, str | None]] = []
    invalid = 0
    for item in client.suiteql(QUERY):
        try:
            rate = CurrencyRate.model_validate(item)
        except ValidationError:
            invalid += 1
            continue
        base, transaction = rate.base_currency.key, rate.transaction_currency.key
        if not base or not transaction or rate.exchange_rate <= 0 or rate.is_inactive:
            invalid += 1
            continue
        rows.append((base, transaction, rate.effective_date, str(rate.exchange_rate), rate.external_id))
    with conn.transaction():
        written = conn.execute(
            """
            INSERT INTO master.currency_rate AS r
                   (base_currency, transaction_currency, effective_date, exchange_rate, source, external_id)
            SELECT b, t, d, x::numeric, %s, e
            FROM unnest(%s::text[], %s::text[], %s::date[], %s::text[], %s::text[]) AS u(b, t, d, x, e)
            ON CONFLICT (base_currency, transaction_currency, effective_date) DO UPDATE
               SET exchange_rate = EXCLUDED.exchange_rate, external_id = EXCLUDED.external_id, read_at = now()
             WHERE r.exchange_rate <> EXCLUDED.exchange_rate
            """,
            (
                ERP_SOURCE,
                [r[0] for r in rows],
                [r[1] for r in rows],
                [r[2] for r in rows],
                [r[3] for r in rows],
                [r[4] for r in rows],
            ),
        ).rowcount
        # The table mirrors the ERP: a rate the ERP no longer has goes (never on an empty answer,
        # which is more likely a fault than an ERP without rates).
        removed = (
            conn.execute(
                """
                DELETE FROM master.currency_rate r WHERE r.source = %s AND NOT EXISTS (
                    SELECT 1 FROM unnest(%s::text[], %s::text[], %s::date[]) AS u(b, t, d)
                    WHERE u.b = r.base_currency AND u.t = r.transaction_currency AND u.d = r.effective_date)
                """,
                (ERP_SOURCE, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]),
            ).rowcount
            if rows
            else 0
        )
    log.info(
        "ERP currency rates: read %d, new or changed %d, removed %d, invalid %d",
        len(rows),
        written,
        removed,
        invalid,
    )
    return {"read": len(rows), "written": written, "removed": removed, "invalid": invalid}
