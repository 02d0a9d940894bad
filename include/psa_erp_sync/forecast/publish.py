"""Push stored snapshots to the planning platform, idempotently.

The payload is built from the stored (immutable) lines, so every push of a snapshot sends the
same content under the same id: the platform answers 201 ``created`` once and 200 ``unchanged``
after, and a 409 (same id, other content) can only mean a bug, so it raises.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psa_erp_sync import money
from psa_erp_sync.forecast import store

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.clients.planning import PlanningClient, SnapshotReceipt

TARGET = "planning"


def payload(conn: psycopg.Connection, snap_id: str) -> dict[str, Any]:
    """The planning API body of a stored snapshot (decimal-string amounts)."""
    row = conn.execute(
        "SELECT scenario, version, as_of, reporting_currency FROM forecast.snapshot WHERE snapshot_id = %s",
        (snap_id,),
    ).fetchone()
    if row is None:
        raise LookupError(f"snapshot {snap_id} is not in the ODS")
    scenario, version, as_of, reporting = row
    reporting = str(reporting)
    return {
        "scenario": scenario,
        "version": version or snap_id,
        "as_of": as_of.isoformat(),
        "reporting_currency": reporting,
        "lines": [
            {
                "project_ref": line["project_ref"],
                "practice": line["practice"],
                "legal_entity": line["legal_entity"],
                "layer": line["layer"],
                "month": line["month"].isoformat(),
                "currency": str(line["currency"]),
                "amount": money.format_minor(int(line["amount_minor"]), str(line["currency"])),
                "reporting_amount": money.format_minor(int(line["reporting_amount_minor"]), reporting),
            }
            for line in store.read_lines(conn, snap_id)
        ],
    }


def push(conn: psycopg.Connection, client: PlanningClient, snap_id: str, *, run_id: str) -> SnapshotReceipt:
    """PUT the snapshot and record where it went (first push wins the record; replays keep it)."""
    receipt = client.put_snapshot_payload(snap_id, payload(conn, snap_id))
    with conn.transaction():
        conn.execute(
            "INSERT INTO forecast.publication (snapshot_id, target, status, content_hash, run_id) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (snapshot_id, target) DO NOTHING",
            (snap_id, TARGET, receipt.status, receipt.content_hash, run_id),
        )
    return receipt
