"""Change orders: carry approved CRM change orders to the ERP contract value and the PSA budget,
and reconcile what the ERP holds against the CRM to report revenue leakage.

Applying is absolute, not incremental: the contract value written is the opportunity's amount plus
every approved change order's delta, recomputed from the CRM each time, so applying twice (a
retried task, a redelivered event) cannot add a delta twice. The ERP job also records which change
orders it includes (``custentity_change_orders``), so reconciliation can name the missing ones
exactly; for jobs that predate us, the missing ones are inferred from the gap (the smallest set of
approved deltas that explains it) and marked as inferred.

The PSA has no change-order object: a change agreed in delivery shows up there as a project's money
budget (``cost_budget`` of a ``budget_by='project_cost'`` project) raised above the ERP contract
value. For the projects we set up (``master.project_setup``), a PSA budget above both the ERP
contract value and the CRM contract value (amount + approved change orders) is leakage too, with
``source_system='psa'`` and attribution ``psa_budget``: the excess no approved CRM change order
explains (the part a CRM change order explains is the CRM side's leakage, never counted twice).
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb
from pydantic import ValidationError

from psa_erp_sync.clients.crm_models import ChangeOrder, Opportunity
from psa_erp_sync.clients.psa_models import Project as PsaProject
from psa_erp_sync.masterdata.setup import CrmReader, advance_cursor, cursor, read_feed
from psa_erp_sync.money import format_minor, to_minor
from psa_erp_sync.ods import exceptions

log = logging.getLogger(__name__)

CONSUMER = "change_orders"
APPROVED = "change_order.approved"
APPLIED_FIELD = "custentity_change_orders"
MAX_INFERENCE = 12  # approved change orders per opportunity we search subsets of


#: A won opportunity: the CRM's opportunity, as project setup reads it too.
WonOpportunity = Opportunity


class CrmChangeOrders(CrmReader, Protocol):
    def iter_change_orders(self, *, opportunity_id: int | None = None, status: str | None = None) -> Any: ...
    def iter_opportunities(self, *, is_won: bool | None = None) -> Any: ...


class ErpJobs(Protocol):
    def upsert(self, record_type: str, external_id: str, body: dict[str, Any]) -> str: ...
    def suiteql(self, query: str, *, page_size: int = 1000) -> Any: ...


class PsaBudget(Protocol):
    def update_project(self, project_id: int, fields: dict[str, Any]) -> dict[str, Any]: ...


class PsaProjects(Protocol):
    def iter_projects(self, *, updated_since: Any = None) -> Any: ...


def job_of(conn: psycopg.Connection, opportunity: WonOpportunity) -> tuple[str | None, int | None]:
    """(ERP job external id, PSA project id) of a won opportunity: ours from project setup, else the
    cross-reference a pre-existing project carries (``psa-project-{id}``)."""
    row = conn.execute(
        "SELECT job_external_id, psa_project_id FROM master.project_setup WHERE opportunity_id = %s"
        " AND state IN ('erp_job', 'psa_project', 'linked')",
        (opportunity.id,),
    ).fetchone()
    if row:
        return str(row[0]), (int(row[1]) if row[1] is not None else None)
    if opportunity.psa_project_id is not None:
        return f"psa-project-{opportunity.psa_project_id}", opportunity.psa_project_id
    return None, None


def apply_approved(
    conn: psycopg.Connection, crm: CrmChangeOrders, erp: ErpJobs, psa: PsaBudget, *, run_id: str
) -> dict[str, Any]:
    """Apply the change orders approved since the last run (from the CRM event feed)."""
    after = cursor(conn, CONSUMER)
    events, position = read_feed(crm, after=after, event_type=APPROVED)
    opportunity_ids = sorted({int(e["change_order"]["opportunity_id"]) for e in events})
    applied = 0
    no_job = 0
    for opp_id in opportunity_ids:
        opportunity = WonOpportunity.model_validate(crm.get_opportunity(opp_id))
        if not opportunity.is_won:
            continue
        job, psa_project = job_of(conn, opportunity)
        if job is None:
            no_job += 1  # not provisioned yet: reconciliation reports it until it is
            continue
        orders = [
            ChangeOrder.model_validate(c)
            for c in crm.iter_change_orders(opportunity_id=opp_id, status="approved")
        ]
        contract = opportunity.amount + sum((c.amount_delta for c in orders), Decimal(0))
        contract_minor = to_minor(contract, opportunity.currency)
        contract_text = format_minor(contract_minor, opportunity.currency)
        erp.upsert(
            "job",
            job,
            {
                "contractValue": contract_text,
                APPLIED_FIELD: ",".join(str(c.id) for c in sorted(orders, key=lambda c: c.id)),
            },
        )
        if psa_project is not None:
            psa.update_project(psa_project, {"cost_budget": contract_text})
        with conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO master.change_order (change_order_id, opportunity_id, amount_delta_minor, currency,
                    job_external_id, contract_minor, applied_run_id)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (change_order_id) DO UPDATE SET contract_minor = EXCLUDED.contract_minor,
                    applied_run_id = EXCLUDED.applied_run_id, applied_at = now()
                """,
                [
                    (
                        c.id,
                        opp_id,
                        to_minor(c.amount_delta, c.currency),
                        c.currency,
                        job,
                        contract_minor,
                        run_id,
                    )
                    for c in orders
                ],
            )
        conn.commit()
        applied += 1
    advance_cursor(conn, CONSUMER, position)
    conn.commit()
    result = {"events": len(events), "opportunities_updated": applied, "without_job": no_job}
    log.info("change orders applied: %s", result)
    return result


@dataclass(frozen=True)
class Leak:
    change_order_id: int | None  # None: a gap no set of change orders explains
    opportunity_id: int
    job: str
    amount_minor: int
    currency: str
    attribution: str  # exact | inferred | unexplained


@dataclass(frozen=True)
class PsaLeak:
    """A PSA project budget above the ERP contract value beyond what approved CRM change orders explain."""

    psa_project_id: int
    opportunity_id: int
    job: str
    amount_minor: int  # budget - max(ERP contract, CRM contract)
    budget_minor: int
    erp_contract_minor: int
    currency: str


@dataclass(frozen=True)
class PsaProblem:
    """A linked PSA project we could not compare: gone, unreadable, or in another currency."""

    psa_project_id: int
    reason_code: str  # PSA_PROJECT_MISSING | PSA_PROJECT_INVALID | PSA_CURRENCY_MISMATCH
    detail: dict[str, Any]


PSA_PROBLEMS = ("PSA_PROJECT_MISSING", "PSA_PROJECT_INVALID", "PSA_CURRENCY_MISMATCH")


def psa_budget_leaks(
    conn: psycopg.Connection,
    psa: PsaProjects,
    *,
    jobs: Mapping[str, Mapping[str, Any]],
    crm_contract: Mapping[int, tuple[int, str]],
) -> tuple[list[PsaLeak], list[PsaProblem], int]:
    """Compare the money budget of every PSA project we set up with its ERP job's contract value.

    ``jobs`` is the ERP jobs by external id, ``crm_contract`` the CRM contract value (amount +
    approved change orders, minor units) and currency by opportunity id. The PSA projects are read
    in one paginated list call. Only ``budget_by='project_cost'`` projects have a money budget
    (``cost_budget``); hour budgets and projects without a budget are not compared. Returns the
    leaks, the projects that could not be compared, and how many were compared."""
    links = conn.execute(
        "SELECT psa_project_id, opportunity_id, job_external_id, currency FROM master.project_setup"
        " WHERE state IN ('psa_project', 'linked') AND psa_project_id IS NOT NULL ORDER BY psa_project_id"
    ).fetchall()
    wanted = {int(r[0]): (int(r[1]), str(r[2]), str(r[3])) for r in links}
    if not wanted:
        return [], [], 0
    projects: dict[int, PsaProject] = {}
    problems: list[PsaProblem] = []
    for raw in psa.iter_projects():
        pid = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(pid, int) or isinstance(pid, bool) or pid not in wanted:
            continue  # not one of ours: never looked at
        try:
            projects[pid] = PsaProject.model_validate(raw)
        except ValidationError as exc:  # field names and error types only, never the values
            errors = [
                {"field": ".".join(str(part) for part in e["loc"]), "type": e["type"]} for e in exc.errors()
            ]
            problems.append(PsaProblem(pid, "PSA_PROJECT_INVALID", {"errors": errors}))
    unreadable = {p.psa_project_id for p in problems}
    leaks: list[PsaLeak] = []
    checked = 0
    for pid, (opp_id, job_key, currency) in sorted(wanted.items()):
        project = projects.get(pid)
        if project is None:
            if pid not in unreadable:
                problems.append(
                    PsaProblem(pid, "PSA_PROJECT_MISSING", {"opportunity_id": opp_id, "job": job_key})
                )
            continue
        if project.budget_by != "project_cost" or project.cost_budget is None:
            continue  # no money budget to compare
        job = jobs.get(job_key)
        if job is None:
            continue  # the CRM side reports the missing job (JOB_MISSING_IN_ERP)
        if project.currency is not None and project.currency != currency:
            problems.append(
                PsaProblem(
                    pid,
                    "PSA_CURRENCY_MISMATCH",
                    {"opportunity_id": opp_id, "job": job_key, "currency": currency},
                )
            )
            continue
        checked += 1
        budget = to_minor(project.cost_budget, currency)
        erp_contract = to_minor(Decimal(str(job.get("contractvalue") or "0")), currency)
        ceiling = erp_contract
        crm = crm_contract.get(opp_id)
        if crm is not None and crm[1] == currency:
            ceiling = max(ceiling, crm[0])  # up to the CRM value, approved change orders explain it
        if budget > ceiling:
            leaks.append(PsaLeak(pid, opp_id, job_key, budget - ceiling, budget, erp_contract, currency))
    return leaks, problems, checked


def _amounts(pairs: Sequence[tuple[int, str]]) -> dict[str, str]:
    """Sum (minor, currency) pairs per currency, as decimal strings."""
    totals: dict[str, int] = defaultdict(int)
    for minor, currency in pairs:
        totals[currency] += minor
    return {cur: format_minor(minor, cur) for cur, minor in sorted(totals.items())}


def _explain(gap: int, orders: Sequence[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """The smallest set of (id, delta) whose deltas sum to ``gap``; ties go to the latest ids."""
    if len(orders) > MAX_INFERENCE:
        return None
    for size in range(1, len(orders) + 1):
        fits = [combo for combo in itertools.combinations(orders, size) if sum(d for _, d in combo) == gap]
        if fits:
            return list(max(fits, key=lambda combo: sorted(i for i, _ in combo)))
    return None


def _crm_leaks(
    conn: psycopg.Connection,
    opportunities: Sequence[WonOpportunity],
    orders: dict[int, list[ChangeOrder]],
    jobs: dict[str, Any],
) -> tuple[list[Leak], list[WonOpportunity], dict[int, tuple[int, str]]]:
    """Each won opportunity's CRM contract value against its ERP job: the leaked approved change
    orders, the opportunities without an ERP job, and each opportunity's CRM contract value."""
    leaks: list[Leak] = []
    missing_jobs: list[WonOpportunity] = []
    crm_contract: dict[int, tuple[int, str]] = {}
    for opportunity in opportunities:
        approved = orders.get(opportunity.id, [])
        currency = opportunity.currency
        expected = to_minor(
            opportunity.amount + sum((c.amount_delta for c in approved), Decimal(0)), currency
        )
        crm_contract[opportunity.id] = (expected, currency)
        job_key, _ = job_of(conn, opportunity)
        job = jobs.get(job_key) if job_key else None
        if job is None:
            missing_jobs.append(opportunity)
            continue
        assert job_key is not None
        have = to_minor(Decimal(str(job.get("contractvalue") or "0")), currency)
        applied_text = job.get(APPLIED_FIELD.lower())
        if applied_text:  # we applied change orders to this job: we know exactly which
            included = {int(i) for i in str(applied_text).split(",") if i.strip().isdigit()}
            for c in approved:
                if c.id not in included:
                    leaks.append(
                        Leak(
                            c.id,
                            opportunity.id,
                            job_key,
                            to_minor(c.amount_delta, currency),
                            currency,
                            "exact",
                        )
                    )
            continue
        gap = expected - have
        if gap == 0:
            continue
        found = _explain(gap, [(c.id, to_minor(c.amount_delta, currency)) for c in approved])
        if found is None:
            leaks.append(Leak(None, opportunity.id, job_key, gap, currency, "unexplained"))
        else:
            leaks.extend(Leak(i, opportunity.id, job_key, d, currency, "inferred") for i, d in found)
    return leaks, missing_jobs, crm_contract


def _item(
    kind: str,
    system: str,
    record_type: str,
    source_id: object,
    reason: str,
    detail: dict[str, Any],
    *,
    owner: str,
) -> Any:
    return exceptions.Item(
        kind=kind,
        domain="change_order",
        source_system=system,
        record_type=record_type,
        source_id=str(source_id),
        reason_code=reason,
        owner=owner,
        detail=detail,
    )


def _items(
    leaks: Sequence[Leak],
    missing_jobs: Sequence[WonOpportunity],
    psa_leaks: Sequence[PsaLeak],
    psa_problems: Sequence[PsaProblem],
    *,
    owner: str,
) -> list[Any]:
    """The exception items of one reconciliation: CRM and PSA leakage, missing jobs, unchecked
    PSA projects."""
    items = [
        _item(
            "leakage",
            "crm",
            "change_order" if leak.change_order_id is not None else "opportunity",
            leak.change_order_id if leak.change_order_id is not None else leak.opportunity_id,
            "REVENUE_LEAKAGE",
            {
                "opportunity_id": leak.opportunity_id,
                "job": leak.job,
                "amount": format_minor(leak.amount_minor, leak.currency),
                "currency": leak.currency,
                "attribution": leak.attribution,
            },
            owner=owner,
        )
        for leak in leaks
    ]
    items += [
        _item(
            "reconciliation",
            "crm",
            "opportunity",
            o.id,
            "JOB_MISSING_IN_ERP",
            {"amount": str(o.amount), "currency": o.currency},
            owner=owner,
        )
        for o in missing_jobs
    ]
    items += [
        _item(
            "leakage",
            "psa",
            "project",
            leak.psa_project_id,
            "REVENUE_LEAKAGE",
            {
                "opportunity_id": leak.opportunity_id,
                "job": leak.job,
                "amount": format_minor(leak.amount_minor, leak.currency),
                "currency": leak.currency,
                "attribution": "psa_budget",
                "psa_budget": format_minor(leak.budget_minor, leak.currency),
                "erp_contract_value": format_minor(leak.erp_contract_minor, leak.currency),
            },
            owner=owner,
        )
        for leak in psa_leaks
    ]
    items += [
        _item(
            "reconciliation",
            "psa",
            "project",
            problem.psa_project_id,
            problem.reason_code,
            problem.detail,
            owner=owner,
        )
        for problem in psa_problems
    ]
    return items


def _store(
    conn: psycopg.Connection,
    items: Sequence[Any],
    *,
    run_id: str,
    leaked_count: int,
    crm_amount: dict[str, str],
    jobs_missing: int,
    psa_leaked_count: int,
    psa_amount: dict[str, str],
) -> None:
    """Queue this run's items, resolve the open ones that cleared, and record the run's totals."""
    resolvable = [("leakage", "REVENUE_LEAKAGE"), ("reconciliation", "JOB_MISSING_IN_ERP")]
    resolvable += [("reconciliation", reason) for reason in PSA_PROBLEMS]
    with conn.transaction():
        exceptions.quarantine_many(conn, items, run_id=run_id)
        for kind, reason in resolvable:
            current = [(i.record_type, i.source_id) for i in items if i.kind == kind]
            exceptions.resolve_not_listed(
                conn, kind=kind, reason_code=reason, domain="change_order", current=current
            )
        conn.execute(
            """
            INSERT INTO master.leakage_run (run_id, leaked_count, amounts, jobs_missing, psa_leaked_count, psa_amounts)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (run_id) DO UPDATE SET leaked_count = EXCLUDED.leaked_count, amounts = EXCLUDED.amounts,
                jobs_missing = EXCLUDED.jobs_missing, psa_leaked_count = EXCLUDED.psa_leaked_count,
                psa_amounts = EXCLUDED.psa_amounts, recorded_at = now()
            """,
            (run_id, leaked_count, Jsonb(crm_amount), jobs_missing, psa_leaked_count, Jsonb(psa_amount)),
        )


def reconcile(
    conn: psycopg.Connection,
    crm: CrmChangeOrders,
    erp: ErpJobs,
    psa: PsaProjects,
    *,
    run_id: str,
    owner: str,
) -> dict[str, Any]:
    """Compare each won opportunity's CRM contract value (amount + approved change orders) with its
    ERP job, and the PSA budget of each project we set up with its ERP job (:func:`psa_budget_leaks`).
    Approved change orders missing from the ERP, and PSA budgets above the ERP contract value that no
    approved change order explains, are revenue leakage: reported with count and amount per
    currency, split by source system, and queued as ``leakage`` exception items (resolved when
    they clear)."""
    opportunities = [WonOpportunity.model_validate(o) for o in crm.iter_opportunities(is_won=True)]
    orders: dict[int, list[ChangeOrder]] = defaultdict(list)
    for raw in crm.iter_change_orders(status="approved"):
        order = ChangeOrder.model_validate(raw)
        orders[order.opportunity_id].append(order)
    jobs = {
        str(r["externalid"]): r
        for r in erp.suiteql(f"SELECT externalid, contractvalue, {APPLIED_FIELD} FROM job ORDER BY id")
    }
    leaks, missing_jobs, crm_contract = _crm_leaks(conn, opportunities, orders, jobs)
    psa_leaks, psa_problems, psa_checked = psa_budget_leaks(conn, psa, jobs=jobs, crm_contract=crm_contract)
    items = _items(leaks, missing_jobs, psa_leaks, psa_problems, owner=owner)
    crm_amount = _amounts([(leak.amount_minor, leak.currency) for leak in leaks])
    psa_amount = _amounts([(leak.amount_minor, leak.currency) for leak in psa_leaks])
    report = {
        "opportunities_checked": len(opportunities),
        "leaked_change_orders": len(leaks),
        "leaked_amount": crm_amount,
        "jobs_missing": len(missing_jobs),
        "by_attribution": {
            kind: sum(1 for leak in leaks if leak.attribution == kind)
            for kind in ("exact", "inferred", "unexplained")
        },
        "psa_projects_checked": psa_checked,
        "psa_leaked_projects": len(psa_leaks),
        "psa_leaked_amount": psa_amount,
        "psa_unchecked": {
            reason: sum(1 for p in psa_problems if p.reason_code == reason) for reason in PSA_PROBLEMS
        },
        "by_source": {
            "crm": {"count": len(leaks), "amount": crm_amount},
            "psa": {"count": len(psa_leaks), "amount": psa_amount},
        },
    }
    _store(
        conn,
        items,
        run_id=run_id,
        leaked_count=len(leaks),
        crm_amount=crm_amount,
        jobs_missing=len(missing_jobs),
        psa_leaked_count=len(psa_leaks),
        psa_amount=psa_amount,
    )
    log.info(
        "revenue leakage: CRM %d change orders, %s; PSA %d of %d projects over the ERP contract value, %s;"
        " %d won opportunities without an ERP job; %d PSA projects not compared",
        len(leaks),
        crm_amount,
        len(psa_leaks),
        psa_checked,
        psa_amount,
        len(missing_jobs),
        len(psa_problems),
    )
    return report
