"""Carry ERP-owned master-data changes to the PSA: rename, merge, deactivation (and reactivation).

The ERP is the authority for customers and projects (jobs); the PSA follows. Each pending
``master.propagation`` row names a record and a change; we read the PSA's clients and projects
in bulk once, converge the PSA record to the ERP's current state with absolute-value PATCHes
(so repeating one is harmless) and mark the row applied in the same step. A record the PSA does
not know (no cross-reference) is marked skipped with a reason. A merge moves every project of
the merged client to the surviving client, then archives the merged client.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb

log = logging.getLogger(__name__)

_PSA_CLIENT = re.compile(r"^psa-client-(\d+)$")
#: The PSA record each ERP record type's change applies to (NetSuite's, and SAP's:
#: :mod:`psa_erp_sync.masterdata.sap_sync`): a client, else a project.
PSA_KIND = {"customer": "customer", "job": "job", "sap_customer": "customer", "sap_wbs_element": "job"}
_PSA_PROJECT = re.compile(r"^psa-project-(\d+)$")


class PsaWriter(Protocol):
    def iter_clients(self) -> Any: ...
    def iter_projects(self) -> Any: ...
    def update_client(self, client_id: int, fields: dict[str, Any]) -> dict[str, Any]: ...
    def update_project(self, project_id: int, fields: dict[str, Any]) -> dict[str, Any]: ...


def psa_client_id(customer_external_id: str | None) -> int | None:
    match = _PSA_CLIENT.match(customer_external_id or "")
    return int(match.group(1)) if match else None


def psa_project_id(conn: psycopg.Connection, job_external_id: str) -> int | None:
    """The PSA project of an ERP job: derived from the id, or from project setup's cross-reference."""
    match = _PSA_PROJECT.match(job_external_id)
    if match:
        return int(match.group(1))
    row = conn.execute(
        "SELECT psa_project_id FROM master.project_setup WHERE job_external_id = %s", (job_external_id,)
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None


@dataclass
class PropagationResult:
    applied: int = 0
    skipped: int = 0
    psa_writes: int = 0
    by_change: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "skipped": self.skipped,
            "psa_writes": self.psa_writes,
            "by_change": dict(sorted(self.by_change.items())),
        }


def _finish(
    conn: psycopg.Connection,
    row_id: int,
    status: str,
    psa_ref: str | None,
    detail: dict[str, Any],
    run_id: str,
) -> None:
    conn.execute(
        "UPDATE master.propagation SET status = %s, psa_ref = %s, detail = detail || %s,"
        " applied_run_id = %s, applied_at = now() WHERE id = %s",
        (status, psa_ref, Jsonb(detail), run_id, row_id),
    )
    conn.commit()


def propagate_pending(conn: psycopg.Connection, psa: PsaWriter, *, run_id: str) -> PropagationResult:
    """Apply every pending change, oldest first; each row is committed as soon as it is done."""
    result = PropagationResult()
    pending = conn.execute(
        """
        SELECT p.id, p.record_type, p.external_id, p.change, m.name, m.is_inactive, m.merged_into
        FROM master.propagation p JOIN master.erp_record m
          ON m.erp = p.erp AND m.company_code = p.company_code AND m.record_type = p.record_type
         AND m.external_id = p.external_id
        WHERE p.status = 'pending' ORDER BY p.id
        """
    ).fetchall()
    conn.commit()
    if not pending:
        return result
    clients = {int(c["id"]): c for c in psa.iter_clients()}
    projects = {int(p["id"]): p for p in psa.iter_projects()}
    for row_id, record_type, external_id, change, name, inactive, merged_into in pending:
        result.by_change[change] = result.by_change.get(change, 0) + 1
        if PSA_KIND.get(record_type) == "customer":
            client_id = psa_client_id(external_id)
            client = clients.get(client_id) if client_id is not None else None
            if client is None:
                result.skipped += 1
                _finish(conn, row_id, "skipped", None, {"why": "no PSA client for this customer"}, run_id)
                continue
            changed: list[str] = []
            if change == "merge":
                target = psa_client_id(merged_into)
                if target is None or target not in clients:
                    result.skipped += 1
                    _finish(conn, row_id, "skipped", None, {"why": "merge target has no PSA client"}, run_id)
                    continue
                for project in projects.values():
                    if (project.get("client") or {}).get("id") == client_id:
                        psa.update_project(int(project["id"]), {"client_id": target})
                        project["client"] = {"id": target}
                        result.psa_writes += 1
                        changed.append(f"projects/{project['id']}")
            fields: dict[str, Any] = {}
            if name and client.get("name") != name:
                fields["name"] = name
            if bool(client.get("is_active")) == bool(inactive):
                fields["is_active"] = not inactive
            if fields:
                client.update(psa.update_client(client_id, fields))  # type: ignore[arg-type]
                result.psa_writes += 1
                changed.extend(sorted(fields))
            result.applied += 1
            _finish(conn, row_id, "applied", f"clients/{client_id}", {"changed": changed}, run_id)
        else:
            project_id = psa_project_id(conn, external_id)
            project = projects.get(project_id) if project_id is not None else None
            if project is None or project_id is None:
                result.skipped += 1
                _finish(conn, row_id, "skipped", None, {"why": "no PSA project for this job"}, run_id)
                continue
            fields = {}
            if name and project.get("name") != name:
                fields["name"] = name
            if bool(project.get("is_active")) == bool(inactive):
                fields["is_active"] = not inactive
            if fields:
                project.update(psa.update_project(project_id, fields))
                result.psa_writes += 1
            result.applied += 1
            _finish(conn, row_id, "applied", f"projects/{project_id}", {"changed": sorted(fields)}, run_id)
    log.info("propagated ERP changes to the PSA: %s", result.as_dict())
    return result
