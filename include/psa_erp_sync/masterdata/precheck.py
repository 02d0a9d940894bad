"""Posting pre-check: the ERP validation core applied to the projects a posting run is about to use.

Before time and expenses are posted, every distinct (project, legal entity, currency) of the run
is validated against the ERP in bulk: the job must exist and be active, its customer must be
active, its subsidiary and currency must match. Postings against a blocked project would only be
rejected by the ERP one by one at month-end; the pre-check names them, with reason codes, first.
Three or four SuiteQL queries per run, whatever the number of entries.

**Per routed ERP** (docs/multi-erp.md, "Downstream per ERP"): each use is judged by the ERP its
legal entity and date route to. NetSuite's uses as above; an SAP system's uses by what SAP exposes
through the services we call (:func:`precheck_in_sap`): the legal entity has a company code with
posting periods (``LEGAL_ENTITY_UNKNOWN``) and SAP defines a posting period for every month used
(``PERIOD_UNKNOWN``: SAP treats a period it does not define as closed, and a closed one is the
period policy's business, not the pre-check's). WBS elements and work agreements are not readable
there, so SAP judges those when posting (dead letters, as for NetSuite's own refusals).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import psycopg

from psa_erp_sync.masterdata.validation import REASON_CODES, Candidate, ErpLookup, Verdict, validate_batch

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


def project_uses_by_day(conn: psycopg.Connection) -> list[tuple[ProjectUse, date]]:
    """Every (project use, day) the approved, live time entries and expenses have: the day decides
    the ERP the use routes to."""
    return [
        (ProjectUse(str(project), str(entity), str(currency).strip()), day)
        for project, entity, currency, day in conn.execute(
            "SELECT DISTINCT project_ref, legal_entity, currency, spent_date FROM canonical.time_entry"
            " WHERE approved AND NOT is_deleted"
            " UNION SELECT DISTINCT project_ref, legal_entity, currency, spent_date FROM canonical.expense_entry"
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


class Periods(Protocol):
    def containing(self, legal_entity: str, day: date) -> Any: ...


def precheck_in_sap(
    uses: Iterable[tuple[ProjectUse, date]], *, legal_entities: set[str], periods: Periods, erp: str = "sap"
) -> dict[str, Verdict]:
    """A verdict per distinct project use routed to an SAP system (keyed
    ``project_ref|legal_entity|currency|<erp>``): ``legal_entities`` are those with a company code
    and periods there (:meth:`~psa_erp_sync.posting.adapter.SapAdapter.read_master_data`),
    ``periods`` its posting periods (a :class:`~psa_erp_sync.posting.periods.PeriodBook`). No call."""
    reasons: dict[ProjectUse, set[str]] = {}
    for use, day in uses:
        found = reasons.setdefault(use, set())
        if use.legal_entity not in legal_entities:
            found.add("LEGAL_ENTITY_UNKNOWN")
        elif periods.containing(use.legal_entity, day) is None:
            found.add("PERIOD_UNKNOWN")
    verdicts = {}
    for use, codes in sorted(reasons.items(), key=lambda kv: (kv[0].project_ref, kv[0].legal_entity)):
        key = f"{use.project_ref}|{use.legal_entity}|{use.currency}|{erp}"
        ordered = tuple(code for code in REASON_CODES if code in codes)
        verdicts[key] = Verdict(key=key, ok=not ordered, reasons=ordered, legal_entity=use.legal_entity)
    return verdicts
