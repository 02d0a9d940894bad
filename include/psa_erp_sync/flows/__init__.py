"""Task wiring per data domain, used by the thin DAG files in ``dags/``.

A flow module is wiring: it declares the tasks of one DAG and their order. A step is an operator of
:mod:`psa_erp_sync.operators` (which reads ids and as-of from its own ``execute(context)``, builds
its hooks and calls domain functions with explicit arguments), or a ``@task`` for an ODS-only step.
No SQL and no business rules here (``tests/test_layers.py``); return values stay XCom-sized.
A step that calls one domain function is a :class:`~psa_erp_sync.operators.step.DomainStepOperator`
line: ``call=`` a plain function of the domain package (``masterdata/steps.py``, ``hr/steps.py``,
``billing/steps.py``, ...) and the datasets it touches.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Asset


def default_args(owner: str) -> dict[str, Any]:
    """Every DAG's task defaults, for the team that owns it: three retries with exponential backoff
    from 30 seconds up to 10 minutes."""
    return {
        "owner": owner,
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }


DEFAULT_ARGS: dict[str, Any] = default_args("finance-integration")


# LISTEN/NOTIFY wakes an inbox trigger at once; polling is only the fallback.
INBOX_POLL_SECONDS = 5.0


def inbox_asset(name: str, watcher: str, source_system: str, event_types: list[str]) -> Asset:
    """An asset a stream DAG is scheduled on, updated when events of ``event_types`` from
    ``source_system`` arrive in the ODS inbox (the ``AssetWatcher`` ``watcher`` with
    :class:`~psa_erp_sync.triggers.inbox.InboxArrivalTrigger`). ``name`` is
    ``psa_erp_sync.inbox.<inbox>``. No I/O: the trigger only connects in the triggerer."""
    from airflow.sdk import Asset, AssetWatcher

    from psa_erp_sync.triggers.inbox import InboxArrivalTrigger

    trigger = InboxArrivalTrigger(
        ods_conn_id="ods_default",
        source_system=source_system,
        event_types=event_types,
        poll_seconds=INBOX_POLL_SECONDS,
    )
    return Asset(
        name=name,
        uri=f"psa-erp-sync://ods/inbox/{name.removeprefix('psa_erp_sync.inbox.')}",
        watchers=[AssetWatcher(name=watcher, trigger=trigger)],
    )


def owner_digest() -> dict[str, Any]:
    """DAG arguments that send each owner of new exception items one digest when a run ends,
    successful or failed (:class:`~psa_erp_sync.notifications.owner_digest.OwnerDigestNotifier`).
    Building it does no I/O."""
    from psa_erp_sync.notifications.owner_digest import OwnerDigestNotifier

    notifier = OwnerDigestNotifier()
    return {"on_success_callback": notifier, "on_failure_callback": notifier}


# Set to "off" where DAGs run under ``dag.test()`` / ``airflow dags test`` (tests/conftest.py,
# devtools/demo.py): in Airflow 3.3.2 a DAG with Deadline Alerts crashes there when its run
# succeeds (``DagRun.update_state`` looks the alerts up by id, but ``dag.test()``'s DAG holds them
# serialized, not as ids). Scheduler deployments are unaffected. Default: on.
DEADLINE_ALERTS_VAR = "PSA_ERP_SYNC_DEADLINE_ALERTS"


def close_deadlines(dag_id: str) -> dict[str, Any]:
    """DAG arguments that alert the owner of each legal entity when a run misses its close
    deadline (``config/close_deadlines.yaml``; :mod:`psa_erp_sync.notifications.deadlines`).
    Building it reads that validated file and nothing else; nothing when
    ``$PSA_ERP_SYNC_DEADLINE_ALERTS`` is ``off``."""
    import os

    from psa_erp_sync.notifications.deadlines import close_deadline_alerts

    if os.environ.get(DEADLINE_ALERTS_VAR, "on") == "off":
        return {}

    return {"deadline": close_deadline_alerts(dag_id)}
