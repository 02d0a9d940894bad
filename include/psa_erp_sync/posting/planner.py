"""Plan the ERP postings that make the ERP equal the currently approved PSA set.

Compares, per source record, what should be in the ERP (approved, not deleted canonical rows)
with what the ledger knows the ERP holds (its last confirmed action), and plans ``post``,
``adjust`` (a new approved version of a posted record: upsert by the same external id, audited)
or ``reverse`` (unapproved or deleted after posting). Records with unfinished postings are left
to the engine; rejected or parked ones wait for replay. Set-based SQL, then a streamed pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_loads

from psa_erp_sync import money
from psa_erp_sync.config import Config
from psa_erp_sync.ods import connections
from psa_erp_sync.ods import exceptions as exception_queue
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.periods import PeriodBook

log = logging.getLogger(__name__)

SOURCES = {"timebill": "canonical.time_entry", "expensereport": "canonical.expense_entry"}
KINDS = {"timebill": "time_entry", "expensereport": "expense_entry"}


@dataclass
class Plan:
    record_type: str
    planned: dict[str, int] = field(default_factory=lambda: {"post": 0, "adjust": 0, "reverse": 0})
    moved_period: int = 0
    parked: int = 0
    superseded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "record_type": self.record_type,
            "planned": dict(self.planned),
            "moved_to_open_period": self.moved_period,
            "parked": self.parked,
            "superseded": self.superseded,
        }


def _candidates(conn: psycopg.Connection, record_type: str) -> Iterator[dict[str, Any]]:
    source = SOURCES[record_type]
    with conn.cursor(name=f"plan_{record_type}", row_factory=dict_row) as cur:
        cur.itersize = 20_000
        cur.execute(
            f"""
            WITH led AS (
                SELECT source_system, source_id, count(*) AS n,
                       (array_agg(state ORDER BY seq DESC))[1] AS last_state,
                       (array_agg(source_version ORDER BY seq DESC))[1] AS last_version,
                       (array_agg(action ORDER BY seq DESC))[1] AS last_action,
                       (array_agg(source_version ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_version,
                       (array_agg(action ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_action,
                       (array_agg(payload ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_payload
                FROM ledger.posting WHERE record_type = %(rt)s GROUP BY 1, 2
            ), desired AS (
                SELECT * FROM {source} WHERE approved AND NOT is_deleted
            )
            SELECT coalesce(d.source_system, led.source_system) AS source_system,
                   coalesce(d.source_id, led.source_id) AS source_id,
                   to_jsonb(d.*) - 'record' AS desired,
                   coalesce(led.n, 0) AS n, led.last_state, led.last_version, led.last_action,
                   led.done_version, led.done_action, led.done_payload
            FROM desired d FULL JOIN led USING (source_system, source_id)
            WHERE (led.last_state IS NULL OR led.last_state NOT IN ('pending', 'sent', 'ambiguous'))
              AND (
                    (d.source_id IS NOT NULL AND (led.done_action IS NULL OR led.done_action = 'reverse'))
                 OR (d.source_id IS NOT NULL AND led.done_action IN ('post', 'adjust') AND led.done_version <> d.version_hash)
                 OR (d.source_id IS NULL AND led.done_action IN ('post', 'adjust'))
              )
            ORDER BY 1, 2
            """,
            {"rt": record_type},
        )
        yield from cur


def supersede_stale(conn: psycopg.Connection, record_type: str) -> int:
    """Pending (never sent) postings whose version is no longer what should be in the ERP."""
    source = SOURCES[record_type]
    cur = conn.execute(
        f"""
        UPDATE ledger.posting p SET state = 'superseded', updated_at = now()
        WHERE p.record_type = %s AND p.state = 'pending' AND (
              (p.action IN ('post', 'adjust') AND NOT EXISTS (
                  SELECT 1 FROM {source} d WHERE d.source_system = p.source_system AND d.source_id = p.source_id
                    AND d.version_hash = p.source_version AND d.approved AND NOT d.is_deleted))
           OR (p.action = 'reverse' AND EXISTS (
                  SELECT 1 FROM {source} d WHERE d.source_system = p.source_system AND d.source_id = p.source_id
                    AND d.approved AND NOT d.is_deleted)))
        """,
        (record_type,),
    )
    return cur.rowcount


def erp_payload(record_type: str, row: dict[str, Any], *, external_id: str, key: str, config: Config, period: str | None,
                original_period: str | None) -> dict[str, Any]:  # fmt: skip
    """The ERP record for a canonical row. The memo carries our key, so a read-back can prove the
    ERP holds exactly this version (no names or notes: memos are visible to many people)."""
    ext = config.mappings.external_ids
    memo = f"psa:{row['source_id']} v:{row['version_hash'][:12]} key:{key[:16]}"
    if original_period and period and original_period != period:
        memo += f" orig-date:{row['spent_date']} orig-period:{original_period}"
    body: dict[str, Any] = {
        "externalId": external_id,
        "tranDate": str(row["spent_date"]),
        "employee": {"externalId": ext["employee"].format(id=row["user_ref"])},
        "customer": {"externalId": ext["job"].format(id=row["project_ref"])},
        "subsidiary": {"externalId": row["legal_entity"]},
        "currency": {"refName": row["currency"]},
        "isBillable": bool(row["billable"]),
        "memo": memo,
    }
    if period:
        body["postingPeriod"] = {"externalId": period}
    if record_type == "timebill":
        body["hours"] = f"{row['hours']:.2f}" if not isinstance(row["hours"], str) else row["hours"]
        body["rate"] = money.format_minor(int(row["bill_rate_minor"]), row["currency"])
    else:
        body["amount"] = money.format_minor(int(row["amount_minor"]), row["currency"])
        body["category"] = row["category"]
    return body


def plan(
    conn: psycopg.Connection,
    *,
    record_type: str,
    config: Config,
    periods: PeriodBook,
    dag_run_id: str,
    chunk: int = 5000,
    on_chunk: Callable[[list[ledger.Posting]], None] | None = None,
) -> Plan:
    """Insert pending ledger rows for every record whose ERP state differs from the approved set.

    Works ``chunk`` records at a time: each chunk's ledger rows, parked items and audit rows are
    written in one transaction (a savepoint when the caller holds a transaction, which then decides
    for all of them). When ``conn`` is not in a transaction, each chunk commits on its own and
    ``on_chunk`` receives the pending postings it inserted, so the engine can send them while the
    next chunk is planned. A plan interrupted between chunks is safe: what committed is pending in
    the ledger (the next plan leaves those records to the engine), the rest is planned again.
    """
    if on_chunk is not None and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        # Postings handed on before their transaction commits could be sent without a ledger row.
        raise ValueError("plan(on_chunk=...) commits each chunk: call it outside a transaction")
    result = Plan(record_type)
    with conn.transaction():
        result.superseded = supersede_stale(conn, record_type)
    ext_kind = "timebill" if record_type == "timebill" else "expensereport"
    entities = config.legal_entities.legal_entities
    batch: list[ledger.Posting] = []
    parked: list[exception_queue.Item] = []
    # Every planned change to a record the ERP already holds: (action, external id, before, after).
    changes: list[tuple[str, str, Any, Any]] = []
    with connections.connect_like(conn) as reader:
        set_json_loads(msgspec.json.decode, reader)  # several times faster than json.loads
        for cand in _candidates(reader, record_type):
            desired = cand["desired"]
            source_id = cand["source_id"]
            external_id = config.mappings.external_id(ext_kind, source_id)
            seq = int(cand["n"])
            if desired is None:  # unapproved or deleted after posting
                key = ledger.idempotency_key(
                    record_type, cand["source_system"], source_id, cand["done_version"], "reverse", seq
                )
                batch.append(
                    ledger.Posting(
                        key, record_type, cand["source_system"], source_id, cand["done_version"], external_id, "reverse",
                        "pending", {"externalId": external_id, "reverses": cand["done_payload"]},
                    )
                )  # fmt: skip
                result.planned["reverse"] += 1
                changes.append(("erp_reverse", external_id, cand["done_payload"], None))
            else:
                if (
                    cand["last_state"] in ("rejected", "parked")
                    and cand["last_version"] == desired["version_hash"]
                ):
                    continue  # a dead letter or parked record: waits for replay
                action: ledger.Action = "adjust" if cand["done_action"] in ("post", "adjust") else "post"
                key = ledger.idempotency_key(
                    record_type, cand["source_system"], source_id, desired["version_hash"], action, seq
                )
                entity = desired["legal_entity"]
                policy = entities[entity].closed_period_policy if entity in entities else "park"
                decision = periods.decide(
                    entity, date.fromisoformat(desired["spent_date"]), record_type, policy
                )
                state = "parked" if decision.outcome == "park" else "pending"
                payload = erp_payload(
                    record_type, desired, external_id=external_id, key=key, config=config,
                    period=decision.period, original_period=decision.original_period,
                )  # fmt: skip
                batch.append(
                    ledger.Posting(
                        key, record_type, cand["source_system"], source_id, desired["version_hash"], external_id, action,
                        state, payload, entity, decision.period or decision.original_period,
                        int(desired["amount_minor"]), desired["currency"],
                    )
                )  # fmt: skip
                result.planned[action] += 1
                if action == "adjust":
                    changes.append(("erp_adjust", external_id, cand["done_payload"], payload))
                if decision.outcome == "moved":
                    result.moved_period += 1
                if decision.outcome == "park":
                    result.parked += 1
                    parked.append(
                        exception_queue.Item(
                            kind="parked", domain="time_expense", source_system=cand["source_system"],
                            record_type=KINDS[record_type], source_id=source_id, source_version=desired["version_hash"],
                            reason_code=decision.reason or "PERIOD_CLOSED",
                            detail={"period": decision.original_period, "spent_date": desired["spent_date"], "policy": policy},
                            legal_entity=entity, owner=config.ownership.owner_for("time_expense", entity),
                        )
                    )  # fmt: skip
            if len(batch) >= chunk:
                _flush(conn, record_type, batch, parked, changes, dag_run_id=dag_run_id, on_chunk=on_chunk)
    _flush(conn, record_type, batch, parked, changes, dag_run_id=dag_run_id, on_chunk=on_chunk)
    with conn.transaction():
        conn.execute(
            "INSERT INTO audit.change (actor, action, entity, entity_key, after, run_id) VALUES ('posting.planner', 'plan', %s, %s, %s::jsonb, %s)",
            ("ledger.posting", record_type, psycopg.types.json.Jsonb(result.as_dict()), dag_run_id),
        )
    return result


def _flush(
    conn: psycopg.Connection,
    record_type: str,
    batch: list[ledger.Posting],
    parked: list[exception_queue.Item],
    changes: list[tuple[str, str, Any, Any]],
    *,
    dag_run_id: str,
    on_chunk: Callable[[list[ledger.Posting]], None] | None,
) -> None:
    """Write one chunk of the plan in one transaction, then hand its pending postings on."""
    with conn.transaction():
        inserted = ledger.insert_planned(conn, batch)
        exception_queue.quarantine_many(conn, parked, run_id=dag_run_id)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO audit.change (actor, action, entity, entity_key, before, after, run_id)"
                " VALUES ('posting.planner', %s, %s, %s, %s, %s, %s)",
                [
                    (
                        action,
                        f"erp.{record_type}",
                        external_id,
                        Jsonb(before),
                        Jsonb(after) if after else None,
                        dag_run_id,
                    )
                    for action, external_id, before, after in changes
                ],
            )
    if on_chunk is not None:
        # Only what this plan inserted, as committed: a key that already existed is not ours to send.
        fresh = [p for p in batch if p.state == "pending" and p.idempotency_key in inserted]
        if fresh:
            on_chunk(fresh)
    batch.clear()
    parked.clear()
    changes.clear()
