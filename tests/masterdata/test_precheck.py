"""The posting pre-check (the validation core reused by the time & expense flow): every project
the generator made unusable in the ERP - job inactive or missing, customer inactive or unknown - is
blocked with a reason, nothing else is, and the whole firm costs a handful of ERP queries."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from psa_erp_sync.masterdata.precheck import ProjectUse, blocked_projects, precheck_projects
from psa_erp_sync.masterdata.validation import ErpLookup
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration


def test_precheck_blocks_exactly_the_erp_blocked_projects(erp_sim: RunningSimulator, erp_client: Any) -> None:
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=5, consultants=6, customers=20, projects=60, opportunities=3, today=date(2026, 11, 9))
    )
    load_firm(firm, psa_url=None, erp_url=erp_sim.base_url, crm_url=None)
    uses = [
        ProjectUse(str(p["id"]), p["legal_entity"], p["currency"])
        for p in firm.psa["projects"]
        if p["is_active"]
    ]
    lookup = ErpLookup(erp_client)
    verdicts = precheck_projects(uses * 3, lookup)  # repeated uses are judged once
    assert len(verdicts) == len(uses)
    blocked = blocked_projects(verdicts)
    assert set(blocked) == {str(p) for p in firm.erp_blocked_projects}
    assert set(blocked) and len(blocked) < len(uses)
    reasons = {r for rs in blocked.values() for r in rs}
    assert reasons <= {"PROJECT_UNKNOWN", "PROJECT_INACTIVE", "CUSTOMER_INACTIVE"}
    assert lookup.queries <= 6
