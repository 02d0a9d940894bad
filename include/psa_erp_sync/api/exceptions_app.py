"""Views for operators: the exception queue grouped by cause and owner, the per-record trace
(JSON), and the exceptions console (HTML, ``psa_erp_sync.api.console``).

Mounted by ``plugins/psa_erp_sync_plugin.py`` under ``/psa-erp-sync``. Plugin apps are mounted
without Airflow's authentication, so every route requires the plugins view permission; when
Airflow's security helpers cannot be imported, every route is refused (503), never served
unguarded. It reads the ODS through the same repository as the DAGs and returns no personal data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException

from psa_erp_sync.api import console


def _ods_dsn() -> str:
    from psa_erp_sync.hooks.ods import OdsHook

    return OdsHook().dsn()


def _refuse() -> None:
    raise HTTPException(
        status_code=503,
        detail="Airflow's security helpers are unavailable: refusing to serve unauthenticated",
    )


def _guard() -> list[Any]:
    """Airflow's permission check for the plugins view (the UI's ``_token`` cookie or a Bearer
    token). Fails closed: without Airflow's security helpers every request is refused. Tests that
    want the routes unguarded pass ``dependencies=[]`` to ``create_app`` explicitly."""
    try:
        from airflow.api_fastapi.core_api.security import AccessView, requires_access_view
    except ImportError:
        return [Depends(_refuse)]
    return [Depends(requires_access_view(AccessView.PLUGINS))]


def create_app(
    dependencies: list[Any] | None = None, dsn: str | None = None, api_base: str | None = None
) -> FastAPI:
    app = FastAPI(
        title="psa-erp-sync",
        description="Exception queue of the PSA -> ERP sync, grouped by cause; the exceptions console.",
        dependencies=_guard() if dependencies is None else dependencies,
    )

    @app.get("/exceptions/summary")
    def exception_summary() -> dict[str, Any]:
        """Open exception items grouped by (kind, reason code, owner), largest group first, each
        with what the owner does to clear it (``fix``, from the reason codes in ``config/``)."""
        import psycopg

        from psa_erp_sync.config import load_config
        from psa_erp_sync.ods import exceptions

        with psycopg.connect(dsn or _ods_dsn()) as conn:
            groups = exceptions.open_summary(conn)
        config = load_config()
        return {
            "groups": [
                {"kind": k, "reason_code": r, "owner": o, "count": n, "fix": config.fix_for(r)}
                for k, r, o, n in groups
            ],
            "total": sum(n for *_, n in groups),
        }

    @app.get("/trace/{source_system}/{source_id}")
    def trace_record(source_system: str, source_id: str) -> dict[str, Any]:
        """The path of one source record (PSA id or ERP external id): staging, validation verdict,
        ledger entries with every attempt, ERP internal id and period, forecast snapshots, and the
        OpenLineage run id of each step."""
        import psycopg
        from fastapi import HTTPException

        from psa_erp_sync.trace import RecordNotFound, trace

        try:
            with psycopg.connect(dsn or _ods_dsn()) as conn:
                return {"records": trace(conn, source_system, source_id)}
        except RecordNotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc

    @contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        with psycopg.connect(dsn or _ods_dsn(), autocommit=True) as conn:
            yield conn

    app.include_router(console.create_router(connect, api_base=api_base))
    return app
