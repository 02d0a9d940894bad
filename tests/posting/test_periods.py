"""Closed-period policy: never post into a closed period; move or park by legal entity policy."""

from __future__ import annotations

import threading
from datetime import date
from typing import Any

import pytest

from psa_erp_sync.posting.periods import PendingPeriodBook, PeriodBook


def _rows() -> list[dict[str, Any]]:
    rows = []
    for month, closed in ((9, "T"), (10, "T"), (11, "F"), (12, "F")):
        end = date(2026, month + 1, 1) if month < 12 else date(2027, 1, 1)
        rows.append(
            {
                "externalid": f"LE-US1-2026-{month:02d}",
                "subsidiary": "LE-US1",
                "startdate": f"2026-{month:02d}-01",
                "enddate": str(date.fromordinal(end.toordinal() - 1)),
                "closed": closed,
                "alllocked": "F",
                "arlocked": "F",
                "aplocked": "T" if month == 11 else "F",
            }
        )
    return rows


def _book() -> PeriodBook:
    return PeriodBook.from_rows(_rows())


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


def _with_summaries(closed_months: tuple[int, ...]) -> PeriodBook:
    """A year, its Q4 (both open) and months 10-12 (some closed): summaries sort first by start date."""
    rows = [
        {
            "externalid": "LE-US1-FY2026",
            "subsidiary": "LE-US1",
            "startdate": "2026-01-01",
            "enddate": "2026-12-31",
            "closed": "F",
            "alllocked": "F",
            "arlocked": "F",
            "aplocked": "F",
            "isquarter": "F",
            "isyear": "T",
        },
        {
            "externalid": "LE-US1-2026-Q4",
            "subsidiary": "LE-US1",
            "startdate": "2026-10-01",
            "enddate": "2026-12-31",
            "closed": "F",
            "alllocked": "F",
            "arlocked": "F",
            "aplocked": "F",
            "isquarter": "T",
            "isyear": None,
        },
    ]
    for month in (10, 11, 12):
        end = date(2026, month + 1, 1) if month < 12 else date(2027, 1, 1)
        closed = "T" if month in closed_months else "F"
        rows.append(
            {
                "externalid": f"LE-US1-2026-{month:02d}",
                "subsidiary": "LE-US1",
                "startdate": f"2026-{month:02d}-01",
                "enddate": str(date.fromordinal(end.toordinal() - 1)),
                "closed": closed,
                "alllocked": "F",
                "arlocked": "F",
                "aplocked": "F",
            }
        )
    return PeriodBook.from_rows(rows)


def test_summary_periods_are_never_a_posting_period() -> None:
    book = _with_summaries(closed_months=())
    assert book.decide("LE-US1", date(2026, 10, 1), "timebill", "park").period == "LE-US1-2026-10"
    # Closed month: the first open period after it is the next month, not the open quarter or year.
    book = _with_summaries(closed_months=(10,))
    moved = book.decide("LE-US1", date(2026, 10, 1), "timebill", "post_to_first_open")
    assert (moved.outcome, moved.period, moved.original_period) == (
        "moved",
        "LE-US1-2026-11",
        "LE-US1-2026-10",
    )
    parked = book.decide("LE-US1", date(2026, 10, 1), "timebill", "park")
    assert (parked.outcome, parked.original_period) == ("park", "LE-US1-2026-10")
    # Every month closed: the open year does not take the posting either.
    book = _with_summaries(closed_months=(10, 11, 12))
    assert book.decide("LE-US1", date(2026, 12, 31), "timebill", "post_to_first_open").outcome == "park"
    assert book.get("LE-US1-FY2026") is not None  # still known by id


def test_a_correction_of_a_record_held_in_a_closed_period_is_parked_under_the_park_policy() -> None:
    book = _book()  # September and October closed
    decision = book.decide_correction("LE-US1-2026-10", "timebill", "park")
    assert decision is not None
    assert (decision.outcome, decision.original_period, decision.reason) == (
        "park",
        "LE-US1-2026-10",
        "PERIOD_CLOSED",
    )
    assert book.decide_correction("LE-US1-2026-11", "timebill", "park") is None  # open: goes ahead
    assert book.decide_correction("LE-US1-2026-11", "expensereport", "park") is not None  # AP-locked
    assert book.decide_correction(None, "timebill", "park") is None  # nothing held


def test_a_correction_of_a_record_held_in_a_closed_period_is_a_correcting_record_in_the_first_open_one() -> (
    None
):
    book = _book()  # September and October closed, November AP-locked
    decision = book.decide_correction("LE-US1-2026-10", "timebill", "post_to_first_open")
    assert decision is not None
    assert (decision.outcome, decision.period, decision.original_period) == (
        "correct",
        "LE-US1-2026-11",
        "LE-US1-2026-10",
    )
    expense = book.decide_correction("LE-US1-2026-09", "expensereport", "post_to_first_open")
    assert expense is not None and (expense.outcome, expense.period) == ("correct", "LE-US1-2026-12")
    # Held in an open period, no correction yet: an ordinary upsert or DELETE.
    assert book.decide_correction("LE-US1-2026-11", "timebill", "post_to_first_open") is None
    # Once the entry has correcting records, every change is one (here into its own, open period).
    again = book.decide_correction("LE-US1-2026-11", "timebill", "post_to_first_open", corrected=True)
    assert again is not None and (again.outcome, again.period) == ("correct", "LE-US1-2026-11")


def test_a_correction_with_no_open_period_after_it_is_parked() -> None:
    summaries = _with_summaries(closed_months=(10,)).decide_correction(
        "LE-US1-2026-10", "timebill", "post_to_first_open"
    )
    assert summaries is not None and summaries.period == "LE-US1-2026-11"  # never the open quarter or year
    book = _with_summaries(closed_months=(10, 11, 12))
    decision = book.decide_correction("LE-US1-2026-10", "timebill", "post_to_first_open")
    assert decision is not None and (decision.outcome, decision.reason) == ("park", "PERIOD_CLOSED")
    unknown = book.decide_correction("LE-US1-2031-01", "timebill", "post_to_first_open", corrected=True)
    assert unknown is not None and unknown.outcome == "park"  # a period nobody knows: finance decides


def test_periods_read_in_a_thread_answer_as_the_book_once_read() -> None:
    released = threading.Event()

    def read() -> list[dict[str, Any]]:
        released.wait(5)
        return _rows()

    pending = PendingPeriodBook(read).start()
    answers: list[Any] = []
    looking = threading.Thread(
        target=lambda: answers.append(
            pending.decide("LE-US1", date(2026, 9, 15), "timebill", "post_to_first_open")
        )
    )
    looking.start()
    looking.join(0.2)
    assert looking.is_alive() and not answers  # the first lookup waits for the read
    released.set()
    looking.join(5)
    assert answers == [_book().decide("LE-US1", date(2026, 9, 15), "timebill", "post_to_first_open")]
    assert pending.wait() is pending
    assert pending.get("LE-US1-2026-11") == _book().get("LE-US1-2026-11")
    assert pending.decide_correction("LE-US1-2026-10", "timebill", "park") == _book().decide_correction(
        "LE-US1-2026-10", "timebill", "park"
    )


def test_a_failed_periods_read_is_raised_by_wait_and_by_every_lookup() -> None:
    def read() -> list[dict[str, Any]]:
        raise ConnectionError("ERP down")

    pending = PendingPeriodBook(read).start()
    with pytest.raises(ConnectionError, match="ERP down"):
        pending.wait()
    with pytest.raises(ConnectionError, match="ERP down"):
        pending.containing("LE-US1", date(2026, 11, 2))
    with pytest.raises(AttributeError):
        pending.no_such_attribute  # noqa: B018 (only the read's tables wait for it)
