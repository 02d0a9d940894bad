"""v1 contracts validate strictly: money as integer minor units, ISO currencies, no extras, no floats."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from psa_erp_sync.contracts import v1

HASH = "a" * 64


def time_entry(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "source_system": "psa",
        "source_id": "1001",
        "version_hash": HASH,
        "spent_date": date(2026, 11, 2),
        "user_ref": "psa-user-7",
        "project_ref": "psa-project-12",
        "task_ref": "3",
        "legal_entity": "LE-US1",
        "hours": Decimal("7.50"),
        "billable": True,
        "bill_rate_minor": 15000,
        "amount_minor": 112500,
        "currency": "USD",
        "approved": True,
        "fingerprint": "b" * 64,
        "source_updated_at": datetime(2026, 11, 3, 9, 0, tzinfo=UTC),
    }
    record.update(overrides)
    return record


def expense_entry(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "source_system": "psa",
        "source_id": "501",
        "version_hash": HASH,
        "spent_date": "2026-11-02",
        "user_ref": "7",
        "project_ref": "12",
        "legal_entity": "LE-UK1",
        "category": "4",
        "billable": True,
        "amount_minor": 4250,
        "currency": "GBP",
        "approved": False,
        "fingerprint": "c" * 64,
        "source_updated_at": "2026-11-03T09:00:00Z",
    }
    record.update(overrides)
    return record


def test_accepts_a_good_time_entry() -> None:
    entry = v1.TimeEntry.model_validate(time_entry())
    assert entry.contract_version == "v1"
    assert entry.hours == Decimal("7.50")
    assert entry.is_deleted is False


def test_round_trips_through_json_and_jsonb() -> None:
    """A record read back from JSONB (strings for dates and decimals) validates to the same value."""
    entry = v1.TimeEntry.model_validate(time_entry())
    as_json = entry.model_dump_json()
    assert v1.TimeEntry.model_validate_json(as_json) == entry
    assert v1.TimeEntry.model_validate(json.loads(as_json)) == entry
    assert json.loads(as_json)["hours"] == "7.50"


MIGRATIONS = Path(__file__).resolve().parents[2] / "include" / "psa_erp_sync" / "ods" / "migrations"
ODS_ONLY_COLUMNS = {"validated_at", "record", "source_read_at"}  # written by the ODS, not part of the record
# The functional-currency side of foreign-currency work (migration 0023): the ERP's rate for the
# entry's date applied by validation, an ODS enrichment beside the canonical v1 record, not in it.
FX_COLUMNS = {"functional_amount_minor", "functional_currency", "fx_rate", "fx_rate_date", "fx_rate_source"}


def table_columns(table: str) -> set[str]:
    """Columns of ``table`` after every migration: CREATE TABLE plus ALTER TABLE ... ADD/DROP COLUMN."""
    columns: set[str] = set()
    for path in sorted(MIGRATIONS.glob("*.sql")):
        sql = re.sub(r"--[^\n]*", "", path.read_text())
        create = re.search(rf"CREATE TABLE (?:IF NOT EXISTS )?{re.escape(table)} \((.*?)\n\);", sql, re.S)
        if create:
            for line in create.group(1).splitlines():
                word = line.strip().split(" ", 1)[0].strip(",")
                if word and word.upper() not in {"PRIMARY", "UNIQUE", "CHECK", "CONSTRAINT", "FOREIGN"}:
                    columns.add(word)
        for statement in re.findall(rf"ALTER TABLE (?:IF EXISTS )?{re.escape(table)}\s+(.*?);", sql, re.S):
            for action, name in re.findall(r"(ADD|DROP) COLUMN (?:IF (?:NOT )?EXISTS )?(\w+)", statement):
                (columns.add if action == "ADD" else columns.discard)(name)
    assert columns, f"{table} not found in the migrations"
    return columns - ODS_ONLY_COLUMNS - FX_COLUMNS


@pytest.mark.parametrize(
    ("model", "table"), [(v1.TimeEntry, "canonical.time_entry"), (v1.ExpenseEntry, "canonical.expense_entry")]
)
def test_entry_fields_match_the_canonical_table(model: type[v1.CanonicalModel], table: str) -> None:
    assert set(model.model_fields) - {"contract_version"} == table_columns(table)


def test_expense_entry_accepts_strings_from_jsonb() -> None:
    assert v1.ExpenseEntry.model_validate(expense_entry()).spent_date == date(2026, 11, 2)


@pytest.mark.parametrize("field", ["amount_minor", "bill_rate_minor"])
def test_rejects_float_money(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        v1.TimeEntry.model_validate(time_entry(**{field: 1125.0}))
    with pytest.raises(ValidationError):
        v1.TimeEntry.model_validate_json(json.dumps(time_entry(**{field: 1125.0}), default=str))


@pytest.mark.parametrize(
    "hours", [7.5, True, "-1.00", Decimal("-0.25"), "7.555", "NaN", "12345678.00", "seven"]
)
def test_rejects_bad_hours(hours: Any) -> None:
    with pytest.raises(ValidationError, match="hours"):
        v1.TimeEntry.model_validate(time_entry(hours=hours))


@pytest.mark.parametrize("hours", ["7.5", "0", 8, Decimal("0.25")])
def test_accepts_hours_as_decimal_strings_ints_and_decimals(hours: Any) -> None:
    assert v1.TimeEntry.model_validate(time_entry(hours=hours)).hours == Decimal(str(hours))


@pytest.mark.parametrize("currency", ["usd", "US", "USDX", "US1", ""])
def test_rejects_bad_currency(currency: str) -> None:
    with pytest.raises(ValidationError, match="currency"):
        v1.TimeEntry.model_validate(time_entry(currency=currency))


@pytest.mark.parametrize("extra", ["notes", "user_name", "email"])
def test_rejects_extra_fields_such_as_personal_data(extra: str) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        v1.TimeEntry.model_validate(time_entry(**{extra: "x"}))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spent_date", "02/11/2026"),
        ("spent_date", 20261102),
        ("spent_date", datetime(2026, 11, 2, tzinfo=UTC)),
        ("source_updated_at", "2026-11-03T09:00:00"),  # no offset
        ("source_updated_at", datetime(2026, 11, 3, 9, 0)),  # naive
        ("billable", "true"),  # strict: no string booleans
        ("version_hash", "abc"),
        ("fingerprint", "B" * 64),
        ("project_ref", "has space"),
        ("legal_entity", ""),
        ("source_system", "PSA"),
        ("amount_minor", "112500"),  # strict: no numeric strings for integers
    ],
)
def test_rejects_loose_values(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        v1.TimeEntry.model_validate(time_entry(**{field: value}))


def test_models_are_frozen() -> None:
    entry = v1.TimeEntry.model_validate(time_entry())
    with pytest.raises(ValidationError):
        entry.hours = Decimal(1)  # type: ignore[misc]


def test_rejects_a_foreign_contract_version() -> None:
    with pytest.raises(ValidationError, match="contract_version"):
        v1.TimeEntry.model_validate(time_entry(contract_version="v2"))


def test_opportunity_flags_must_match_stage() -> None:
    good = {
        "opportunity_ref": "crm-opp-1",
        "source_system": "crm",
        "source_id": "1",
        "account_ref": "crm-account-1",
        "stage": "Closed Won",
        "probability": 100,
        "amount_minor": 10_000_000,
        "currency": "USD",
        "legal_entity": "LE-US1",
        "is_won": True,
        "is_closed": True,
        "source_updated_at": "2026-11-03T09:00:00+00:00",
        "expected_start": "2027-01-04",
    }
    assert v1.Opportunity.model_validate(good).expected_start == date(2027, 1, 4)
    with pytest.raises(ValidationError, match="is_won"):
        v1.Opportunity.model_validate({**good, "stage": "Proposal"})
    with pytest.raises(ValidationError, match="stage"):
        v1.Opportunity.model_validate({**good, "stage": "Won"})
    with pytest.raises(ValidationError, match="probability"):
        v1.Opportunity.model_validate({**good, "probability": 101})


def test_contract_billing_type_and_price() -> None:
    contract = {
        "contract_ref": "c-1",
        "source_system": "crm",
        "source_id": "1",
        "customer_ref": "psa-client-1",
        "project_ref": "psa-project-1",
        "legal_entity": "LE-US1",
        "billing_type": "fixed_fee",
        "transaction_price_minor": 25_000_000,
        "currency": "EUR",
        "start_date": "2027-01-01",
    }
    assert v1.Contract.model_validate(contract).transaction_price_minor == 25_000_000
    with pytest.raises(ValidationError, match="billing_type"):
        v1.Contract.model_validate({**contract, "billing_type": "cost_plus"})
    with pytest.raises(ValidationError, match="transaction_price_minor"):
        v1.Contract.model_validate({**contract, "transaction_price_minor": -1})
    with pytest.raises(ValidationError, match="end_date"):
        v1.Contract.model_validate({**contract, "end_date": "2026-12-31"})


def test_resource_plan_week_starts_monday_and_resource_capacity() -> None:
    plan = {
        "source_system": "psa",
        "source_id": "9",
        "resource_ref": "psa-user-7",
        "project_ref": "psa-project-12",
        "week_start": "2026-11-02",
        "scheduled_hours": "32.00",
    }
    assert v1.ResourcePlan.model_validate(plan).scheduled_hours == Decimal("32.00")
    with pytest.raises(ValidationError, match="Monday"):
        v1.ResourcePlan.model_validate({**plan, "week_start": "2026-11-03"})
    resource = v1.Resource(
        resource_ref="psa-user-7",
        source_system="psa",
        source_id="7",
        home_legal_entity="LE-US1",
        practice="data",
        cost_rate_minor=8500,
        currency="USD",
        capacity_hours_per_week=Decimal("40"),
        is_contractor=False,
        is_active=True,
    )
    assert resource.capacity_hours_per_week == Decimal(40)


def test_rate_card_lines_and_accounting_period() -> None:
    card = v1.RateCard.model_validate(
        {
            "project_ref": "psa-project-1",
            "source_system": "psa",
            "currency": "USD",
            "effective_from": "2026-01-01",
            "lines": [
                {"task_ref": "3", "bill_rate_minor": 15000},
                {"role_ref": "senior", "bill_rate_minor": 20000},
            ],
        }
    )
    assert isinstance(card.lines, tuple)
    with pytest.raises(ValidationError, match="role_ref or task_ref"):
        v1.RateCardLine.model_validate({"bill_rate_minor": 1})
    with pytest.raises(ValidationError, match="duplicate"):
        v1.RateCard.model_validate(
            {
                **card.model_dump(),
                "lines": [{"task_ref": "3", "bill_rate_minor": 1}, {"task_ref": "3", "bill_rate_minor": 2}],
            }
        )
    period = {
        "period_ref": "2026-11-LE-US1",
        "source_system": "erp",
        "source_id": "p-11",
        "legal_entity": "LE-US1",
        "period_name": "Nov 2026",
        "start_date": "2026-11-01",
        "end_date": "2026-11-30",
        "closed": False,
        "all_locked": False,
        "ar_locked": True,
        "ap_locked": False,
    }
    assert v1.AccountingPeriod.model_validate(period).ar_locked is True
    with pytest.raises(ValidationError, match="end_date"):
        v1.AccountingPeriod.model_validate({**period, "end_date": "2026-10-31"})


def test_milestone_billing_event_invoice_revenue_posting() -> None:
    with pytest.raises(ValidationError, match="completed_at"):
        v1.Milestone.model_validate(
            {
                "milestone_ref": "m-1",
                "source_system": "psa",
                "source_id": "1",
                "project_ref": "p",
                "due_date": "2026-12-01",
                "amount_minor": 100,
                "currency": "USD",
                "status": "signed_off",
            }
        )
    event = {
        "billing_event_ref": "be-1",
        "source_system": "certinia",
        "source_id": "a0B1",
        "project_ref": "p",
        "event_date": "2026-11-30",
        "amount_minor": 500000,
        "currency": "USD",
        "status": "invoiced",
    }
    with pytest.raises(ValidationError, match="invoice_ref"):
        v1.BillingEvent.model_validate(event)
    assert v1.BillingEvent.model_validate({**event, "invoice_ref": "INV-1", "invoice_date": "2026-12-01"})
    invoice = v1.Invoice.model_validate(
        {
            "invoice_ref": "inv-1",
            "source_system": "erp",
            "source_id": "9001",
            "invoice_number": "INV-2026-0001",
            "customer_ref": "psa-client-1",
            "legal_entity": "LE-US1",
            "invoice_date": "2026-12-01",
            "total_minor": 500000,
            "amount_due_minor": 0,
            "currency": "USD",
            "status": "paid",
            "source_updated_at": "2026-12-10T00:00:00Z",
        }
    )
    assert invoice.status == "paid"
    posting = v1.RevenuePosting.model_validate(
        {
            "posting_ref": "rev-1",
            "source_system": "psa_erp_sync",
            "contract_ref": "c-1",
            "project_ref": "p",
            "legal_entity": "LE-US1",
            "period_ref": "2026-11",
            "posting_date": "2026-11-30",
            "method": "cost_to_cost",
            "kind": "catch_up",
            "amount_minor": -1500,
            "currency": "USD",
        }
    )
    assert posting.amount_minor == -1500


def forecast(**overrides: Any) -> dict[str, Any]:
    line = {
        "project_ref": "psa-project-1",
        "practice": "data",
        "legal_entity": "LE-US1",
        "layer": "contracted",
        "month": "2026-12-01",
        "currency": "USD",
        "amount_minor": 100000,
        "reporting_amount_minor": 100000,
    }
    snapshot: dict[str, Any] = {
        "snapshot_id": "fc-base-2026-11-26-abc",
        "scenario": "base",
        "version": "2026-11-26",
        "as_of": "2026-11-26",
        "run_id": "scheduled__2026-11-26T00:00:00+00:00",
        "data_versions": {"psa": "abc", "crm": "def"},
        "reporting_currency": "USD",
        "lines": [line],
    }
    snapshot.update(overrides)
    return snapshot


def test_forecast_snapshot() -> None:
    snap = v1.ForecastSnapshot.model_validate(forecast())
    assert snap.lines[0].month == date(2026, 12, 1)
    line = forecast()["lines"][0]
    with pytest.raises(ValidationError, match="duplicate"):
        v1.ForecastSnapshot.model_validate(forecast(lines=[line, line]))
    with pytest.raises(ValidationError, match="first day"):
        v1.ForecastSnapshot.model_validate(forecast(lines=[{**line, "month": "2026-12-15"}]))
    with pytest.raises(ValidationError, match="scenario"):
        v1.ForecastSnapshot.model_validate(forecast(scenario="optimistic"))
    with pytest.raises(ValidationError, match="layer"):
        v1.ForecastSnapshot.model_validate(forecast(lines=[{**line, "layer": "trend"}]))
