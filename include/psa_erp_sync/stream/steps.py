"""The time_expense_stream DAG's inbox step as a plain function: it takes the ODS DSN, the clients
and the run facts it needs as explicit arguments (``DomainStepOperator`` supplies them by name) and
calls :func:`~psa_erp_sync.stream.time_expense.process_inbox`."""

from __future__ import annotations

from datetime import timedelta
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
    claim_min_age_s: float = 0.0,
) -> dict[str, Any]:
    """Claim the pending time & expense events; re-read, stage, validate and post their records,
    at most as many ERP requests in flight as the account allows (the client's limit). During a
    transition (``erp_adapters`` names several ERPs) each record goes to the ERP its route names,
    one pass per ERP as in the batch task. ``claim_min_age_s``: only events pending at least that
    long (what the long-running consumer did not claim)."""
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
        claim_min_age=timedelta(seconds=float(claim_min_age_s)),
    )
    return result.as_dict()


def consume_step(
    dsn: str,
    psa: Any,
    erp: Any,
    *,
    run_id: str,
    config: Config,
    erp_adapters: dict[str, Any] | None = None,
    lifetime_s: float = 600.0,
    poll_s: float = 1.0,
) -> dict[str, Any]:
    """The ``time_expense_stream_consumer`` task: run the inbox consumer
    (:class:`~psa_erp_sync.stream.consumer.Consumer`) for ``lifetime_s``, claiming as
    ``consumer:<run id>`` (a retry of the run takes its claims back at once), then return so the
    ``@continuous`` schedule starts the next run."""
    from psa_erp_sync.stream.consumer import Consumer, ConsumerSettings

    settings = EngineSettings.from_config(
        config, max_concurrency=erp.concurrency_limit, progress_every_s=60.0
    )
    consumer = Consumer(
        dsn=dsn,
        psa_client=psa,
        erp_client=erp_adapters if erp_adapters and len(erp_adapters) > 1 else erp,
        config=config,
        name=run_id,
        settings=ConsumerSettings(lifetime_s=float(lifetime_s), poll_s=float(poll_s)),
        engine_settings=settings,
    )
    return consumer.run().as_dict()
