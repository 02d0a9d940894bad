"""Workday -> ODS: every worker (effective-dated versions) and the cost-rate report.

Workday's REST ``/workers`` has no change feed, so each run walks the whole list (offset paging up
to ``total``) and reads each worker's detail: a future hire is kept in ``hr.worker`` from the first
sight and read again on every run until (and after) its hire date, so a moved start date or a
rescinded company change is picked up before it takes effect. A payload that fails validation is
quarantined with its field names (never its values) and the rest of the run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

import psycopg
from pydantic import ValidationError

from psa_erp_sync.clients.workday_models import CostRateEntry, WorkerDetail, WorkerSummary
from psa_erp_sync.config import Config
from psa_erp_sync.money import AmountOutOfRange, to_minor_checked
from psa_erp_sync.ods import exceptions, hr

log = logging.getLogger(__name__)

SOURCE = "hr"
DOMAIN = "hr"


class WorkdaySource(Protocol):
    def iter_workers(self) -> Any: ...
    def get_worker(self, worker_id: str) -> dict[str, Any] | None: ...
    def cost_rate_report(self) -> list[dict[str, Any]]: ...


@dataclass
class WorkerSyncResult:
    read: int = 0
    new: int = 0
    changed: int = 0
    new_versions: int = 0
    future_hires: int = 0
    terminated: int = 0
    invalid: int = 0
    missing: int = 0
    not_listed: int = 0
    invalid_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k != "invalid_ids"}


def _fields(exc: ValidationError) -> list[dict[str, str]]:
    return [{"field": ".".join(str(p) for p in e["loc"]), "type": e["type"]} for e in exc.errors()]


def _quarantine(
    conn: psycopg.Connection,
    config: Config,
    record_type: str,
    source_id: str,
    errors: list[dict[str, str]],
    run_id: str,
) -> None:
    item = exceptions.Item(
        kind="quarantine",
        domain=DOMAIN,
        source_system=SOURCE,
        record_type=record_type,
        source_id=source_id,
        reason_code="SCHEMA_INVALID",
        owner=config.ownership.owner_for(DOMAIN),
        detail={"errors": errors},
    )
    exceptions.quarantine_many(conn, [item], run_id=run_id)


def sync_workers(
    conn: psycopg.Connection, client: WorkdaySource, *, as_of: date, run_id: str, config: Config
) -> WorkerSyncResult:
    """Read every worker and its detail into ``hr.worker``/``hr.worker_version``; one commit per worker."""
    result = WorkerSyncResult()
    valid_ids: list[str] = []
    for raw in client.iter_workers():
        try:
            summary = WorkerSummary.model_validate(raw)
        except ValidationError as exc:
            result.invalid += 1
            _quarantine(conn, config, "worker", str(raw.get("id", "?"))[:64], _fields(exc), run_id)
            conn.commit()
            continue
        detail = client.get_worker(summary.id)
        if detail is None:  # listed, then gone before we read it: the next run sees the list without it
            result.missing += 1
            continue
        try:
            worker = WorkerDetail.model_validate(detail)
        except ValidationError as exc:
            result.invalid += 1
            result.invalid_ids.append(summary.id)
            _quarantine(conn, config, "worker", summary.id, _fields(exc), run_id)
            conn.commit()
            continue
        record = hr.WorkerRecord(
            employee_id=worker.workerId,
            worker_wid=worker.id,
            first_name=worker.firstName,
            last_name=worker.lastName,
            email=worker.primaryWorkEmail,
            legal_entity=worker.company.id,
            cost_center=worker.costCenter.id if worker.costCenter else None,
            hire_date=worker.hireDate,
            termination_date=worker.terminationDate,
        )
        outcome = hr.upsert_worker(conn, record, as_of=as_of, run_id=run_id)
        conn.commit()
        valid_ids.append(worker.id)
        result.read += 1
        result.new += outcome.new
        result.changed += outcome.changed
        result.new_versions += outcome.new_version
        result.future_hires += worker.hireDate > as_of
        result.terminated += worker.terminationDate is not None and worker.terminationDate <= as_of
    exceptions.resolve_for(
        conn, source_system=SOURCE, record_type="worker", source_ids=valid_ids, kind="quarantine"
    )
    # Workers we hold that this complete walk did not list (a rescinded hire, a purge): counted and
    # logged, and left as they are; HR deletes nothing through us (docs/multi-erp.md).
    row = conn.execute(
        "SELECT count(*) FROM hr.worker WHERE last_run_id IS DISTINCT FROM %s", (run_id,)
    ).fetchone()
    result.not_listed = int(row[0]) if row else 0
    conn.commit()
    if result.not_listed:
        log.warning("%d workers held in hr.worker are no longer listed by Workday", result.not_listed)
    log.info("synced Workday workers: %s", result.as_dict())
    return result


def sync_cost_rates(
    conn: psycopg.Connection, client: WorkdaySource, *, run_id: str, config: Config
) -> dict[str, int]:
    """Read the cost-rate report into ``hr.cost_rate`` (the report is complete: it replaces the table).

    An empty report while the ODS holds rates is refused (a broken report must not wipe every rate).
    """
    entries = client.cost_rate_report()
    rates: list[tuple[str, date, int, str]] = []
    invalid = 0
    for raw in entries:
        try:
            entry = CostRateEntry.model_validate(raw)
            rates.append(
                (
                    entry.Employee_ID,
                    entry.Effective_Date,
                    to_minor_checked(entry.Cost_Rate, entry.Currency),
                    entry.Currency,
                )
            )
        except (ValidationError, AmountOutOfRange) as exc:
            invalid += 1
            key = (
                f"{raw.get('Employee_ID', '?')}@{raw.get('Effective_Date', '?')}"
                if isinstance(raw, dict)
                else "?"
            )
            errors = (
                _fields(exc)
                if isinstance(exc, ValidationError)
                else [{"field": "Cost_Rate", "type": "out_of_range"}]
            )
            _quarantine(conn, config, "cost_rate", str(key)[:128], errors, run_id)
    held = conn.execute("SELECT count(*) FROM hr.cost_rate").fetchone()
    if not rates and held is not None and int(held[0]) > 0:
        raise ValueError(f"the Workday cost-rate report came back with no valid rows; {held[0]} rates kept")
    with conn.transaction():
        counts = hr.replace_cost_rates(conn, rates, run_id=run_id)
    conn.commit()
    counts["invalid"] = invalid
    log.info("synced Workday cost rates: %s", counts)
    return counts
