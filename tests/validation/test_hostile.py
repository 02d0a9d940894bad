"""One poison record never stops a run (issue 13 items 2-4): range checks with their own reason
codes, hours rounded before any amount, future timestamps quarantined, and a Hypothesis run that
stages hostile PSA payloads mixed with good ones through the real staging and validation."""

from __future__ import annotations

import copy
import random
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psa_erp_sync import money
from psa_erp_sync.config import load_config
from psa_erp_sync.ods import staging
from psa_erp_sync.validation import time_expense as validation
from psa_erp_sync.validation.time_expense import judge_expense, judge_time_entry
from tests.validation.helpers import stage_and_validate_time_entries, validate_time_entries
from tests.validation.test_rules import AS_OF, ENTRY, REF

EXPENSE: dict[str, Any] = {
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
FETCHED = datetime(2026, 11, 9, 12, tzinfo=UTC)
TABLES = "staging.raw_record, staging.extract_run, canonical.time_entry, canonical.expense_entry, exceptions.item, audit.change"


def _raw(text: str) -> msgspec.Raw:
    """A JSON number exactly as written (1e400 cannot be a Python float)."""
    return msgspec.Raw(text.encode())


def te(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(ENTRY)
    data.update(changes)
    return data


def judge_te(payload: dict[str, Any], fetched_at: datetime | None = None) -> Any:
    return judge_time_entry(payload, "h", ref=REF, config=load_config(), as_of=AS_OF, fetched_at=fetched_at)


def judge_ex(payload: dict[str, Any]) -> Any:
    return judge_expense(payload, "h", ref=REF, config=load_config(), as_of=AS_OF)


def _decoded(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as validation reads it back from staging (JSON round trip)."""
    decoded: dict[str, Any] = validation._json_loads(msgspec.json.encode(payload))
    return decoded


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"hours": -1}, "HOURS_INVALID"),
        ({"hours": 24.01}, "HOURS_INVALID"),
        ({"hours": 10**7}, "HOURS_INVALID"),
        ({"hours": _raw("1" + "0" * 400)}, "HOURS_INVALID"),  # 1e400 as PostgreSQL gives it back
        ({"billable_rate": -0.01}, "RATE_INVALID"),
        ({"billable_rate": 10**30}, "AMOUNT_OUT_OF_RANGE"),
        ({"billable_rate": "1e400"}, "AMOUNT_OUT_OF_RANGE"),
        ({"billable_rate": 92233720368547758.07, "hours": 24}, "AMOUNT_OUT_OF_RANGE"),
        ({"id": 2**63}, "ID_OUT_OF_RANGE"),
        ({"id": 0}, "ID_OUT_OF_RANGE"),
        ({"id": -5}, "ID_OUT_OF_RANGE"),
        ({"project": {"id": 2**64, "name": "p"}}, "ID_OUT_OF_RANGE"),
        ({"user": {"id": -(2**70)}}, "ID_OUT_OF_RANGE"),
        ({"updated_at": "yesterday"}, "TIMESTAMP_INVALID"),
        ({"updated_at": "2026-11-03T10:00:00"}, "TIMESTAMP_INVALID"),  # no zone
        ({"updated_at": None}, "TIMESTAMP_INVALID"),
        ({"updated_at": 1762164000}, "TIMESTAMP_INVALID"),
        ({"updated_at": "0001-01-01T00:00:00+14:00"}, "TIMESTAMP_INVALID"),
        ({"created_at": "9999-12-31T23:59:59-23:59"}, "TIMESTAMP_INVALID"),
    ],
)
def test_each_poison_time_entry_gets_its_own_reason(changes: dict[str, Any], reason: str) -> None:
    verdict = judge_te(_decoded(te(**changes)))
    assert verdict.reason_code == reason, verdict
    assert verdict.row is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"total_cost": 10**30}, "AMOUNT_OUT_OF_RANGE"),
        ({"total_cost": "9e999999"}, "AMOUNT_OUT_OF_RANGE"),
        ({"id": 2**63}, "ID_OUT_OF_RANGE"),
        ({"expense_category": {"id": 2**63, "name": "x"}}, "ID_OUT_OF_RANGE"),
        ({"updated_at": "2026-02-30T10:00:00Z"}, "TIMESTAMP_INVALID"),
    ],
)
def test_each_poison_expense_gets_its_own_reason(changes: dict[str, Any], reason: str) -> None:
    verdict = judge_ex(_decoded(dict(EXPENSE, **changes)))
    assert verdict.reason_code == reason, verdict


def test_an_updated_at_in_the_future_of_its_fetch_is_quarantined() -> None:
    future = te(updated_at="2099-01-01T00:00:00Z")
    verdict = judge_te(future, fetched_at=FETCHED)
    assert verdict.reason_code == "UPDATED_AT_IN_FUTURE"
    assert verdict.detail["updated_at"].startswith("2099-01-01")
    # clock skew within the tolerance is accepted
    assert judge_te(te(updated_at="2026-11-09T12:30:00Z"), fetched_at=FETCHED).valid


@pytest.mark.parametrize(
    ("hours", "canonical_hours", "amount_minor"),
    [
        (_raw("1.005"), Decimal("1.01"), 10100),  # the case: the ERP gets 1.01 h
        (_raw("1.0049"), Decimal("1.00"), 10000),
        (_raw("7.125"), Decimal("7.13"), 71300),
        (_raw("0.3333"), Decimal("0.33"), 3300),
        (7.25, Decimal("7.25"), 72500),
    ],
)
def test_hours_are_rounded_before_the_amount_is_computed(
    clean_ods: str, hours: Any, canonical_hours: Decimal, amount_minor: int
) -> None:
    """canonical.hours x rate must be the amount: the ERP multiplies the hours it receives (the
    canonical ones) by the rate, and reconcile_erp compares that with the ledger's amount."""
    payload = te(id=501, hours=hours, billable_rate=100.0)
    with psycopg.connect(clean_ods) as conn:
        result = stage_and_validate_time_entries(conn, [payload], run_key="r-hours", dag_run_id="run-hours")
        row = conn.execute(
            "SELECT hours, bill_rate_minor, amount_minor, currency FROM canonical.time_entry"
        ).fetchone()
    assert result.valid == 1, result.as_dict()
    assert row is not None
    stored_hours, rate_minor, stored_amount, currency = row
    assert stored_hours == canonical_hours
    assert stored_amount == amount_minor
    # what the ERP read-back computes from what it received
    assert stored_amount == money.line_amount_minor(
        stored_hours, money.from_minor(rate_minor, currency), currency
    )


def test_a_rate_with_more_places_than_the_currency_is_priced_as_the_erp_receives_it() -> None:
    verdict = judge_te(te(hours=3, billable_rate=133.335))
    row = verdict.row
    assert row["bill_rate_minor"] == 13334  # half-even: 133.335 -> 133.34
    assert row["amount_minor"] == money.line_amount_minor(Decimal(3), Decimal("133.34"), "USD")


# --------------------------------------------------------------------------- Hypothesis
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["1e400", "-1e400", "1e-400", "123456789012345678901234567890.5", "1.005", "-0"]).map(
        _raw
    )
    | st.sampled_from(["2099-01-01T00:00:00Z", "2026-11-03T10:00:00", "0001-01-01T00:00:00Z", "2026-13-45"])
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
HOSTILE_IDS = (
    st.integers(min_value=-(2**80), max_value=2**80).filter(lambda i: not 10**6 <= i < 10**6 + 100)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
    | st.just(_raw("1e400"))
)


@st.composite
def hostile_payload(draw: st.DrawFn, template: dict[str, Any]) -> dict[str, Any]:
    if draw(st.integers(0, 4)) == 0:  # any object at all
        payload = draw(st.dictionaries(st.text(max_size=10), JSON, max_size=6))
    else:  # the template with some fields replaced or removed
        payload = copy.deepcopy(template)
        for name in draw(st.lists(st.sampled_from(sorted(template)), min_size=1, max_size=4, unique=True)):
            if draw(st.booleans()):
                payload[name] = draw(JSON)
            else:
                payload.pop(name)
    choice = draw(st.integers(0, 9))
    if choice == 0:
        payload.pop("id", None)  # no id at all
    elif choice == 1:
        payload["id"] = None
    else:
        payload["id"] = draw(HOSTILE_IDS)
    return payload


def hostile_item(template: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Mostly payloads shaped like the template; now and then not even an object."""
    return st.one_of(hostile_payload(template), hostile_payload(template), hostile_payload(template), JSON)


def _stage_and_validate(dsn: str, kind: validation.Kind, items: list[Any]) -> tuple[Any, Any]:
    run_key = f"hyp-{uuid.uuid4()}"
    with psycopg.connect(dsn) as conn:
        for table in TABLES.split(", "):  # small tables: DELETE is much faster than TRUNCATE
            conn.execute(f"DELETE FROM {table}")
        pages = [items[i : i + 3] for i in range(0, len(items), 3)]
        staged = staging.stage_pages(
            conn, pages, run_key=run_key, source_system="psa", endpoint=validation.ENDPOINTS[kind]
        )
        conn.commit()
        with conn.transaction():
            result = validation.validate_run(
                conn,
                kind=kind,
                run_key=run_key,
                ref=REF,
                config=load_config(),
                as_of=AS_OF,
                dag_run_id="run-hyp",
                chunk=4,
            )
            result.check()
    return staged, result


def _good(kind: validation.Kind, n: int) -> list[dict[str, Any]]:
    template = ENTRY if kind == "time_entry" else EXPENSE
    return [dict(copy.deepcopy(template), id=10**6 + i, notes=f"good {i} 7f3a9c") for i in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["time_entry", "expense_entry"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_payloads_never_stop_a_run(pg_dsn: str, kind: validation.Kind, data: st.DataObject) -> None:
    template = ENTRY if kind == "time_entry" else EXPENSE
    good = _good(kind, data.draw(st.integers(1, 4)))
    hostile = data.draw(st.lists(hostile_item(template), min_size=1, max_size=8))
    items = good + hostile
    random.Random(data.draw(st.integers(0, 2**16))).shuffle(items)

    staged, result = _stage_and_validate(pg_dsn, kind, items)

    assert staged.extracted == staged.staged == len(items)
    assert result.staged_versions + staged.duplicates_in_extract == staged.staged
    assert result.staged_versions == result.valid + result.quarantined
    assert set(result.by_reason) <= set(validation.REASON_CODES)
    with psycopg.connect(pg_dsn) as conn:
        canonical = {
            sid: version
            for sid, version in conn.execute(
                f"SELECT source_id, version_hash FROM {validation.TABLES[kind]} WHERE NOT is_deleted"
            )
        }
        hashes = dict(
            conn.execute(
                "SELECT source_id, payload_hash FROM staging.raw_record WHERE source_id = ANY(%s)",
                ([str(g["id"]) for g in good],),
            ).fetchall()
        )
        open_items = conn.execute(
            "SELECT count(DISTINCT source_id) FROM exceptions.item WHERE status = 'open'"
        ).fetchone()
    for item in good:
        sid = str(item["id"])
        assert canonical.get(sid) == hashes[sid], f"good record {sid} is not canonical"
    assert open_items is not None and open_items[0] <= result.quarantined


def test_one_poison_record_of_each_kind_in_one_run(clean_ods: str) -> None:
    """The issue's list, all in one batch with good records: the run completes, each is quarantined."""
    poison = [
        te(id=1, hours=-1),
        te(id=2, hours=10**7),
        te(id=3, billable_rate=-3),
        te(id=4, billable_rate=10**30),
        te(id=2**63),
        te(id=6, updated_at="not a time"),
        te(id=7, hours=_raw("1e400")),
    ]
    good = _good("time_entry", 3)
    staged, result = _stage_and_validate(clean_ods, "time_entry", poison + good)
    assert (staged.staged, result.valid, result.quarantined) == (10, 3, 7)
    assert result.by_reason == {
        "HOURS_INVALID": 3,
        "RATE_INVALID": 1,
        "AMOUNT_OUT_OF_RANGE": 1,
        "ID_OUT_OF_RANGE": 1,
        "TIMESTAMP_INVALID": 1,
    }
    with psycopg.connect(clean_ods) as conn:
        reasons = dict(
            conn.execute(
                "SELECT source_id, reason_code FROM exceptions.item WHERE status = 'open'"
            ).fetchall()
        )
    assert reasons[str(2**63)] == "ID_OUT_OF_RANGE"
    assert reasons["6"] == "TIMESTAMP_INVALID"


def test_every_time_expense_reason_code_has_an_owner_and_a_documented_fix() -> None:
    config = load_config()
    documented = set(config.authority.reason_codes) & set(config.ownership.reason_codes)
    assert set(validation.REASON_CODES) <= documented, set(validation.REASON_CODES) - documented
    assert all(config.ownership.owner_for("time_expense", le) for le in (None, "LE-US1"))


def test_a_sweep_survives_a_quarantined_record_whose_date_is_not_a_date(clean_ods: str) -> None:
    """The sweep's clean-up of vanished quarantine items reads staged spent dates: never by a cast
    that a hostile value fails."""
    items = [*_good("time_entry", 2), te(id=77, spent_date="2026-13-45"), te(id=78, spent_date=20261102)]
    with psycopg.connect(clean_ods) as conn:
        result = staging.stage_pages(
            conn, [items], run_key="sweep-1", source_system="psa", endpoint="/v2/time_entries"
        )
        staging.record_extract_run(
            conn,
            result,
            source_system="psa",
            endpoint="/v2/time_entries",
            mode="sweep",
            window_from=None,
            window_to=AS_OF,
            sweep_from=date(2026, 11, 1),
        )
        conn.commit()
        verdicts = validate_time_entries(conn, run_key="sweep-1", dag_run_id="run-sweep")
    assert (verdicts.valid, verdicts.quarantined) == (2, 2)
    assert verdicts.by_reason == {"SCHEMA_INVALID": 2}


# ----------------------------------------------------------------- hostile reference payloads
GOOD_PROJECT, GOOD_USER, GOOD_TASK, GOOD_CATEGORY = 10**6 + 50, 10**6 + 51, 10**6 + 52, 10**6 + 53
DEPENDENT_PROJECTS = range(500, 506)  # hostile projects that entries refer to
REFERENCE_TEMPLATES: dict[str, dict[str, Any]] = {
    "/v2/projects": {
        "id": GOOD_PROJECT,
        "name": "p",
        "code": "P1",
        "is_active": True,
        "is_billable": True,
        "legal_entity": "LE-US1",
        "currency": "USD",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-02T00:00:00Z",
    },
    "/v2/users": {
        "id": GOOD_USER,
        "first_name": "a",
        "last_name": "b",
        "is_active": True,
        "is_contractor": False,
    },
    "/v2/task_assignments": {
        "id": GOOD_TASK + 1000,
        "project": {"id": GOOD_PROJECT, "name": "p"},
        "task": {"id": GOOD_TASK, "name": "t"},
        "is_active": True,
    },
    "/v2/expense_categories": {"id": GOOD_CATEGORY, "name": "Hotel"},
}


def _entry_on(project_id: int, n: int) -> dict[str, Any]:
    return te(
        id=2 * 10**6 + n,
        project={"id": project_id, "name": "p"},
        user={"id": GOOD_USER, "name": "u"},
        task={"id": GOOD_TASK, "name": "t"},
        notes=f"entry {n} 5c1e",
    )


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_reference_payloads_never_stop_a_run(pg_dsn: str, data: st.DataObject) -> None:
    """Hostile projects, users, task assignments and expense categories mixed with good ones: the
    run completes; every malformed reference record has its REFERENCE_INVALID item; an entry on a
    malformed project is quarantined REFERENCE_INVALID; entries on the good references are canonical."""
    reference: dict[str, list[Any]] = {}
    for endpoint, template in REFERENCE_TEMPLATES.items():
        hostile = data.draw(st.lists(hostile_item(template), max_size=4), label=endpoint)
        reference[endpoint] = [copy.deepcopy(template), *hostile]
    # some hostile projects under ids that entries refer to
    dependent = data.draw(st.lists(hostile_payload(REFERENCE_TEMPLATES["/v2/projects"]), max_size=3))
    for project_id, payload in zip(DEPENDENT_PROJECTS, dependent, strict=False):
        payload["id"] = project_id
        reference["/v2/projects"].append(payload)
    entries = [_entry_on(GOOD_PROJECT, i) for i in range(2)]
    entries += [_entry_on(pid, 10 + i) for i, pid in enumerate(DEPENDENT_PROJECTS[: len(dependent)])]
    with psycopg.connect(pg_dsn) as conn:
        for table in TABLES.split(", "):
            conn.execute(f"DELETE FROM {table}")
        keys = {}
        for endpoint, items in reference.items():
            keys[endpoint] = f"hyp-ref{endpoint}"
            staging.stage_pages(conn, [items], run_key=keys[endpoint], source_system="psa", endpoint=endpoint)
        staging.stage_pages(
            conn, [entries], run_key="hyp-ref/te", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        ref = validation.PsaReference.from_staging(conn, keys)
        with conn.transaction():
            result = validation.validate_run(
                conn,
                kind="time_entry",
                run_key="hyp-ref/te",
                ref=ref,
                config=load_config(),
                as_of=AS_OF,
                dag_run_id="run-hyp-ref",
            )
            result.check()
        staged_reference = {
            (validation.REFERENCE_RECORD_TYPES[r[0]], r[1])
            for r in conn.execute(
                "SELECT endpoint, source_id FROM staging.raw_record WHERE endpoint <> '/v2/time_entries'"
            )
        }
        items = {
            (r[0], r[1]): r[2]
            for r in conn.execute(
                "SELECT record_type, source_id, reason_code FROM exceptions.item WHERE status = 'open'"
            )
        }
        canonical = {r[0] for r in conn.execute("SELECT source_id FROM canonical.time_entry")}
    assert set(result.by_reason) <= set(validation.REASON_CODES)
    # every staged reference record is either used or flagged
    flagged = {(bad.record_type, bad.source_id) for bad in ref.invalid}
    passed = {(record_type, sid) for record_type, ids in ref.passed.items() for sid in ids}
    assert passed | flagged == staged_reference
    assert {k for k, reason in items.items() if k[0] != "time_entry"} == flagged
    assert all(items[k] == "REFERENCE_INVALID" for k in flagged)
    assert {str(e["id"]) for e in entries[:2]} <= canonical
    for project_id, entry in zip(DEPENDENT_PROJECTS, entries[2:], strict=False):
        if project_id in ref.invalid_projects:
            assert ("project", str(project_id)) in flagged
            assert items[("time_entry", str(entry["id"]))] == "REFERENCE_INVALID"
        else:  # a hostile project that still matches the contract: judged as any other
            assert project_id in ref.projects
