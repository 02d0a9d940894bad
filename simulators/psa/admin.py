"""PSA-specific admin API: seed, stats, runtime config, webhooks and the mutations that drive a month.

Mutations bump ``updated_at`` (``clock_timestamp()``) and queue webhooks in the same transaction.
Approve/unapprove only touch rows whose state changes; the answer lists the ids that changed.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from simulators.common.app import db_of
from simulators.psa import render
from simulators.psa.api import (
    EXPENSE_FIELDS,
    TIME_ENTRY_FIELDS,
    _json_body,
    changes_of,
    error,
    render_one,
    update_row,
)
from simulators.psa.render import Kind
from simulators.psa.seed import TABLES, SeedError, seed
from simulators.psa.state import psa_of
from simulators.psa.webhooks import EVENTS, PsaConfig, enqueue

router = APIRouter(prefix="/admin", tags=["admin"])

APPROVED_REASON = "Item Approved and Locked for this Time Period"


@router.post("/seed")
async def seed_endpoint(request: Request) -> Response:
    """Bulk upsert by id of the lists described in docs/simulators.md (PSA ``POST /admin/seed``)."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        return error(400, "body is not valid JSON")
    if not isinstance(body, dict):
        return error(422, "body must be an object of lists")

    def load() -> dict[str, int]:
        with db_of(request).tx() as conn:
            return seed(conn, body)

    try:
        counts = await run_in_threadpool(load)
    except SeedError as exc:
        return error(422, str(exc))
    return JSONResponse({"upserted": counts})


@router.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    """Row counts per table, plus webhook deliveries by status."""
    with db_of(request).tx() as conn:
        counts = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # type: ignore[index]
        counts["webhook_subscriptions"] = int(
            conn.execute("SELECT count(*) FROM webhook_subscriptions").fetchone()[0]  # type: ignore[index]
        )
        deliveries = dict(
            conn.execute("SELECT status, count(*) FROM webhook_deliveries GROUP BY status").fetchall()
        )
    return {"counts": counts, "webhook_deliveries": deliveries}


@router.get("/config")
def get_config(request: Request) -> dict[str, Any]:
    return psa_of(request).config.model_dump()


@router.put("/config")
def put_config(request: Request, changes: dict[str, Any]) -> Response:
    """Change runtime knobs (partial update); see :class:`PsaConfig`. ``rate_limit_requests: 0`` = unlimited."""
    state = psa_of(request)
    try:
        config = PsaConfig.model_validate({**state.config.model_dump(), **changes})
    except ValueError as exc:
        return error(422, str(exc))
    state.apply(config)
    return JSONResponse(config.model_dump())


# --- mutations ---------------------------------------------------------------------------------

_APPROVE = {
    "approve": (
        "is_closed = TRUE, is_locked = TRUE, locked_reason = %s",
        "NOT is_closed",
        "approved",
    ),
    "unapprove": (
        "is_closed = FALSE, is_locked = is_billed, "
        "locked_reason = CASE WHEN is_billed THEN 'Item Invoiced and Locked' ELSE NULL END",
        "is_closed",
        "unapproved",
    ),
}


def _approval(request: Request, kind: Kind, prefix: str, action: str, ids: list[int]) -> list[int]:
    sets, guard, verb = _APPROVE[action]
    params: list[Any] = [APPROVED_REASON] if action == "approve" else []
    event = f"{prefix}.{verb}"
    with db_of(request).tx() as conn:
        changed = [
            int(r[0])
            for r in conn.execute(
                f"UPDATE {kind.table} SET {sets}, updated_at = clock_timestamp() "
                f"WHERE id = ANY(%s) AND {guard} RETURNING id",
                [*params, ids],
            ).fetchall()
        ]
        changed.sort()
        if event in EVENTS:
            enqueue(conn, kind, event, changed)
    psa_of(request).dispatcher.wake()
    return changed


def _delete(request: Request, kind: Kind, prefix: str, ids: list[int]) -> list[int]:
    event = f"{prefix}.deleted"
    with db_of(request).tx() as conn:
        existing = sorted(
            int(r[0])
            for r in conn.execute(
                f"SELECT id FROM {kind.table} WHERE id = ANY(%s) FOR UPDATE", (ids,)
            ).fetchall()
        )
        if event in EVENTS:
            enqueue(conn, kind, event, existing)
        conn.execute(f"DELETE FROM {kind.table} WHERE id = ANY(%s)", (existing,))
    psa_of(request).dispatcher.wake()
    return existing


class Bulk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["approve", "unapprove", "delete"]
    ids: list[int] = Field(max_length=100_000)


def _bulk(request: Request, kind: Kind, prefix: str, bulk: Bulk) -> dict[str, Any]:
    if bulk.action == "delete":
        return {"action": bulk.action, "changed": _delete(request, kind, prefix, bulk.ids)}
    return {"action": bulk.action, "changed": _approval(request, kind, prefix, bulk.action, bulk.ids)}


def _single(request: Request, kind: Kind, prefix: str, action: str, record_id: int) -> Response:
    with db_of(request).tx() as conn:
        exists = conn.execute(f"SELECT 1 FROM {kind.table} WHERE id = %s", (record_id,)).fetchone()
    if exists is None:
        return error(404, "Not found")
    if action == "delete":
        changed = _delete(request, kind, prefix, [record_id])
    else:
        changed = _approval(request, kind, prefix, action, [record_id])
    return JSONResponse({"id": record_id, "changed": bool(changed)})


async def _patch(
    request: Request, kind: Kind, prefix: str, fields: dict[str, Any], record_id: int
) -> Response:
    changes = changes_of(await _json_body(request), fields)

    def run() -> Response:
        with db_of(request).tx() as conn:
            if not update_row(conn, kind.table, record_id, changes):
                return error(404, "Not found")
            if f"{prefix}.updated" in EVENTS:
                enqueue(conn, kind, f"{prefix}.updated", [record_id])
            body = render_one(conn, kind, record_id)
        psa_of(request).dispatcher.wake()
        return Response(content=body, media_type="application/json")

    return await run_in_threadpool(run)


@router.post("/time_entries/bulk")
def bulk_time_entries(request: Request, bulk: Bulk) -> dict[str, Any]:
    """``{"action": "approve|unapprove|delete", "ids": [...]}``; answers the ids that changed."""
    return _bulk(request, render.TIME_ENTRY, "time_entry", bulk)


@router.post("/time_entries/{entry_id}/approve")
def approve_time_entry(request: Request, entry_id: int) -> Response:
    return _single(request, render.TIME_ENTRY, "time_entry", "approve", entry_id)


@router.post("/time_entries/{entry_id}/unapprove")
def unapprove_time_entry(request: Request, entry_id: int) -> Response:
    return _single(request, render.TIME_ENTRY, "time_entry", "unapprove", entry_id)


@router.patch("/time_entries/{entry_id}")
async def patch_time_entry(request: Request, entry_id: int) -> Response:
    """Edit any stored field (locks ignored): hours, notes, billable, rates, is_billed, ...; fires
    ``time_entry.updated``."""
    return await _patch(request, render.TIME_ENTRY, "time_entry", TIME_ENTRY_FIELDS, entry_id)


@router.delete("/time_entries/{entry_id}")
def delete_time_entry(request: Request, entry_id: int) -> Response:
    return _single(request, render.TIME_ENTRY, "time_entry", "delete", entry_id)


@router.post("/expenses/bulk")
def bulk_expenses(request: Request, bulk: Bulk) -> dict[str, Any]:
    return _bulk(request, render.EXPENSE, "expense", bulk)


@router.post("/expenses/{expense_id}/approve")
def approve_expense(request: Request, expense_id: int) -> Response:
    return _single(request, render.EXPENSE, "expense", "approve", expense_id)


@router.post("/expenses/{expense_id}/unapprove")
def unapprove_expense(request: Request, expense_id: int) -> Response:
    return _single(request, render.EXPENSE, "expense", "unapprove", expense_id)


@router.patch("/expenses/{expense_id}")
async def patch_expense(request: Request, expense_id: int) -> Response:
    return await _patch(request, render.EXPENSE, "expense", EXPENSE_FIELDS, expense_id)


@router.delete("/expenses/{expense_id}")
def delete_expense(request: Request, expense_id: int) -> Response:
    return _single(request, render.EXPENSE, "expense", "delete", expense_id)


@router.post("/milestones/{milestone_id}/complete")
def complete_milestone(request: Request, milestone_id: int) -> Response:
    """Mark a planned milestone completed (``completed_at`` = now); fires ``milestone.completed``."""
    with db_of(request).tx() as conn:
        if conn.execute("SELECT 1 FROM milestones WHERE id = %s", (milestone_id,)).fetchone() is None:
            return error(404, "Not found")
        changed = [
            int(r[0])
            for r in conn.execute(
                "UPDATE milestones SET status = 'completed', completed_at = clock_timestamp(), "
                "updated_at = clock_timestamp() WHERE id = %s AND status = 'planned' RETURNING id",
                (milestone_id,),
            ).fetchall()
        ]
        enqueue(conn, render.MILESTONE, "milestone.completed", changed)
    psa_of(request).dispatcher.wake()
    return JSONResponse({"id": milestone_id, "changed": bool(changed)})


@router.post("/milestones/{milestone_id}/sign-off")
def sign_off_milestone(request: Request, milestone_id: int) -> Response:
    """The customer signs a milestone off (``status`` = signed_off; ``completed_at`` = now unless it
    was completed before); fires ``milestone.completed`` (the one milestone event the PSA sends)."""
    with db_of(request).tx() as conn:
        if conn.execute("SELECT 1 FROM milestones WHERE id = %s", (milestone_id,)).fetchone() is None:
            return error(404, "Not found")
        changed = [
            int(r[0])
            for r in conn.execute(
                "UPDATE milestones SET status = 'signed_off', completed_at = coalesce(completed_at, clock_timestamp()),"
                " updated_at = clock_timestamp() WHERE id = %s AND status <> 'signed_off' RETURNING id",
                (milestone_id,),
            ).fetchall()
        ]
        enqueue(conn, render.MILESTONE, "milestone.completed", changed)
    psa_of(request).dispatcher.wake()
    return JSONResponse({"id": milestone_id, "changed": bool(changed)})
