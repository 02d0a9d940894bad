"""HR domain against the Workday, PSA and ERP simulators and a real ODS: effective-dated worker
versions and cost rates, future hires kept until their date, a termination that deactivates the PSA
user (and the ERP employee) on its date, and a PSA-side edit of an HR-owned field overwritten and
reported as a propagation exception with its owner."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

NOV_9 = date(2026, 11, 9)


def _config() -> Any:
    from psa_erp_sync.config import load_config

    return load_config()


def sync(conn: psycopg.Connection, client: Any, as_of: date, run: str) -> dict[str, Any]:
    from psa_erp_sync.hr import sync as hr_sync

    workers = hr_sync.sync_workers(conn, client, as_of=as_of, run_id=run, config=_config())
    rates = hr_sync.sync_cost_rates(conn, client, run_id=run, config=_config())
    return {"workers": workers.as_dict(), "rates": rates}


def to_psa(conn: psycopg.Connection, psa: Any, as_of: date, run: str) -> dict[str, Any]:
    from psa_erp_sync.hr.propagate import propagate_to_psa

    return propagate_to_psa(conn, psa, as_of=as_of, run_id=run, config=_config()).as_dict()


def psa_user(conn: psycopg.Connection, user_id: int) -> dict[str, Any]:
    row = conn.execute(
        "SELECT first_name, last_name, legal_entity, cost_rate::text, is_active, employee_id"
        " FROM sim_psa.users WHERE id = %s",
        (user_id,),
    ).fetchone()
    assert row is not None
    keys = ("first_name", "last_name", "legal_entity", "cost_rate", "is_active", "employee_id")
    return dict(zip(keys, row, strict=True))


def test_effective_dated_rates_and_worker_versions(
    hr_dsn: str, people: dict[str, Any], workday_client: Any, workday_sim: RunningSimulator
) -> None:
    from psa_erp_sync.ods import hr

    with psycopg.connect(hr_dsn) as conn:
        first = sync(conn, workday_client, NOV_9, "r1")
        assert first["workers"]["read"] == 4 and first["workers"]["new"] == 4
        assert first["workers"]["future_hires"] == 1 and first["workers"]["terminated"] == 1
        assert first["rates"]["rates"] == 7
        # 90 % from the hire date, the full rate from 2026-01-01; nothing before the hire.
        assert hr.rate_on(conn, "E201", date(2024, 1, 7)) is None
        assert hr.rate_on(conn, "E201", date(2025, 12, 31)) == (9000, "USD")
        assert hr.rate_on(conn, "E201", date(2026, 1, 1)) == (10000, "USD")
        assert hr.rate_on(conn, "E203", NOV_9) == (8000, "GBP")

        # Workday moves E202 to the UK entity; read on Nov 20 it is effective from Nov 20.
        workday_sim.admin("PATCH", "/workers/E202", json={"company": "LE-UK1"})
        # The future hire's start moves earlier before it takes effect.
        workday_sim.admin("PATCH", "/workers/E900", json={"hire_date": "2026-12-10"})
        second = sync(conn, workday_client, date(2026, 11, 20), "r2")
        assert second["workers"]["new_versions"] == 2 and second["workers"]["new"] == 0
        before = hr.version_on(conn, "E202", date(2026, 11, 19))
        after = hr.version_on(conn, "E202", date(2026, 11, 20))
        assert before is not None and before["legal_entity"] == "LE-US1"
        assert before["valid_to"] == date(2026, 11, 20)
        assert after is not None and after["legal_entity"] == "LE-UK1" and after["valid_to"] is None
        future = conn.execute(
            "SELECT valid_from, valid_to FROM hr.worker_version WHERE employee_id = 'E900'"
        ).fetchall()
        assert future == [(date(2026, 12, 10), None)]  # the never-effective Dec 15 version is gone

        # A re-read of the same data changes nothing.
        third = sync(conn, workday_client, date(2026, 11, 20), "r3")
        assert third["workers"]["new_versions"] == 0 and third["workers"]["changed"] == 0
        assert third["rates"]["written"] == 0 and third["rates"]["removed"] == 0
        assert third["workers"]["not_listed"] == 0

        # A rescinded hire disappears from Workday: counted, its rows kept, its rates gone.
        workday_sim.admin("DELETE", "/workers/E900")
        fourth = sync(conn, workday_client, date(2026, 11, 21), "r4")
        assert fourth["workers"]["read"] == 3 and fourth["workers"]["not_listed"] == 1
        assert fourth["rates"]["removed"] == 1 and hr.rate_on(conn, "E900", date(2026, 12, 20)) is None


def test_termination_deactivates_the_psa_user_on_its_date_and_future_hire_waits(
    hr_dsn: str,
    people: dict[str, Any],
    workday_client: Any,
    workday_sim: RunningSimulator,
    psa_client: Any,
    erp_client: Any,
) -> None:
    from psa_erp_sync.hr.propagate import propagate_to_erp

    def to_erp(conn: psycopg.Connection, as_of: date, run: str) -> dict[str, Any]:
        return propagate_to_erp(
            conn, lambda _: erp_client, as_of=as_of, run_id=run, config=_config()
        ).as_dict()

    workday_sim.admin("PATCH", "/workers/E201", json={"termination_date": "2026-11-15"})
    with psycopg.connect(hr_dsn) as conn:
        sync(conn, workday_client, NOV_9, "r1")
        first = to_psa(conn, psa_client, NOV_9, "r1")
        assert first["future_hires"] == 1 and first["created"] == 0
        assert first["deactivated"] == 0 and first["failed"] == 0
        assert psa_user(conn, 201)["is_active"] is True  # terminated from Nov 15, not before
        erp = to_erp(conn, NOV_9, "r1")
        assert erp["upserted"] == 3 and erp["not_in_psa"] == 1
        assert erp_client.get_record("employee", "psa-user-201")["isInactive"] is False

        sync(conn, workday_client, date(2026, 11, 15), "r2")
        second = to_psa(conn, psa_client, date(2026, 11, 15), "r2")
        assert second["deactivated"] == 1
        assert psa_user(conn, 201)["is_active"] is False
        assert to_erp(conn, date(2026, 11, 15), "r2") == {
            "upserted": 1,
            "unchanged": 2,
            "not_in_psa": 1,
            "legal_entity_unknown": 0,
            "failed": 0,
            "by_target": {"erp_default": 1},
        }
        employee = erp_client.get_record("employee", "psa-user-201")
        assert employee["isInactive"] is True and employee["releaseDate"] == "2026-11-15"

        # The future hire is read again on every run and created in the PSA on its hire date.
        sync(conn, workday_client, date(2026, 12, 15), "r3")
        third = to_psa(conn, psa_client, date(2026, 12, 15), "r3")
        assert third["created"] == 1 and third["future_hires"] == 0
        created = conn.execute("SELECT psa_user_id FROM hr.worker WHERE employee_id = 'E900'").fetchone()
        assert created is not None and created[0] is not None
        user = psa_user(conn, created[0])
        assert user["employee_id"] == "E900" and user["legal_entity"] == "LE-US2"
        assert user["cost_rate"] == "95.00" and user["is_active"] is True
        # Re-running creates nothing twice (the PSA has no idempotency key: looked up first).
        assert to_psa(conn, psa_client, date(2026, 12, 15), "r4")["created"] == 0
        assert conn.execute("SELECT count(*) FROM sim_psa.users WHERE employee_id = 'E900'").fetchone() == (
            1,
        )
        assert to_erp(conn, date(2026, 12, 15), "r3")["upserted"] == 1
        assert erp_client.get_record("employee", f"psa-user-{created[0]}")["hireDate"] == "2026-12-15"


def test_psa_edit_of_hr_owned_fields_is_overwritten_and_reported(
    hr_dsn: str,
    people: dict[str, Any],
    workday_client: Any,
    workday_sim: RunningSimulator,
    psa_client: Any,
) -> None:
    from psa_erp_sync.ods import hr

    with psycopg.connect(hr_dsn) as conn:
        sync(conn, workday_client, NOV_9, "r1")
        first = to_psa(conn, psa_client, NOV_9, "r1")
        assert first["unchanged"] == 3 and first["psa_edits_overwritten"] == 0  # seeded consistent
        # Someone edits HR-owned fields in the PSA (and a field HR does not own).
        psa_client.update_user(202, {"cost_rate": "1.00", "legal_entity": "LE-UK1", "practice": "Ops"})
        second = to_psa(conn, psa_client, NOV_9, "r2")
        assert second["psa_edits_overwritten"] == 1 and second["updated"] == 1
        user = psa_user(conn, 202)
        assert user["cost_rate"] == "90.00" and user["legal_entity"] == "LE-US1"
        assert conn.execute("SELECT practice FROM sim_psa.users WHERE id = 202").fetchone() == ("Ops",)
        items = conn.execute(
            "SELECT kind, reason_code, owner, legal_entity, detail, status FROM exceptions.item"
            " WHERE source_system = 'psa' AND record_type = 'user' AND source_id = '202'"
        ).fetchall()
        assert len(items) == 1
        kind, reason, owner, le, detail, status = items[0]
        assert (kind, reason, owner, le, status) == (
            "propagation",
            "HR_FIELD_EDITED_IN_PSA",
            "people-operations",
            "LE-US1",
            "open",
        )
        assert detail["fields"] == ["cost_rate", "legal_entity"] and detail["employee_id"] == "E202"
        assert "Turing" not in str(detail) and "1.00" not in str(detail)  # field names only

        # A change made in HR is not a PSA edit: it flows without a new exception.
        workday_sim.admin(
            "POST",
            "/seed",
            json={
                "cost_rates": [
                    {
                        "employee_id": "E202",
                        "effective_date": "2026-11-01",
                        "cost_rate": "97.50",
                        "currency": "USD",
                    }
                ]
            },
        )
        sync(conn, workday_client, NOV_9, "r3")
        third = to_psa(conn, psa_client, NOV_9, "r3")
        assert third["updated"] == 1 and third["psa_edits_overwritten"] == 0
        assert psa_user(conn, 202)["cost_rate"] == "97.50"
        assert conn.execute(
            "SELECT occurrences FROM exceptions.item WHERE reason_code = 'HR_FIELD_EDITED_IN_PSA'"
        ).fetchall() == [(1,)]
        # The forecast's cost rate for this PSA user is HR's, effective on the entry date.
        assert hr.psa_user_rate_on(conn, "202", date(2026, 10, 31)) == (9000, "USD")
        assert hr.psa_user_rate_on(conn, "202", date(2026, 11, 1)) == (9750, "USD")
        assert hr.psa_user_rate_on(conn, "999", date(2026, 11, 1)) is None


def test_the_firm_seeds_workday_with_the_psa_people(
    hr_dsn: str,
    psa_sim: RunningSimulator,
    workday_sim: RunningSimulator,
    erp_sim: RunningSimulator,
    workday_client: Any,
    psa_client: Any,
    erp_client: Any,
) -> None:
    """The demo's data: every Workday worker is a PSA user already (same Employee_ID), so the first
    run creates nothing, reports no edit and only fills in the ERP employees."""
    from psa_erp_sync.hr.propagate import propagate_to_erp
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=5, consultants=12, customers=4, projects=4, opportunities=2, today=NOV_9)
    )
    counts = load_firm(
        firm, psa_url=None, erp_url=erp_sim.base_url, crm_url=None, workday_url=workday_sim.base_url
    )
    psa_sim.admin("POST", "/seed", json={"users": firm.psa["users"]})
    assert counts["workday.workers"] == 12
    with psycopg.connect(hr_dsn) as conn:
        synced = sync(conn, workday_client, NOV_9, "r1")
        assert synced["workers"]["read"] == 12 and synced["workers"]["invalid"] == 0
        result = to_psa(conn, psa_client, NOV_9, "r1")
        assert (result["created"], result["failed"], result["psa_edits_overwritten"]) == (0, 0, 0)
        assert result["unchanged"] == 12
        erp = propagate_to_erp(conn, lambda _: erp_client, as_of=NOV_9, run_id="r1", config=_config())
        assert erp.as_dict()["upserted"] == 12 and erp.failed == 0


def test_a_worker_in_an_unknown_legal_entity_is_held_back_until_hr_fixes_it(
    hr_dsn: str, people: dict[str, Any], workday_client: Any, workday_sim: RunningSimulator, psa_client: Any
) -> None:
    workday_sim.admin("PATCH", "/workers/E202", json={"company": "LE-XX9"})
    with psycopg.connect(hr_dsn) as conn:
        sync(conn, workday_client, NOV_9, "r1")
        first = to_psa(conn, psa_client, NOV_9, "r1")
        assert first["legal_entity_unknown"] == 1
        assert psa_user(conn, 202)["legal_entity"] == "LE-US1"  # nothing flowed
        item = conn.execute(
            "SELECT kind, reason_code, owner, status FROM exceptions.item WHERE source_system = 'hr'"
            " AND record_type = 'worker' AND source_id = 'E202'"
        ).fetchone()
        assert item == ("validation", "HOME_LEGAL_ENTITY_UNKNOWN", "people-operations", "open")
        workday_sim.admin("PATCH", "/workers/E202", json={"company": "LE-UK1"})
        sync(conn, workday_client, NOV_9, "r2")
        second = to_psa(conn, psa_client, NOV_9, "r2")
        assert second["legal_entity_unknown"] == 0 and second["updated"] == 1
        assert psa_user(conn, 202)["legal_entity"] == "LE-UK1"
        status = conn.execute(
            "SELECT status FROM exceptions.item WHERE reason_code = 'HOME_LEGAL_ENTITY_UNKNOWN' AND source_id = 'E202'"
        ).fetchone()
        assert status == ("resolved",)


def test_a_psa_refusal_is_reported_and_resolved_when_the_next_run_succeeds(
    hr_dsn: str, people: dict[str, Any], workday_client: Any, workday_sim: RunningSimulator, psa_client: Any
) -> None:
    # The new hire's work email is taken by another person's PSA user: never matched to that user.
    workday_sim.admin("PATCH", "/workers/E900", json={"email": "ADA@example.com"})
    day = date(2026, 12, 15)
    with psycopg.connect(hr_dsn) as conn:
        sync(conn, workday_client, day, "r1")
        first = to_psa(conn, psa_client, day, "r1")
        assert first["failed"] == 1 and first["created"] == 0
        assert psa_user(conn, 201)["employee_id"] == "E201"  # Ada's user was not taken over
        item = conn.execute(
            "SELECT reason_code, owner, detail->>'status', status FROM exceptions.item"
            " WHERE source_id = 'employee-E900'"
        ).fetchone()
        assert item == ("PSA_WRITE_FAILED", "people-operations", "422", "open")
        workday_sim.admin("PATCH", "/workers/E900", json={"email": "katherine@example.com"})
        sync(conn, workday_client, day, "r2")
        second = to_psa(conn, psa_client, day, "r2")
        assert second["created"] == 1 and second["failed"] == 0
        status = conn.execute(
            "SELECT status FROM exceptions.item WHERE source_id = 'employee-E900'"
        ).fetchone()
        assert status == ("resolved",)
