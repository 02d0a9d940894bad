"""ERP -> ODS master-data sync against the ERP simulator: incremental with an overlap window (a
record committed late, stamped before the watermark, is still read), dedupe by id and content
hash, and ERP-owned changes (rename, merge, deactivation) carried to the PSA exactly once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from psa_erp_sync.masterdata import propagate, sync
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

TODAY = date(2026, 11, 9)
AS_OF = datetime(2026, 11, 9, 12, tzinfo=UTC)
OVERLAP = timedelta(minutes=60)


@pytest.fixture
def firm(erp_sim: RunningSimulator, psa_sim: RunningSimulator, clean_master: str) -> Any:
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.load import load_firm

    firm = generate_firm(
        FirmSpec(seed=7, consultants=6, customers=8, projects=12, opportunities=3, today=TODAY)
    )
    load_firm(firm, psa_url=psa_sim.base_url, erp_url=erp_sim.base_url, crm_url=None, include_schedule=False)
    return firm


def _sync_all(dsn: str, client: Any, run_id: str) -> dict[str, sync.SyncResult]:
    with psycopg.connect(dsn) as conn:
        return {
            t: sync.sync_record_type(
                conn,
                client,
                record_type=t,
                run_key=f"md/{run_id}/{t}",
                run_id=run_id,
                as_of=AS_OF,
                overlap=OVERLAP,
            )
            for t in sync.RECORD_TYPES
        }


def test_incremental_sync_with_overlap_and_dedupe(firm: Any, erp_client: Any, clean_master: str) -> None:
    first = _sync_all(clean_master, erp_client, "r1")
    expected = {
        "subsidiary": len(firm.erp["subsidiaries"]),
        "currency": len(firm.erp["currencies"]),
        "taxcode": len(firm.erp["tax_codes"]),
        "customer": len(firm.erp["customers"]),
        "job": len(firm.erp["jobs"]),
        "accountingperiod": len(firm.erp["accounting_periods"]),
    }
    assert {t: r.extracted for t, r in first.items()} == expected
    assert all(r.mode == "full" and r.new_versions == r.extracted for r in first.values())
    with psycopg.connect(clean_master) as conn:
        held = dict(conn.execute("SELECT record_type, count(*) FROM master.erp_record GROUP BY 1").fetchall())
    assert held == expected
    # First sight of ERP-inactive customers and jobs queues their deactivation for the PSA.
    inactive = sum(1 for c in firm.erp["customers"] if c["is_inactive"]) + sum(
        1 for j in firm.erp["jobs"] if j["is_inactive"]
    )
    assert first["customer"].changes_queued + first["job"].changes_queued == inactive

    # Second run: the overlap re-reads recent records; nothing is new, nothing queued.
    second = _sync_all(clean_master, erp_client, "r2")
    assert all(r.mode == "incremental" for r in second.values())
    assert all(r.new_versions == 0 and r.known_versions == r.extracted for r in second.values())
    assert sum(r.changes_queued for r in second.values()) == 0

    # A record whose lastModifiedDate was stamped before the watermark but committed after the
    # last read (the ERP stamps at write time): a strict '>' on the watermark would lose it.
    with psycopg.connect(clean_master) as conn:
        mark = conn.execute(
            "SELECT high_watermark FROM staging.watermark WHERE source_system = 'erp' AND endpoint = 'customer'"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO sim_erp.record (type, external_id, body, last_modified, created_at) VALUES"
            " ('customer', 'psa-client-777', %s, %s, %s)",
            (
                '{"companyName": "Late Co", "subsidiary": {"externalId": "LE-US1"}, "currency": {"refName": "USD"}}',
                mark - timedelta(minutes=5),
                mark - timedelta(minutes=5),
            ),
        )
        conn.commit()
    third = _sync_all(clean_master, erp_client, "r3")
    assert third["customer"].new_versions == 1
    with psycopg.connect(clean_master) as conn:
        assert conn.execute(
            "SELECT name FROM master.erp_record WHERE external_id = 'psa-client-777'"
        ).fetchone() == ("Late Co",)


def _psa_clients(dsn: str) -> dict[int, tuple[str, bool]]:
    with psycopg.connect(dsn) as conn:
        return {i: (n, a) for i, n, a in conn.execute("SELECT id, name, is_active FROM sim_psa.clients")}


def _psa_projects(dsn: str) -> dict[int, tuple[int, str, bool]]:
    with psycopg.connect(dsn) as conn:
        return {
            i: (c, n, a)
            for i, c, n, a in conn.execute("SELECT id, client_id, name, is_active FROM sim_psa.projects")
        }


def test_erp_changes_propagate_to_the_psa_once(
    firm: Any, erp_client: Any, psa_client: Any, clean_master: str
) -> None:
    _sync_all(clean_master, erp_client, "r1")
    with psycopg.connect(clean_master) as conn:
        first = propagate.propagate_pending(conn, psa_client, run_id="r1")
    assert first.applied + first.skipped == first.by_change.get("deactivate", 0)
    active = [c for c in firm.erp["customers"] if not c["is_inactive"]]
    renamed, deactivated, merged, survivor = (int(c["external_id"].split("-")[-1]) for c in active[:4])
    job = next(j for j in firm.erp["jobs"] if not j["is_inactive"])
    project_id = int(job["external_id"].split("-")[-1])
    merged_projects = {p for p, (c, _, _) in _psa_projects(clean_master).items() if c == merged}
    assert merged_projects, "the merged customer should own projects in the PSA"

    # Finance changes master data in the ERP (the authority).
    erp_client.upsert("customer", f"psa-client-{renamed}", {"companyName": "Renamed Holdings ÅB"})
    erp_client.upsert("customer", f"psa-client-{deactivated}", {"isInactive": True})
    erp_client.upsert(
        "customer",
        f"psa-client-{merged}",
        {"isInactive": True, "custentity_merged_into": f"psa-client-{survivor}"},
    )
    erp_client.upsert("job", job["external_id"], {"companyName": "Phase 2 (renamed)"})
    results = _sync_all(clean_master, erp_client, "r2")
    assert results["customer"].new_versions == 3 and results["customer"].changes_queued == 3
    assert results["job"].changes_queued == 1
    with psycopg.connect(clean_master) as conn:
        second = propagate.propagate_pending(conn, psa_client, run_id="r2")
        assert second.by_change == {"deactivate": 1, "merge": 1, "rename": 2}
        assert second.applied == 4

    clients = _psa_clients(clean_master)
    assert clients[renamed] == ("Renamed Holdings ÅB", True)
    assert clients[deactivated][1] is False
    assert clients[merged][1] is False
    projects = _psa_projects(clean_master)
    assert {p for p, (c, _, _) in projects.items() if c == merged} == set()
    assert merged_projects <= {p for p, (c, _, _) in projects.items() if c == survivor}
    assert projects[project_id][1] == "Phase 2 (renamed)"

    # Nothing pending: a re-run writes nothing to the PSA.
    _sync_all(clean_master, erp_client, "r3")
    with psycopg.connect(clean_master) as conn:
        third = propagate.propagate_pending(conn, psa_client, run_id="r3")
    assert third.applied == third.psa_writes == 0
