"""The firm generator: determinism, sizes, exact dirt reporting, integrity of the clean data."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from simulators.firm.generator import (
    BILLING_TYPES,
    HOSTILE_NOTES,
    QUARANTINE_KINDS,
    DirtRates,
    Firm,
    FirmSpec,
    dirt_ids,
    dirt_report,
    generate_firm,
    iter_expenses,
    iter_schedule,
    iter_time_entries,
    mutations,
    quarantine_ids,
    resolve_dates,
)

TODAY = date(2026, 11, 26)
MONEY = re.compile(r"^-?\d+\.\d{2}$")
MONEY_FIELDS = {
    "default_hourly_rate",
    "cost_rate",
    "hourly_rate",
    "budget",
    "cost_budget",
    "fee",
    "unit_price",
    "billable_rate",
    "total_cost",
    "amount",
    "contract_value",
    "amount_delta",
    "hours",
}


@pytest.fixture(scope="module")
def firm() -> Firm:
    return generate_firm(FirmSpec(today=TODAY))


@pytest.fixture(scope="module")
def entries(firm: Firm) -> list[dict[str, Any]]:
    return [row for chunk in iter_time_entries(firm) for row in chunk]


@pytest.fixture(scope="module")
def expenses(firm: Firm) -> list[dict[str, Any]]:
    return [row for chunk in iter_expenses(firm) for row in chunk]


def _digest(firm: Firm) -> str:
    h = hashlib.sha256()
    for system in (firm.psa, firm.erp, firm.crm):
        h.update(json.dumps(system, sort_keys=True).encode())
    for stream in (iter_time_entries(firm, 5000), iter_expenses(firm, 5000), iter_schedule(firm, 5000)):
        for chunk in stream:
            h.update(json.dumps(chunk, sort_keys=True).encode())
    h.update(json.dumps(mutations(firm), sort_keys=True).encode())
    h.update(json.dumps(dirt_ids(firm), sort_keys=True).encode())
    return h.hexdigest()


def test_same_seed_same_firm_other_seed_other_firm(firm: Firm) -> None:
    assert _digest(firm) == _digest(generate_firm(FirmSpec(today=TODAY)))
    assert _digest(firm) != _digest(generate_firm(FirmSpec(seed=43, today=TODAY)))


def test_dates_come_from_the_caller() -> None:
    assert resolve_dates(FirmSpec(today=TODAY)) == (TODAY, date(2026, 10, 1), date(2026, 10, 31))
    assert resolve_dates(FirmSpec(today=date(2026, 1, 5)))[1:] == (date(2025, 12, 1), date(2025, 12, 31))
    assert resolve_dates(FirmSpec(month=date(2026, 2, 14))) == (
        date(2026, 3, 7),
        date(2026, 2, 1),
        date(2026, 2, 28),
    )
    with pytest.raises(ValueError, match="never reads the clock"):
        resolve_dates(FirmSpec())


def test_default_sizes(firm: Firm, entries: list[dict[str, Any]], expenses: list[dict[str, Any]]) -> None:
    assert len(firm.psa["users"]) == 200
    assert len(firm.erp["employees"]) == 200
    assert [s["external_id"] for s in firm.erp["subsidiaries"]] == ["LE-US1", "LE-US2", "LE-UK1"]
    assert {s["currency"] for s in firm.erp["subsidiaries"]} == {"USD", "GBP"}
    assert {c["symbol"] for c in firm.erp["currencies"]} == {"USD", "GBP"}
    assert len(firm.psa["clients"]) == 120
    assert len(firm.psa["projects"]) == 300
    assert {p["billing_type"] for p in firm.psa["projects"]} == set(BILLING_TYPES)
    pipeline = [
        o for o in firm.crm["opportunities"] if o["psa_project_id"] is None and o["stage"] != "Closed Lost"
    ]
    assert len(pipeline) == 150
    assert 8000 <= len(entries) <= 12000
    workdays = len(firm.workdays)
    assert 0.2 * 200 * workdays <= len(expenses) <= 0.4 * 200 * workdays
    billable: dict[int, Decimal] = defaultdict(Decimal)
    for row in entries:
        if (
            row["billable"]
            and firm.month_start.isoformat() <= row["spent_date"] <= firm.month_end.isoformat()
        ):
            billable[row["user_id"]] += Decimal(row["hours"])
    assert 105 <= sum(billable.values()) / len(billable) <= 135  # ~120 billable hours a month
    emails = [u["email"] for u in firm.psa["users"]]
    assert len(set(emails)) == len(emails)
    assert all(e.endswith("@example.com") for e in emails)


def test_chunks_are_bounded_and_ids_unique(firm: Firm, entries: list[dict[str, Any]]) -> None:
    chunks = list(iter_time_entries(firm, chunk_size=1000))
    assert all(len(c) <= 1000 for c in chunks)
    assert [r["id"] for c in chunks for r in c] == [r["id"] for r in entries]
    assert len({r["id"] for r in entries}) == len(entries)


def _money_ok(value: Any) -> bool:
    return value is None or (isinstance(value, str) and bool(MONEY.match(value)))


def _walk(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        for key, value in row.items():
            assert not isinstance(value, float), (key, row)
            if key in MONEY_FIELDS:
                assert _money_ok(value), (key, value)


def test_money_is_decimal_strings_never_floats(
    firm: Firm, entries: list[dict[str, Any]], expenses: list[dict[str, Any]]
) -> None:
    for system in (firm.psa, firm.erp, firm.crm):
        for rows in system.values():
            _walk(rows)
    _walk(entries)
    _walk(expenses)
    for chunk in iter_schedule(firm):
        _walk(chunk)
    for m in mutations(firm):
        _walk([m["changes"]])


def _closed_before(firm: Firm) -> str:
    open_starts = [p["start_date"] for p in firm.erp["accounting_periods"] if not p["closed"]]
    return min(open_starts)


def _detect(firm: Firm, entries: list[dict[str, Any]]) -> dict[str, set[int]]:
    """Find the dirt from first principles, independently of the generator's bookkeeping."""
    projects = {p["id"]: p for p in firm.psa["projects"]}
    tasks = {t["id"] for t in firm.psa["tasks"]}
    future_after = max(firm.month_end, firm.today).isoformat()
    closed_before = _closed_before(firm)
    found: dict[str, set[int]] = defaultdict(set)
    for row in entries:
        if not projects[row["project_id"]]["is_active"]:
            found["inactive_project"].add(row["id"])
        elif row["task_id"] not in tasks:
            found["unknown_task"].add(row["id"])
        elif row["billable"] and row["billable_rate"] is None:
            found["missing_rate"].add(row["id"])
        elif row["spent_date"] > future_after:
            found["future_date"].add(row["id"])
        elif row["spent_date"] < closed_before:
            found["closed_period"].add(row["id"])
    flagged = set().union(*found.values())
    seen: dict[tuple[Any, ...], int] = {}
    for row in sorted(entries, key=lambda r: r["id"]):
        if row["id"] in flagged:
            continue
        key = (row["user_id"], row["spent_date"], row["project_id"], row["task_id"], row["hours"])
        if key in seen:
            found["duplicate"].add(row["id"])
        else:
            seen[key] = row["id"]
            if row["notes"] in HOSTILE_NOTES:
                found["hostile_text"].add(row["id"])
    return found


def test_dirt_report_is_exact_and_near_the_rates(firm: Firm, entries: list[dict[str, Any]]) -> None:
    report, ids = dirt_report(firm), dirt_ids(firm)
    assert report == {k: len(v) for k, v in ids.items()}
    found = _detect(firm, entries)
    rates = DirtRates()
    for kind in (
        "inactive_project",
        "unknown_task",
        "missing_rate",
        "future_date",
        "closed_period",
        "duplicate",
    ):
        assert set(ids[f"time_entries.{kind}"]) == found[kind], kind
        share = report[f"time_entries.{kind}"] / len(entries)
        assert 0.4 * getattr(rates, kind) <= share <= 1.8 * getattr(rates, kind), (kind, share)
    assert set(ids["time_entries.hostile_text"]) == found["hostile_text"]
    assert quarantine_ids(firm) == set().union(*(found[k] for k in QUARANTINE_KINDS))
    assert 0.01 <= report["time_entries.hostile_text"] / len(entries) <= 0.03


def test_expense_dirt_matches_the_rows(firm: Firm, expenses: list[dict[str, Any]]) -> None:
    ids = dirt_ids(firm)
    projects = {p["id"]: p for p in firm.psa["projects"]}
    by_id = {r["id"]: r for r in expenses}
    assert {i for i in by_id if not projects[by_id[i]["project_id"]]["is_active"]} == set(
        ids["expenses.inactive_project"]
    )
    future_after = max(firm.month_end, firm.today).isoformat()
    assert {i for i, r in by_id.items() if r["spent_date"] > future_after} == set(ids["expenses.future_date"])
    closed_before = _closed_before(firm)
    assert {i for i, r in by_id.items() if r["spent_date"] < closed_before} == set(
        ids["expenses.closed_period"]
    )
    for dup in ids["expenses.duplicate"]:
        row = by_id[dup]
        twin = [
            r
            for r in expenses
            if r["id"] != dup
            and (r["user_id"], r["spent_date"], r["project_id"], r["expense_category_id"], r["total_cost"])
            == (
                row["user_id"],
                row["spent_date"],
                row["project_id"],
                row["expense_category_id"],
                row["total_cost"],
            )
        ]
        assert len(twin) == 1
        assert twin[0]["id"] < dup
    assert all(by_id[i]["notes"] in HOSTILE_NOTES for i in ids["expenses.hostile_text"])


def test_hostile_text_is_hostile_but_storable() -> None:
    joined = "".join(HOSTILE_NOTES)
    assert "\x00" not in joined
    for needle in ("\u202e", "\u200f", "DROP TABLE", "<script>", "\U0001f680", "\x1b", "\r\n"):
        assert needle in joined
    assert 3000 <= max(len(n) for n in HOSTILE_NOTES) <= 10000


def test_clean_entries_reference_active_assigned_master_data(
    firm: Firm, entries: list[dict[str, Any]]
) -> None:
    dirty = quarantine_ids(firm)
    projects = {p["id"]: p for p in firm.psa["projects"]}
    users = {u["id"]: u for u in firm.psa["users"]}
    tasks = {t["id"]: t for t in firm.psa["tasks"]}
    task_assign = {(t["project_id"], t["task_id"]): t for t in firm.psa["task_assignments"] if t["is_active"]}
    user_assign = {(u["project_id"], u["user_id"]): u for u in firm.psa["user_assignments"] if u["is_active"]}
    month = (firm.month_start.isoformat(), firm.month_end.isoformat())
    clean = [r for r in entries if r["id"] not in dirty]
    assert len(clean) > 0.9 * len(entries)
    for row in clean:
        project = projects[row["project_id"]]
        assert project["is_active"]
        assert users[row["user_id"]]["is_active"]
        assert tasks[row["task_id"]]["is_active"]
        ta = task_assign[(row["project_id"], row["task_id"])]
        ua = user_assign[(row["project_id"], row["user_id"])]
        assert month[0] <= row["spent_date"] <= month[1]
        assert row["billable"] == ta["billable"]
        assert row["cost_rate"] == users[row["user_id"]]["cost_rate"]
        if row["billable"]:
            expected = {
                "People": ua["hourly_rate"],
                "Tasks": ta["hourly_rate"],
                "Project": project["hourly_rate"],
            }
            assert row["billable_rate"] == expected[project["bill_by"]]
        else:
            assert row["billable_rate"] is None
        assert row["is_locked"] == row["is_closed"]
        assert row["created_at"] <= row["updated_at"] < f"{firm.today.isoformat()}T"


def test_approval_workflow_and_mutations(firm: Firm, entries: list[dict[str, Any]]) -> None:
    ids = dirt_ids(firm)
    by_id = {r["id"]: r for r in entries}
    pending, rejected = set(ids["time_entries.pending"]), set(ids["time_entries.rejected"])
    assert all(not by_id[i]["is_closed"] for i in pending | rejected)
    assert 0.03 <= len(pending) / len(entries) <= 0.15
    assert rejected
    muts = mutations(firm)
    kinds = Counter((m["entity"], m["kind"]) for m in muts)
    for kind in ("approve", "edit", "unapprove", "delete"):
        assert kinds[("time_entry", kind)] > 0, kind
    assert kinds[("expense", "approve")] > 0
    targets = [(m["entity"], m["id"]) for m in muts]
    assert len(set(targets)) == len(targets)
    assert muts == mutations(firm)
    dirty = quarantine_ids(firm) | set(ids["time_entries.hostile_text"])
    for m in muts:
        if m["entity"] != "time_entry":
            continue
        row = by_id[m["id"]]
        assert m["id"] not in dirty
        if m["kind"] == "approve":
            assert m["id"] in pending
        elif m["kind"] in ("edit", "unapprove"):
            assert row["is_closed"]
        if m["kind"] == "edit":
            assert set(m["changes"]) == {"hours", "notes"}
            assert m["changes"]["hours"] != row["hours"]
    # 40-50 % of approvals land in the month-end window (last 2 / first 3 business days)
    window = {d.isoformat() for d in firm.workdays[-2:]} | {
        d.isoformat() for d in (date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4))
    }
    approved = [r for r in entries if r["is_closed"]]
    share = sum(r["updated_at"][:10] in window for r in approved) / len(approved)
    assert 0.35 <= share <= 0.6


def test_contracts_have_transaction_prices_and_visible_leakage(firm: Firm) -> None:
    projects = {p["id"]: p for p in firm.psa["projects"]}
    jobs = {j["external_id"]: j for j in firm.erp["jobs"]}
    won = {o["psa_project_id"]: o for o in firm.crm["opportunities"] if o["stage"] == "Closed Won"}
    assert set(won) == set(projects)
    ids = dirt_ids(firm)
    leaked = set(ids["crm.change_order_missing_in_erp"])
    assert leaked
    cos: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for co in firm.crm["change_orders"]:
        cos[co["opportunity_id"]].append(co)
    assert all(co["status"] == "approved" for co in firm.crm["change_orders"] if co["id"] in leaked)
    priced_types = set()
    for pid, project in projects.items():
        opp = won[pid]
        approved = [c for c in cos[opp["id"]] if c["status"] == "approved"]
        contract = Decimal(opp["amount"]) + sum(Decimal(c["amount_delta"]) for c in approved)
        if project["billing_type"] != "time_and_materials":
            assert Decimal(project["fee"]) == contract
        if project["billing_type"] == "milestone":
            ms = [m for m in firm.psa["milestones"] if m["project_id"] == pid]
            assert len(ms) >= 3
            assert sum(Decimal(m["amount"]) for m in ms) == contract
        job = jobs.get(f"psa-project-{pid}")
        if job is None:
            assert pid in ids["erp.job_missing"]
            continue
        missing = sum(Decimal(c["amount_delta"]) for c in approved if c["id"] in leaked)
        assert Decimal(job["contract_value"]) == contract - missing
        assert Decimal(job["contract_value"]) > 0
        assert job["customer"] == f"psa-client-{project['client_id']}"
        assert job["subsidiary"] == project["legal_entity"]
        assert job["currency"] == project["currency"]
        priced_types.add(job["billing_type"])
    assert priced_types == set(BILLING_TYPES)


def test_master_data_dirt_is_real(firm: Firm) -> None:
    ids = dirt_ids(firm)
    customers = {c["external_id"]: c for c in firm.erp["customers"]}
    clients = {c["id"]: c for c in firm.psa["clients"]}
    for cid in ids["erp.customer_unknown"]:
        assert f"psa-client-{cid}" not in customers
        assert clients[cid]["is_active"]
        assert any(a["erp_customer_external_id"] == f"psa-client-{cid}" for a in firm.crm["accounts"])
    for cid in ids["erp.customer_inactive"]:
        assert customers[f"psa-client-{cid}"]["is_inactive"]
        assert clients[cid]["is_active"]
    jobs = {j["external_id"]: j for j in firm.erp["jobs"]}
    projects = {p["id"]: p for p in firm.psa["projects"]}
    for pid in ids["erp.job_inactive"]:
        assert jobs[f"psa-project-{pid}"]["is_inactive"]
        assert projects[pid]["is_active"]
    for a, b in ids["psa.duplicate_client_name"]:
        assert a != b
        assert clients[a]["name"] == clients[b]["name"]
    names = Counter(c["name"] for c in firm.psa["clients"])
    assert sum(n - 1 for n in names.values()) == len(ids["psa.duplicate_client_name"])
    assert {e["external_id"] for e in firm.erp["employees"]} == {
        f"psa-user-{u['id']}" for u in firm.psa["users"]
    }


@pytest.mark.parametrize("previous_month_open", [False, True])
def test_accounting_periods(previous_month_open: bool) -> None:
    firm = generate_firm(FirmSpec(today=TODAY, previous_month_open=previous_month_open, consultants=20))
    periods = firm.erp["accounting_periods"]
    assert len(periods) == 3 * 25
    for p in periods:
        assert p["closed"] == p["all_locked"] == p["ar_locked"] == p["ap_locked"]
        if p["start_date"] >= "2026-10-01":
            assert not p["closed"]
        elif p["start_date"] == "2026-09-01":
            assert p["closed"] is not previous_month_open
        else:
            assert p["closed"]
    assert min(p["start_date"] for p in periods) == "2025-10-01"
    assert max(p["end_date"] for p in periods) == "2027-10-31"
    closed = {(p["subsidiary"], p["start_date"][:7]) for p in periods if p["closed"]}
    ids = set(dirt_ids(firm)["time_entries.closed_period"])
    rows = [r for c in iter_time_entries(firm) for r in c if r["id"] in ids]
    le_of = {p["id"]: p["legal_entity"] for p in firm.psa["projects"]}
    assert rows
    assert all((le_of[r["project_id"]], r["spent_date"][:7]) in closed for r in rows)


def test_schedule_covers_six_months_with_overallocation(firm: Firm) -> None:
    rows = [r for c in iter_schedule(firm) for r in c]
    weeks = sorted({r["week_start"] for r in rows})
    assert len(weeks) == 26
    assert all(date.fromisoformat(w).weekday() == 0 for w in weeks)
    assert date.fromisoformat(weeks[0]) <= firm.month_end + timedelta(days=1) < date.fromisoformat(weeks[1])
    capacity = {u["id"]: Decimal(u["weekly_capacity"]) / 3600 for u in firm.psa["users"]}
    first_week: dict[int, Decimal] = defaultdict(Decimal)
    for r in rows:
        if r["week_start"] == weeks[0]:
            first_week[r["user_id"]] += Decimal(r["hours"])
    over = {u for u, h in first_week.items() if h > capacity[u]}
    assert over == set(dirt_ids(firm)["schedule.overallocated_users"])
    assert 0.04 <= len(over) / len(first_week) <= 0.15


def test_scale_10k_consultants_streams_in_bounded_chunks() -> None:
    started = time.monotonic()
    firm = generate_firm(FirmSpec(consultants=10_000, today=TODAY))
    count = 0
    largest = 0
    for chunk in iter_time_entries(firm, chunk_size=20_000):
        count += len(chunk)
        largest = max(largest, len(chunk))
    elapsed = time.monotonic() - started
    assert 420_000 <= count <= 630_000
    assert largest <= 20_000
    assert elapsed < 60, elapsed


def test_erp_blocked_rows_are_the_clean_rows_on_projects_the_erp_cannot_take(
    firm: Firm, entries: list[dict[str, Any]], expenses: list[dict[str, Any]]
) -> None:
    jobs = {j["external_id"]: j for j in firm.erp["jobs"]}
    customers = {c["external_id"]: c for c in firm.erp["customers"]}
    projects = {p["id"]: p for p in firm.psa["projects"]}

    def blocked(project_id: int) -> bool:
        project = projects[project_id]
        job = jobs.get(f"psa-project-{project_id}")
        customer = customers.get(f"psa-client-{project['client_id']}")
        return project["is_active"] and (
            job is None or job["is_inactive"] or customer is None or customer["is_inactive"]
        )

    ids = dirt_ids(firm)
    for entity, rows in (("time_entries", entries), ("expenses", expenses)):
        dirty = {i for kind in QUARANTINE_KINDS for i in ids.get(f"{entity}.{kind}", [])}
        expected = {r["id"] for r in rows if r["id"] not in dirty and blocked(r["project_id"])}
        assert set(ids[f"{entity}.erp_blocked"]) == expected
        assert expected
