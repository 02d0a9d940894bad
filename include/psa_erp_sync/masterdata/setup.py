"""Opportunity-to-project provisioning: CRM closed-won -> validate -> ERP job -> PSA project -> links.

State lives in ``master.project_setup``, one row per opportunity, and each external step is
followed by a commit of its result before the next one starts:

``pending`` --ERP upsert by external id--> ``erp_job`` --find by code, else create--> ``psa_project``
--write the PSA id back onto the ERP job--> ``linked``

- The ERP job is upserted by its external id ``crm-opp-{id}``: repeating it never creates a second.
- The PSA has no idempotency key, so before creating a project we look for one of the client's
  projects whose ``code`` is that external id (the PSA-side cross-reference). A crash after the
  PSA committed but before we recorded it (the ambiguous failure) is therefore healed by the next
  run, which finds the project instead of creating it again.
- Nothing moves past ``pending`` unless the record's latest ERP validation verdict is ok.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Protocol

import psycopg
import yaml
from psycopg.types.json import Jsonb
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from psa_erp_sync.clients.crm_models import Opportunity
from psa_erp_sync.clients.erp import ErpRejected
from psa_erp_sync.clients.psa import PsaApiError, PsaWriteUncertain
from psa_erp_sync.masterdata import validation
from psa_erp_sync.masterdata.propagate import psa_client_id
from psa_erp_sync.money import format_minor, to_minor
from psa_erp_sync.ods import exceptions

log = logging.getLogger(__name__)

DOMAIN = "project_setup"
CONSUMER = "project_setup"
CLOSED_WON = "opportunity.closed_won"
JOB_EXTERNAL_ID = "crm-opp-{id}"
PSA_PROJECT_FIELD = "custentity_psa_project_id"  # the ERP-side cross-reference


def key_of(opportunity_id: int) -> str:
    return f"opp-{opportunity_id}"


def job_external_id(opportunity_id: int) -> str:
    return JOB_EXTERNAL_ID.format(id=opportunity_id)


# --- CRM payloads (validated at the boundary) -------------------------------------------------


class Account(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=255)
    legal_entity: str | None = None
    erp_customer_external_id: str | None = None


# --- rate cards (config/rate_cards.yaml) ------------------------------------------------------


class RateCards(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1, le=1)
    default: dict[str, Annotated[Decimal, BeforeValidator(str)]]
    practices: dict[str, dict[str, Annotated[Decimal, BeforeValidator(str)]]] = {}

    def hourly_rate(self, practice: str | None, currency: str) -> Decimal | None:
        by_practice = self.practices.get(practice or "", {})
        return by_practice.get(currency, self.default.get(currency))


@cache
def load_rate_cards(path: Path | None = None) -> RateCards:
    from psa_erp_sync.config import default_config_dir

    with (path or default_config_dir() / "rate_cards.yaml").open(encoding="utf-8") as handle:
        return RateCards.model_validate(yaml.safe_load(handle))


# --- clients used (plain protocols: tests may pass the real clients) --------------------------


class CrmReader(Protocol):
    def read_events(
        self, *, after: int = 0, limit: int | None = None, event_type: str | None = None
    ) -> Any: ...
    def get_opportunity(self, opportunity_id: int) -> dict[str, Any]: ...
    def get_account(self, account_id: int) -> dict[str, Any]: ...


class ErpWriter(Protocol):
    def upsert(self, record_type: str, external_id: str, body: dict[str, Any]) -> str: ...


class PsaProjects(Protocol):
    def iter_client_projects(self, client_id: int) -> Any: ...
    def create_project(self, fields: dict[str, Any]) -> dict[str, Any]: ...


# --- cursor of the CRM event feed -------------------------------------------------------------


def cursor(conn: psycopg.Connection, consumer: str) -> int:
    row = conn.execute("SELECT position FROM master.crm_cursor WHERE consumer = %s", (consumer,)).fetchone()
    return int(row[0]) if row else 0


def advance_cursor(conn: psycopg.Connection, consumer: str, position: int) -> None:
    conn.execute(
        "INSERT INTO master.crm_cursor AS c (consumer, position) VALUES (%s, %s)"
        " ON CONFLICT (consumer) DO UPDATE SET position = greatest(c.position, EXCLUDED.position), updated_at = now()",
        (consumer, position),
    )


def read_feed(crm: CrmReader, *, after: int, event_type: str) -> tuple[list[dict[str, Any]], int]:
    """Every event of one type after ``after`` (duplicates removed by event id) and the new position."""
    seen: set[str] = set()
    events: list[dict[str, Any]] = []
    position = after
    while True:
        page = crm.read_events(after=position, event_type=event_type)
        for event in page.events:
            if event.id not in seen:
                seen.add(event.id)
                events.append(event.data)
        position = page.next_after
        if not page.has_more:
            return events, position


# --- steps -----------------------------------------------------------------------------------


def collect(
    conn: psycopg.Connection, crm: CrmReader, *, run_id: str, extra_ids: Iterable[int] = ()
) -> list[dict[str, Any]]:
    """New closed-won opportunities from the event feed, plus any given ids, plus every setup not
    yet linked (rejected ones are re-validated each run, so an owner's fix in the ERP is picked up).
    Records them as setups and returns the validation candidates. The cursor advances in the same
    transaction as the setup rows."""
    after = cursor(conn, CONSUMER)
    events, position = read_feed(crm, after=after, event_type=CLOSED_WON)
    opportunities: dict[int, Opportunity] = {}
    for data in events:
        opp = Opportunity.model_validate(data["opportunity"])
        opportunities[opp.id] = opp
    open_ids = [
        int(r[0])
        for r in conn.execute("SELECT opportunity_id FROM master.project_setup WHERE state <> 'linked'")
    ]
    for opp_id in sorted({*extra_ids, *open_ids} - set(opportunities)):
        opportunities[opp_id] = Opportunity.model_validate(crm.get_opportunity(opp_id))
    accounts = {
        account_id: Account.model_validate(crm.get_account(account_id))
        for account_id in sorted({o.account_id for o in opportunities.values()})
    }
    candidates: list[dict[str, Any]] = []
    with conn.transaction():
        for opp in sorted(opportunities.values(), key=lambda o: o.id):
            if not opp.is_won:
                log.info("opportunity %d is not won; nothing to set up", opp.id)
                continue
            account = accounts[opp.account_id]
            legal_entity = opp.legal_entity or account.legal_entity
            spec = {
                "name": opp.name,
                "practice": opp.practice,
                "billing_type": opp.billing_type,
                "starts_on": opp.expected_start.isoformat() if opp.expected_start else None,
                "duration_months": opp.duration_months,
                "amount": str(opp.amount),
            }
            conn.execute(
                """
                INSERT INTO master.project_setup AS s (opportunity_id, job_external_id, state, customer_external_id,
                    legal_entity, currency, contract_minor, spec, last_run_id)
                VALUES (%s, %s, 'pending', %s, %s, %s, %s, %s, %s)
                ON CONFLICT (opportunity_id) DO UPDATE SET last_run_id = EXCLUDED.last_run_id, updated_at = now(),
                    customer_external_id = CASE WHEN s.state IN ('pending', 'rejected') THEN EXCLUDED.customer_external_id ELSE s.customer_external_id END,
                    legal_entity = CASE WHEN s.state IN ('pending', 'rejected') THEN EXCLUDED.legal_entity ELSE s.legal_entity END,
                    currency = CASE WHEN s.state IN ('pending', 'rejected') THEN EXCLUDED.currency ELSE s.currency END,
                    contract_minor = CASE WHEN s.state IN ('pending', 'rejected') THEN EXCLUDED.contract_minor ELSE s.contract_minor END,
                    spec = CASE WHEN s.state IN ('pending', 'rejected') THEN EXCLUDED.spec ELSE s.spec END
                """,
                (
                    opp.id,
                    job_external_id(opp.id),
                    account.erp_customer_external_id,
                    legal_entity,
                    opp.currency,
                    to_minor(opp.amount, opp.currency) if opp.amount.as_tuple().exponent >= -2 else None,  # type: ignore[operator]
                    Jsonb(spec),
                    run_id,
                ),
            )
            candidates.append(
                validation.Candidate(
                    key=key_of(opp.id),
                    customer=account.erp_customer_external_id,
                    customer_name=None if account.erp_customer_external_id else account.name,
                    legal_entity=legal_entity,
                    currency=opp.currency,
                    contract_value=opp.amount,
                ).model_dump(mode="json", exclude_none=True)
            )
        advance_cursor(conn, CONSUMER, position)
    log.info("project setup: %d candidates (%d new closed-won events)", len(candidates), len(events))
    return candidates


def _resolved_customer(verdicts: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {v["key"]: v["customer"] for v in verdicts if v.get("ok") and v.get("customer")}


def provision(
    conn: psycopg.Connection,
    erp: ErpWriter,
    psa: PsaProjects,
    *,
    run_id: str,
    verdicts: Sequence[dict[str, Any]] = (),
    rate_cards: RateCards | None = None,
    owner_for: Any = None,
) -> dict[str, Any]:
    """Advance every setup whose validation passed by one committed step at a time, to ``linked``.

    Re-running after a crash at any point resumes from the recorded state and creates nothing
    twice. Returns counts per step.
    """
    rates = rate_cards or load_rate_cards()
    customers = _resolved_customer(verdicts)
    rows = conn.execute(
        "SELECT opportunity_id FROM master.project_setup WHERE state IN ('pending', 'rejected') ORDER BY 1"
    ).fetchall()
    keys = [key_of(int(r[0])) for r in rows]
    ok = validation.passed(conn, DOMAIN, keys)
    for (opp_id,) in rows:
        state = "pending" if key_of(int(opp_id)) in ok else "rejected"
        customer = customers.get(key_of(int(opp_id)))
        conn.execute(
            "UPDATE master.project_setup SET state = %s, customer_external_id = coalesce(%s, customer_external_id),"
            " updated_at = now() WHERE opportunity_id = %s",
            (state, customer, opp_id),
        )
    conn.commit()
    counts = {
        "erp_jobs": 0,
        "psa_created": 0,
        "psa_found": 0,
        "linked": 0,
        "rejected": len(rows) - len(ok),
        "failed": 0,
    }
    work = conn.execute(
        "SELECT opportunity_id, job_external_id, state, customer_external_id, legal_entity, currency,"
        " contract_minor, spec, erp_internal_id, psa_project_id FROM master.project_setup"
        " WHERE state IN ('pending', 'erp_job', 'psa_project') ORDER BY opportunity_id"
    ).fetchall()
    conn.commit()
    for opp_id, ext, state, customer, legal_entity, currency, contract_minor, spec, _erp_id, psa_id in work:
        try:
            counts_step = _provision_one(
                conn,
                erp,
                psa,
                rates,
                opp_id,
                ext,
                state,
                customer,
                legal_entity,
                currency,
                contract_minor,
                spec,
                psa_id,
                run_id,
                owner_for,
            )
        except (ErpRejected, PsaApiError) as exc:
            if isinstance(exc, PsaWriteUncertain) or (isinstance(exc, PsaApiError) and not _definitive(exc)):
                raise  # outcome unknown or worth a retry: the task fails, the next try resumes
            codes = exc.codes if isinstance(exc, ErpRejected) else [f"PSA_{exc.status}"]
            _quarantine(
                conn, opp_id, legal_entity, "PROVISIONING_REJECTED", run_id, owner_for, {"codes": codes}
            )
            counts["failed"] += 1
            continue
        for name, value in counts_step.items():
            counts[name] += value
    log.info("project setup: %s", counts)
    return counts


def placed_jobs(conn: psycopg.Connection, router: Any, as_of: date) -> dict[tuple[str, str], str]:
    """(``job``, external id) -> the ERP holding the job, for each setup whose ERP job exists but
    is not linked yet: the ERP recorded when the job was written (``erp_name``), else the one its
    legal entity routes to on ``as_of`` (a job written before migration 0033)."""
    from psa_erp_sync.routing.route import RouteNotFound

    placed: dict[tuple[str, str], str] = {}
    rows = conn.execute(
        "SELECT job_external_id, erp_name, legal_entity FROM master.project_setup"
        " WHERE state IN ('erp_job', 'psa_project')"
    ).fetchall()
    for ext, erp_name, legal_entity in rows:
        if erp_name is None and legal_entity is not None:
            try:
                erp_name = router.route(legal_entity, as_of).erp
            except RouteNotFound:
                continue
        if erp_name is not None:
            placed[("job", str(ext))] = str(erp_name)
    return placed


def _definitive(exc: Any) -> bool:
    """A 4xx other than 408/429: the PSA refused the request and will refuse it again."""
    return exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429)


def _psa_project(
    spec: dict[str, Any],
    ext: str,
    client_id: int,
    rate: Decimal | None,
    contract: str,
    legal_entity: str,
    currency: str,
) -> dict[str, Any]:
    """For :func:`_provision_one`: the PSA project to create for a won opportunity's ERP job."""
    return {
        "client_id": client_id,
        "name": spec["name"],
        "code": ext,
        "is_billable": True,
        "is_fixed_fee": spec.get("billing_type") == "fixed_fee",
        "bill_by": "Project",
        "hourly_rate": str(rate) if rate is not None else None,
        "budget_by": "project_cost",
        "cost_budget": contract,
        "starts_on": spec.get("starts_on"),
        "billing_type": spec.get("billing_type"),
        "legal_entity": legal_entity,
        "currency": currency,
        "practice": spec.get("practice"),
    }


def _provision_one(
    conn: psycopg.Connection,
    erp: ErpWriter,
    psa: PsaProjects,
    rates: RateCards,
    opp_id: int,
    ext: str,
    state: str,
    customer: str,
    legal_entity: str,
    currency: str,
    contract_minor: int,
    spec: dict[str, Any],
    psa_id: int | None,
    run_id: str,
    owner_for: Any,
) -> dict[str, int]:
    """Move one setup from its state to ``linked``, committing after each external step."""
    counts = {"erp_jobs": 0, "psa_created": 0, "psa_found": 0, "linked": 0}
    contract = format_minor(int(contract_minor), currency)
    if state == "pending":
        internal = erp.upsert(
            "job",
            ext,
            {
                "companyName": spec["name"],
                "parent": {"externalId": customer},
                "subsidiary": {"externalId": legal_entity},
                "currency": {"refName": currency},
                "billingType": spec.get("billing_type") or "time_and_materials",
                "contractValue": contract,
                "isInactive": False,
            },
        )
        placed_in = getattr(erp, "placed_in", None)  # a RoutedErpWriter: the ERP now holding the job
        erp_name = placed_in("job", ext) if placed_in is not None else None
        _advance(conn, opp_id, "erp_job", run_id, erp_internal_id=internal, erp_name=erp_name)
        counts["erp_jobs"] += 1
        state = "erp_job"
    if state == "erp_job":
        client_id = psa_client_id(customer)
        if client_id is None:
            _quarantine(conn, opp_id, legal_entity, "PSA_CLIENT_UNMAPPED", run_id, owner_for)
            return counts
        found = [p for p in psa.iter_client_projects(client_id) if p.get("code") == ext]
        if found:
            psa_id = int(min(int(p["id"]) for p in found))
            counts["psa_found"] += 1
        else:
            rate = rates.hourly_rate(spec.get("practice"), currency)
            created = psa.create_project(
                _psa_project(spec, ext, client_id, rate, contract, legal_entity, currency)
            )
            psa_id = int(created["id"])
            counts["psa_created"] += 1
        _advance(conn, opp_id, "psa_project", run_id, psa_project_id=psa_id, psa_client_id=client_id)
        state = "psa_project"
    if state == "psa_project":
        erp.upsert("job", ext, {PSA_PROJECT_FIELD: str(psa_id)})
        _advance(conn, opp_id, "linked", run_id)
        exceptions.resolve_for(
            conn,
            source_system="crm",
            record_type="opportunity",
            source_ids=[key_of(int(opp_id))],
            kind="validation",
        )
        conn.commit()
        counts["linked"] += 1
    return counts


def _advance(conn: psycopg.Connection, opp_id: int, state: str, run_id: str, **columns: Any) -> None:
    sets = "".join(f"{name} = %s, " for name in columns)
    conn.execute(
        f"UPDATE master.project_setup SET {sets}state = %s, last_run_id = %s, updated_at = now()"
        " WHERE opportunity_id = %s",
        [*columns.values(), state, run_id, opp_id],
    )
    conn.commit()


def _quarantine(
    conn: psycopg.Connection,
    opp_id: int,
    legal_entity: str | None,
    reason: str,
    run_id: str,
    owner_for: Any,
    detail: dict[str, Any] | None = None,
) -> None:
    owner = owner_for(DOMAIN, legal_entity) if owner_for else "sales-operations"
    exceptions.quarantine_many(
        conn,
        [
            exceptions.Item(
                kind="validation",
                domain=DOMAIN,
                source_system="crm",
                record_type="opportunity",
                source_id=key_of(opp_id),
                reason_code=reason,
                owner=owner,
                legal_entity=legal_entity,
                detail=detail or {},
            )
        ],
        run_id=run_id,
    )
    conn.commit()
