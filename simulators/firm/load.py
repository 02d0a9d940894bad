"""Push a generated firm into running simulators and replay its post-seed mutations.

Everything goes through the simulators' own HTTP admin API: ``POST /admin/seed`` (an upsert by
id, so a chunk may be re-sent after an ambiguous failure) for master data and transactions, then
the PSA admin endpoints for approvals, edits, unapprovals and deletions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from simulators.firm.generator import Firm, Row, iter_expenses, iter_schedule, iter_time_entries, mutations

log = logging.getLogger(__name__)

ERP_ORDER = (
    "subsidiaries",
    "currencies",
    "tax_codes",
    "employees",
    "customers",
    "jobs",
    "accounting_periods",
)
CRM_ORDER = ("accounts", "opportunities", "change_orders")
PSA_ORDER = (
    "clients",
    "users",
    "tasks",
    "expense_categories",
    "projects",
    "user_assignments",
    "task_assignments",
    "milestones",
)
ENTITY_PATHS = {"time_entry": "time_entries", "expense": "expenses"}
BULK_ACTIONS = frozenset({"approve", "unapprove", "delete"})
ATTEMPTS = 4


def _request(client: httpx.Client, method: str, url: str, body: Any = None) -> httpx.Response:
    """Send one admin call, retrying transport errors, 429 and 5xx (every call here is idempotent)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = client.request(method, url, json=body)
        except httpx.TransportError as exc:
            if attempt == ATTEMPTS:
                raise
            log.warning(
                "%s %s failed (%s), attempt %d of %d", method, url, type(exc).__name__, attempt, ATTEMPTS
            )
            time.sleep(0.2 * attempt)
            continue
        if (response.status_code == 429 or response.status_code >= 500) and attempt < ATTEMPTS:
            retry_after = response.headers.get("Retry-After", "")
            delay = (
                min(float(retry_after), 5.0) if retry_after.replace(".", "", 1).isdigit() else 0.2 * attempt
            )
            log.warning("%s %s answered %d, retrying in %.1fs", method, url, response.status_code, delay)
            time.sleep(delay)
            continue
        return response
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _chunks(rows: list[Row], size: int) -> Iterator[list[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _seed(client: httpx.Client, base_url: str, name: str, chunks: Iterable[list[Row]], system: str) -> int:
    sent = 0
    url = f"{base_url.rstrip('/')}/admin/seed"
    for chunk in chunks:
        response = _request(client, "POST", url, {name: chunk})
        if response.status_code >= 400:
            raise RuntimeError(
                f"{system} seed of {name} failed with {response.status_code}: {response.text[:500]}"
            )
        sent += len(chunk)
        log.info("%s: seeded %d %s", system, sent, name)
    return sent


def load_firm(
    firm: Firm,
    *,
    psa_url: str | None,
    erp_url: str | None,
    crm_url: str | None,
    chunk_size: int = 20_000,
    client: httpx.Client | None = None,
    include_schedule: bool = True,
    workday_url: str | None = None,
) -> dict[str, int]:
    """Seed the ERP, then the CRM, then the PSA (master data, schedule, time entries, expenses).

    A ``None`` URL skips that system; ``workday_url`` seeds Workday with the PSA's people. Returns the number of rows sent per ``system.list``.
    """
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
    counts: dict[str, int] = {}
    try:
        if erp_url:
            for name in ERP_ORDER:
                counts[f"erp.{name}"] = _seed(http, erp_url, name, _chunks(firm.erp[name], chunk_size), "erp")
        if crm_url:
            for name in CRM_ORDER:
                counts[f"crm.{name}"] = _seed(http, crm_url, name, _chunks(firm.crm[name], chunk_size), "crm")
        if psa_url:
            for name in PSA_ORDER:
                counts[f"psa.{name}"] = _seed(http, psa_url, name, _chunks(firm.psa[name], chunk_size), "psa")
            if include_schedule:
                counts["psa.schedule"] = _seed(
                    http, psa_url, "schedule", iter_schedule(firm, chunk_size), "psa"
                )
            counts["psa.time_entries"] = _seed(
                http, psa_url, "time_entries", iter_time_entries(firm, chunk_size), "psa"
            )
            counts["psa.expenses"] = _seed(http, psa_url, "expenses", iter_expenses(firm, chunk_size), "psa")
        if workday_url:  # the same people as the PSA users, by Employee_ID
            from simulators.workday.sample import from_psa_users

            seeded = from_psa_users(firm.psa["users"])
            _request(http, "POST", f"{workday_url}/admin/seed", seeded).raise_for_status()
            counts["workday.workers"] = len(seeded["workers"])
            counts["workday.cost_rates"] = len(seeded["cost_rates"])
    finally:
        if own:
            http.close()
    return counts


def _runs(items: list[Row]) -> Iterator[list[Row]]:
    """Consecutive mutations of the same entity and kind (order is kept across runs)."""
    run: list[Row] = []
    for item in items:
        if run and (run[-1]["entity"], run[-1]["kind"]) != (item["entity"], item["kind"]):
            yield run
            run = []
        run.append(item)
    if run:
        yield run


def apply_mutations(
    firm: Firm,
    psa_url: str,
    *,
    client: httpx.Client | None = None,
    bulk: bool = True,
    bulk_size: int = 1000,
) -> dict[str, int]:
    """Apply :func:`~simulators.firm.generator.mutations` through the PSA admin API, in order.

    Approvals, unapprovals and deletions go through ``POST /admin/{entity}/bulk`` (in batches of
    ``bulk_size``) unless ``bulk`` is false; edits are ``PATCH /admin/{entity}/{id}``. A 404 on a
    retried delete counts as done. Returns counts per ``entity.kind``.
    """
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
    base = psa_url.rstrip("/")
    counts: dict[str, int] = {}
    try:
        for run in _runs(mutations(firm)):
            entity, kind = run[0]["entity"], run[0]["kind"]
            path = f"{base}/admin/{ENTITY_PATHS[entity]}"
            key = f"{entity}.{kind}"
            if bulk and kind in BULK_ACTIONS:
                for start in range(0, len(run), bulk_size):
                    ids = [m["id"] for m in run[start : start + bulk_size]]
                    response = _request(http, "POST", f"{path}/bulk", {"action": kind, "ids": ids})
                    _check(response, key, ids[0])
                    counts[key] = counts.get(key, 0) + len(ids)
            else:
                for m in run:
                    if kind == "edit":
                        response = _request(http, "PATCH", f"{path}/{m['id']}", m["changes"])
                    elif kind == "delete":
                        response = _request(http, "DELETE", f"{path}/{m['id']}")
                        if response.status_code == 404:
                            counts[key] = counts.get(key, 0) + 1
                            continue
                    else:
                        response = _request(http, "POST", f"{path}/{m['id']}/{kind}")
                    _check(response, key, m["id"])
                    counts[key] = counts.get(key, 0) + 1
            log.info("psa: applied %d %s mutations", counts.get(key, 0), key)
    finally:
        if own:
            http.close()
    return counts


def _check(response: httpx.Response, key: str, row_id: int) -> None:
    if response.status_code >= 400:
        raise RuntimeError(
            f"psa mutation {key} on {row_id} failed with {response.status_code}: {response.text[:500]}"
        )
