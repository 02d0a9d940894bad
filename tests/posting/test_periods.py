"""Closed-period policy: never post into a closed period; move or park by legal entity policy."""

from __future__ import annotations

from datetime import date

from psa_erp_sync.posting.periods import PeriodBook


def _book() -> PeriodBook:
    rows = []
    for month, closed in ((9, "T"), (10, "T"), (11, "F"), (12, "F")):
        end = date(2026, month + 1, 1) if month < 12 else date(2027, 1, 1)
        rows.append(
            {
                "externalid": f"LE-US1-2026-{month:02d}", "subsidiary": "LE-US1",
                "startdate": f"2026-{month:02d}-01", "enddate": str(date.fromordinal(end.toordinal() - 1)),
                "closed": closed, "alllocked": "F", "arlocked": "F", "aplocked": "T" if month == 11 else "F",
            }
        )  # fmt: skip
    return PeriodBook.from_rows(rows)


def test_open_period_posts_in_place() -> None:
    decision = _book().decide("LE-US1", date(2026, 11, 30), "timebill", "park")
    assert (decision.outcome, decision.period) == ("post", "LE-US1-2026-11")


def test_closed_period_moves_to_first_open_when_policy_says_so() -> None:
    decision = _book().decide("LE-US1", date(2026, 9, 15), "timebill", "post_to_first_open")
    assert (decision.outcome, decision.period, decision.original_period) == (
        "moved",
        "LE-US1-2026-11",
        "LE-US1-2026-09",
    )


def test_closed_period_parks_when_policy_says_so() -> None:
    decision = _book().decide("LE-US1", date(2026, 10, 31), "timebill", "park")
    assert (decision.outcome, decision.reason) == ("park", "PERIOD_CLOSED")


def test_ap_lock_blocks_expenses_but_not_time() -> None:
    book = _book()
    assert book.decide("LE-US1", date(2026, 11, 2), "timebill", "park").outcome == "post"
    moved = book.decide("LE-US1", date(2026, 11, 2), "expensereport", "post_to_first_open")
    assert (moved.outcome, moved.period) == ("moved", "LE-US1-2026-12")


def test_unknown_entity_or_date_parks() -> None:
    assert (
        _book().decide("LE-XX", date(2026, 11, 2), "timebill", "post_to_first_open").reason
        == "PERIOD_UNKNOWN"
    )
