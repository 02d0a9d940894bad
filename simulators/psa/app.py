"""PSA simulator: the Harvest API v2 shape (``/v2``) plus documented extensions.

Harvest behaviour reproduced: ``Authorization: Bearer`` + ``Harvest-Account-Id`` + ``User-Agent``
on every ``/v2`` request (401/400 otherwise); 100 requests per 15 s per account (sliding window,
429 + ``Retry-After``); list responses with ``per_page`` (1..2000, default 2000), ``total_pages``,
``total_entries``, ``next_page``, ``previous_page``, ``page`` and absolute ``links`` whose ``next``
carries an opaque keyset ``cursor`` (``page=N`` also accepted); ``updated_at`` rendered to the
second (microseconds stored). Lists are ordered by id (Harvest sorts time entries by spent_date;
a keyset on id keeps walks stable while rows change).

``updated_since`` is inclusive at second granularity: rows with
``updated_at >= date_trunc('second', updated_since)`` are returned, so a client passing the
largest ``updated_at`` it has seen re-reads that second (duplicates, absorbed by upserts) and
never misses a row updated later in the same second.

Writes (Harvest v2 shape): ``POST /v2/projects`` (required ``client_id``, ``name``, ``is_billable``,
``bill_by``, ``budget_by``; 201 with the project; no idempotency key, as in Harvest, so a retried
POST creates a second project), ``PATCH /v2/projects/{id}`` and ``PATCH /v2/clients/{id}``
(absolute values; 404 for an unknown id, 422 for unknown fields or bad values).

Extensions (also in docs/simulators.md, "PSA extensions"):

* ``GET /v2/x/schedule``: scheduled hours per user/project/week (filters ``user_id``,
  ``project_id``, ``from``/``to`` on ``week_start``, ``updated_since``), paginated the same way.
* ``GET /v2/x/milestones``: filters ``project_id``, ``status``, ``updated_since``; ``GET /v2/x/milestones/{id}``.
* Projects carry ``billing_type, legal_entity, currency, practice``; users ``legal_entity, practice``.
* Invoices (``simulators.psa.invoices``): ``GET|POST /v2/invoices``, ``GET|DELETE /v2/invoices/{id}``,
  ``POST /v2/invoices/{id}/messages``, ``GET|POST /v2/invoices/{id}/payments``; creating one with
  ``line_items_import`` marks the entries billed.
* Outbound webhooks (``simulators.psa.webhooks`` on ``simulators.common.webhooks``): ``POST /admin/webhooks`` registers
  ``{url, secret, events}``; events ``time_entry.approved|updated|unapproved|deleted``,
  ``expense.approved``, ``milestone.completed``; signed, delivered at least once with retries,
  with seeded drop/duplicate/reorder faults.
* Admin: ``GET|PUT /admin/config`` (rate limit and webhook faults), ``POST /admin/seed``,
  ``GET /admin/stats``, ``POST /admin/time_entries/{id}/approve|unapprove``,
  ``PATCH|DELETE /admin/time_entries/{id}``, ``POST /admin/time_entries/bulk``, the same for
  expenses, ``POST /admin/milestones/{id}/complete|sign-off``, ``GET /admin/webhooks/deliveries``.
  ``POST /admin/reset`` also restores the default config.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from simulators.common.app import create_app
from simulators.common.webhooks import WEBHOOK_SQL, webhook_admin_router
from simulators.psa.admin import router as admin_router
from simulators.psa.api import error, v2
from simulators.psa.guard import HarvestGuard
from simulators.psa.invoices import router as invoices_router
from simulators.psa.paging import BadRequest
from simulators.psa.state import PsaState
from simulators.psa.webhooks import EVENTS

SCHEMA_SQL = (Path(__file__).with_name("schema.sql")).read_text() + "\n" + WEBHOOK_SQL


def _on_reset(app: FastAPI) -> None:
    app.state.psa.reset()


def create(dsn: str | None = None) -> FastAPI:
    """Build the PSA simulator app; its state lives in schema ``sim_psa`` of the PostgreSQL at ``dsn``."""
    app = create_app(
        name="psa",
        title="PSA simulator (Harvest API v2)",
        schema="sim_psa",
        schema_sql=SCHEMA_SQL,
        description=__doc__ or "",
        dsn=dsn,
        on_reset=_on_reset,
    )
    state = PsaState(app)
    app.state.psa = state
    app.add_middleware(HarvestGuard, limiter=state.limiter)
    app.include_router(v2)
    app.include_router(invoices_router)
    app.include_router(admin_router)
    app.include_router(webhook_admin_router(EVENTS, error))

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"code": exc.status, "message": exc.message}, status_code=exc.status)

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        async with inner(app_):
            state.dispatcher.start()
            try:
                yield
            finally:
                state.dispatcher.stop()

    app.router.lifespan_context = lifespan
    return app
