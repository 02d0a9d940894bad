"""HR -> PSA users and ERP employees, with the authority map enforced.

HR is the authority for people (name, home legal entity, employment status) and cost rates
(``config/systems_of_authority.yaml``: domains ``resource`` and ``cost_rate``). For each worker in
``hr.worker``, on the run's ``as_of`` date:

* a worker whose legal entity is not in ``config/legal_entities.yaml`` is held back with a
  ``validation`` item (``HOME_LEGAL_ENTITY_UNKNOWN``), resolved when HR corrects the company;
* a future hire (hire date after ``as_of``) is left alone: no PSA user yet;
* a worker with no PSA user (matched by ``employee_id``, else by email) is created, unless already
  terminated;
* an existing user converges to HR's values with one absolute PATCH; a termination deactivates the
  user from the termination date on (``as_of >= termination_date``), and the ERP employee gets
  ``isInactive`` and ``releaseDate``;
* a PSA value of an HR-owned field that is neither HR's value nor what we last wrote there is a
  **PSA-side edit**: it is overwritten, and a ``propagation`` exception (``HR_FIELD_EDITED_IN_PSA``,
  owner from ``config/ownership.yaml``, detail naming the fields, never their values) is recorded.
  The item stays open until its owner resolves or ignores it; another edit counts another
  occurrence. A user seen for the first time (nothing written by us yet) is aligned without an item:
  there is no baseline to call its values an edit.

The PSA has no idempotency key, so a user is always looked up before it is created; each worker's
write and its ``hr.worker`` bookkeeping are committed together, worker by worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import psycopg

from psa_erp_sync.config import Config
from psa_erp_sync.money import format_minor
from psa_erp_sync.ods import exceptions, hr
from psa_erp_sync.ods.exceptions import Item
from psa_erp_sync.routing.route import RouteNotFound, Router
from psa_erp_sync.routing.route import router as default_router

log = logging.getLogger(__name__)

DOMAIN = "hr"
#: HR-owned PSA user fields, by the authority-map domain that owns them.
OWNED_FIELDS: dict[str, tuple[str, ...]] = {
    "resource": ("first_name", "last_name", "legal_entity", "is_active"),
    "cost_rate": ("cost_rate",),
}
EDITED_IN_PSA = "HR_FIELD_EDITED_IN_PSA"
PSA_WRITE_FAILED = "PSA_WRITE_FAILED"
ERP_WRITE_FAILED = "ERP_WRITE_FAILED"
HOME_LEGAL_ENTITY_UNKNOWN = "HOME_LEGAL_ENTITY_UNKNOWN"


class PsaUsers(Protocol):
    def iter_users(self) -> Any: ...
    def create_user(self, fields: dict[str, Any]) -> dict[str, Any]: ...
    def update_user(self, user_id: int, fields: dict[str, Any]) -> dict[str, Any]: ...


class ErpEmployees(Protocol):
    def upsert(self, record_type: str, external_id: str, body: dict[str, Any]) -> str: ...


def hr_owned_fields(config: Config) -> tuple[str, ...]:
    """The PSA user fields HR is the authority for, per the authority map."""
    return tuple(
        name
        for domain, names in OWNED_FIELDS.items()
        if domain in config.authority.domains and config.authority.authority_of(domain) == "hr"
        for name in names
    )


def _norm(name: str, value: Any) -> Any:
    """A PSA value in comparable form: rates as 2-decimal strings, flags as bool."""
    if value is None:
        return None
    if name == "cost_rate":
        try:
            return f"{Decimal(str(value)):.2f}"
        except InvalidOperation:
            return str(value)
    if name == "is_active":
        return bool(value)
    return str(value)


@dataclass
class PsaPropagation:
    created: int = 0
    updated: int = 0
    deactivated: int = 0
    unchanged: int = 0
    future_hires: int = 0
    legal_entity_unknown: int = 0
    terminated_never_created: int = 0
    psa_edits_overwritten: int = 0
    rates_missing: int = 0
    failed: int = 0
    psa_writes: int = 0
    by_field: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(sorted(v.items())) if isinstance(v, dict) else v) for k, v in vars(self).items()}


def is_terminated(worker: dict[str, Any], as_of: date) -> bool:
    """Terminated from the termination date on (the user is deactivated on that day)."""
    ended = worker["termination_date"]
    return ended is not None and ended <= as_of


def desired_user(
    conn: psycopg.Connection, worker: dict[str, Any], *, as_of: date, owned: tuple[str, ...]
) -> dict[str, Any]:
    """HR's values of the HR-owned PSA user fields on ``as_of`` (cost rate only when HR has one)."""
    values: dict[str, Any] = {
        "first_name": worker["first_name"],
        "last_name": worker["last_name"],
        "legal_entity": worker["legal_entity"],
        "is_active": not is_terminated(worker, as_of),
    }
    rate = hr.rate_on(conn, worker["employee_id"], as_of)
    if rate is not None:
        values["cost_rate"] = format_minor(*rate)
    return {k: v for k, v in values.items() if k in owned}


def _item(
    worker: dict[str, Any], user_id: int | None, reason: str, owner: str, detail: dict[str, Any]
) -> Item:
    return Item(
        kind="propagation",
        domain=DOMAIN,
        source_system="psa",
        record_type="user",
        source_id=str(user_id) if user_id is not None else f"employee-{worker['employee_id']}",
        reason_code=reason,
        owner=owner,
        legal_entity=worker["legal_entity"],
        detail={"employee_id": worker["employee_id"], **detail},
    )


def _entity_unknown(worker: dict[str, Any], owner: str) -> Item:
    """The validation item of a worker whose home legal entity is not configured."""
    return Item(
        kind="validation",
        domain=DOMAIN,
        source_system="hr",
        record_type="worker",
        source_id=worker["employee_id"],
        reason_code=HOME_LEGAL_ENTITY_UNKNOWN,
        owner=owner,
        legal_entity=worker["legal_entity"],
        detail={"legal_entity": worker["legal_entity"]},
    )


def _update_user(
    conn: psycopg.Connection,
    psa: PsaUsers,
    worker: dict[str, Any],
    uid: int,
    user: dict[str, Any],
    want: dict[str, Any],
    *,
    owner: str,
    result: PsaPropagation,
    run_id: str,
) -> None:
    """Converge an existing PSA user to HR; queue the HR-owned fields edited in the PSA since our
    last write (overwritten)."""
    employee_id = worker["employee_id"]
    applied: dict[str, Any] = worker["psa_applied"] or {}
    diff = {k: v for k, v in want.items() if _norm(k, user.get(k)) != _norm(k, v)}
    edited = sorted(k for k in diff if k in applied and _norm(k, user.get(k)) != _norm(k, applied[k]))
    patch = dict(diff)
    if user.get("employee_id") != employee_id:
        patch["employee_id"] = employee_id
    if patch:
        psa.update_user(uid, patch)
        result.psa_writes += 1
        if diff.get("is_active") is False:
            result.deactivated += 1
        else:
            result.updated += 1
        for name in diff:
            result.by_field[name] = result.by_field.get(name, 0) + 1
    else:
        result.unchanged += 1
    if edited:
        result.psa_edits_overwritten += 1
        exceptions.quarantine_many(
            conn,
            [
                _item(
                    worker,
                    uid,
                    EDITED_IN_PSA,
                    owner,
                    {"fields": edited, "overwritten": True, "authority": "hr"},
                )
            ],
            run_id=run_id,
        )
    hr.record_psa(conn, employee_id, psa_user_id=uid, applied=want)
    hr.resolve_reason(conn, "psa", "user", [f"employee-{employee_id}", str(uid)], PSA_WRITE_FAILED)
    conn.commit()


def propagate_to_psa(
    conn: psycopg.Connection, psa: PsaUsers, *, as_of: date, run_id: str, config: Config
) -> PsaPropagation:
    """Converge every worker's PSA user to HR (create, update, deactivate); report PSA-side edits."""
    from psa_erp_sync.clients.psa import PsaApiError

    result = PsaPropagation()
    owned = hr_owned_fields(config)
    users = {int(u["id"]): u for u in psa.iter_users()}
    by_employee = {str(u["employee_id"]): uid for uid, u in users.items() if u.get("employee_id")}
    # An email matches only a user no other worker claims (a user with another employee_id is
    # someone else, even when HR and the PSA disagree on an address).
    by_email = {str(u["email"]).lower(): uid for uid, u in users.items() if u.get("email")}
    known_entities = config.legal_entities.legal_entities
    valid: list[str] = []
    for worker in hr.workers(conn):
        employee_id = worker["employee_id"]
        owner = config.ownership.owner_for(DOMAIN, worker["legal_entity"])
        if worker["legal_entity"] not in known_entities:
            # The authority map's rule for resources: the home legal entity must exist. Nothing
            # flows until HR corrects the company (or the entity is configured).
            result.legal_entity_unknown += 1
            exceptions.quarantine_many(conn, [_entity_unknown(worker, owner)], run_id=run_id)
            conn.commit()
            continue
        valid.append(employee_id)
        if worker["hire_date"] > as_of:
            result.future_hires += 1
            continue
        uid = worker["psa_user_id"] if worker["psa_user_id"] in users else None
        uid = uid or by_employee.get(employee_id)
        if uid is None:
            by_mail = by_email.get(str(worker["email"] or "").lower())
            if by_mail is not None and users[by_mail].get("employee_id") in (None, "", employee_id):
                uid = by_mail
        want = desired_user(conn, worker, as_of=as_of, owned=owned)
        if "cost_rate" in owned and "cost_rate" not in want:
            result.rates_missing += 1
        try:
            if uid is None:
                if is_terminated(worker, as_of):
                    result.terminated_never_created += 1
                    continue
                if not worker["email"]:
                    raise ValueError("worker has no work email (the PSA requires one)")
                created = psa.create_user({**want, "email": worker["email"], "employee_id": employee_id})
                result.psa_writes += 1
                result.created += 1
                hr.record_psa(conn, employee_id, psa_user_id=int(created["id"]), applied=want)
                hr.resolve_reason(conn, "psa", "user", [f"employee-{employee_id}"], PSA_WRITE_FAILED)
                conn.commit()
                continue
            _update_user(conn, psa, worker, uid, users[uid], want, owner=owner, result=result, run_id=run_id)
        except (PsaApiError, ValueError) as exc:
            conn.rollback()
            result.failed += 1
            status = getattr(exc, "status", None)
            exceptions.quarantine_many(
                conn,
                [
                    _item(
                        worker, uid, PSA_WRITE_FAILED, owner, {"status": status, "error": type(exc).__name__}
                    )
                ],
                run_id=run_id,
            )
            conn.commit()
    exceptions.resolve_for(
        conn, source_system="hr", record_type="worker", source_ids=valid, kind="validation"
    )
    conn.commit()
    log.info("propagated HR to PSA users: %s", result.as_dict())
    return result


def erp_employee(worker: dict[str, Any], *, as_of: date) -> dict[str, Any]:
    """The NetSuite ``employee`` body of a worker (absolute values: a repeated PUT changes nothing)."""
    ended = is_terminated(worker, as_of)
    return {
        "subsidiary": {"externalId": worker["legal_entity"]},
        "firstName": worker["first_name"],
        "lastName": worker["last_name"],
        "hireDate": worker["hire_date"].isoformat(),
        "releaseDate": worker["termination_date"].isoformat() if worker["termination_date"] else None,
        "isInactive": ended,
    }


@dataclass
class ErpPropagation:
    upserted: int = 0
    unchanged: int = 0
    not_in_psa: int = 0
    legal_entity_unknown: int = 0
    failed: int = 0
    by_target: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: (dict(sorted(v.items())) if isinstance(v, dict) else v) for k, v in vars(self).items()}


def propagate_to_erp(
    conn: psycopg.Connection,
    erp_for: Callable[[str], ErpEmployees],
    *,
    as_of: date,
    run_id: str,
    config: Config,
    router: Router | None = None,
) -> ErpPropagation:
    """Upsert each provisioned worker's employee record (``psa-user-{id}``) in the ERP its legal
    entity routes to on ``as_of`` (``config/erp_routing.yaml``, :meth:`Router.route`: the ERP
    connection); only when HR's values changed since the last write."""
    router = router or default_router()
    from psa_erp_sync.clients.erp import ErpError

    result = ErpPropagation()
    for worker in hr.workers(conn):
        if worker["psa_user_id"] is None:
            result.not_in_psa += 1  # future hire, or never provisioned: no employee key yet
            continue
        if worker["legal_entity"] not in config.legal_entities.legal_entities:
            result.legal_entity_unknown += 1  # reported by propagate_to_psa; nothing flows
            continue
        try:
            target = router.route(worker["legal_entity"], as_of).connection
        except RouteNotFound as exc:  # a gap in the routing file: finance amends it
            log.warning("employee of a worker not written: %s", exc)
            result.failed += 1
            continue
        body = erp_employee(worker, as_of=as_of)
        if worker["erp_applied"] == body and worker["erp_target"] == target:
            result.unchanged += 1
            continue
        external_id = config.mappings.external_id("employee", worker["psa_user_id"])
        try:
            erp_for(target).upsert("employee", external_id, body)
        except ErpError as exc:
            result.failed += 1
            owner = config.ownership.owner_for(DOMAIN, worker["legal_entity"])
            item = Item(
                kind="propagation",
                domain=DOMAIN,
                source_system="erp",
                record_type="employee",
                source_id=external_id,
                reason_code=ERP_WRITE_FAILED,
                owner=owner,
                legal_entity=worker["legal_entity"],
                detail={
                    "employee_id": worker["employee_id"],
                    "target": target,
                    "error": type(exc).__name__,
                    "codes": list(getattr(exc, "codes", []) or []),
                },
            )
            exceptions.quarantine_many(conn, [item], run_id=run_id)
            conn.commit()
            continue
        hr.record_erp(conn, worker["employee_id"], target=target, applied=body)
        exceptions.resolve_for(
            conn, source_system="erp", record_type="employee", source_ids=[external_id], kind="propagation"
        )
        conn.commit()
        result.upserted += 1
        result.by_target[target] = result.by_target.get(target, 0) + 1
    log.info("propagated HR to ERP employees: %s", result.as_dict())
    return result
