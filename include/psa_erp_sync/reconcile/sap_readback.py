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
  the expense account's debits less its credits (a reversal is the mirrored entry, an adjustment one
  document mirroring the replaced version and debiting the new one), in the document's currency. An
  entry whose documents net to zero and include a mirrored one is reversed.
- **correcting journals** (:func:`corrections`; a correction of a record SAP holds in a closed
  period, docs/multi-erp.md "Corrections on SAP"): the journal entries whose item text is
  ``psa:<source id> te|ex c<seq> adjust|reverse [h:<hours>]``
  (:data:`~psa_erp_sync.posting.adapter.CORRECTION_TEXT`), per PSA entry: the signed amount moved on
  the unbilled receivables account (time) or the expense account (expenses), and the signed hours
  of the text. They are added to the entry's record, as NetSuite's correcting journals are
  (:func:`psa_erp_sync.reconcile.erp_readback.actual`): an entry whose latest journal is a reversal
  and whose sum is zero is not held.

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


Correction = tuple[int, Decimal, int, str, str]  # seq, hours, amount (minor units), currency, action


def corrections(
    client: Any, company_codes: list[str], mapping: Any, record_type: str
) -> dict[str, list[Correction]]:
    """SAP's correcting journals of ``record_type`` per source id, in seq order: (seq, signed hours,
    signed amount in minor units, currency, action). The amount is what the journal moves on the
    account that grows with the record (time: unbilled receivables; expenses: the expense account)."""
    from psa_erp_sync.posting.adapter import CORRECTION_TEXT

    kind = "te" if record_type == "timebill" else "ex"
    account = mapping.receivable_account if kind == "te" else mapping.expense_account
    found: dict[str, list[Correction]] = {}
    for company in company_codes:
        for doc in client.journal_entries(company):
            items = doc.to_Item.results if doc.to_Item is not None else ()
            match = CORRECTION_TEXT.match(items[0].DocumentItemText) if items else None
            if match is None or match.group("kind") != kind or ledger.is_shadow(match.group("source")):
                continue
            signed = 0
            for item in items:
                if item.GLAccount == account:
                    amount = money.to_minor(
                        Decimal(item.AmountInTransactionCurrency), item.TransactionCurrency
                    )
                    signed += amount if item.DebitCreditCode == "S" else -amount
            entry = (
                int(match.group("seq")),
                Decimal(match.group("hours") or 0),
                signed,
                doc.TransactionCurrency,
                match.group("action"),
            )
            found.setdefault(match.group("source"), []).append(entry)
    for entries in found.values():
        entries.sort()
    return found


def with_corrections(rows: dict[str, Row], found: Mapping[str, list[Correction]]) -> dict[str, Row]:
    """Each entry's record plus its correcting journals (as NetSuite's are summed); an entry whose
    latest journal is a reversal and whose sum is zero is not held."""
    out = dict(rows)
    for source_id, entries in found.items():
        hours, amount, currency = out.get(source_id, (Decimal(0), 0, entries[-1][3]))
        hours += sum((e[1] for e in entries), Decimal(0))
        amount += sum(e[2] for e in entries)
        if entries[-1][4] == "reverse" and hours == 0 and amount == 0:
            out.pop(source_id, None)
        else:
            out[source_id] = (hours, amount, currency)
    return out


def actual(
    conn: psycopg.Connection, client: Any, mapping: Any, record_type: str
) -> tuple[Totals, dict[str, Row]]:
    """What the SAP system holds of ``record_type`` (``timebill`` or ``expensereport``), per source
    id, over the company codes of ``mapping`` (a :class:`~psa_erp_sync.posting.adapter.SapMapping`):
    each record plus its correcting journals."""
    companies = sorted(set(mapping.company_codes.values()))
    once = _JournalsOnce(client)  # the expense documents and the correcting journals: one read
    if record_type == "timebill":
        rows = timesheets(client, companies, ledger_rates(conn))
    else:
        rows = journals(once, companies, mapping.expense_account)
    rows = with_corrections(rows, corrections(once, companies, mapping, record_type))
    return totals_of(rows), rows


class _JournalsOnce:
    """``client.journal_entries`` read once per company code for one read-back."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.read: dict[str, Any] = {}

    def journal_entries(self, company: str) -> Any:
        if company not in self.read:
            self.read[company] = self.client.journal_entries(company)
        return self.read[company]


def placed(client: Any, mapping: Any, record_type: str) -> dict[str, tuple[str, str]]:
    """Per source id SAP holds a record of (a live timesheet record, or an expense journal entry;
    shadows excluded), the legal entity (of its company code, per ``mapping``) and month
    (``YYYY-MM``: the record's date, the document's posting date) it is booked to. The close report
    finds SAP's strays with it (records of our namespace for an entity and month the ODS lacks)."""
    entity_of = {code: entity for entity, code in sorted(mapping.company_codes.items())}
    found: dict[str, tuple[str, str]] = {}
    for company in sorted(set(mapping.company_codes.values())):
        if record_type == "timebill":
            for entry in client.company_timesheets(company):
                match = _SOURCE.match(entry.TimeSheetDataFields.TimeSheetNoteText)
                if entry.is_live and match is not None and not ledger.is_shadow(match.group("source")):
                    found[match.group("source")] = (entity_of[company], entry.TimeSheetDate.strftime("%Y-%m"))
            continue
        for doc in client.journal_entries(company):
            match = _HEADER.match(doc.DocumentHeaderText)
            if match is not None and not ledger.is_shadow(match.group("source")):
                found.setdefault(
                    match.group("source"), (entity_of[company], doc.PostingDate.strftime("%Y-%m"))
                )
    return found
