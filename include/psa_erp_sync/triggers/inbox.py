"""Fire when new events land in the ODS inbox: LISTEN/NOTIFY, with polling as the fallback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent


class InboxArrivalTrigger(BaseEventTrigger):
    """Yields an event whenever ``inbox.event`` holds pending events of ``event_types`` newer than
    the last ones announced; used through ``AssetWatcher`` to start the stream DAG.

    It LISTENs on the inbox channel (migration 0004 NOTIFYs on every committed insert) and also
    polls every ``poll_seconds``: a notification lost while the connection was down, or an event
    that arrived before the trigger started, is still seen. The DSN is read from the Airflow
    connection inside :meth:`run`, never serialized; ``serialize()`` is deterministic.

    :param ods_conn_id: Airflow connection of the ODS.
    :param source_system: ``psa`` or ``erp``.
    :param event_types: event types that concern the watching DAG.
    :param poll_seconds: the polling fallback's interval.
    :param min_age_seconds: announce only events pending at least this long (0: at once). The
        time and expense watcher waits: the long-running consumer takes fresh events within a
        second, and the DAG it starts is the safety net for what no consumer claimed.
    """

    def __init__(
        self,
        *,
        ods_conn_id: str = "ods_default",
        source_system: str = "psa",
        event_types: list[str] | tuple[str, ...] = (),
        poll_seconds: float = 5.0,
        min_age_seconds: float = 0.0,
    ) -> None:
        super().__init__()
        self.ods_conn_id = ods_conn_id
        self.source_system = source_system
        self.event_types = sorted(event_types)
        self.poll_seconds = float(poll_seconds)
        self.min_age_seconds = float(min_age_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "ods_conn_id": self.ods_conn_id,
            "source_system": self.source_system,
            "event_types": list(self.event_types),
            "poll_seconds": self.poll_seconds,
        }
        if self.min_age_seconds:  # watchers without it keep their serialized identity
            kwargs["min_age_seconds"] = self.min_age_seconds
        return "psa_erp_sync.triggers.inbox.InboxArrivalTrigger", kwargs

    async def _dsn(self) -> str:
        from asgiref.sync import sync_to_async

        from psa_erp_sync.hooks.ods import OdsHook

        dsn: str = await sync_to_async(OdsHook(self.ods_conn_id).dsn)()
        return dsn

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import psycopg

        dsn = await self._dsn()
        announced = 0  # the highest seq already announced by this trigger instance
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                    await conn.execute("LISTEN psa_erp_sync_inbox")
                    while True:
                        newest = await self._newest_pending(conn, announced)
                        if newest is not None:
                            announced = newest
                            yield TriggerEvent(
                                {"source_system": self.source_system, "max_seq": newest, "via": "inbox"}
                            )
                        await self._wait(conn)
            except psycopg.OperationalError as exc:
                self.log.warning("inbox watch lost its connection (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(min(self.poll_seconds, 5.0))

    async def _newest_pending(self, conn: Any, after: int) -> int | None:
        cur = await conn.execute(
            "SELECT max(seq) FROM inbox.event WHERE source_system = %s AND event_type = ANY(%s)"
            " AND status = 'pending' AND seq > %s AND received_at <= clock_timestamp() - make_interval(secs => %s)",
            (self.source_system, self.event_types, after, self.min_age_seconds),
        )
        row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else None

    async def _wait(self, conn: Any) -> None:
        """Until a notification of our source arrives or the poll interval passes."""
        prefix = f"{self.source_system}:"
        try:
            async for note in conn.notifies(timeout=self.poll_seconds):
                if note.payload.startswith(prefix) and note.payload[len(prefix) :] in self.event_types:
                    return
        except TimeoutError:
            return
