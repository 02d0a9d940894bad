"""The ingress's writes to the ODS: its own small pool with bounded waits, and ``InboxWriter``
(accepted events, quarantined deliveries with their exception-queue item). The SQL lives in the
inbox repository, ``include/psa_erp_sync/ods/inbox.py``."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

# The ODS may be slow or unreachable; the ingress then answers 503 quickly and holds no more than
# its own threads (docs/streaming.md, "Failing safe").
POOL_MAX_SIZE = 4
POOL_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 5000
# Quarantined deliveries in the exception queue: domain (owner via config/ownership.yaml), record type.
EXCEPTION_DOMAIN = "webhook_ingress"
EXCEPTION_RECORD_TYPE = "webhook_delivery"


def _limit_statements(conn: Any) -> None:
    conn.execute(f"SET statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")


def open_pool(conninfo: str) -> Any:
    """The ingress's own small pool. Every wait is bounded so a slow or unreachable ODS turns into
    a quick 503 (the sender retries) instead of held threads: a connection is waited for at most
    ``POOL_TIMEOUT_S``, a connection attempt lasts at most ``CONNECT_TIMEOUT_S``, a statement at
    most ``STATEMENT_TIMEOUT_MS``. Opening does not wait for the first connection. The pool comes
    from ``ods.connections`` (every extra ODS connection opens from the full parameters)."""
    from psa_erp_sync.ods import connections

    return connections.pool(
        conninfo,
        min_size=1,
        max_size=POOL_MAX_SIZE,
        timeout=POOL_TIMEOUT_S,
        kwargs={
            "autocommit": True,
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "psa-erp-sync-ingress",
        },
        # SET, not an ``options`` parameter: that would replace any options of the connection.
        configure=_limit_statements,
        name="psa-erp-sync-ingress",
        open=True,
    )


class InboxWriter:
    """Commits accepted events and quarantined deliveries; a small pool, opened on first use."""

    def __init__(self, dsn: str | Callable[[], str]) -> None:
        self._dsn = dsn
        self._pool: Any = None
        self._lock = threading.Lock()
        self._owner: str | None = None

    def _conn(self) -> Any:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = open_pool(self._dsn() if callable(self._dsn) else self._dsn)
        return self._pool.connection()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def owner(self) -> str:
        """Who owns quarantined deliveries in the exception queue (``config/ownership.yaml``)."""
        if self._owner is None:
            from psa_erp_sync.config import load_config

            self._owner = load_config().ownership.owner_for(EXCEPTION_DOMAIN)
        return self._owner

    def accept(
        self,
        *,
        delivery_id: str,
        source_system: str,
        event_type: str,
        source_id: str,
        occurred_at: datetime,
        body: bytes,
    ) -> bool:
        """True if new. The row is committed when this returns (autocommit, one statement)."""
        from psa_erp_sync.ods import inbox

        with self._conn() as conn:
            return inbox.insert_event(
                conn,
                delivery_id=delivery_id,
                source_system=source_system,
                event_type=event_type,
                source_id=source_id,
                occurred_at=occurred_at,
                body=body,
            )

    def quarantine(
        self,
        *,
        delivery_id: str,
        source_system: str,
        event_type: str | None,
        reason_code: str,
        detail: dict[str, Any],
        body: bytes,
        content_type: str | None,
    ) -> bool:
        """Keep an authentic but malformed delivery, keyed by (source, sha256 of the signed body),
        and open (or see again) its item in the exception queue, in one transaction. A stored body
        is never overwritten. True if this body was not quarantined before."""
        from psa_erp_sync.ods import exceptions, inbox

        body_sha256 = hashlib.sha256(body).hexdigest()
        owner = self.owner()
        with self._conn() as conn, conn.transaction():
            new = inbox.upsert_quarantine(
                conn,
                delivery_id=delivery_id,
                source_system=source_system,
                event_type=event_type,
                reason_code=reason_code,
                detail=detail,
                body=body,
                body_sha256=body_sha256,
                content_type=content_type,
            )
            exceptions.quarantine_many(
                conn,
                [
                    exceptions.Item(
                        kind="quarantine",
                        domain=EXCEPTION_DOMAIN,
                        source_system=source_system,
                        record_type=EXCEPTION_RECORD_TYPE,
                        source_id=body_sha256,
                        reason_code=f"WEBHOOK_{reason_code}",
                        owner=owner,
                        detail={"delivery_id": delivery_id, "event_type": event_type, **detail},
                    )
                ],
                run_id=f"webhook:{delivery_id}",
            )
        return new
