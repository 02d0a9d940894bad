"""The channels an owner is told on (``config/notifications.yaml``): e-mail over the Airflow SMTP
connection, Slack and Teams incoming webhooks. Shared by the owner digests and the deadline alerts.

:func:`tell_owner` tries each channel on its own (one failing does not stop the others) and
returns which took the message and why the others did not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psa_erp_sync.config import Notifications

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One message to one owner, in each channel's form. No personal data."""

    owner: str
    subject: str
    html: str
    slack: dict[str, Any]
    teams: dict[str, Any]
    run_ref: str  # "<dag id>/<run id>", in the X-PSA-ERP-Sync-Run header


def email_configured(settings: Notifications, *, what: str) -> bool:
    """Whether the SMTP connection exists. Without it (a development setup) e-mail is off: say so
    once per call, naming ``what`` is not sent."""
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(settings.email.conn_id)
    except Exception:
        log.warning(
            "%s: no e-mail, no Airflow connection %r (config/notifications.yaml email.conn_id)",
            what,
            settings.email.conn_id,
        )
        return False
    return True


def tell_owner(
    message: Message, settings: Notifications, *, email: bool = True
) -> tuple[list[str], list[str]]:
    """Send ``message`` on each of its owner's channels (e-mail only if ``email``); returns
    (channels that took it, one line per failure)."""
    targets = settings.recipients_of(message.owner).channels()
    sent: list[str] = []
    failed: list[str] = []

    def attempt(channel: str, send: Callable[[], None]) -> None:
        try:
            send()
        except Exception as exc:
            log.exception("message for %s not sent over %s", message.owner, channel)
            failed.append(f"{channel}: {type(exc).__name__}: {exc}")
        else:
            sent.append(channel)

    if targets["email"] and email:
        attempt("email", lambda: send_email(message, settings, targets["email"]))

    def webhook(conn_id: str, body: dict[str, Any]) -> Callable[[], None]:
        return lambda: post_webhook(conn_id, body)

    for kind, body in (("slack", message.slack), ("teams", message.teams)):
        for conn_id in targets[kind]:
            attempt(f"{kind}:{conn_id}", webhook(conn_id, body))
    return sent, failed


def send_email(message: Message, settings: Notifications, to: list[str]) -> None:
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    with SmtpHook(smtp_conn_id=settings.email.conn_id) as smtp:
        smtp.send_email_smtp(
            to=to,
            subject=message.subject,
            html_content=message.html,
            from_email=settings.email.sender,
            custom_headers={"X-PSA-ERP-Sync-Owner": message.owner, "X-PSA-ERP-Sync-Run": message.run_ref},
        )


def post_webhook(conn_id: str, body: dict[str, Any]) -> None:
    """POST to an incoming webhook: the connection's host is the full URL (its password, if any,
    a bearer token)."""
    import httpx
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    url = conn.host or ""
    if not url.startswith(("http://", "https://")):
        url = f"https://{url}"
    headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else {}
    response = httpx.post(url, json=body, headers=headers, timeout=15.0)
    response.raise_for_status()
