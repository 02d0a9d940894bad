"""The posting pre-check opens CURRENCY_MISMATCH only for postings the ERP would refuse (issue 13):
the ERP binds a time entry's currency to its job's currency, else to the posting subsidiary's, and
ignores the customer's. Each case is proven against the ERP simulator by posting the timebill."""

from __future__ import annotations

from typing import Any

import pytest

from psa_erp_sync.clients.erp import ErpRejected
from psa_erp_sync.masterdata.precheck import ProjectUse, precheck_projects
from psa_erp_sync.masterdata.validation import ErpLookup
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

SEED: dict[str, list[dict[str, Any]]] = {
    "currencies": [{"symbol": "USD", "name": "US Dollar"}, {"symbol": "GBP", "name": "Pound"}],
    "subsidiaries": [{"external_id": "LE-US1", "name": "US", "country": "US", "currency": "USD"}],
    "employees": [{"external_id": "psa-user-1", "subsidiary": "LE-US1"}],
    "customers": [
        {
            "external_id": "psa-client-1",
            "company_name": "Dollar Co",
            "subsidiary": "LE-US1",
            "currency": "USD",
        },
        {
            "external_id": "psa-client-2",
            "company_name": "Sterling Co",
            "subsidiary": "LE-US1",
            "currency": "GBP",
        },
    ],
    "jobs": [
        # a GBP job in a USD subsidiary: the job's currency binds
        {
            "external_id": "psa-project-20",
            "name": "GBP job",
            "customer": "psa-client-1",
            "subsidiary": "LE-US1",
            "currency": "GBP",
        },
        # a job with no currency of a GBP customer: the subsidiary's USD binds, the customer's does not count
        {
            "external_id": "psa-project-21",
            "name": "No currency",
            "customer": "psa-client-2",
            "subsidiary": "LE-US1",
            "currency": None,
        },
        # a USD job: GBP postings are refused
        {
            "external_id": "psa-project-22",
            "name": "USD job",
            "customer": "psa-client-1",
            "subsidiary": "LE-US1",
            "currency": "USD",
        },
    ],
    "accounting_periods": [
        {
            "external_id": "LE-US1-2026-11",
            "subsidiary": "LE-US1",
            "period_name": "Nov 2026",
            "start_date": "2026-11-01",
            "end_date": "2026-11-30",
            "closed": False,
            "all_locked": False,
            "ar_locked": False,
            "ap_locked": False,
        },
    ],
}

CASES = [  # (project, posting currency, the ERP accepts)
    ("20", "GBP", True),
    ("21", "USD", True),
    ("22", "GBP", False),
    ("22", "USD", True),
]


def _erp_answer(erp_client: Any, project: str, currency: str) -> str:
    """``accepted``, or the ERP's error details when it refuses the timebill."""
    body = {
        "tranDate": "2026-11-10",
        "employee": {"externalId": "psa-user-1"},
        "customer": {"externalId": f"psa-project-{project}"},
        "subsidiary": {"externalId": "LE-US1"},
        "hours": "1.00",
        "rate": "100.00",
        "currency": {"refName": currency},
        "isBillable": True,
    }
    try:
        erp_client.upsert("timebill", f"psa-te-{project}-{currency}", body)
    except ErpRejected as exc:
        return str(exc.details)
    return "accepted"


def test_currency_mismatch_only_when_the_erp_refuses_the_posting(
    erp_sim: RunningSimulator, erp_client: Any
) -> None:
    erp_sim.admin("POST", "/seed", json=SEED)
    # the ERP books a GBP timebill in the USD subsidiary at its rate for the date (issue 14, FX work)
    rate = {
        "baseCurrency": {"refName": "USD"},
        "transactionCurrency": {"refName": "GBP"},
        "exchangeRate": "1.27",
        "effectiveDate": "2026-11-01",
    }
    erp_client.upsert("currencyrate", "GBP-USD-2026-11-01", rate)
    verdicts = precheck_projects(
        [ProjectUse(project, "LE-US1", currency) for project, currency, _ in CASES], ErpLookup(erp_client)
    )
    for project, currency, accepted in CASES:
        answer = _erp_answer(erp_client, project, currency)
        assert (answer == "accepted") is accepted, (project, currency, answer)
        assert accepted or "CURRENCY_MISMATCH" in answer, answer
        verdict = verdicts[f"{project}|LE-US1|{currency}"]
        assert ("CURRENCY_MISMATCH" in verdict.reasons) is (not accepted), (project, currency, verdict)
        assert verdict.ok is accepted, verdict
