"""Cross-references per target ERP are frozen at a legal entity's cutover.

Real PostgreSQL (routing.xref, master.erp_record). LE-UK1 leaves NetSuite for SAP on 2027-01-01:
from that business date on, a NetSuite mapping of an LE-UK1 record can no longer change, neither
through the cross-reference itself nor through the master-data sync that writes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest

from psa_erp_sync.masterdata import sync
from psa_erp_sync.routing import xref
from tests.routing.conftest import CUTOVER, router_of, uk_cutover

pytestmark = pytest.mark.integration

ROUTER = router_of(**{"LE-UK1": uk_cutover()})
REFUSAL = (
    r"cross-reference frozen: LE-UK1 left netsuite at its cutover on 2027-01-01; the netsuite customer"
    r" mapping of psa-client-1 cannot change from 101 to 555 on 2027-01-01\. The old ERP's mappings are"
    r" history after cutover"
)


@pytest.fixture
def clean_xref(clean_ods: str) -> str:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("TRUNCATE routing.xref")
        conn.execute("DELETE FROM master.erp_record WHERE external_id LIKE 'psa-client-%'")
    return clean_ods


def _record(
    conn: psycopg.Connection, erp_id: str, as_of: date, entity: str = "LE-UK1", erp: str = "netsuite"
) -> bool:
    return xref.record(
        conn,
        ROUTER,
        target_erp=erp,
        legal_entity=entity,
        kind="customer",
        our_id="psa-client-1",
        erp_id=erp_id,
        as_of=as_of,
        run_id="t",
    )


def test_a_mapping_change_after_cutover_is_refused_with_a_clear_error(clean_xref: str) -> None:
    with psycopg.connect(clean_xref, autocommit=True) as conn:
        assert _record(conn, "100", date(2026, 12, 1)) is True
        assert _record(conn, "101", date(2026, 12, 31)) is True  # the last day before cutover: allowed
        assert _record(conn, "101", CUTOVER) is False  # the same mapping again is no change
        with pytest.raises(xref.XrefFrozen, match=REFUSAL):
            _record(conn, "555", CUTOVER)
        with pytest.raises(xref.XrefFrozen, match="new mapping to 9"):
            xref.record(
                conn,
                ROUTER,
                target_erp="netsuite",
                legal_entity="LE-UK1",
                kind="job",
                our_id="psa-project-9",
                erp_id="9",
                as_of=date(2027, 3, 1),
                run_id="t",
            )
        # The new ERP's cross-reference and the entities that did not move are not frozen.
        assert _record(conn, "UK-4711", CUTOVER, erp="sap") is True
        assert _record(conn, "777", date(2027, 6, 1), entity="LE-US1") is True
        rows = conn.execute(
            "SELECT target_erp, legal_entity, erp_id, frozen_at FROM routing.xref ORDER BY 1, 2"
        ).fetchall()
    assert rows == [
        ("netsuite", "LE-UK1", "101", CUTOVER),
        ("netsuite", "LE-US1", "777", None),
        ("sap", "LE-UK1", "UK-4711", None),
    ]


def test_freeze_at_cutover_stamps_mappings_written_before_the_routing_file_had_the_cutover(
    clean_xref: str,
) -> None:
    with psycopg.connect(clean_xref, autocommit=True) as conn:
        xref.record(
            conn,
            router_of(),
            target_erp="netsuite",
            legal_entity="LE-UK1",
            kind="customer",
            our_id="psa-client-1",
            erp_id="101",
            as_of=date(2026, 10, 1),
            run_id="t",
        )
        assert conn.execute("SELECT frozen_at FROM routing.xref").fetchone() == (None,)
        assert xref.freeze_at_cutover(conn, ROUTER) == 1
        assert conn.execute("SELECT frozen_at FROM routing.xref").fetchone() == (CUTOVER,)


class _Customers:
    """A SuiteQL source answering one page of customers (the ERP side of the master-data sync)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        return iter(self.rows)


def _customer(internal_id: str, modified: datetime) -> dict[str, Any]:
    return {
        "id": internal_id,
        "externalid": "psa-client-1",
        "lastmodifieddate": modified.isoformat(),
        "companyname": "Customer One",
        "subsidiary": "LE-UK1",
        "currency": "GBP",
        "isinactive": "F",
    }


def test_the_master_data_sync_is_refused_when_netsuite_remaps_a_migrated_entity(clean_xref: str) -> None:
    before = datetime(2026, 12, 20, 9, tzinfo=UTC)
    after = datetime(2027, 1, 4, 9, tzinfo=UTC)
    with psycopg.connect(clean_xref) as conn:

        def run(rows: list[dict[str, Any]], as_of: datetime, run_id: str) -> sync.SyncResult:
            return sync.sync_record_type(
                conn,
                _Customers(rows),
                record_type="customer",
                run_key=f"x/{run_id}",
                run_id=run_id,
                as_of=as_of,
                overlap=timedelta(minutes=60),
                router=ROUTER,
            )

        assert run([_customer("101", before)], before, "r1").new_versions == 1
        conn.commit()
        # A rename in NetSuite after cutover keeps the mapping: allowed.
        renamed = {**_customer("101", after), "companyname": "Customer One Ltd"}
        assert run([renamed], after, "r2").new_versions == 1
        conn.commit()
        with pytest.raises(xref.XrefFrozen, match="cannot change from 101 to 555 on 2027-01-04"):
            run([{**_customer("555", after + timedelta(hours=1))}], after + timedelta(hours=2), "r3")
        conn.rollback()
        held = conn.execute(
            "SELECT internal_id, name FROM master.erp_record WHERE external_id = 'psa-client-1'"
        ).fetchone()
        mapped = conn.execute("SELECT erp_id FROM routing.xref WHERE our_id = 'psa-client-1'").fetchone()
    assert held == ("101", "Customer One Ltd")  # the refused page changed nothing
    assert mapped == ("101",)
