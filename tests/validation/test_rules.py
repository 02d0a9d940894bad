"""The validation rules as pure functions: one staged Harvest payload -> one verdict."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.validation.time_expense import ProjectRef, PsaReference, judge_expense, judge_time_entry

AS_OF = datetime(2026, 11, 9, 12, tzinfo=UTC)
REF = PsaReference(
    projects={
        1: ProjectRef(1, True, "LE-US1", "USD"),
        2: ProjectRef(2, False, "LE-US1", "USD"),
        3: ProjectRef(3, True, "LE-XX9", "USD"),
        4: ProjectRef(4, True, "LE-UK1", "USD"),  # foreign-currency work: REF has no rates
        5: ProjectRef(5, True, "LE-US1", None),
    },
    users={7: True},
    task_assignments=frozenset({(1, 10), (2, 10), (3, 10), (4, 10), (5, 10)}),
)
ENTRY: dict[str, Any] = {
    "id": 101,
    "spent_date": "2026-11-02",
    "user": {"id": 7, "name": "x"},
    "client": {"id": 5, "name": "c", "currency": "USD"},
    "project": {"id": 1, "name": "p", "code": "P1"},
    "task": {"id": 10, "name": "t"},
    "hours": 7.25,
    "notes": "n",
    "is_locked": True,
    "is_closed": True,
    "is_billed": False,
    "billable": True,
    "billable_rate": 133.33,
    "cost_rate": 60.0,
    "created_at": "2026-11-02T10:00:00Z",
    "updated_at": "2026-11-03T10:00:00Z",
}


def entry(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(ENTRY)
    data.update(changes)
    return data


def judge(payload: dict[str, Any]) -> Any:
    return judge_time_entry(payload, "h" * 64, ref=REF, config=load_config(), as_of=AS_OF)


def test_a_clean_entry_becomes_a_canonical_row_with_money_in_minor_units() -> None:
    verdict = judge(entry())
    assert verdict.valid
    row = verdict.row
    assert (row["legal_entity"], row["currency"], row["bill_rate_minor"], row["amount_minor"]) == (
        "LE-US1",
        "USD",
        13333,
        96664,
    )
    assert row["approved"] is True
    assert "notes" not in row  # free text never leaves the boundary (only its hash, in the fingerprint)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"hours": "seven"}, "SCHEMA_INVALID"),
        ({"spent_date": "not a date"}, "SCHEMA_INVALID"),
        ({"user": {"id": 99, "name": "x"}}, "USER_UNKNOWN"),
        ({"project": {"id": 42, "name": "p"}}, "PROJECT_UNKNOWN"),
        ({"project": {"id": 2, "name": "p"}}, "PROJECT_INACTIVE"),
        ({"project": {"id": 3, "name": "p"}}, "LEGAL_ENTITY_UNKNOWN"),
        ({"project": {"id": 4, "name": "p"}}, "FX_RATE_MISSING"),
        ({"project": {"id": 5, "name": "p"}}, "CURRENCY_MISMATCH"),
        ({"spent_date": "2026-11-10"}, "FUTURE_DATED"),
        ({"task": {"id": 11, "name": "t"}}, "TASK_UNKNOWN"),
        ({"billable_rate": None}, "RATE_MISSING"),
    ],
)
def test_each_rule_quarantines_with_its_reason(changes: dict[str, Any], reason: str) -> None:
    verdict = judge(entry(**changes))
    assert verdict.reason_code == reason
    assert verdict.row is None
    assert "seven" not in str(verdict.detail)  # details name fields, never values of free text


def test_future_date_uses_the_legal_entitys_local_date() -> None:
    # 2026-11-10 03:00 UTC is still 2026-11-09 in New York: an entry for the 10th is in the future there.
    late_evening = datetime(2026, 11, 10, 3, tzinfo=UTC)
    verdict = judge_time_entry(
        entry(spent_date="2026-11-10"), "h", ref=REF, config=load_config(), as_of=late_evening
    )
    assert verdict.reason_code == "FUTURE_DATED"


def test_non_billable_entries_need_no_rate_and_carry_no_amount() -> None:
    verdict = judge(entry(billable=False, billable_rate=None))
    assert verdict.valid
    assert verdict.row["amount_minor"] == 0


def test_expense_rules() -> None:
    expense = {
        "id": 5,
        "spent_date": "2026-11-02",
        "user": {"id": 7, "name": "x"},
        "project": {"id": 1, "name": "p"},
        "expense_category": {"id": 3, "name": "Hotel"},
        "total_cost": 212.4,
        "billable": True,
        "is_closed": True,
        "is_locked": False,
        "is_billed": False,
        "created_at": "2026-11-02T10:00:00Z",
        "updated_at": "2026-11-02T10:00:00Z",
    }
    ok = judge_expense(expense, "h", ref=REF, config=load_config(), as_of=AS_OF)
    assert ok.valid
    assert ok.row["amount_minor"] == 21240
    negative = judge_expense(dict(expense, total_cost=-1), "h", ref=REF, config=load_config(), as_of=AS_OF)
    assert negative.reason_code == "SCHEMA_INVALID"
