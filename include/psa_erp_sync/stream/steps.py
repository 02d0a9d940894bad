"""The time_expense_stream DAG's inbox step as a plain function: it takes the ODS DSN, the clients
and the run facts it needs as explicit arguments (``DomainStepOperator`` supplies them by name) and
calls :func:`~psa_erp_sync.stream.time_expense.process_inbox`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from psa_erp_sync.posting.engine import EngineSettings
from psa_erp_sync.stream.time_expense import process_inbox

if TYPE_CHECKING:
    from datetime import datetime

    from psa_erp_sync.config import Config


def process_inbox_step(
    dsn: str,
    psa: Any,
    erp: Any,
    *,
    dag_id: str,
    run_id: str,
    as_of: datetime,
    config: Config,
    erp_adapters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Claim the pending time & expense events; re-read, stage, validate and post their records,
    at most as many ERP requests in flight as the account allows (the client's limit). During a
    transition (``erp_adapters`` names several ERPs) each record goes to the ERP its route names,
    one pass per ERP as in the batch task."""
    settings = EngineSettings.from_config(
        config,
        max_concurrency=erp.concurrency_limit,
        progress_every_s=60.0,
    )
    result = process_inbox(
        dsn=dsn,
        psa_client=psa,
        erp_client=erp_adapters if erp_adapters and len(erp_adapters) > 1 else erp,
        config=config,
        run_id=run_id,
        run_key_prefix=f"{dag_id}/{run_id}",
        as_of=as_of,
        engine_settings=settings,
    )
    return result.as_dict()
