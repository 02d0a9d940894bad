"""Master data goes to the ERP its legal entity routes to (issue 15, deliverable 6).

Real NetSuite and SAP simulators over loopback, the ERP factory the domain-step operator hands to
``hr_sync`` and the project setup, and :class:`RoutedErpWriter`: LE-UK1's employee, customer and
job written on 2027-01-05 land in SAP (work agreement, customer, WBS element of company code 2010)
and a time record books under them; written on 2026-12-15 they land in NetSuite.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import RunningSimulator
from tests.two_erps import COMPANY, UK, connect_two_erps

pytestmark = pytest.mark.integration

EMPLOYEE = {
    "subsidiary": {"externalId": UK},
    "firstName": "Ada",
    "lastName": "Byron",
    "hireDate": "2026-06-01",
    "releaseDate": None,
    "isInactive": False,
}
CUSTOMER = {
    "companyName": "Globex Ltd",
    "subsidiary": {"externalId": UK},
    "currency": {"refName": "GBP"},
    "isInactive": False,
}


def _job(customer: str) -> dict[str, object]:
    return {
        "companyName": "Project 43",
        "parent": {"externalId": customer},
        "subsidiary": {"externalId": UK},
        "currency": {"refName": "GBP"},
        "billingType": "time_and_materials",
        "contractValue": "5000.00",
        "isInactive": False,
    }


def test_master_data_is_written_to_the_erp_the_entity_routes_to(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from psa_erp_sync.clients.sap import S4HanaClient
    from psa_erp_sync.clients.sap_models import TimeSheetInput
    from psa_erp_sync.masterdata.erp_targets import RoutedErpWriter
    from psa_erp_sync.operators.step import _erp_factory
    from psa_erp_sync.routing.route import router

    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    routing = router()
    with ExitStack() as stack:
        erp_for = _erp_factory(stack)
        by_name = lambda erp: erp_for(routing.routing.connection_of(erp))  # noqa: E731
        after = RoutedErpWriter(routing, by_name, as_of=date(2027, 1, 5))
        assert after.upsert("employee", "psa-user-8", EMPLOYEE) == "psa-user-8"
        after.upsert("customer", "psa-client-2", CUSTOMER)
        after.upsert("job", "psa-project-43", _job("psa-client-2"))
        after.upsert("job", "psa-project-43", {"custentity_psa_project_id": "43"})  # a link: SAP holds none
        before = RoutedErpWriter(routing, by_name, as_of=date(2026, 12, 15))
        before.upsert("customer", "psa-client-3", CUSTOMER)
        assert (after.sent, before.sent) == (
            {
                ("employee", "psa-user-8"): "sap",
                ("customer", "psa-client-2"): "sap",
                ("job", "psa-project-43"): "sap",
            },
            {("customer", "psa-client-3"): "netsuite"},
        )

    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret") as sap:
        agreements = {
            r.model_dump()["PersonWorkAgreementExternalID"]: r.model_dump()
            for r in sap.master_records("WorkAgreementCollection", COMPANY)
        }
        customers = [r.model_dump()["Customer"] for r in sap.master_records("CustomerCollection", COMPANY)]
        wbs = [r.model_dump() for r in sap.master_records("WBSElementCollection", COMPANY)]
        # The work agreement is the one SAP books time under: a record on the new WBS element is taken.
        entry = sap.create_timesheet(
            TimeSheetInput(
                person_work_agreement_external_id="psa-user-8",
                company_code=COMPANY,
                day=date(2027, 1, 5),
                hours=Decimal("1.00"),
                activity_type="T001",
                wbs_element="psa-project-43",
                note="psa:900 v:x",
            ),
            idempotency_key="push-per-erp-1",
        )
    assert agreements["psa-user-8"]["LastName"] == "Byron" and agreements["psa-user-8"]["IsInactive"] is False
    assert agreements["psa-user-8"]["StartDate"] == "/Date(1780272000000)/"  # 2026-06-01
    assert customers == ["psa-client-2"]
    assert [(w["WBSElement"], w["Customer"], w["Currency"]) for w in wbs] == [
        ("psa-project-43", "psa-client-2", "GBP")
    ]
    assert entry.is_live
    netsuite = {
        c["externalId"] for c in erp_sim.admin("GET", "/records/customer", params={"limit": 100})["items"]
    }
    assert "psa-client-3" in netsuite and "psa-client-2" not in netsuite


def test_an_unmapped_company_code_is_refused_with_the_erp_error() -> None:
    from psa_erp_sync.clients.erp import ErpRejected
    from psa_erp_sync.masterdata.erp_targets import SapMasterWriter

    writer = SapMasterWriter(client=None, company_codes={})
    with pytest.raises(ErpRejected) as refused:
        writer.upsert("customer", "psa-client-2", CUSTOMER)
    assert refused.value.codes == ["COMPANY_CODE_UNMAPPED"]
