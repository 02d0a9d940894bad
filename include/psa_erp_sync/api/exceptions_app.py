"""Read-only views for operators: the exception queue grouped by cause and owner, and the
per-record trace.

Mounted by ``plugins/psa_erp_sync_plugin.py`` under ``/psa-erp-sync``. Plugin apps are mounted
without Airflow's authentication, so every route requires the plugins view permission. It reads
the ODS through the same repository as the DAGs and returns no personal data.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI


def _ods_dsn() -> str:
    from psa_erp_sync.hooks.ods import OdsHook

    return OdsHook().dsn()


def _guard() -> list[Any]:
    try:
        from airflow.api_fastapi.core_api.security import AccessView, requires_access_view
    except ImportError:  # outside an API server (unit tests build the app with their own guard)
        return []
    return [Depends(requires_access_view(AccessView.PLUGINS))]


def create_app(dependencies: list[Any] | None = None, dsn: str | None = None) -> FastAPI:
    app = FastAPI(
        title="psa-erp-sync",
        description="Exception queue of the PSA -> ERP sync, grouped by cause.",
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

    return app
