"""MonthEndWindowSensor: wait for an ERP period to open, or for a close window to end."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from airflow.sdk import BaseSensorOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class MonthEndWindowSensor(BaseSensorOperator):
    """Wait, deferred in the triggerer (no worker slot held), for a month-end condition.

    :param wait_for: ``period_open``: the ERP period of ``legal_entity`` containing ``day`` accepts
        postings of ``record_type``; ``close_window_end``: the close window around ``day`` (from
        ``config/close_calendars.yaml``, business days per country) is over.
    :param legal_entity: legal entity code, e.g. ``LE-UK1``. (templated)
    :param day: ISO date, e.g. ``{{ ds }}``. (templated)
    :param record_type: ``timebill`` or ``expensereport`` (expenses also respect ``apLocked``).
    :param erp_conn_id: Airflow connection of the ERP.
    :param poll_seconds: how often the trigger asks the ERP.
    """

    template_fields: Sequence[str] = ("legal_entity", "day")

    def __init__(
        self,
        *,
        wait_for: Literal["period_open", "close_window_end"],
        legal_entity: str,
        day: str,
        record_type: str = "timebill",
        erp_conn_id: str = "erp_default",
        poll_seconds: float = 300.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("timeout", timedelta(hours=12).total_seconds())
        super().__init__(**kwargs)
        self.wait_for = wait_for
        self.legal_entity = legal_entity
        self.day = day
        self.record_type = record_type
        self.erp_conn_id = erp_conn_id
        self.poll_seconds = poll_seconds
        self.waited_for: dict[str, Any] = {}

    def execute(self, context: Context) -> Any:
        from datetime import UTC, date, datetime

        if self.wait_for == "close_window_end":
            from airflow.providers.standard.triggers.temporal import DateTimeTrigger

            from psa_erp_sync.calendar import close
            from psa_erp_sync.config import load_config

            config = load_config()
            entity = config.legal_entities.legal_entities[self.legal_entity]
            calendar = config.close_calendars.calendars[entity.close_calendar]
            moment = datetime.combine(date.fromisoformat(self.day), datetime.min.time(), tzinfo=UTC)
            end = close.window_end(moment, calendar, entity.timezone)
            self.waited_for = {
                "close_window_end": end.isoformat() if end else None,
                "legal_entity": self.legal_entity,
            }
            if end is None or end <= datetime.now(UTC):
                self.log.info("no close window in progress for %s on %s", self.legal_entity, self.day)
                return self.waited_for
            self.log.info(
                "deferring until the close window of %s ends at %s", self.legal_entity, end.isoformat()
            )
            self.defer(
                trigger=DateTimeTrigger(moment=end.astimezone(UTC)),
                method_name="execute_complete",
                timeout=timedelta(seconds=float(self.timeout)) if self.timeout else None,
            )
        from psa_erp_sync.triggers.periods import PeriodOpenTrigger

        self.waited_for = {"period_open": self.day, "legal_entity": self.legal_entity}
        self.defer(
            trigger=PeriodOpenTrigger(
                erp_conn_id=self.erp_conn_id,
                legal_entity=self.legal_entity,
                day=self.day,
                record_type=self.record_type,
                poll_seconds=self.poll_seconds,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)) if self.timeout else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        self.log.info("month-end condition met: %s", event)
        self.waited_for = {**self.waited_for, **(event or {})}
        return self.waited_for

    # -- OpenLineage ---------------------------------------------------------------------------
    def _erp_periods(self) -> list[Any]:
        from psa_erp_sync.hooks.erp import ErpHook
        from psa_erp_sync.lineage import naming

        return [naming.erp_record(ErpHook(self.erp_conn_id).openlineage_namespace(), "accountingperiod")]

    def get_openlineage_facets_on_start(self) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs = self._erp_periods() if self.wait_for == "period_open" else []
        return OperatorLineage(inputs=inputs)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        from psa_erp_sync.lineage.facets import PeriodContextRunFacet

        facet = PeriodContextRunFacet(
            legalEntity=self.legal_entity,
            period=self.waited_for.get("period"),
            closeWindowEnd=self.waited_for.get("close_window_end"),
            waitedFor=self.wait_for,
        )
        inputs = self._erp_periods() if self.wait_for == "period_open" else []
        return OperatorLineage(inputs=inputs, run_facets={"periodContext": facet})

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self.get_openlineage_facets_on_complete(task_instance)
