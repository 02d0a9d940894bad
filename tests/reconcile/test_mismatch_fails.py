"""A reconciliation mismatch fails the run, and the failure names the first differing records.

The ``reconcile_erp`` step's operator runs against real PostgreSQL (a migrated ODS holding three
approved, posted time entries) and the ERP simulator over loopback, whose timebills differ from the
ledger: one with other hours, one missing, one the ledger never posted.
"""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from psa_erp_sync.operators.time_expense import ErpReconciliationOperator
from psa_erp_sync.reconcile.control_totals import ControlTotalMismatch
from tests.conftest import RunningSimulator, connect_airflow

pytestmark = pytest.mark.integration

RUN_ID = "manual__2026-11-09T12:00:00+00:00"
# source id -> hours; bill rate 100.00 USD, so 7.50 h is 750.00 USD = 75000 minor units
APPROVED = {"101": "7.50", "102": "7.50", "103": "2.00"}


def _seed_ods(dsn: str) -> None:
    """What validation and posting would have left: approved canonical entries, confirmed postings."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        for sid, hours in APPROVED.items():
            amount = int(Decimal(hours) * 10000)  # x 100.00 USD, in cents
            conn.execute(
                "INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,"
                " project_ref, task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency,"
                " approved, fingerprint, source_updated_at, record) VALUES ('psa', %s, 'v1', '2026-11-02', '7',"
                " '40', '3', 'LE-US1', %s, true, 10000, %s, 'USD', true, %s, '2026-11-03T10:00:00Z', '{}'::jsonb)",
                (sid, hours, amount, f"fp{sid}"),
            )
            conn.execute(
                "WITH p AS (INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id,"
                " source_version, external_id, action, state, legal_entity, amount_minor, currency) VALUES"
                " (%s, 'timebill', 'psa', %s, 'v1', %s, 'post', 'confirmed', 'LE-US1', %s, 'USD')"
                " RETURNING idempotency_key)"
                " INSERT INTO ledger.posting_payload (idempotency_key, payload) SELECT idempotency_key, %s::jsonb FROM p",
                (f"k{sid}", sid, f"psa-te-{sid}", amount, f'{{"hours": "{hours}"}}'),
            )


def _timebill(sid: str, hours: str) -> dict[str, Any]:
    return {
        "type": "timebill",
        "externalId": f"psa-te-{sid}",
        "tranDate": "2026-11-02",
        "hours": hours,
        "rate": "100.00",
        "currency": {"refName": "USD"},
        "isBillable": True,
    }


@pytest.fixture
def mismatched(clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch) -> str:
    _seed_ods(clean_ods)
    erp_sim.admin(
        "POST",
        "/seed",
        json={
            "records": [
                _timebill("101", "7.50"),  # as posted
                _timebill("102", "8.00"),  # changed in the ERP: 8.00 h, not 7.50
                # 103 missing from the ERP
                _timebill("900", "1.00"),  # in our namespace, but never posted by us
            ]
        },
    )
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    return clean_ods


def test_an_erp_that_differs_from_the_ledger_fails_the_run_naming_the_first_differing_records(
    mismatched: str,
) -> None:
    operator = ErpReconciliationOperator(task_id="reconcile_erp", record_types=["timebill"])
    context: Any = {"dag": SimpleNamespace(dag_id="time_expense_posting"), "run_id": RUN_ID}

    with pytest.raises(ControlTotalMismatch) as failed:
        operator.execute(context)

    message = str(failed.value)
    assert message.startswith("ERP does not equal the approved PSA set: timebill: expected vs erp: "), message
    assert "hours 17.00 != 16.50" in message, message
    assert "1 missing in the ERP, 1 unexpected, 1 different" in message, message
    first = message.split("first differing records: ", 1)[1]
    assert first.split(" | ") == [
        "psa-te-102: expected 7.50 h, 75000 USD (minor units), ERP has 8.00 h, 80000 USD (minor units)",
        "psa-te-103: expected 2.00 h, 20000 USD (minor units), ERP has nothing",
        "psa-te-900: expected nothing, ERP has 1.00 h, 10000 USD (minor units)",
    ], message
    # The mismatch is audited with the run, and the control totals of both sides are recorded.
    with psycopg.connect(mismatched) as conn:
        audited = conn.execute(
            "SELECT actor, after->'timebill'->>'different_in_erp' FROM audit.change"
            " WHERE action = 'control_total_mismatch' AND run_id = %s",
            (RUN_ID,),
        ).fetchall()
        stages = dict(
            conn.execute(
                "SELECT stage, record_count FROM audit.control_total WHERE run_id = %s AND record_type = 'timebill'",
                (RUN_ID,),
            ).fetchall()
        )
    assert audited == [("time_expense_posting.reconcile_erp", "1")]
    assert stages == {
        "expected_in_erp": 3,
        "erp_readback": 3,
        "posted": 3,
        "expected_in_erp_functional": 3,  # both currencies (docs/billing.md, "Foreign currency")
        "erp_readback_functional": 3,
    }


def test_an_erp_equal_to_the_ledger_reconciles(
    clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same set with the ERP right: no failure, so the test above fails for the differences."""
    _seed_ods(clean_ods)
    erp_sim.admin("POST", "/seed", json={"records": [_timebill(s, h) for s, h in APPROVED.items()]})
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    operator = ErpReconciliationOperator(task_id="reconcile_erp", record_types=["timebill"])
    report = operator.execute({"dag": SimpleNamespace(dag_id="time_expense_posting"), "run_id": RUN_ID})  # type: ignore[arg-type]
    assert report["timebill"]["erp"]["count"] == 3
    assert report["timebill"]["different_in_erp"] == report["timebill"]["missing_in_erp"] == 0
