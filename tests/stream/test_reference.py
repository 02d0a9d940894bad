"""The stream's targeted reference equals the batch's full reference, restricted to what the
announced records refer to (real PSA simulator, real staging)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.stream.helpers import extract_sample_reference

pytestmark = pytest.mark.integration


def test_targeted_reference_matches_the_full_reference(clean_ods: str, psa_sim: RunningSimulator) -> None:
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.stream import time_expense as stream
    from psa_erp_sync.validation.time_expense import PsaReference

    with (
        HarvestClient(base_url=psa_sim.base_url, token="t", account_id="1") as client,
        psycopg.connect(clean_ods, autocommit=True) as conn,
    ):
        keys = extract_sample_reference(psa_sim, conn, client)
        assert stream.latest_reference_keys(conn, timedelta(minutes=5)) == keys
        records = list(client.iter_items("/v2/time_entries", {"per_page": 100}))[:7]
        # An ERP rate synced into the ODS: both references carry it (foreign-currency work). Master
        # data outlives clean_ods, so start from no rates (another test may have synced this one).
        conn.execute("TRUNCATE master.currency_rate")
        conn.execute(
            "INSERT INTO master.currency_rate (base_currency, transaction_currency, effective_date, exchange_rate)"
            " VALUES ('EUR', 'USD', '2026-11-01', 0.9234567891)"
        )
        full = PsaReference.from_staging(conn, keys)
        targeted = stream.reference_for(conn, keys, records)
        conn.execute("TRUNCATE master.currency_rate")  # master data outlives clean_ods
    projects = {r["project"]["id"] for r in records}
    users = {r["user"]["id"] for r in records}
    assert targeted.projects == {p: ref for p, ref in full.projects.items() if p in projects}
    assert targeted.users == {u: active for u, active in full.users.items() if u in users}
    assert targeted.task_assignments == {a for a in full.task_assignments if a[0] in projects}
    assert targeted.expense_categories == full.expense_categories
    assert stream._covers(targeted, records)
    assert targeted.fx_rates == full.fx_rates and full.fx_rates.rates
