"""The planner's common path with fewer calls per record (branch perf-post9): the posting built
without the frozen dataclass's ``__init__`` (:func:`planner._new_posting`), the external ids
without ``str.format``'s parse per call (:func:`config.id_format`), a period decision per book,
entity, day and policy (:meth:`planner._Planning.decide`); each the same value as before.

The last test plans on real PostgreSQL (moved, parked, foreign-currency and unrouted records among
them) and holds every posting the common path built to the dataclass built the usual way.
"""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import date
from decimal import Decimal

import psycopg
import pytest

from psa_erp_sync import config
from psa_erp_sync.config import load_config
from psa_erp_sync.posting import ledger, planner
from psa_erp_sync.posting.periods import PeriodBook
from tests.posting.test_planner_pipeline import _entries, _periods

FIELDS = [f.name for f in fields(ledger.Posting)]


@pytest.mark.parametrize(
    "template", ["psa-te-{id}", "{id}", "x{id}y", "a{{b}}{id}", "{id:>8}", "p-{id}-{id}", "{id!r}", "fixed"]
)
@pytest.mark.parametrize("value", ["0042", "é-7", "", 17])
def test_id_format_is_str_format(template: str, value: str) -> None:
    assert config.id_format(template)(value) == template.format(id=value)


def _values(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "idempotency_key": "k" * 40,
        "record_type": "timebill",
        "source_system": "psa",
        "source_id": "0001",
        "source_version": "v" * 64,
        "external_id": "psa-te-0001",
        "action": "post",
        "state": "pending",
        "payload": {"externalId": "psa-te-0001"},
        "legal_entity": "LE-US1",
        "period": "LE-US1-2026-11",
        "amount_minor": 18750,
        "currency": "USD",
        "attempts": 0,
        "corrects": None,
        "functional_amount_minor": 18750,
        "functional_currency": "USD",
        "fx_rate": Decimal(1),
        "target_erp": "netsuite",
        "erp_account": None,
        "route_version": 3,
        "shadow": False,
    }
    values.update(changes)
    assert list(values) == FIELDS
    return values


def test_new_posting_equals_the_dataclass() -> None:
    fast = planner._new_posting(_values())
    usual = ledger.Posting(**_values())  # type: ignore[arg-type]
    assert fast == usual and repr(fast) == repr(usual)
    assert vars(fast) == vars(usual) and list(vars(fast)) == FIELDS
    moved = replace(fast, state="parked")  # through the dataclass's __init__
    assert moved == ledger.Posting(**_values(state="parked"))  # type: ignore[arg-type]
    with pytest.raises(AttributeError):  # still frozen
        fast.state = "sent"  # type: ignore[misc]


def test_a_decision_is_remembered_per_book_entity_day_and_policy() -> None:
    calls: list[tuple[str, date]] = []

    class Counting(PeriodBook):
        def decide(self, legal_entity: str, day: date, record_type: str, policy: str):  # type: ignore[no-untyped-def]
            calls.append((legal_entity, day))
            return super().decide(legal_entity, day, record_type, policy)

    book = Counting(_periods()._by_id.values())
    pl = planner._Planning("timebill", load_config(), book, planner.Plan("timebill"), None)  # type: ignore[arg-type]
    first = pl.decide(book, "LE-US1", date(2026, 11, 3), "park")
    assert pl.decide(book, "LE-US1", date(2026, 11, 3), "park") is first
    assert first == book.decide("LE-US1", date(2026, 11, 3), "timebill", "park")
    pl.decide(book, "LE-US1", date(2026, 11, 4), "park")
    pl.decide(book, "LE-US1", date(2026, 11, 3), "post_to_first_open")
    other = Counting(_periods()._by_id.values())
    pl.decide(other, "LE-US1", date(2026, 11, 3), "park")
    assert len(calls) == 5  # 4 distinct keys + the direct call above


@pytest.mark.integration
def test_planned_postings_are_the_dataclass_built_the_usual_way(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entries(conn, 40)
        # Out of the periods (PERIOD_UNKNOWN: parked) and of the routes (NO_ERP_ROUTE), beside the rest.
        conn.execute(
            "UPDATE canonical.time_entry SET spent_date = DATE '2026-12-02' WHERE source_id = '0005'"
        )
        conn.execute("UPDATE canonical.time_entry SET legal_entity = 'LE-NOPE' WHERE source_id = '0007'")
        got: list[ledger.Posting] = []
        planned = planner.plan(
            conn,
            record_type="timebill",
            config=load_config(),
            periods=_periods(),
            dag_run_id="fast-paths",
            chunk=16,
            on_chunk=got.extend,
        )
        stored = ledger.in_state(conn, "timebill", ["pending", "parked"])
    assert planned.planned["post"] == 40 and planned.parked >= 2
    by_key = {p.idempotency_key: p for p in stored}
    assert {p.idempotency_key for p in got} <= set(by_key)
    for posting in got:
        assert list(vars(posting)) == FIELDS
        rebuilt = ledger.Posting(**vars(posting))
        assert rebuilt == posting and repr(rebuilt) == repr(posting)
    assert any(p.fx_rate != 1 for p in got)  # the GBP entries' functional columns
    assert {p.state for p in stored} == {"pending", "parked"}


class _Column:
    def __init__(self, name: str) -> None:
        self.name = name


class _Cursor:
    def __init__(self, names: list[str]) -> None:
        self.description = [_Column(n) for n in names]


def test_a_candidate_without_ledger_rows_is_the_row_column_by_column() -> None:
    columns = ("source_id", "hours")
    ledger_names = ["source_system", "source_id", "n", "last_state", "done_payload", "corrections"]
    make = planner._candidate_row(columns)(_Cursor([*ledger_names, "desired", *columns]))

    def usual(values: tuple[object, ...]) -> dict[str, object]:
        cand = dict(zip(ledger_names, values[:6], strict=True))
        cand["desired"] = dict(zip(columns, values[7:], strict=True)) if values[6] else None
        return cand

    rows = [
        ("psa", "0001", 0, None, None, None, True, "0001", Decimal("1.25")),  # a first post: the copy
        ("psa", "0002", 0, None, None, 0, True, "0002", Decimal("2.50")),  # a column not NULL: zipped
        ("psa", "0003", 2, "confirmed", {"hours": "1.00"}, 0, True, "0003", Decimal("1.00")),
        ("psa", "0004", 1, "confirmed", {"a": 1}, None, False, None, None),  # a reversal
    ]
    built = [make(r) for r in rows]
    assert built == [usual(r) for r in rows]
    assert [list(c) for c in built] == [list(usual(r)) for r in rows]  # the same keys in the same order
    assert built[0] is not make(rows[0])  # a copy per row, never the template itself
    built[0]["last_state"] = "x"
    assert make(rows[0])["last_state"] is None
