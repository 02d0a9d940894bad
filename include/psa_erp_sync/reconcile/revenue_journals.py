"""Revenue journals reconciled per ERP: what the ledger says each ERP holds against each ERP's read-back.

A revenue journal posts to the ERP its legal entity routes to on its posting date
(:mod:`psa_erp_sync.revenue.posting`), so each ERP is compared with the ledger rows that target it
(``ledger.posting.target_erp``; confirmed, source ``revenue``), journal by journal and in control
totals per ERP (count, debits per currency in minor units, hash total of the external ids):

- **NetSuite**: SuiteQL ``transactionline`` of ``journalentry`` transactions whose external id is
  ours (``rev-...``), the debit lines summed per journal;
- **SAP**: the journal entries headed ``rev:<key>`` of every mapped company code
  (:func:`psa_erp_sync.revenue.sap.revenue_entries`), matched to the ledger row whose key derives
  their ``DocumentReferenceID``; two documents of one key (a duplicate) count twice.

Control totals are stored per ERP as stages ``revenue_ledger:<erp>`` and ``revenue_erp:<erp>``
(record type ``journalentry``). Any difference (a journal missing, unexpected, or differing by one
cent) is named with the journal's external id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from psa_erp_sync import money
from psa_erp_sync.clients.sap import journal_reference
from psa_erp_sync.reconcile import control_totals
from psa_erp_sync.reconcile.control_totals import ControlTotalMismatch, Totals
from psa_erp_sync.reconcile.erp_readback import hash_of

Side = dict[str, tuple[str, int]]  # external id -> (currency, debits in minor units)

_LEDGER = """
    SELECT DISTINCT ON (idempotency_key) idempotency_key, external_id, currency, amount_minor
    FROM ledger.posting
    WHERE record_type = 'journalentry' AND source_system = 'revenue' AND target_erp = %s
      AND state IN ('confirmed', 'resolved')
    ORDER BY idempotency_key, seq DESC
"""
_NETSUITE = "SELECT transactionexternalid, currency, debit FROM transactionline WHERE transactiontype = 'journalentry'"


def ledger_side(conn: psycopg.Connection, erp: str) -> tuple[Side, dict[str, str]]:
    """The journals the ledger says ``erp`` holds (external id -> currency, debits), and the
    external id of each ledger key."""
    side: Side = {}
    keys: dict[str, str] = {}
    for key, ext, currency, amount in conn.execute(_LEDGER, (erp,)):
        side[str(ext)] = (str(currency).strip(), int(amount or 0))
        keys[str(key)] = str(ext)
    return side, keys


def netsuite_side(client: Any) -> Side:
    """NetSuite's revenue journals (external id ``rev-...``): debits summed per journal."""
    side: Side = {}
    for row in client.suiteql(_NETSUITE):
        ext = str(row.get("transactionexternalid") or row.get("transactionExternalId") or "")
        if not ext.startswith("rev-"):
            continue
        currency = str(row.get("currency") or "").strip()
        debit = row.get("debit")
        amount = money.to_minor(Decimal(str(debit)), currency) if debit not in (None, "") else 0
        before = side.get(ext, (currency, 0))
        side[ext] = (currency or before[0], before[1] + amount)
    return side


def sap_side(client: Any, company_codes: Iterable[str], keys: Mapping[str, str]) -> Side:
    """SAP's revenue journal entries by the external id of the ledger key their reference derives
    from (``keys``: ledger key -> external id); an entry of no known key under ``?<reference>``."""
    from psa_erp_sync.revenue.sap import revenue_entries

    by_reference = {journal_reference(key): ext for key, ext in keys.items()}
    side: Side = {}
    for entry in revenue_entries(client, list(company_codes)):
        ext = by_reference.get(entry.reference, f"?{entry.reference}")
        before = side.get(ext, (entry.currency, 0))
        side[ext] = (entry.currency, before[1] + entry.debit_minor)
    return side


def totals(side: Side) -> Totals:
    amounts: dict[str, int] = {}
    for currency, amount in side.values():
        amounts[currency] = amounts.get(currency, 0) + amount
    return Totals(len(side), Decimal(0), amounts, hash_of(list(side)))


@dataclass
class ErpRevenue:
    """One ERP's comparison: control totals of both sides and every differing journal."""

    erp: str
    ledger: Totals
    held: Totals
    differences: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ledger": self.ledger.as_dict(),
            "erp": self.held.as_dict(),
            "differences": list(self.differences),
        }


def compare(erp: str, expected: Side, held: Side) -> ErpRevenue:
    differences = []
    for ext in sorted(set(expected) | set(held)):
        want, have = expected.get(ext), held.get(ext)
        if want == have:
            continue
        if want is not None and have is None:
            differences.append(f"{ext}: in the ledger ({want[1]} {want[0]} minor units), not in {erp}")
        elif want is None and have is not None:
            differences.append(f"{ext}: in {erp} ({have[1]} {have[0]} minor units), not in the ledger")
        elif want is not None and have is not None:
            differences.append(
                f"{ext}: ledger {want[1]} {want[0]}, {erp} holds {have[1]} {have[0]} (minor units)"
            )
    return ErpRevenue(erp, totals(expected), totals(held), differences)


def reconcile(
    conn: psycopg.Connection,
    *,
    netsuite: Any | None = None,
    sap: tuple[Any, Iterable[str]] | None = None,
    dag_id: str = "",
    run_id: str = "",
) -> dict[str, ErpRevenue]:
    """Each given ERP's revenue journals against the ledger: ``netsuite`` a SuiteQL client,
    ``sap`` (client, company codes). Control totals are recorded when ``run_id`` is given."""
    out: dict[str, ErpRevenue] = {}
    if netsuite is not None:
        expected, _ = ledger_side(conn, "netsuite")
        out["netsuite"] = compare("netsuite", expected, netsuite_side(netsuite))
    if sap is not None:
        expected, keys = ledger_side(conn, "sap")
        client, companies = sap
        out["sap"] = compare("sap", expected, sap_side(client, companies, keys))
    if run_id:
        for erp, result in out.items():
            for stage, figures in (("revenue_ledger", result.ledger), ("revenue_erp", result.held)):
                control_totals.record(
                    conn,
                    dag_id=dag_id,
                    run_id=run_id,
                    record_type="journalentry",
                    stage=f"{stage}:{erp}",
                    totals=figures,
                )
    return out


def check(results: Mapping[str, ErpRevenue]) -> None:
    """Raise :class:`ControlTotalMismatch` naming every differing journal of every ERP."""
    problems = [f"{erp}: {d}" for erp, r in results.items() for d in r.differences]
    if problems:
        raise ControlTotalMismatch(
            f"revenue journals: {len(problems)} difference(s) between the ledger and the ERPs:\n  "
            + "\n  ".join(problems)
        )
