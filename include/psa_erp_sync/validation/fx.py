"""The ERP's exchange rates as validation uses them: the rate in force on an entry's date.

A project billed in a currency other than its legal entity's functional currency is valid when
the ERP has a rate for the pair on the entry's date (``master.currency_rate``, read from the ERP's
``currencyrate`` records by :mod:`psa_erp_sync.masterdata.fx`); the entry then keeps both amounts,
the transaction amount and the functional amount at that rate, rounded half-even once
(:func:`psa_erp_sync.money.convert_minor`). Without a rate it is quarantined ``FX_RATE_MISSING``.

The book is read once per run (one query of a small table) and looked up in memory: no per-row SQL.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

import psycopg

#: ``fx_rate_source`` of a rate read from the ERP's currency rates.
ERP_SOURCE = "erp:currencyrate"


@dataclass(frozen=True)
class Rate:
    """1 ``transaction_currency`` = ``rate`` ``base_currency`` from ``effective_date`` on."""

    rate: Decimal
    effective_date: date
    source: str = ERP_SOURCE


@dataclass(frozen=True)
class RateBook:
    """Rates per (transaction currency, base currency), each list ordered by effective date."""

    rates: dict[tuple[str, str], tuple[tuple[date, ...], tuple[Rate, ...]]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: list[tuple[str, str, date, Decimal, str]]) -> RateBook:
        """From (transaction currency, base currency, effective date, rate, source) rows."""
        grouped: dict[tuple[str, str], list[Rate]] = {}
        for transaction, base, effective, rate, source in rows:
            grouped.setdefault((transaction.strip(), base.strip()), []).append(
                Rate(Decimal(rate), effective, source)
            )
        book: dict[tuple[str, str], tuple[tuple[date, ...], tuple[Rate, ...]]] = {}
        for pair, found in grouped.items():
            found.sort(key=lambda r: r.effective_date)
            book[pair] = (tuple(r.effective_date for r in found), tuple(found))
        return cls(book)

    @classmethod
    def from_ods(cls, conn: psycopg.Connection) -> RateBook:
        """Every rate of ``master.currency_rate`` (one query; the table holds a few per day and pair)."""
        return cls.from_rows(
            [
                (r[0], r[1], r[2], r[3], r[4])
                for r in conn.execute(
                    "SELECT transaction_currency, base_currency, effective_date, exchange_rate, source"
                    " FROM master.currency_rate"
                )
            ]
        )

    def rate_on(self, transaction: str, base: str, day: date) -> Rate | None:
        """The rate in force on ``day`` (latest effective date not after it), as the ERP picks it;
        None when the ERP has none for the pair by then."""
        found = self.rates.get((transaction, base))
        if found is None:
            return None
        dates, rates = found
        index = bisect.bisect_right(dates, day)
        return rates[index - 1] if index else None
