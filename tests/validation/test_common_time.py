"""Validation's common case of a time entry (``time_expense._CommonTime``, issue 16): the
verdict it gives must be the one :func:`judge_staged` gives the same text (reason, detail,
canonical row with its keys in the same order), and every entry it cannot vouch for must go to
:func:`judge_staged`. Compared on boundary, hostile and generated payloads, against a reference
with invalid, unknown, inactive, foreign-currency and unassigned records, and through
``validate_run`` with the common case on and off (stored rows and quarantine items)."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from psa_erp_sync.config import load_config
from psa_erp_sync.ods import staging
from psa_erp_sync.validation import time_expense as validation
from psa_erp_sync.validation.fx import RateBook
from psa_erp_sync.validation.time_expense import ProjectRef, PsaReference
from tests.validation.test_from_json import BOUNDARY, FETCHED
from tests.validation.test_hostile import ENTRY, _raw, hostile_item, te
from tests.validation.test_rules import AS_OF, REF

#: Every way a reference check can fail, beside entries that pass (project 1, task 10, user 7).
WIDE = PsaReference(
    projects={
        **REF.projects,
        6: ProjectRef(6, True, "LE-UK1", "GBP"),  # the UK entity's own currency, if it is GBP
        8: ProjectRef(8, True, "LE-US1", "usd"),  # not a currency
        9: ProjectRef(9, True, None, "USD"),
    },
    users={7: True, 8: False},
    task_assignments=frozenset({*REF.task_assignments, (6, 10), (6, 11), (8, 10), (9, 10), (1, 11)}),
    invalid_users=frozenset({66}),
    invalid_projects=frozenset({67}),
    projects_with_invalid_assignments=frozenset({1}),
    fx_rates=RateBook.from_rows([("USD", "GBP", date(2026, 11, 1), Decimal("0.8"), "erp:currencyrate")]),
)
USERS = [7, 8, 66, 99]
PROJECTS = [1, 2, 3, 4, 5, 6, 8, 9, 67, 99]
TASKS = [10, 11, 12]
HOURS: list[Any] = [7.25, 8, 1.005, 0.004, 0.005, 24, 24.001, 25, -1, 0, 1e-9, "8", _raw("1e400")]
RATES: list[Any] = [133.33, 133.335, 0, -1, None, "120.50", " 12", 1e20, 10**30, 100, _raw("-0.0")]


def _pair(text: bytes, ref: PsaReference, fetched_at: datetime | None) -> tuple[Any, Any]:
    """(:meth:`_CommonTime.judge`, :func:`judge_staged`) of ``text``; they must agree when the
    first is not None (it then also builds the row's keys in the same order)."""
    config = load_config()
    common = validation._CommonTime(ref, config, AS_OF, "psa").judge(text, "h", fetched_at)
    staged = validation.judge_staged(
        "time_entry", text, "h", ref=ref, config=config, as_of=AS_OF, fetched_at=fetched_at
    )
    if common is not None:
        assert common == staged
        assert common.valid and common.row is not None and staged.row is not None
        assert list(common.row) == list(staged.row)
        assert _exact(common.built) == _exact(_contract_tuple(staged.row, fetched_at))
    return common, staged


def _contract_tuple(row: dict[str, Any], read_at: datetime | None) -> tuple[Any, ...]:
    """The ``COPY`` tuple the run builds of a row through the contract (``_built_by_id``), with
    ``read_at`` as its ``source_read_at`` (what ``first_of_fingerprint`` adds)."""
    row = {**row, "source_read_at": read_at}
    return validation._built_by_id("time_entry", [row])[row["source_id"]]


def _exact(values: tuple[Any, ...] | None) -> list[tuple[type, str]]:
    """Each value with its type and ``repr``: equal Decimals of other exponents, an int for a
    bool or a naive timestamp differ here (the binary ``COPY`` would send them differently)."""
    assert values is not None
    return [(type(v), repr(v)) for v in values]


def test_a_clean_entry_takes_the_common_case() -> None:
    """Not vacuous: the template, and the generated month below, mostly take the common case."""
    common, staged = _pair(msgspec.json.encode(ENTRY), REF, FETCHED)
    assert common is not None
    assert common.row["amount_minor"] == staged.row["amount_minor"] == 96664


@pytest.mark.parametrize("payload", BOUNDARY)
@pytest.mark.parametrize("fetched_at", [None, FETCHED])
def test_boundary_payloads_get_the_same_verdict(payload: dict[str, Any], fetched_at: datetime | None) -> None:
    _pair(msgspec.json.encode(payload), WIDE, fetched_at)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_any_payload_gets_the_same_verdict(data: st.DataObject) -> None:
    payload = data.draw(hostile_item(ENTRY) | st.just(ENTRY))
    _pair(msgspec.json.encode(payload), WIDE, data.draw(st.sampled_from([None, FETCHED])))


def _month(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` entries over every reference, hours, rate, date and timestamp case above; each field
    is a clean one 85 % of the time (so that both paths are taken often)."""
    rnd = random.Random(seed)

    def pick(clean: Any, cases: list[Any]) -> Any:
        return clean if rnd.random() < 0.85 else rnd.choice(cases)

    days = ["2026-11-09", "2026-11-10", "2026-10-31", "1970-01-01"]
    stamps = ["2026-11-09T13:00:01Z", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"]
    return [
        te(
            id=1000 + i,
            user={"id": pick(7, USERS), "name": "u"},
            project={"id": pick(rnd.choice([1, 6]), PROJECTS), "name": "p"},
            task={"id": pick(10, TASKS), "name": "t"},
            hours=pick(rnd.choice([7.25, 8, 1.5, 0.25]), HOURS),
            billable_rate=pick(rnd.choice([133.33, 100, 99.5]), RATES),
            billable=rnd.random() < 0.8,
            is_closed=rnd.random() < 0.5,
            spent_date=pick(rnd.choice(["2026-11-02", "2026-11-05"]), days),
            created_at=pick("2026-11-02T10:00:00Z", stamps),
            updated_at=pick("2026-11-03T10:00:00Z", stamps),
            notes=rnd.choice([None, "", "n", "é\x1f"]),
        )
        for i in range(n)
    ]


def test_a_generated_month_gets_the_same_verdicts() -> None:
    taken = 0
    for payload in _month(3000, seed=16):
        common, _ = _pair(msgspec.json.encode(payload), WIDE, FETCHED)
        taken += common is not None
    assert 300 < taken < 3000  # both paths were used


_ENDPOINTS = {"time_entry": "/v2/time_entries", "expense_entry": "/v2/expenses"}


def _validated(dsn: str, payloads: list[dict[str, Any]], kind: str) -> tuple[Any, ...]:
    """``validate_run`` of ``payloads`` of ``kind`` (the common case on or off): its counts, and
    canonical's rows and the quarantine items it left, in key order."""
    run_key = f"common-{uuid.uuid4()}"
    with psycopg.connect(dsn) as conn:
        for table in (f"canonical.{kind}", "exceptions.item"):
            conn.execute(f"DELETE FROM {table}")
        staging.stage_pages(conn, [payloads], run_key=run_key, source_system="psa", endpoint=_ENDPOINTS[kind])
        conn.commit()
        with conn.transaction():
            result = validation.validate_run(
                conn,
                kind=kind,
                run_key=run_key,
                ref=WIDE,
                config=load_config(),
                as_of=AS_OF,
                dag_run_id=f"run-common-{kind}",
                chunk=50,
            )
        rows = conn.execute(
            f"SELECT to_jsonb(t) - 'validated_at' - 'source_read_at' FROM canonical.{kind} t ORDER BY source_id"
        ).fetchall()
        items = conn.execute(
            "SELECT source_id, source_version, reason_code, detail - 'fetched_at', legal_entity, owner, status"
            " FROM exceptions.item ORDER BY source_id"
        ).fetchall()
    return result.as_dict(), rows, items


def same_run_either_way(
    dsn: str, monkeypatch: pytest.MonkeyPatch, month: Callable[..., list[dict[str, Any]]], kind: str
) -> None:
    """A run of ``month``'s payloads stores the same with the common case off and on. A second
    version of 40 records is updated later (versions updated at the same time would be ordered by
    their staging, which differs between the two runs)."""
    again = [dict(p, notes="again", updated_at="2026-11-04T10:00:00Z") for p in month(40, seed=9)]
    payloads = again + month(400, seed=9)
    monkeypatch.setattr(validation, "COMMON_CASE", False)
    before = _validated(dsn, payloads, kind)
    monkeypatch.setattr(validation, "COMMON_CASE", True)
    after = _validated(dsn, payloads, kind)
    assert after == before
    assert before[0]["valid"] > 40 and before[0]["quarantined"] > 40


def test_a_run_stores_the_same_with_and_without_the_common_case(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    same_run_either_way(pg_dsn, monkeypatch, _month, "time_entry")


def test_one_common_case_follows_each_rows_fetch_time() -> None:
    """One ``_CommonTime`` judges a run's entries: the future bound it keeps between rows must be
    that of each row's own fetch time, in value and zone (around New York's fall-back hour, where
    ``+ 1 hour`` is wall-clock arithmetic, and in UTC)."""
    new_york = ZoneInfo("America/New_York")
    text = msgspec.json.encode(te(created_at="2026-10-01T08:00:00Z", updated_at="2026-11-01T06:45:00Z"))
    fold0 = datetime(2026, 11, 1, 0, 30, tzinfo=new_york)  # 04:30Z, bound 05:30Z
    fetch_times = [
        fold0,
        datetime(2026, 11, 1, 0, 30, tzinfo=new_york),  # the same value, another object
        datetime(2026, 11, 1, 0, 30, tzinfo=new_york, fold=1),
        datetime(2026, 11, 1, 1, 30, tzinfo=new_york),  # 05:30Z, bound 02:30 EST = 07:30Z
        datetime(2026, 11, 1, 1, 30, tzinfo=new_york, fold=1),  # 06:30Z, the same bound
        datetime(2026, 11, 1, 0, 50, tzinfo=new_york),  # bound 05:50Z
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # bound 06:30Z
        datetime(2026, 11, 1, 5, 50, tzinfo=UTC),  # bound 06:50Z
        fold0,
        None,
    ]
    config = load_config()
    common = validation._CommonTime(REF, config, AS_OF, "psa")
    taken = []
    for fetched_at in fetch_times:
        verdict = common.judge(text, "h", fetched_at)
        staged = validation.judge_staged(
            "time_entry", text, "h", ref=REF, config=config, as_of=AS_OF, fetched_at=fetched_at
        )
        assert (verdict is None) == (staged.reason_code == "UPDATED_AT_IN_FUTURE"), fetched_at
        assert verdict is None or verdict == staged
        taken.append(verdict is not None)
    assert taken == [False, False, False, True, True, False, False, True, False, True]


def test_one_common_case_checks_each_user_and_task_of_a_project() -> None:
    """The project's checks are kept between entries, the user's and the task's are not."""
    config = load_config()
    common = validation._CommonTime(WIDE, config, AS_OF, "psa")
    taken = []
    for user, task in ((7, 10), (66, 10), (99, 10), (7, 12), (8, 10), (7, 10)):
        text = msgspec.json.encode(te(user={"id": user, "name": "u"}, task={"id": task, "name": "t"}))
        verdict = common.judge(text, "h", FETCHED)
        staged = validation.judge_staged(
            "time_entry", text, "h", ref=WIDE, config=config, as_of=AS_OF, fetched_at=FETCHED
        )
        assert (verdict is not None) == staged.valid, (user, task, staged)
        assert verdict is None or verdict == staged
        taken.append(verdict is not None)
    assert taken == [True, False, False, False, True, True]


def test_a_common_verdict_is_the_frozen_verdict_its_fields_make() -> None:
    """``_valid_verdict`` sets the instance's ``__dict__`` in one call: the object must be the
    ``Verdict`` its fields construct (equal, the same fields in ``vars``, frozen, replaceable), and
    its ``COPY`` tuple the row's values in the row's order with the read time last."""
    common, _ = _pair(msgspec.json.encode(ENTRY), REF, FETCHED)
    assert common is not None and common.row is not None and common.built is not None
    made = validation.Verdict(
        common.source_id, common.version_hash, common.legal_entity, None, {}, common.row, common.built
    )
    assert common == made and vars(common) == vars(made) and repr(common) == repr(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        common.row = None  # type: ignore[misc]
    assert dataclasses.replace(common, source_id="other").source_id == "other"
    assert _exact(common.built) == _exact((*common.row.values(), FETCHED))
