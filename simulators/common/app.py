"""The app factory every simulator uses: lifespan, PostgreSQL state, fault injection, admin API.

Each simulator adds its own API routes and an ``/admin/seed`` endpoint; the common admin routes
are ``GET /admin/health``, ``GET|PUT|POST|DELETE /admin/faults`` and ``POST /admin/reset``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request

from simulators.common.db import SimDB, sim_dsn
from simulators.common.faults import FaultMiddleware, FaultRule, FaultState

admin = APIRouter(prefix="/admin", tags=["admin"])


def create_app(
    *,
    name: str,
    title: str,
    schema: str,
    schema_sql: str,
    description: str = "",
    dsn: str | None = None,
    on_reset: Callable[[FastAPI], None] | None = None,
) -> FastAPI:
    """Build a simulator app whose state lives in ``schema`` of the PostgreSQL at ``dsn``."""
    faults = FaultState()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = SimDB(dsn or sim_dsn(), schema)
        db.open(schema_sql)
        app.state.db = db
        yield
        db.close()

    app = FastAPI(title=title, description=description, version="1.0.0", lifespan=lifespan)
    app.state.name = name
    app.state.faults = faults
    app.state.on_reset = on_reset
    app.add_middleware(FaultMiddleware, state=faults)
    app.include_router(admin)
    return app


def db_of(request: Request) -> SimDB:
    db: SimDB = request.app.state.db
    return db


@admin.get("/health")
def health(request: Request) -> dict[str, Any]:
    with db_of(request).tx() as conn:
        conn.execute("SELECT 1")
    return {"status": "ok", "simulator": request.app.state.name}


@admin.get("/faults")
def list_faults(request: Request) -> dict[str, Any]:
    return {"rules": request.app.state.faults.describe()}


@admin.put("/faults")
def replace_faults(request: Request, rules: list[FaultRule]) -> dict[str, Any]:
    request.app.state.faults.set_rules(rules)
    return {"rules": request.app.state.faults.describe()}


@admin.post("/faults")
def add_fault(request: Request, rule: FaultRule) -> dict[str, Any]:
    request.app.state.faults.add_rule(rule)
    return {"rules": request.app.state.faults.describe()}


@admin.delete("/faults")
def clear_faults(request: Request) -> dict[str, Any]:
    request.app.state.faults.clear()
    return {"rules": []}


@admin.post("/reset")
def reset(request: Request) -> dict[str, str]:
    """Forget all state: every table of the simulator's schema is truncated, faults cleared."""
    request.app.state.faults.clear()
    db_of(request).truncate_all()
    if request.app.state.on_reset is not None:
        request.app.state.on_reset(request.app)
    return {"status": "reset"}
