"""Revenue recognition against hand-computed ASC 606 cases (the figures are worked in the
comments; docs/billing.md walks through the fixed-fee one). Pure units: no database."""

from __future__ import annotations

from datetime import date

import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.revenue import journals
from psa_erp_sync.revenue.recognition import (
    ChangeOrder,
    ContractInputs,
    Milestone,
    month_index,
    recognize,
    recognize_period,
)

M = month_index
SEP, OCT, NOV, DEC = M(date(2026, 9, 1)), M(date(2026, 10, 1)), M(date(2026, 11, 1)), M(date(2026, 12, 1))
ACCOUNTS = load_config().legal_entities.revenue_accounts.by_role()
REV, ASSET, LIAB, LOSS_X, PROV = (
    ACCOUNTS[r] for r in ("revenue", "contract_asset", "contract_liability", "loss_expense", "loss_provision")
)


def _by_period(contract: ContractInputs, through: int) -> dict[int, int]:
    return {r.period: r.period_revenue_minor for r in recognize(contract, through)}


def _journal(contract: ContractInputs, period: int) -> set[tuple[str, int, int]]:
    prev, cur = recognize_period(contract, period)
    assert cur is not None
    journal = journals.journal_for(prev, cur, ACCOUNTS)
    assert journal.debits == journal.credits
    return {(line.account, line.debit_minor, line.credit_minor) for line in journal.lines}


def test_time_and_materials_as_delivered_capped_by_the_not_to_exceed() -> None:
    tm = ContractInputs(
        "TM1",
        "LE-US1",
        "USD",
        "time_and_materials",
        220_000,
        delivered_minor={OCT: 200_000, NOV: 40_000},
    )
    # Nov delivered 40,000, but only 220,000 - 200,000 = 20,000 of the not-to-exceed is left.
    assert _by_period(tm, NOV) == {OCT: 200_000, NOV: 20_000}
    assert _journal(tm, NOV) == {(ASSET, 20_000, 0), (REV, 0, 20_000)}
    uncapped = ContractInputs("TM2", "LE-US1", "USD", "time_and_materials", None, delivered_minor={OCT: 5})
    assert _by_period(uncapped, OCT) == {OCT: 5}


FIXED_FEE = ContractInputs(
    "FF1",
    "LE-US1",
    "USD",
    "fixed_fee",
    1_000_000,
    cost_minor={SEP: 200_000, OCT: 200_000, NOV: 100_000},
    estimated_total_cost_minor={SEP: 800_000, NOV: 900_000},
)


def test_fixed_fee_cost_to_cost_over_three_periods_with_an_estimate_increase() -> None:
    rows = {r.period: r for r in recognize(FIXED_FEE, NOV)}
    # Sep: 200,000 / 800,000 = 25 % of 1,000,000.  Oct: 400,000 / 800,000 = 50 %.
    # Nov: the estimate rises to 900,000; 500,000 / 900,000 = 55.5...% -> 555,555.56 -> 555,556
    # (half-even on the cumulative). Nov earns 55,556; had EAC stayed 800,000 it would have earned
    # 125,000: the cumulative catch-up of the new estimate is -69,444, taken in Nov.
    assert [rows[m].cum_revenue_minor for m in (SEP, OCT, NOV)] == [250_000, 500_000, 555_556]
    assert [rows[m].period_revenue_minor for m in (SEP, OCT, NOV)] == [250_000, 250_000, 55_556]
    assert rows[NOV].estimated_total_cost_minor == 900_000 and rows[NOV].expected_loss_minor == 0
    unchanged = ContractInputs(
        "FF1",
        "LE-US1",
        "USD",
        "fixed_fee",
        1_000_000,
        cost_minor=dict(FIXED_FEE.cost_minor),
        estimated_total_cost_minor={SEP: 800_000},
    )
    assert rows[NOV].period_revenue_minor - _by_period(unchanged, NOV)[NOV] == -69_444
    assert _journal(FIXED_FEE, NOV) == {(ASSET, 55_556, 0), (REV, 0, 55_556)}


def test_loss_contract_recognizes_the_whole_expected_loss_at_once() -> None:
    loss = ContractInputs(
        "LOSS1",
        "LE-US1",
        "USD",
        "fixed_fee",
        100_000,
        cost_minor={SEP: 60_000, OCT: 30_000, NOV: 30_000},
        estimated_total_cost_minor={SEP: 120_000},
    )
    rows = {r.period: r for r in recognize(loss, NOV)}
    # Sep: p = 60,000 / 120,000 = 0.5 -> revenue 50,000; expected loss 120,000 - 100,000 = 20,000.
    # The margin to date already shows 50,000 - 60,000 = -10,000; the other 10,000 is provided.
    sep = rows[SEP]
    assert (sep.cum_revenue_minor, sep.expected_loss_minor, sep.loss_provision_minor) == (
        50_000,
        20_000,
        10_000,
    )
    assert _journal(loss, SEP) == {
        (ASSET, 50_000, 0),
        (REV, 0, 50_000),
        (LOSS_X, 10_000, 0),
        (PROV, 0, 10_000),
    }
    # Oct: p = 0.75 -> 75,000; provision 20,000 - (90,000 - 75,000) = 5,000: 5,000 released.
    assert rows[OCT].loss_provision_minor == 5_000
    assert _journal(loss, OCT) == {(ASSET, 25_000, 0), (REV, 0, 25_000), (PROV, 5_000, 0), (LOSS_X, 0, 5_000)}
    # Nov: done. Revenue 100,000 against cost 120,000; the provision is back to zero.
    assert (rows[NOV].cum_revenue_minor, rows[NOV].loss_provision_minor) == (100_000, 0)
    pnl = -sum(r.period_revenue_minor for r in rows.values()) + 120_000
    assert pnl == 20_000  # the whole loss, and only once


def test_mid_contract_change_order_is_a_cumulative_catch_up() -> None:
    co = ContractInputs(
        "FF2",
        "LE-US1",
        "USD",
        "fixed_fee",
        1_000_000,
        change_orders=(ChangeOrder(200_000, OCT),),
        cost_minor={SEP: 300_000, OCT: 100_000},
        estimated_total_cost_minor={SEP: 1_000_000},
    )
    rows = {r.period: r for r in recognize(co, OCT)}
    # Sep: 30 % of 1,000,000. Oct: 40 % of 1,200,000 = 480,000: 120,000 for Oct's progress plus
    # 60,000 of catch-up on Sep's 30 % at the new price.
    assert (rows[SEP].cum_revenue_minor, rows[OCT].cum_revenue_minor) == (300_000, 480_000)
    assert rows[OCT].period_revenue_minor == 180_000
    assert rows[OCT].transaction_price_minor == 1_200_000


def test_milestones_on_sign_off_only() -> None:
    ms = ContractInputs(
        "MS1",
        "LE-US1",
        "USD",
        "milestone",
        300_000,
        milestones=(
            Milestone("a", 100_000, OCT),
            Milestone("b", 100_000, None),
            Milestone("c", 100_000, DEC),
        ),
    )
    assert _by_period(ms, DEC) == {OCT: 100_000, NOV: 0, DEC: 100_000}  # "b" is done, not signed off


def test_retainer_ratable_with_a_partial_first_month() -> None:
    ret = ContractInputs(
        "RET1",
        "LE-US1",
        "USD",
        "retainer",
        1_200_000,
        retainer_start=date(2026, 1, 16),
        retainer_end=date(2027, 1, 15),
    )
    rows = recognize(ret, M(date(2027, 1, 1)))
    # Term: Jan 16/31 of a month, Feb-Dec 11 months, Jan 2027 15/31: 12 months. 100,000 a month.
    # Jan: 100,000 x 16/31 = 51,612.90 -> 51,613; Feb: cum 151,612.90 -> 151,613 (+100,000);
    # Jan 2027: 1,200,000 - 1,151,613 = 48,387.
    assert rows[0].period_revenue_minor == 51_613
    assert rows[1].period_revenue_minor == 100_000
    assert rows[-1].period_revenue_minor == 48_387
    assert sum(r.period_revenue_minor for r in rows) == 1_200_000
    assert len(rows) == 13


def test_asset_when_billed_below_recognized_liability_when_above() -> None:
    base = dict(cost_minor={SEP: 300_000}, estimated_total_cost_minor={SEP: 1_000_000})
    under = ContractInputs("A", "LE-US1", "USD", "fixed_fee", 1_000_000, billed_minor={SEP: 200_000}, **base)  # type: ignore[arg-type]
    over = ContractInputs("B", "LE-US1", "USD", "fixed_fee", 1_000_000, billed_minor={SEP: 400_000}, **base)  # type: ignore[arg-type]
    a, b = recognize(under, SEP)[0], recognize(over, SEP)[0]
    assert (a.contract_asset_minor, a.contract_liability_minor) == (100_000, 0)
    assert (b.contract_asset_minor, b.contract_liability_minor) == (0, 100_000)
    # The invoices posted receivable / contract liability 200,000 and 400,000. This journal moves
    # them to the contract's position: A's liability cleared, 100,000 unbilled; B keeps 100,000 deferred.
    assert _journal(under, SEP) == {(REV, 0, 300_000), (ASSET, 100_000, 0), (LIAB, 200_000, 0)}
    assert _journal(over, SEP) == {(REV, 0, 300_000), (LIAB, 300_000, 0)}


def test_two_contracts_are_never_netted() -> None:
    a = ContractInputs("A", "LE-US1", "USD", "milestone", 100_000, milestones=(Milestone("m", 100_000, SEP),))
    b = ContractInputs(
        "B",
        "LE-US1",
        "USD",
        "retainer",
        120_000,
        billed_minor={SEP: 120_000},
        retainer_start=date(2026, 9, 1),
        retainer_end=date(2027, 8, 31),
    )
    ra, rb = recognize(a, SEP)[0], recognize(b, SEP)[0]
    assert (ra.contract_asset_minor, rb.contract_liability_minor) == (100_000, 110_000)
    ja, jb = journals.journal_for(None, ra, ACCOUNTS), journals.journal_for(None, rb, ACCOUNTS)
    # One journal per contract: A's 100,000 unbilled and B's 110,000 deferred both stay on the books.
    assert {(x.account, x.debit_minor, x.credit_minor) for x in ja.lines} == {
        (ASSET, 100_000, 0),
        (REV, 0, 100_000),
    }
    assert {(x.account, x.debit_minor, x.credit_minor) for x in jb.lines} == {
        (LIAB, 10_000, 0),
        (REV, 0, 10_000),
    }
    invoice_b = -120_000  # receivable / contract liability, credit
    assert invoice_b + sum(x.signed_minor for x in jb.lines if x.account == LIAB) == -110_000
    assert (ja.project_ref, jb.project_ref) == ("A", "B")


def test_contract_validation_names_the_contract() -> None:
    with pytest.raises(ValueError, match="FF9"):
        ContractInputs("FF9", "LE-US1", "USD", "fixed_fee", None)
    with pytest.raises(ValueError, match="R9"):
        ContractInputs("R9", "LE-US1", "USD", "retainer", 10)
