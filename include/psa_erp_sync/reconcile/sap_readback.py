"""Read an SAP S/4HANA system back for the reconciliation: what it holds of our records, per PSA entry.

The SAP counterpart of :func:`psa_erp_sync.reconcile.erp_readback.actual` (NetSuite's SuiteQL read),
in the same shape (per source id: hours, amount in minor units, currency) so the reconciliation
compares both ERPs alike (docs/multi-erp.md, "Downstream per ERP"):

- **time**: the live timesheet records (status 10-40; 50 superseded and 60 cancelled are history)
  of each mapped company code; the PSA entry is the source id the record's note names
  (``[psa:<key>] psa:<source id> v:...``, :class:`~psa_erp_sync.posting.adapter.SapAdapter`). SAP
  holds hours, not money: the amount is the hours read back at the rate the ledger last sent to SAP
  for that entry (half-even once, as canonical amounts), so a record whose hours differ by 0.01
  differs in amount too. Two live records of one entry are a duplicate and fail the read.
- **expenses**: the journal entries whose header text is ``psa:<source id>``; per entry the sum of
  the expense account's debits less its credits (a reversal is the mirrored entry), in the
  document's currency. An entry whose documents net to zero and include a mirrored one is reversed.

**Both currencies** (:func:`functional_lines`): SAP's journal items carry the transaction currency
amount only (``AmountInTransactionCurrency``; the simulator models no ``AmountInCompanyCodeCurrency``
and no exchange rate) and its timesheets no money at all, so SAP cannot be asked for a functional
amount. What it has is reconciled: each read-back transaction amount converted at the exchange rate
the ledger sent SAP with that record (``ledger.posting.fx_rate``; 1 for work in the functional
currency), half-even once, must equal the ODS's functional amount, per legal entity x period x
transaction currency (:mod:`psa_erp_sync.reconcile.fx`). This proves SAP holds every transaction
amount whose conversion at our rate is the functional amount we reported; it cannot detect SAP
converting at another rate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import psycopg

from psa_erp_sync import money
from psa_erp_sync.posting import ledger
from psa_erp_sync.reconcile.control_totals import Totals
from psa_erp_sync.reconcile.erp_readback import totals_of

Row = tuple[Decimal, int, str]
_SOURCE = re.compile(r"^\[psa:[^\]]*\] psa:(?P<source>\S+)")
_HEADER = re.compile(r"^psa:(?P<source>\S+)$")


def ledger_rates(conn: psycopg.Connection, *, erp: str = "sap") -> dict[str, tuple[Decimal, str]]:
    """Per source id, the rate and currency of the latest confirmed timebill post or adjust the
    ledger sent to ``erp``."""
    rows = conn.execute(
        """
        SELECT DISTINCT ON (source_system, source_id) source_id, payload->>'rate',
               payload->'currency'->>'refName'
        FROM ledger.posting_full
        WHERE record_type = 'timebill' AND target_erp = %s AND corrects IS NULL AND NOT shadow
          AND state IN ('confirmed', 'resolved') AND action IN ('post', 'adjust')
        ORDER BY source_system, source_id, seq DESC
        """,
        (erp,),
    ).fetchall()
    return {str(sid): (Decimal(str(rate or 0)), str(cur or "")) for sid, rate, cur in rows}


def functional_lines(
    conn: psycopg.Connection, record_type: str, rows: Mapping[str, Row], *, erp: str = "sap"
) -> dict[str, Any]:
    """SAP's read-back ``rows`` as :class:`~psa_erp_sync.reconcile.fx.ErpLine`: the amount SAP holds,
    at the legal entity, date and exchange rate of the latest confirmed post or adjust the ledger
    sent ``erp`` for that record (own lane). A row the ledger never confirmed keeps rate 1."""
    from psa_erp_sync.reconcile.fx import ErpLine

    sent = {
        str(sid): (entity, str(day or "")[:7], Decimal(str(rate)) if rate is not None else Decimal(1))
        for sid, entity, day, rate in conn.execute(
            """
            SELECT DISTINCT ON (source_system, source_id) source_id, legal_entity, payload->>'tranDate',
                   fx_rate
            FROM ledger.posting_full
            WHERE record_type = %s AND target_erp = %s AND corrects IS NULL AND NOT shadow
              AND state IN ('confirmed', 'resolved') AND action IN ('post', 'adjust')
            ORDER BY source_system, source_id, seq DESC
            """,
            (record_type, erp),
        ).fetchall()
    }
    lines = {}
    for source_id, (_hours, amount, currency) in rows.items():
        entity, period, rate = sent.get(source_id, (None, "", Decimal(1)))
        lines[source_id] = ErpLine(entity, period, currency, amount, rate)
    return lines


def timesheets(
    client: Any, company_codes: list[str], rates: Mapping[str, tuple[Decimal, str]]
) -> dict[str, Row]:
    """The live timesheet records of our namespace, per source id (see the module docstring)."""
    rows: dict[str, Row] = {}
    for company in company_codes:
        for entry in client.company_timesheets(company):
            match = _SOURCE.match(entry.TimeSheetDataFields.TimeSheetNoteText)
            if not entry.is_live or match is None or ledger.is_shadow(match.group("source")):
                continue  # a parallel run's shadow (``psa:<id>-shadow``): reconcile.parallel_run's
            source_id = match.group("source")
            if source_id in rows:
                raise AssertionError(f"SAP holds two live timesheet records of psa-te-{source_id}")
            hours = Decimal(entry.TimeSheetDataFields.RecordedHours)
            rate, currency = rates.get(source_id, (Decimal(0), "?"))
            rows[source_id] = (hours, money.line_amount_minor(hours, rate, currency), currency)
    return rows


def journals(client: Any, company_codes: list[str], expense_account: str) -> dict[str, Row]:
    """Expenses: per source id, the expense account's net amount over our journal entries."""
    net: dict[str, tuple[int, str, bool]] = {}
    for company in company_codes:
        for doc in client.journal_entries(company):
            match = _HEADER.match(doc.DocumentHeaderText)
            if match is None or doc.to_Item is None or ledger.is_shadow(match.group("source")):
                continue
            signed = 0
            for item in doc.to_Item.results:
                if item.GLAccount != expense_account:
                    continue
                amount = money.to_minor(Decimal(item.AmountInTransactionCurrency), item.TransactionCurrency)
                signed += amount if item.DebitCreditCode == "S" else -amount
            total, _, mirrored = net.get(match.group("source"), (0, "", False))
            net[match.group("source")] = (total + signed, doc.TransactionCurrency, mirrored or signed < 0)
    return {
        source_id: (Decimal(0), amount, currency)
        for source_id, (amount, currency, mirrored) in net.items()
        if amount != 0 or not mirrored
    }


def actual(
    conn: psycopg.Connection, client: Any, mapping: Any, record_type: str
) -> tuple[Totals, dict[str, Row]]:
    """What the SAP system holds of ``record_type`` (``timebill`` or ``expensereport``), per source
    id, over the company codes of ``mapping`` (a :class:`~psa_erp_sync.posting.adapter.SapMapping`)."""
    companies = sorted(set(mapping.company_codes.values()))
    if record_type == "timebill":
        rows = timesheets(client, companies, ledger_rates(conn))
    else:
        rows = journals(client, companies, mapping.expense_account)
    return totals_of(rows), rows
