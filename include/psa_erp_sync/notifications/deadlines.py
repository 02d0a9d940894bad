"""Deadline Alerts on the close path (Airflow 3.3 ``DeadlineAlert``), per legal entity.

- :class:`CloseDeadline` is a custom deadline reference: when a run is created, it computes from
  ``config/close_deadlines.yaml``, the legal entity's time zone and its close calendar when the run
  must have finished (:func:`psa_erp_sync.calendar.deadlines.deadline_for` of the run's
  ``run_after``). It deliberately does not use ``DeadlineReference.DAGRUN_QUEUED_AT``: clearing a
  run of a DAG with such a deadline fails in Airflow 3.3 (apache/airflow#70368), and the close
  deadline is a calendar fact that clearing must not move. It is registered by the plugin
  (``plugins/psa_erp_sync_plugin.py``, ``deadline_references``) so the scheduler and API server
  can evaluate it.
- :func:`notify_deadline_missed` is the ``AsyncCallback`` the triggerer runs when a deadline is
  missed: it tells the legal entity's owner over the owner-digest channels of
  ``config/notifications.yaml`` (e-mail over the SMTP connection, Slack / Teams webhooks).
- :func:`close_deadline_alerts` builds a DAG's ``deadline=`` list, one alert per legal entity.

The message names the DAG, the legal entity, the rule, the deadline and the run id; it holds no
personal data.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import BaseDeadlineReference, DeadlineAlert

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


log = logging.getLogger(__name__)


class DeadlineAlertNotSent(RuntimeError):
    """The missed-deadline alert reached none of the owner's channels."""


@dataclass(frozen=True, eq=False)  # eq/hash come from BaseDeadlineReference (its serialized form)
class CloseDeadline(BaseDeadlineReference):
    """The close deadline of ``legal_entity`` for the run being created (see the module docstring).

    Evaluates to None (no deadline) when the DAG has no rule for the legal entity, or the rule is
    ``close_window_only`` and the run is outside the close window."""

    legal_entity: str = ""

    required_kwargs = frozenset({"dag_id", "run_id"})

    def serialize_reference(self) -> dict[str, Any]:
        return {**super().serialize_reference(), "legal_entity": self.legal_entity}

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> CloseDeadline:
        return cls(legal_entity=reference_data["legal_entity"])

    def _evaluate_with(self, *, session: Session, **kwargs: Any) -> datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        run_after = session.scalar(
            select(DagRun.run_after).where(
                DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"]
            )
        )
        if run_after is None:
            return None
        return close_deadline(kwargs["dag_id"], self.legal_entity, run_after)


def close_deadline(dag_id: str, legal_entity: str, run_after: datetime) -> datetime | None:
    """When a run of ``dag_id`` with this ``run_after`` must have finished for ``legal_entity``."""
    from psa_erp_sync.calendar.deadlines import deadline_for
    from psa_erp_sync.config import load_close_deadlines, load_config

    rule = load_close_deadlines().rule(dag_id, legal_entity)
    if rule is None:
        return None
    config = load_config()
    entity = config.legal_entities.legal_entities[legal_entity]
    calendar = config.close_calendars.calendars[entity.close_calendar]
    return deadline_for(run_after, rule, timezone=entity.timezone, calendar=calendar)


def close_deadline_alerts(dag_id: str, *, interval: timedelta = timedelta(0)) -> list[DeadlineAlert]:
    """The ``deadline=`` of ``dag_id``: one :class:`CloseDeadline` alert per legal entity that
    ``config/close_deadlines.yaml`` lists for it (reads that validated file; no other I/O).
    ``interval`` is added to the computed deadline (0 in production)."""
    from psa_erp_sync.config import load_close_deadlines

    rules = load_close_deadlines().rules_of(dag_id)
    return [
        DeadlineAlert(
            reference=CloseDeadline(legal_entity=legal_entity),
            interval=interval,
            callback=AsyncCallback(
                notify_deadline_missed, kwargs={"dag_id": dag_id, "legal_entity": legal_entity}
            ),
            name=f"{dag_id} close deadline {legal_entity}",
        )
        for legal_entity in sorted(rules)
    ]


def alert_text(dag_id: str, legal_entity: str, context: dict[str, Any]) -> tuple[str, str]:
    """Subject and body of the alert for the deadline and run in ``context`` (what the scheduler
    hands the callback: ``dag_run`` as the REST API shows it, ``deadline`` with its time)."""
    from zoneinfo import ZoneInfo

    from psa_erp_sync.config import load_close_deadlines, load_config

    rule = load_close_deadlines().rule(dag_id, legal_entity)
    rule_text = rule.describe() if rule else "(rule no longer configured)"
    run = context.get("dag_run") or {}
    run_id = run.get("dag_run_id") or run.get("run_id") or "?"
    due = (context.get("deadline") or {}).get("deadline_time")
    if isinstance(due, str):
        due = datetime.fromisoformat(due)
    tz = ZoneInfo(load_config().legal_entities.legal_entities[legal_entity].timezone)
    if isinstance(due, datetime):
        due_utc = due.astimezone(UTC)
        when = f"{due_utc.astimezone(tz):%Y-%m-%d %H:%M %Z} ({due_utc:%Y-%m-%d %H:%M} UTC)"
    else:
        when = "unknown"
    subject = f"[psa-erp-sync] Deadline missed: {dag_id} for {legal_entity} by {when} (run {run_id})"
    body = "\n".join(
        [
            f"A close deadline was missed: DAG {dag_id}, legal entity {legal_entity}.",
            f"Rule: {rule_text} (config/close_deadlines.yaml).",
            f"Deadline: {when}.",
            f"Run: {run_id} (state when the deadline passed: {run.get('state', '?')}).",
            "Check the run in Airflow; entries it carries may not be in the ERP yet.",
        ]
    )
    return subject, body


async def notify_deadline_missed(*, dag_id: str, legal_entity: str, context: dict[str, Any]) -> list[str]:
    """The ``AsyncCallback`` of a missed close deadline (runs in the triggerer): tell the legal
    entity's owner on each of its digest channels. Returns the channels that took it; raises
    :class:`DeadlineAlertNotSent` if none did (the callback is then marked failed)."""
    return await asyncio.to_thread(_notify, dag_id, legal_entity, context)


def _notify(dag_id: str, legal_entity: str, context: dict[str, Any]) -> list[str]:
    from html import escape

    from psa_erp_sync.config import load_close_deadlines, load_notifications
    from psa_erp_sync.notifications.channels import Message, email_configured, tell_owner

    settings = load_notifications()
    rule = load_close_deadlines().rule(dag_id, legal_entity)
    owner = rule.owner if rule else "default"
    subject, body = alert_text(dag_id, legal_entity, context)
    run_id = (context.get("dag_run") or {}).get("dag_run_id", "?")
    chat = {"text": f"{subject}\n{body}"}
    message = Message(
        owner=owner,
        subject=subject,
        html="".join(f"<p>{escape(line)}</p>" for line in body.splitlines()),
        slack=chat,
        teams=chat,
        run_ref=f"{dag_id}/{run_id}",
    )
    sent, failed = tell_owner(message, settings, email=email_configured(settings, what="deadline alert"))
    log.warning("deadline missed: %s; told %s over %s", subject, owner, ", ".join(sent) or "nothing")
    if not sent:
        raise DeadlineAlertNotSent(f"{subject}: not sent to {owner}; {'; '.join(failed) or 'no channel'}")
    return sent
