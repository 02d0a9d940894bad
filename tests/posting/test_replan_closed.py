"""Re-applying the period policy after the ERP answered PERIOD_CLOSED (pure: no ERP, no database)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from psa_erp_sync.config import Config, load_config
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.periods import PeriodBook
from psa_erp_sync.posting.planner import replan_closed


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config()


def _book(entity: str, october_closed: bool, november_closed: bool = False) -> PeriodBook:
    rows = []
    for month in (10, 11, 12):
        end = (date(2026, month + 1, 1) if month < 12 else date(2027, 1, 1)).toordinal() - 1
        closed = "T" if (month == 10 and october_closed) or (month == 11 and november_closed) else "F"
        rows.append(
            {
                "externalid": f"{entity}-2026-{month}",
                "subsidiary": entity,
                "startdate": f"2026-{month}-01",
                "enddate": str(date.fromordinal(end)),
                "closed": closed,
                "alllocked": closed,
                "arlocked": "F",
                "aplocked": "F",
            }
        )
    return PeriodBook.from_rows(rows)


def _refused(entity: str, action: ledger.Action = "post") -> ledger.Posting:
    key = ledger.idempotency_key("timebill", "psa", "7", "v1", action, 0)
    payload = {
        "externalId": "psa-te-7",
        "tranDate": "2026-10-20",
        "memo": f"psa:7 v:v1 key:{key[:16]}",
        "postingPeriod": {"externalId": f"{entity}-2026-10"},
        "subsidiary": {"externalId": entity},
    }
    if action == "reverse":
        payload = {"externalId": "psa-te-7", "reverses": payload}
    return ledger.Posting(
        key,
        "timebill",
        "psa",
        "7",
        "v1",
        "psa-te-7",
        action,
        "sent",
        payload,
        entity,
        f"{entity}-2026-10",
        100,
        "USD",
    )


def test_post_to_first_open_moves_the_refused_posting_under_a_new_key(config: Config) -> None:
    refused = _refused("LE-US1")
    fresh, item, decision = replan_closed(
        refused, periods=_book("LE-US1", october_closed=True), config=config, seq=1, held=None
    )
    assert (decision.outcome, fresh.state, item) == ("moved", "pending", None)
    assert fresh.payload["postingPeriod"] == {"externalId": "LE-US1-2026-11"}
    assert fresh.idempotency_key == ledger.idempotency_key("timebill", "psa", "7", "v1", "post", 1)
    assert fresh.idempotency_key != refused.idempotency_key
    assert fresh.payload["memo"] == (
        f"psa:7 v:v1 key:{fresh.idempotency_key[:16]} orig-date:2026-10-20 orig-period:LE-US1-2026-10"
    )


def test_park_policy_parks_with_an_item_for_finance(config: Config) -> None:
    fresh, item, decision = replan_closed(
        _refused("LE-UK1"), periods=_book("LE-UK1", october_closed=True), config=config, seq=1, held=None
    )
    assert (decision.outcome, fresh.state) == ("park", "parked")
    assert item is not None and (item.kind, item.reason_code) == ("parked", "PERIOD_CLOSED")
    assert "postingPeriod" not in fresh.payload


def test_periods_still_showing_the_refused_period_open_park_instead_of_repeating(config: Config) -> None:
    """The ERP refused October, but the periods read again still say October is open."""
    stale = _book("LE-US1", october_closed=False)
    fresh, item, decision = replan_closed(_refused("LE-US1"), periods=stale, config=config, seq=1, held=None)
    assert (decision.outcome, fresh.state) == ("park", "parked")
    assert item is not None
    reverse = _refused("LE-US1", "reverse")
    fresh, item, decision = replan_closed(reverse, periods=stale, config=config, seq=1, held="LE-US1-2026-10")
    assert (decision.outcome, fresh.state) == ("park", "parked")
    assert item is not None and item.detail["correction"] is True


def test_a_reversal_of_a_record_held_in_a_closed_period_is_parked(config: Config) -> None:
    fresh, item, decision = replan_closed(
        _refused("LE-US1", "reverse"),
        periods=_book("LE-US1", october_closed=True),
        config=config,
        seq=2,
        held="LE-US1-2026-10",
    )
    assert (decision.outcome, fresh.state, fresh.action) == ("park", "parked", "reverse")
    assert item is not None and item.detail["action"] == "reverse"


def _held(entity: str, *, hours: str = "1.00", amount: int = 15000, corrections: int = 0) -> ledger.Held:
    """The ERP holds psa-te-7 (1.00 h, 150.00) in October, plus ``corrections`` journals."""
    base = {
        "externalId": "psa-te-7",
        "tranDate": "2026-10-20",
        "hours": "1.00",
        "postingPeriod": {"externalId": f"{entity}-2026-10"},
        "subsidiary": {"externalId": entity},
        "currency": {"refName": "USD"},
    }
    return ledger.Held("psa-te-7", base, True, corrections, Decimal(hours), amount)


def test_an_adjust_refused_in_the_held_closed_period_becomes_a_correcting_journal(config: Config) -> None:
    refused = _refused("LE-US1", "adjust")
    refused = ledger.Posting(
        **{**refused.__dict__, "payload": {**refused.payload, "hours": "2.75"}, "amount_minor": 41250}
    )
    fresh, item, decision = replan_closed(
        refused,
        periods=_book("LE-US1", october_closed=True),
        config=config,
        seq=3,
        held="LE-US1-2026-10",
        entry=_held("LE-US1"),
    )
    assert (decision.outcome, fresh.state, item) == ("correct", "pending", None)
    assert (fresh.erp_type, fresh.external_id, fresh.corrects) == ("journalentry", "psa-te-7-c3", "psa-te-7")
    assert fresh.idempotency_key == ledger.idempotency_key("timebill", "psa", "7", "v1", "adjust", 3)
    assert (fresh.amount_minor, fresh.period) == (26250, "LE-US1-2026-11")
    assert fresh.payload["amount"] == "262.50" and fresh.payload["custbody_psa_hours"] == "1.75"
    assert fresh.payload["postingPeriod"] == {"externalId": "LE-US1-2026-11"}
    assert fresh.payload["tranDate"] == "2026-11-01"
    assert "corrects:psa-te-7 orig-date:2026-10-20 orig-period:LE-US1-2026-10" in fresh.payload["memo"]
    assert f"key:{fresh.idempotency_key[:16]}" in fresh.payload["memo"]


def test_a_reversal_refused_in_the_held_closed_period_becomes_a_reversing_journal(config: Config) -> None:
    fresh, _, decision = replan_closed(
        _refused("LE-US1", "reverse"),
        periods=_book("LE-US1", october_closed=True),
        config=config,
        seq=2,
        held="LE-US1-2026-10",
        entry=_held("LE-US1", hours="3.00", amount=45000, corrections=1),
    )
    assert (decision.outcome, fresh.action, fresh.deletes) == ("correct", "reverse", False)
    assert (fresh.payload["amount"], fresh.payload["custbody_psa_hours"]) == ("-450.00", "-3.00")  # the net


def test_a_refused_correcting_journal_moves_on_with_the_same_difference(config: Config) -> None:
    entry = _held("LE-US1")
    first, _, _ = replan_closed(
        ledger.Posting(
            **{**_refused("LE-US1", "adjust").__dict__, "payload": {"hours": "2.75"}, "amount_minor": 41250}
        ),
        periods=_book("LE-US1", october_closed=True),
        config=config,
        seq=3,
        held="LE-US1-2026-10",
        entry=entry,
    )
    sent = ledger.Posting(**{**first.__dict__, "state": "sent"})
    # November closed while the journal was in flight: December, same difference, new key and id.
    fresh, item, decision = replan_closed(
        sent,
        periods=_book("LE-US1", october_closed=True, november_closed=True),
        config=config,
        seq=4,
        held=None,
        entry=entry,
    )
    assert (decision.outcome, fresh.period, item) == ("correct", "LE-US1-2026-12", None)
    assert (fresh.external_id, fresh.amount_minor, fresh.payload["custbody_psa_hours"]) == (
        "psa-te-7-c4",
        26250,
        "1.75",
    )
    assert fresh.idempotency_key != sent.idempotency_key
    # The periods read again still show November open (the ERP disagrees): parked, not resent.
    parked, item, decision = replan_closed(
        sent, periods=_book("LE-US1", october_closed=True), config=config, seq=4, held=None, entry=entry
    )
    assert (decision.outcome, parked.state, parked.corrects) == ("park", "parked", "psa-te-7")
    assert item is not None and item.detail["correction"] is True


def test_the_park_policy_still_parks_a_refused_correction(config: Config) -> None:
    fresh, item, decision = replan_closed(
        _refused("LE-UK1", "adjust"),
        periods=_book("LE-UK1", october_closed=True),
        config=config,
        seq=2,
        held="LE-UK1-2026-10",
        entry=_held("LE-UK1"),
    )
    assert (decision.outcome, fresh.state, fresh.corrects) == ("park", "parked", None)
    assert item is not None and item.detail["correction"] is True
