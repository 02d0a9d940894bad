"""Journal lines of revenue recognition, and the delta against what was already posted.

One journal per contract (project) x legal entity x period x currency; contracts are never netted
against each other. Amounts are signed in the calculation (debit positive) and become a debit or
a credit line of a positive integer amount. Zero lines are dropped.

What a period's journal moves (``prev`` -> ``cur``, both :class:`Recognition`):

=====================  =====================================================  ===============
account (role)         signed amount (debit +)                                 meaning
=====================  =====================================================  ===============
``revenue``            ``-(cum_rev - prev.cum_rev)``                           revenue earned
``contract_asset``     ``asset - prev.asset``                                  unbilled (WIP)
``contract_liability`` ``(billed - prev.billed) - (liab - prev.liab)``         deferred revenue
``loss_expense``       ``provision - prev.provision``                          loss on contracts
``loss_provision``     ``-(provision - prev.provision)``                       provision
=====================  =====================================================  ===============

The contract-liability line assumes the ERP's invoice posts *receivable / contract liability*
(every billing lands in deferred revenue first); this journal then moves the ledger to the
contract's position. Because ``asset - liability = cum_rev - cum_billed`` on integers, the lines
of every journal sum to exactly zero: debits equal credits with no balancing plug.

A recompute posts only the delta: target lines of the period minus the lines already posted (or
planned) *for that recognition period*. The delta of a closed period goes per the legal entity's
closed-period policy (``posting/periods.py``): to the first open period, still booked against its
recognition period, or parked for finance.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from psa_erp_sync.posting.periods import PeriodBook
from psa_erp_sync.revenue.recognition import Recognition, month_end, month_index

ROLES = ("revenue", "contract_asset", "contract_liability", "loss_expense", "loss_provision")
RECORD_TYPE = "journalentry"


class UnbalancedJournal(ValueError):
    """Lines whose debits and credits differ: never planned, never posted."""


@dataclass(frozen=True)
class JournalLine:
    account: str  # the GL account (config/legal_entities.yaml, revenue_accounts)
    role: str
    debit_minor: int
    credit_minor: int

    @property
    def signed_minor(self) -> int:
        return self.debit_minor - self.credit_minor


@dataclass(frozen=True)
class Journal:
    project_ref: str
    legal_entity: str
    period: int  # recognition period (month index)
    currency: str
    lines: tuple[JournalLine, ...]

    @property
    def debits(self) -> int:
        return sum(line.debit_minor for line in self.lines)

    @property
    def credits(self) -> int:
        return sum(line.credit_minor for line in self.lines)


def movements(prev: Recognition | None, cur: Recognition) -> dict[str, int]:
    """Signed amount per role (debit positive) moving the ledger from ``prev`` to ``cur``."""
    p_rev = prev.cum_revenue_minor if prev else 0
    p_asset = prev.contract_asset_minor if prev else 0
    p_liab = prev.contract_liability_minor if prev else 0
    p_billed = prev.cum_billed_minor if prev else 0
    p_prov = prev.loss_provision_minor if prev else 0
    provision = cur.loss_provision_minor - p_prov
    return {
        "revenue": -(cur.cum_revenue_minor - p_rev),
        "contract_asset": cur.contract_asset_minor - p_asset,
        "contract_liability": (cur.cum_billed_minor - p_billed) - (cur.contract_liability_minor - p_liab),
        "loss_expense": provision,
        "loss_provision": -provision,
    }


def lines_of(signed: Mapping[str, int], accounts: Mapping[str, str]) -> tuple[JournalLine, ...]:
    """Signed amounts per role -> debit/credit lines in role order; zeros dropped; must balance."""
    if sum(signed.values()) != 0:
        raise UnbalancedJournal(f"debits and credits differ by {sum(signed.values())}")
    return tuple(
        JournalLine(accounts[role], role, max(signed[role], 0), max(-signed[role], 0))
        for role in ROLES
        if signed.get(role, 0) != 0
    )


def journal_for(prev: Recognition | None, cur: Recognition, accounts: Mapping[str, str]) -> Journal:
    """The full journal of ``cur``'s period (what the period should hold in the ledger)."""
    return Journal(
        cur.project_ref, cur.legal_entity, cur.period, cur.currency, lines_of(movements(prev, cur), accounts)
    )


def signed_by_role(lines: Iterable[JournalLine]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in lines:
        out[line.role] = out.get(line.role, 0) + line.signed_minor
    return out


def delta(target: Journal, posted: Iterable[JournalLine], accounts: Mapping[str, str]) -> Journal | None:
    """The journal still to post for ``target``'s period, given the lines already posted (or
    planned) for that recognition period; None when nothing changed."""
    already = signed_by_role(posted)
    if sum(already.values()) != 0:
        raise UnbalancedJournal(f"the ledger's lines for {target.project_ref} {target.period} do not balance")
    wanted = signed_by_role(target.lines)
    diff = {role: wanted.get(role, 0) - already.get(role, 0) for role in ROLES}
    if not any(diff.values()):
        return None
    return Journal(
        target.project_ref, target.legal_entity, target.period, target.currency, lines_of(diff, accounts)
    )


@dataclass(frozen=True)
class Placement:
    """Where a delta journal goes: ``post`` in its own period, ``moved`` to the first open one,
    or ``park`` (closed, and the entity's policy says park, or no open period is known)."""

    outcome: Literal["post", "moved", "park"]
    posting_period: str | None  # the ERP period's external id
    recognition_period: str | None
    reason: str | None = None
    posting_month: int | None = None  # the posting period's month (None when parked)


def place(journal: Journal, periods: PeriodBook, policy: str) -> Placement:
    """The closed-period policy applied to a delta journal (dated the last day of its period)."""
    decision = periods.decide(journal.legal_entity, month_end(journal.period), RECORD_TYPE, policy)
    outcome = decision.outcome
    if outcome == "correct":  # only corrections of a posted record are booked as correcting journals
        raise ValueError(f"a delta journal cannot be a correction ({journal.period})")
    target = periods.get(decision.period) if decision.period else None
    month = month_index(target.start_date) if target else None
    return Placement(outcome, decision.period, decision.original_period, decision.reason, month)
