"""Content versioning: re-hashing a month is a no-op downstream (issue 16, deliverable 3).

A month of the simulated firm is extracted the way staging worked before it kept raw bytes (items
decoded into Python and re-encoded: the PSA's ``1.50`` became ``1.5``, so every content hash is that
of the re-encoded payload), validated and posted to the ERP simulator. The same month is then
extracted again the way it is now (each item's JSON as the PSA sent it): staging holds a new
version of nearly every record (its hash changed), and validation must keep every canonical
version as it was (same version hash, nothing updated or audited), so the next posting pass plans
and sends nothing: no new versions, no ERP adjustments.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

TODAY = date(2026, 10, 7)  # the September 2026 month settles on 7 October
AS_OF = datetime(2026, 10, 7, 12, tzinfo=UTC)
ENDPOINTS = (
    "/v2/projects",
    "/v2/users",
    "/v2/task_assignments",
    "/v2/expense_categories",
    "/v2/time_entries",
    "/v2/expenses",
)
KINDS = {"/v2/time_entries": ("time_entry", "timebill"), "/v2/expenses": ("expense_entry", "expensereport")}


class DecodedOnly:
    """The PSA client as staging saw it before raw bytes: decoded pages only."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def iter_pages(self, path: str, params: dict[str, Any]) -> Iterator[list[dict[str, Any]]]:
        return self.inner.iter_pages(path, params)  # type: ignore[no-any-return]


def _extract_validate(dsn: str, client: Any, run: str) -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.validation import time_expense as validation

    window = psa_extract.plan_window(
        None, mode="full", as_of=AS_OF, overlap=timedelta(hours=1), sweep_days=45
    )
    keys = {e: f"rehash/{run}{e}" for e in ENDPOINTS}
    staged: dict[str, Any] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for endpoint in ENDPOINTS:
            result = psa_extract.extract_endpoint(
                conn, client, endpoint=endpoint, run_key=keys[endpoint], window=window, per_page=500
            )
            staged[endpoint] = result
        ref = validation.PsaReference.from_staging(conn, keys)
        for endpoint, (kind, _) in KINDS.items():
            with conn.transaction():
                staged[kind] = validation.validate_run(
                    conn,
                    kind=kind,
                    run_key=keys[endpoint],
                    ref=ref,
                    config=load_config(),
                    as_of=AS_OF,  # type: ignore[arg-type]
                    dag_run_id=f"rehash-{run}",
                )
    return staged


def _post(dsn: str, erp: RunningSimulator, run: str) -> dict[str, Any]:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type

    plans = {}
    with NetSuiteClient(base_url=erp.base_url, account_id="A", token="t", timeout=30) as client:
        for _, record_type in KINDS.values():
            result = post_record_type(
                dsn=dsn,
                client=client,
                record_type=record_type,
                config=load_config(),
                settings=EngineSettings(batch_size=100, max_concurrency=4, progress_every_s=3600),
                run_id=f"rehash-{run}",
            )
            plans[record_type] = result.plan
    return plans


def _state(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        return {
            "canonical": {
                table: conn.execute(
                    f"SELECT source_id, version_hash, validated_at, source_read_at, record FROM {table}"
                    " ORDER BY source_id"
                ).fetchall()
                for table in ("canonical.time_entry", "canonical.expense_entry")
            },
            "ledger": conn.execute(
                "SELECT idempotency_key, source_version, action, state FROM ledger.posting ORDER BY idempotency_key"
            ).fetchall(),
            "audit": conn.execute("SELECT count(*) FROM audit.change WHERE actor = 'validation'").fetchone(),
        }


def test_rehashing_a_month_creates_no_new_versions_and_no_erp_adjustments(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    from psa_erp_sync.clients.psa import HarvestClient
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=5, consultants=6, customers=20, projects=30, opportunities=5, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=erp_sim.base_url, crm_url=None, include_schedule=False)
    psa_sim.admin("PUT", "/config", json={"rate_limit_requests": 0})
    psa = HarvestClient(base_url=psa_sim.base_url, token="t", account_id="1")

    before = _extract_validate(clean_ods, DecodedOnly(psa), "decoded")
    first_plans = _post(clean_ods, erp_sim, "first")
    assert sum(sum(p["planned"].values()) for p in first_plans.values()) > 0
    posted = _state(clean_ods)
    erp_before = {
        t: erp_sim.admin("GET", f"/records/{t}", params={"limit": 5000})["items"]
        for t in ("timebill", "expensereport")
    }

    after = _extract_validate(clean_ods, psa, "raw")
    # The raw bytes hash differently (the PSA's 1.50 is no longer 1.5): new versions in staging ...
    entries = before["/v2/time_entries"].extracted
    assert after["/v2/time_entries"].extracted == entries > 0
    assert after["/v2/time_entries"].new_versions == entries
    # ... and none in canonical: every row as it was (version, validation time, read time, record).
    assert after["time_entry"].staged_versions == entries
    assert after["time_entry"].unchanged == before["time_entry"].valid
    assert after["expense_entry"].unchanged == before["expense_entry"].valid
    assert (after["time_entry"].quarantined, after["expense_entry"].quarantined) == (
        before["time_entry"].quarantined,
        before["expense_entry"].quarantined,
    )
    now = _state(clean_ods)
    assert now == posted

    second_plans = _post(clean_ods, erp_sim, "second")
    for plan in second_plans.values():
        assert all(n == 0 for n in plan["planned"].values()), plan
    assert _state(clean_ods)["ledger"] == posted["ledger"]
    erp_after = {
        t: erp_sim.admin("GET", f"/records/{t}", params={"limit": 5000})["items"]
        for t in ("timebill", "expensereport")
    }
    assert erp_after == erp_before
