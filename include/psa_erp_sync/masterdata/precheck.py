"""Posting pre-check: the ERP validation core applied to the projects a posting run is about to use.

Before time and expenses are posted, every distinct (project, legal entity, currency) of the run
is validated against the ERP in bulk: the job must exist and be active, its customer must be
active, its subsidiary and currency must match. Postings against a blocked project would only be
rejected by the ERP one by one at month-end; the pre-check names them, with reason codes, first.
Three or four SuiteQL queries per run, whatever the number of entries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from psa_erp_sync.masterdata.validation import Candidate, ErpLookup, Verdict, validate_batch

JOB_EXTERNAL_ID = "psa-project-{id}"


@dataclass(frozen=True)
class ProjectUse:
    """A project as the posting run uses it."""

    project_ref: str  # PSA project id
    legal_entity: str
    currency: str


def project_uses(conn: psycopg.Connection) -> list[ProjectUse]:
    """Every (project, legal entity, currency) the approved, live time entries and expenses use."""
    return [
        ProjectUse(str(project), str(entity), str(currency).strip())
        for project, entity, currency in conn.execute(
            "SELECT DISTINCT project_ref, legal_entity, currency FROM canonical.time_entry"
            " WHERE approved AND NOT is_deleted"
            " UNION SELECT DISTINCT project_ref, legal_entity, currency FROM canonical.expense_entry"
            " WHERE approved AND NOT is_deleted"
        )
    ]


def precheck_projects(uses: Iterable[ProjectUse], lookup: ErpLookup) -> dict[str, Verdict]:
    """A verdict per distinct project reference (keyed ``project_ref|legal_entity|currency``).

    :raises ErpValidationUnavailable: the ERP could not be asked; nothing may be treated as valid.
    """
    distinct = sorted(set(uses), key=lambda u: (u.project_ref, u.legal_entity, u.currency))
    codes = {u: JOB_EXTERNAL_ID.format(id=u.project_ref) for u in distinct}
    jobs = lookup.by_external_ids("job", codes.values())
    candidates = []
    for use in distinct:
        job = jobs.get(codes[use])
        candidates.append(
            Candidate(
                key=f"{use.project_ref}|{use.legal_entity}|{use.currency}",
                project_code=codes[use],
                customer=str(job["parent"]) if job and job.get("parent") else None,
                legal_entity=use.legal_entity,
                currency=use.currency,
            )
        )
    return {v.key: v for v in validate_batch(candidates, lookup)}


def blocked_projects(verdicts: dict[str, Verdict]) -> dict[str, tuple[str, ...]]:
    """PSA project ids that must not be posted against, with the reasons."""
    return {key.split("|", 1)[0]: v.reasons for key, v in verdicts.items() if not v.ok}
