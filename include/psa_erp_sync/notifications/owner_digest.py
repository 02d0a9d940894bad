"""``OwnerDigestNotifier``: after a run, each owner of new exception items gets one digest.

Attached to the DAGs that can open exception items as their ``on_success_callback`` and
``on_failure_callback`` (a failed run leaves items too). It locks the open items never announced
(``exceptions.item.notified_at IS NULL``), groups them by owner (``config/ownership.yaml``), sends
each owner one message per channel of ``config/notifications.yaml`` (e-mail over the SMTP
connection; Slack or Teams incoming webhooks), then marks the items announced and records the
digest in ``exceptions.notification``, all in the transaction that holds the lock.

Delivery is at least once per owner: a crash after sending and before the commit sends that
owner's digest again on the next run; an item that was announced is never announced again.
Each channel is tried on its own: an owner told on at least one channel has its items marked
announced (the failed channel is named in the log and the callback raises, so the task log of the
run shows it); an owner told on none keeps its items unannounced, and the next run tries again.
Other owners are told either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseNotifier

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.config import Notifications
    from psa_erp_sync.digest import Digest

log = logging.getLogger(__name__)


class DigestDeliveryFailed(RuntimeError):
    """At least one owner's digest could not be sent (its items stay unannounced)."""


class OwnerDigestNotifier(BaseNotifier):
    """Send each owner of new exception items one digest.

    :param ods_conn_id: the ODS connection (templated).
    """

    template_fields: Sequence[str] = ("ods_conn_id",)

    def __init__(self, *, ods_conn_id: str = "ods_default") -> None:
        super().__init__()
        self.ods_conn_id = ods_conn_id

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """As the base class, except when the context's DAG is a serialized one (``dag.test()``
        hands DAG callbacks the scheduler's ``SerializedDAG``, which has no template environment;
        the DAG processor of a deployment hands them the parsed DAG): then a sandboxed one."""
        dag = context.get("dag")
        if jinja_env is None and dag is not None and not hasattr(dag, "get_template_env"):
            from jinja2.sandbox import SandboxedEnvironment

            jinja_env = SandboxedEnvironment(cache_size=0)
        super().render_template_fields(context, jinja_env)

    def notify(self, context: Any) -> None:
        from psa_erp_sync.config import load_config, load_notifications
        from psa_erp_sync.hooks.ods import OdsHook

        dag_run = context.get("dag_run")
        dag_id = getattr(dag_run, "dag_id", None) or context["dag"].dag_id
        run_id = getattr(dag_run, "run_id", None) or context["run_id"]
        settings = load_notifications()
        config = load_config()
        if not _email_configured(settings):
            return
        with OdsHook(self.ods_conn_id).get_conn() as conn:
            failures = send_digests(
                conn, settings=settings, config_fixes=config.fix_for, dag_id=dag_id, run_id=run_id
            )
        if failures:
            raise DigestDeliveryFailed("; ".join(failures))


def send_digests(
    conn: psycopg.Connection,
    *,
    settings: Notifications,
    config_fixes: Any,
    dag_id: str,
    run_id: str,
) -> list[str]:
    """Send and mark every owner's digest; returns one line per owner that could not be told."""
    from psa_erp_sync import digest as digests
    from psa_erp_sync.ods import exceptions

    failures: list[str] = []
    with conn.transaction():
        items = exceptions.lock_unnotified(conn)
        reasons = {i.reason_code for i in items}
        fixes = {r: f for r in reasons if (f := config_fixes(r))}
        built = digests.build(
            items, dag_id=dag_id, run_id=run_id, console_url=settings.console_url, fixes=fixes
        )
        for d in built:
            channels, failed = _deliver(d, settings)
            failures.extend(f"{d.owner} over {failure}" for failure in failed)
            if not channels:  # nobody was told: the items stay unannounced for the next run
                log.error(
                    "digest for %s not sent on any channel; its %d item(s) stay unannounced", d.owner, d.items
                )
                continue
            exceptions.mark_notified(
                conn,
                owner=d.owner,
                item_ids=d.item_ids,
                dag_id=dag_id,
                run_id=run_id,
                channels=channels,
                summary=d.summary(),
            )
            log.info("digest sent to %s over %s: %d item(s)", d.owner, ", ".join(channels), d.items)
    return failures


def _email_configured(settings: Notifications) -> bool:
    """Without the SMTP connection, digests are off (a development setup): say so, send nothing,
    and leave the items unannounced, so they are announced once the connection exists."""
    from psa_erp_sync.notifications.channels import email_configured

    return email_configured(
        settings, what="owner digests are off; new exception items stay unannounced until it exists"
    )


def _deliver(d: Digest, settings: Notifications) -> tuple[list[str], list[str]]:
    """Send ``d`` on each of its owner's channels; returns (channels that took it, failures).
    One channel failing does not stop the others."""
    from psa_erp_sync import digest as digests
    from psa_erp_sync.notifications.channels import Message, tell_owner

    message = Message(
        owner=d.owner,
        subject=d.subject(),
        html=digests.render_html(d),
        slack=digests.render_slack(d),
        teams=digests.render_teams(d),
        run_ref=f"{d.dag_id}/{d.run_id}",
    )
    return tell_owner(message, settings)
