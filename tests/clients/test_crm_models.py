"""One definition of the CRM opportunity and change order (issue 17): master data reads
:class:`Opportunity` / :class:`ChangeOrder`, the forecast the subclasses that add its constraints.

The models as they were before (the forecast's own ``CrmOpportunity`` / ``CrmChangeOrder``) are
kept below as the reference: over a corpus of payloads, master data accepts and refuses exactly
what it did, and the forecast accepts exactly what it did *and* master data did: the only payloads
it refuses now that it accepted before are the ones :data:`NOW_REFUSED_BY_THE_FORECAST` names,
each outside the CRM's contract as master data always read it (money as a float, a currency that
is no ISO code, a non-positive id, no account or name).
"""

from __future__ import annotations

import copy
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, ValidationError

from psa_erp_sync.clients.crm_models import ChangeOrder, ForecastChangeOrder, ForecastOpportunity, Opportunity


class _OldForecastOpportunity(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: StrictInt
    stage: str
    amount: Decimal
    currency: str
    expected_start: date | None = None
    duration_months: StrictInt
    legal_entity: str
    practice: str
    billing_type: str | None = None
    psa_project_id: StrictInt | None = None
    is_won: StrictBool
    is_closed: StrictBool


class _OldForecastChangeOrder(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: StrictInt
    opportunity_id: StrictInt
    amount_delta: Decimal
    currency: str
    status: str
    effective_date: date | None = None


OPPORTUNITY: dict[str, Any] = {
    "id": 12,
    "account_id": 3,
    "name": "Data platform",
    "stage": "Closed Won",
    "probability": 100,
    "amount": "120000.00",
    "currency": "USD",
    "close_date": "2026-10-01",
    "expected_start": "2026-11-02",
    "duration_months": 6,
    "legal_entity": "LE-US1",
    "practice": "Data",
    "billing_type": "time_and_materials",
    "psa_project_id": 1,
    "is_won": True,
    "is_closed": True,
}
CHANGE_ORDER: dict[str, Any] = {
    "id": 5,
    "opportunity_id": 12,
    "amount_delta": "-2500.00",
    "currency": "USD",
    "status": "approved",
    "effective_date": "2026-12-01",
}

_MISSING = object()
OPPORTUNITY_CHANGES: dict[str, dict[str, Any]] = {
    "as sent": {},
    "float amount": {"amount": 120000.0},
    "int amount": {"amount": 120000},
    "lower-case currency": {"currency": "usd"},
    "id 0": {"id": 0},
    "id as text": {"id": "12"},
    "no account": {"account_id": _MISSING},
    "empty name": {"name": ""},
    "no duration": {"duration_months": None},
    "duration 0": {"duration_months": 0},
    "duration as text": {"duration_months": "6"},
    "no legal entity": {"legal_entity": None},
    "no practice": {"practice": _MISSING},
    "won as text": {"is_won": "true"},
    "won as 1": {"is_won": 1},
    "no is_closed": {"is_closed": _MISSING},
    "project as text": {"psa_project_id": "1"},
    "no project": {"psa_project_id": None},
    "bad start": {"expected_start": "02/11/2026"},
    "unknown field": {"owner_email": "x@example.com"},
}
CHANGE_ORDER_CHANGES: dict[str, dict[str, Any]] = {
    "as sent": {},
    "float delta": {"amount_delta": -2500.0},
    "lower-case currency": {"currency": "usd"},
    "id 0": {"id": 0},
    "id as text": {"id": "5"},
    "opportunity as text": {"opportunity_id": "12"},
    "no effective date": {"effective_date": None},
    "bad effective date": {"effective_date": "soon"},
    "no status": {"status": _MISSING},
}
NOW_REFUSED_BY_THE_FORECAST = {
    "opportunity": {"float amount", "lower-case currency", "id 0", "no account", "empty name", "duration 0"},
    "change order": {"float delta", "lower-case currency", "id 0"},
}


def _payload(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(base)
    for key, value in changes.items():
        if value is _MISSING:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def _accepts(model: type[BaseModel], payload: dict[str, Any]) -> bool:
    try:
        model.model_validate(payload)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    ("what", "base", "corpus", "master", "forecast", "old_forecast"),
    [
        (
            "opportunity",
            OPPORTUNITY,
            OPPORTUNITY_CHANGES,
            Opportunity,
            ForecastOpportunity,
            _OldForecastOpportunity,
        ),
        (
            "change order",
            CHANGE_ORDER,
            CHANGE_ORDER_CHANGES,
            ChangeOrder,
            ForecastChangeOrder,
            _OldForecastChangeOrder,
        ),
    ],
    ids=["opportunity", "change order"],
)
def test_the_forecast_accepts_what_it_did_within_the_crm_contract(
    what: str,
    base: dict[str, Any],
    corpus: dict[str, dict[str, Any]],
    master: type[BaseModel],
    forecast: type[BaseModel],
    old_forecast: type[BaseModel],
) -> None:
    assert issubclass(forecast, master)  # one definition: the forecast only adds constraints
    newly_refused = set()
    for name, changes in corpus.items():
        payload = _payload(base, changes)
        before = _accepts(old_forecast, payload)
        after = _accepts(forecast, payload)
        assert after == (before and _accepts(master, payload)), name
        if before and not after:
            newly_refused.add(name)
    assert newly_refused == NOW_REFUSED_BY_THE_FORECAST[what]


def test_master_data_reads_the_crm_as_it_did() -> None:
    expected = {  # master data's verdicts before the models were merged (its models are unchanged)
        name: name
        not in {
            "float amount",
            "lower-case currency",
            "id 0",
            "no account",
            "empty name",
            "duration 0",
            "bad start",
        }
        for name in OPPORTUNITY_CHANGES
    }
    assert {
        name: _accepts(Opportunity, _payload(OPPORTUNITY, c)) for name, c in OPPORTUNITY_CHANGES.items()
    } == expected
