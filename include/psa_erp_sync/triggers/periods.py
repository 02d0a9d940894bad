"""Wait in the triggerer until an ERP accounting period is open for posting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class PeriodOpenTrigger(BaseTrigger):
    """Polls the ERP (SuiteQL) until the period of ``legal_entity`` containing ``day`` accepts
    ``record_type`` postings: not ``closed`` nor ``allLocked`` (nor ``apLocked`` for expenses).

    ``serialize()`` is deterministic: the same arguments always identify the same trigger. The
    token is read from the Airflow connection inside :meth:`run`, never serialized.
    """

    def __init__(
        self,
        *,
        erp_conn_id: str,
        legal_entity: str,
        day: str,
        record_type: str = "timebill",
        poll_seconds: float = 60.0,
    ) -> None:
        super().__init__()
        self.erp_conn_id = erp_conn_id
        self.legal_entity = legal_entity
        self.day = day
        self.record_type = record_type
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "psa_erp_sync.triggers.periods.PeriodOpenTrigger",
            {
                "erp_conn_id": self.erp_conn_id,
                "legal_entity": self.legal_entity,
                "day": self.day,
                "record_type": self.record_type,
                "poll_seconds": self.poll_seconds,
            },
        )

    async def _state(self) -> dict[str, Any] | None:
        import httpx
        from asgiref.sync import sync_to_async

        from psa_erp_sync.hooks.erp import ErpHook

        base_url, token, _ = await sync_to_async(ErpHook(self.erp_conn_id).connection_parts)()
        query = (
            "SELECT externalid, subsidiary, startdate, enddate, closed, alllocked, aplocked FROM accountingperiod"
            f" WHERE subsidiary = '{_literal(self.legal_entity)}' AND startdate <= '{_literal(self.day)}'"
            f" AND enddate >= '{_literal(self.day)}'"
        )
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            response = await client.post(
                "/services/rest/query/v1/suiteql",
                json={"q": query},
                headers={"Authorization": f"Bearer {token}", "Prefer": "transient"},
            )
            response.raise_for_status()
            items: list[dict[str, Any]] = response.json().get("items", [])
        return items[0] if items else None

    def _open(self, period: dict[str, Any]) -> bool:
        blocked = period.get("closed") == "T" or period.get("alllocked") == "T"
        if self.record_type == "expensereport":
            blocked = blocked or period.get("aplocked") == "T"
        return not blocked

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            try:
                period = await self._state()
            except Exception as exc:  # the ERP being down is a reason to keep waiting, not to crash
                self.log.warning("ERP period check failed (%s); trying again", type(exc).__name__)
                period = None
            if period is not None and self._open(period):
                yield TriggerEvent(
                    {"status": "open", "period": period.get("externalid"), "legal_entity": self.legal_entity}
                )
                return
            await asyncio.sleep(self.poll_seconds)


def _literal(value: str) -> str:
    """Values are legal entity codes and ISO dates; refuse anything else rather than quote it."""
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    if not value or set(value) - allowed:
        raise ValueError(f"unexpected value in a period query: {value!r}")
    return value
