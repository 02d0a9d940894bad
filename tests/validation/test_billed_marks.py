"""A PSA entry marked billed is not a new version of its work (issue 14, deliverable 6).

`billing_status` mirrors each ERP invoice into the PSA, which marks the invoiced time entries and
expenses ``is_billed`` with the invoice's id and number (and moves their ``updated_at``). The next
extract stages them again, but what the ERP was sent (hours, rate, amount, dates, project, ...) is
unchanged: validation must keep each canonical version as it was and the next posting pass must
send nothing. Before content versioning every marked entry became a NetSuite adjustment that
changed only its memo (the demo saw 2,666 time bills and 928 expense reports adjusted).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date

import pytest

from tests.conftest import RunningSimulator
from tests.validation.test_content_versions import TODAY, _extract_validate, _post, _state

pytestmark = pytest.mark.integration


def test_entries_marked_billed_in_the_psa_post_nothing_again(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    from psa_erp_sync.clients.psa import HarvestClient
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=9, consultants=6, customers=12, projects=20, opportunities=2, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=erp_sim.base_url, crm_url=None, include_schedule=False)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    with HarvestClient(base_url=psa_sim.base_url, token="t", account_id="1") as psa:
        _extract_validate(clean_ods, psa, "first")
        first = _post(clean_ods, erp_sim, "first")
        assert sum(sum(p["planned"].values()) for p in first.values()) > 0
        posted = _state(clean_ods)
        erp_before = {
            t: erp_sim.admin("GET", f"/records/{t}", params={"limit": 5000})["items"]
            for t in ("timebill", "expensereport")
        }

        # Invoice every unbilled billable entry of the first few clients in the PSA, as billing_status does.
        times: dict[int, list[int]] = defaultdict(list)
        expenses: dict[int, list[int]] = defaultdict(list)
        for page in psa.iter_pages("/v2/time_entries", {"is_billed": "false"}):
            for e in page:
                if e.get("billable") and e.get("client"):
                    times[int(e["client"]["id"])].append(int(e["id"]))
        for page in psa.iter_pages("/v2/expenses", {"is_billed": "false"}):
            for e in page:
                if e.get("billable") and e.get("client"):
                    expenses[int(e["client"]["id"])].append(int(e["id"]))
        clients = sorted(set(times) | set(expenses))[:4]
        marked = 0
        for n, client in enumerate(clients):
            invoice = psa.create_invoice(
                client_id=client,
                number=f"INV-T{n}",
                time_entry_ids=times[client],
                expense_ids=expenses[client],
                issue_date=date(2026, 10, 7),
            )
            assert invoice.number == f"INV-T{n}"
            marked += len(times[client]) + len(expenses[client])
        assert marked > 20
        billed_ids = {
            str(e["id"])
            for page in psa.iter_pages("/v2/time_entries", {"is_billed": "true"})
            for e in page
            if e.get("invoice")
        }
        billed = len(billed_ids)
        assert billed > 0

        again = _extract_validate(clean_ods, psa, "billed")
    # Staging saw the marked entries change; canonical's versions and the ledger did not (no audit
    # of a change either); the marked rows took the PSA's newer update time.
    assert again["/v2/time_entries"].new_versions >= billed
    now = _state(clean_ods)
    assert now["ledger"] == posted["ledger"] and now["audit"] == posted["audit"] == (0,)
    for table, rows in posted["canonical"].items():
        assert [(r[0], r[1], r[4]) for r in now["canonical"][table]] == [(r[0], r[1], r[4]) for r in rows]
    before = {r[0]: r[3] for r in posted["canonical"]["canonical.time_entry"]}
    after = {r[0]: r[3] for r in now["canonical"]["canonical.time_entry"]}
    in_canonical = billed_ids & set(before)
    assert in_canonical and all(after[i] > before[i] for i in in_canonical)
    second = _post(clean_ods, erp_sim, "second")
    for plan in second.values():
        assert all(n == 0 for n in plan["planned"].values()), plan
    assert _state(clean_ods)["ledger"] == posted["ledger"]
    erp_after = {
        t: erp_sim.admin("GET", f"/records/{t}", params={"limit": 5000})["items"]
        for t in ("timebill", "expensereport")
    }
    assert erp_after == erp_before
