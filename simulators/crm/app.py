"""CRM simulator: accounts, opportunities and change orders, with a pull-based event feed.

A deliberately simple, Salesforce-like REST shape (documented in ``docs/simulators.md``, "CRM API"):

* ``GET /api/v1/accounts``, ``/api/v1/opportunities``, ``/api/v1/change_orders``: keyset
  pagination ordered by id (``limit`` and an opaque ``cursor``; follow ``next`` until it is null),
  filter ``updated_since`` everywhere, plus ``stage``, ``is_won`` and ``account_id`` on
  opportunities and ``opportunity_id``/``status`` on change orders.
* ``GET /api/v1/opportunities/{id}``, ``GET /api/v1/change_orders/{id}``.
* ``GET /api/v1/events?after=<seq>``: ``opportunity.closed_won`` and ``change_order.approved``
  events in sequence order, delivered at least once (``POST /admin/events/redeliver`` appends a
  copy of an event under a new sequence number, as a real feed does after a hiccup).

Every ``/api`` call needs ``Authorization: Bearer <token>`` (any non-empty token). Money is a
decimal string, dates ``YYYY-MM-DD``, timestamps ISO 8601 UTC.
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from simulators.common.app import create_app, db_of

STAGE_PROBABILITY: dict[str, int] = {
    "Prospecting": 10,
    "Qualification": 20,
    "Proposal": 50,
    "Negotiation": 75,
    "Closed Won": 100,
    "Closed Lost": 0,
}
Stage = Literal["Prospecting", "Qualification", "Proposal", "Negotiation", "Closed Won", "Closed Lost"]
ChangeOrderStatus = Literal["draft", "submitted", "approved", "rejected"]
BillingType = Literal["time_and_materials", "fixed_fee", "milestone", "retainer"]
MAX_LIMIT = 1000
EVENT_LOCK = 0x43524D  # advisory lock serialising event appends, so seq order = commit order


def _no_float(value: Any) -> Any:
    if isinstance(value, float):
        raise ValueError("money must be a decimal string, not a float")
    return value


Money = Annotated[Decimal, BeforeValidator(_no_float), Field(max_digits=18, decimal_places=2)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=255)
    legal_entity: str | None = None
    erp_customer_external_id: str | None = None
    updated_at: datetime | None = None  # seed-only override, for tests of incremental windows


class OpportunityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1)
    account_id: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=255)
    stage: Stage
    probability: int | None = Field(default=None, ge=0, le=100)
    amount: Money
    currency: Currency
    close_date: date | None = None
    expected_start: date | None = None
    duration_months: int | None = Field(default=None, ge=1, le=600)
    legal_entity: str | None = None
    practice: str | None = None
    billing_type: BillingType | None = None
    psa_project_id: int | None = None
    updated_at: datetime | None = None


class ChangeOrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int = Field(ge=1)
    opportunity_id: int = Field(ge=1)
    amount_delta: Money
    currency: Currency
    status: ChangeOrderStatus
    effective_date: date | None = None
    updated_at: datetime | None = None


class SeedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accounts: list[AccountIn] = Field(default_factory=list)
    opportunities: list[OpportunityIn] = Field(default_factory=list)
    change_orders: list[ChangeOrderIn] = Field(default_factory=list)


class CloseWonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    close_date: date | None = None
    amount: Money | None = None
    psa_project_id: int | None = None


class ChangeOrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(default=None, ge=1)
    opportunity_id: int = Field(ge=1)
    amount_delta: Money
    currency: Currency | None = None
    status: ChangeOrderStatus = "approved"
    effective_date: date | None = None


class RedeliverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seqs: list[int] = Field(min_length=1)


def require_bearer(authorization: Annotated[str | None, Header()] = None) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status_code=401,
            detail={"code": "UNAUTHORIZED", "message": "a bearer token is required"},
            headers={"WWW-Authenticate": "Bearer"},
        )


api = APIRouter(prefix="/api/v1", tags=["crm"], dependencies=[Depends(require_bearer)])
admin = APIRouter(prefix="/admin", tags=["admin"])


# --- representation -----------------------------------------------------------------------


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _d(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:.2f}"


def account_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "legal_entity": row["legal_entity"],
        "erp_customer_external_id": row["erp_customer_external_id"],
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
    }


def opportunity_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "account_id": row["account_id"],
        "name": row["name"],
        "stage": row["stage"],
        "probability": row["probability"],
        "amount": _money(row["amount"]),
        "currency": row["currency"],
        "close_date": _d(row["close_date"]),
        "expected_start": _d(row["expected_start"]),
        "duration_months": row["duration_months"],
        "legal_entity": row["legal_entity"],
        "practice": row["practice"],
        "billing_type": row["billing_type"],
        "psa_project_id": row["psa_project_id"],
        "is_won": row["is_won"],
        "is_closed": row["is_closed"],
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
    }


def change_order_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "opportunity_id": row["opportunity_id"],
        "amount_delta": _money(row["amount_delta"]),
        "currency": row["currency"],
        "status": row["status"],
        "effective_date": _d(row["effective_date"]),
        "approved_at": _ts(row["approved_at"]),
        "created_at": _ts(row["created_at"]),
        "updated_at": _ts(row["updated_at"]),
    }


def event_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": row["seq"],
        "id": row["event_id"],
        "type": row["type"],
        "occurred_at": _ts(row["occurred_at"]),
        "data": row["data"],
    }


# --- pagination ---------------------------------------------------------------------------


def _encode_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after_id": after_id}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        after_id = json.loads(base64.urlsafe_b64decode(padded))["after_id"]
        if not isinstance(after_id, int):
            raise TypeError("after_id")
        return after_id
    except (ValueError, KeyError, TypeError) as exc:
        raise HTTPException(400, detail={"code": "INVALID_CURSOR", "message": "cursor is not valid"}) from exc


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _page(
    request: Request,
    table: str,
    conditions: list[str],
    params: list[Any],
    limit: int,
    cursor: str | None,
    render: Any,
) -> dict[str, Any]:
    """One keyset page ordered by id; ``next`` carries the last id seen in an opaque cursor."""
    after_id = _decode_cursor(cursor)
    where = " AND ".join(["id > %s", *conditions])
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT * FROM {table} WHERE {where} ORDER BY id LIMIT %s", [after_id, *params, limit + 1]
        ).fetchall()
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_url = None
    if has_more:
        next_url = str(request.url.include_query_params(cursor=_encode_cursor(rows[-1]["id"]), limit=limit))
    return {"data": [render(r) for r in rows], "next": next_url, "limit": limit}


LimitQ = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


# --- API ----------------------------------------------------------------------------------


@api.get("/accounts")
def list_accounts(
    request: Request,
    updated_since: datetime | None = None,
    limit: LimitQ = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    conditions: list[str] = []
    params: list[Any] = []
    if updated_since is not None:
        conditions.append("updated_at >= %s")
        params.append(_utc(updated_since))
    return _page(request, "account", conditions, params, limit, cursor, account_json)


@api.get("/accounts/{account_id}")
def get_account(request: Request, account_id: int) -> dict[str, Any]:
    return account_json(_one(request, "account", account_id))


@api.get("/opportunities")
def list_opportunities(
    request: Request,
    updated_since: datetime | None = None,
    stage: Stage | None = None,
    is_won: bool | None = None,
    account_id: int | None = None,
    limit: LimitQ = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    conditions: list[str] = []
    params: list[Any] = []
    if updated_since is not None:
        conditions.append("updated_at >= %s")
        params.append(_utc(updated_since))
    if stage is not None:
        conditions.append("stage = %s")
        params.append(stage)
    if is_won is not None:
        conditions.append("is_won = %s")
        params.append(is_won)
    if account_id is not None:
        conditions.append("account_id = %s")
        params.append(account_id)
    return _page(request, "opportunity", conditions, params, limit, cursor, opportunity_json)


@api.get("/opportunities/{opportunity_id}")
def get_opportunity(request: Request, opportunity_id: int) -> dict[str, Any]:
    return opportunity_json(_one(request, "opportunity", opportunity_id))


@api.get("/change_orders")
def list_change_orders(
    request: Request,
    updated_since: datetime | None = None,
    opportunity_id: int | None = None,
    status: ChangeOrderStatus | None = None,
    limit: LimitQ = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    conditions: list[str] = []
    params: list[Any] = []
    if updated_since is not None:
        conditions.append("updated_at >= %s")
        params.append(_utc(updated_since))
    if opportunity_id is not None:
        conditions.append("opportunity_id = %s")
        params.append(opportunity_id)
    if status is not None:
        conditions.append("status = %s")
        params.append(status)
    return _page(request, "change_order", conditions, params, limit, cursor, change_order_json)


@api.get("/change_orders/{change_order_id}")
def get_change_order(request: Request, change_order_id: int) -> dict[str, Any]:
    return change_order_json(_one(request, "change_order", change_order_id))


@api.get("/events")
def list_events(
    request: Request,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: LimitQ = 100,
    type: str | None = None,
) -> dict[str, Any]:
    """Events with ``seq > after`` in sequence order. Consumers dedupe by event ``id``."""
    conditions = ["seq > %s"]
    params: list[Any] = [after]
    if type is not None:
        conditions.append("type = %s")
        params.append(type)
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT * FROM event WHERE {' AND '.join(conditions)} ORDER BY seq LIMIT %s",
            [*params, limit + 1],
        ).fetchall()
    has_more = len(rows) > limit
    rows = rows[:limit]
    return {
        "events": [event_json(r) for r in rows],
        "next_after": rows[-1]["seq"] if rows else after,
        "has_more": has_more,
    }


def _one(request: Request, table: str, row_id: int) -> dict[str, Any]:
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(f"SELECT * FROM {table} WHERE id = %s", (row_id,)).fetchone()
    if row is None:
        raise HTTPException(404, detail={"code": "NOT_FOUND", "message": f"{table} {row_id} not found"})
    return row


# --- admin --------------------------------------------------------------------------------

_ACCOUNT_COLS = ("name", "legal_entity", "erp_customer_external_id")
_OPPORTUNITY_COLS = (
    "account_id",
    "name",
    "stage",
    "probability",
    "amount",
    "currency",
    "close_date",
    "expected_start",
    "duration_months",
    "legal_entity",
    "practice",
    "billing_type",
    "psa_project_id",
)
_CHANGE_ORDER_COLS = ("opportunity_id", "amount_delta", "currency", "status", "effective_date")


def _upsert(conn: psycopg.Connection, table: str, cols: tuple[str, ...], row: dict[str, Any]) -> str:
    """Insert or update one row by id; ``updated_at`` moves only when the content changes."""
    names = ("id", *cols)
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
    changed = f"({', '.join(f'{table}.{c}' for c in cols)}) IS DISTINCT FROM ({', '.join(f'EXCLUDED.{c}' for c in cols)})"
    extra_set = ""
    if table == "change_order":
        extra_set = (
            ", approved_at = CASE WHEN EXCLUDED.status = 'approved' "
            "THEN coalesce(change_order.approved_at, EXCLUDED.updated_at) ELSE NULL END"
        )
    approved_insert = ", approved_at" if table == "change_order" else ""
    approved_value = (
        ", CASE WHEN %(status)s = 'approved' THEN coalesce(%(updated_at)s, clock_timestamp()) END"
        if table == "change_order"
        else ""
    )
    sql = (
        f"INSERT INTO {table} ({', '.join(names)}, updated_at{approved_insert}) "
        f"VALUES ({', '.join(f'%({c})s' for c in names)}, coalesce(%(updated_at)s, clock_timestamp()){approved_value}) "
        f"ON CONFLICT (id) DO UPDATE SET {sets}, updated_at = EXCLUDED.updated_at{extra_set} "
        f"WHERE {changed} OR %(updated_at)s IS NOT NULL "
        "RETURNING (xmax = 0) AS inserted"
    )
    result = conn.execute(sql, row).fetchone()
    if result is None:
        return "unchanged"
    return "inserted" if result[0] else "updated"


@admin.post("/seed")
def seed(request: Request, body: SeedIn) -> dict[str, Any]:
    """Upsert accounts, opportunities and change orders by id. Seeding emits no events."""
    counts: dict[str, dict[str, int]] = {}
    with db_of(request).tx() as conn:
        for table, cols, rows in (
            ("account", _ACCOUNT_COLS, [r.model_dump() for r in body.accounts]),
            ("opportunity", _OPPORTUNITY_COLS, [_with_probability(r) for r in body.opportunities]),
            ("change_order", _CHANGE_ORDER_COLS, [r.model_dump() for r in body.change_orders]),
        ):
            tally = {"inserted": 0, "updated": 0, "unchanged": 0}
            for row in rows:
                tally[_upsert(conn, table, cols, row)] += 1
            counts[table] = tally
    return {"status": "seeded", "counts": counts}


def _with_probability(opportunity: OpportunityIn) -> dict[str, Any]:
    row = opportunity.model_dump()
    if row["probability"] is None:
        row["probability"] = STAGE_PROBABILITY[row["stage"]]
    return row


def _append_event(
    conn: psycopg.Connection, event_type: str, entity_id: int, data: dict[str, Any]
) -> dict[str, Any]:
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_LOCK,))
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO event (event_id, type, entity_id, occurred_at, data) "
            "VALUES (%s, %s, %s, clock_timestamp(), %s) RETURNING *",
            (f"evt_{uuid.uuid4().hex}", event_type, entity_id, Jsonb(data)),
        ).fetchone()
    assert row is not None
    return event_json(row)


def _contract_value(conn: psycopg.Connection, opportunity_id: int) -> Decimal:
    row = conn.execute(
        "SELECT o.amount + coalesce((SELECT sum(amount_delta) FROM change_order c "
        "WHERE c.opportunity_id = o.id AND c.status = 'approved'), 0) FROM opportunity o WHERE o.id = %s",
        (opportunity_id,),
    ).fetchone()
    assert row is not None
    value: Decimal = row[0]
    return value


@admin.post("/opportunities/{opportunity_id}/close_won")
def close_won(request: Request, opportunity_id: int, body: CloseWonIn | None = None) -> dict[str, Any]:
    """Move an opportunity to Closed Won and emit ``opportunity.closed_won`` (once)."""
    body = body or CloseWonIn()
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM opportunity WHERE id = %s FOR UPDATE", (opportunity_id,)).fetchone()
        if row is None:
            raise HTTPException(
                404, detail={"code": "NOT_FOUND", "message": f"opportunity {opportunity_id} not found"}
            )
        if row["is_won"]:
            return {"opportunity": opportunity_json(row), "event": None, "already_won": True}
        row = cur.execute(
            "UPDATE opportunity SET stage = 'Closed Won', probability = 100, "
            "close_date = coalesce(%s, close_date, current_date), amount = coalesce(%s, amount), "
            "psa_project_id = coalesce(%s, psa_project_id), updated_at = clock_timestamp() "
            "WHERE id = %s RETURNING *",
            (body.close_date, body.amount, body.psa_project_id, opportunity_id),
        ).fetchone()
        assert row is not None
        opportunity = opportunity_json(row)
        event = _append_event(conn, "opportunity.closed_won", opportunity_id, {"opportunity": opportunity})
    return {"opportunity": opportunity, "event": event, "already_won": False}


def _approved_event(conn: psycopg.Connection, change_order: dict[str, Any]) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        opp = cur.execute(
            "SELECT * FROM opportunity WHERE id = %s", (change_order["opportunity_id"],)
        ).fetchone()
    assert opp is not None
    data = {
        "change_order": change_order,
        "opportunity": {
            "id": opp["id"],
            "account_id": opp["account_id"],
            "psa_project_id": opp["psa_project_id"],
            "amount": _money(opp["amount"]),
            "currency": opp["currency"],
            "contract_value": _money(_contract_value(conn, opp["id"])),
        },
    }
    return _append_event(conn, "change_order.approved", change_order["id"], data)


@admin.post("/change_orders", status_code=201)
def create_change_order(request: Request, body: ChangeOrderCreate) -> dict[str, Any]:
    """Create a change order on an opportunity; an approved one emits ``change_order.approved``."""
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        opp = cur.execute(
            "SELECT * FROM opportunity WHERE id = %s FOR UPDATE", (body.opportunity_id,)
        ).fetchone()
        if opp is None:
            raise HTTPException(
                404, detail={"code": "NOT_FOUND", "message": f"opportunity {body.opportunity_id} not found"}
            )
        currency = body.currency or opp["currency"]
        if currency != opp["currency"]:
            raise HTTPException(
                422,
                detail={
                    "code": "CURRENCY_MISMATCH",
                    "message": "change order currency must match the opportunity",
                },
            )
        conn.execute("LOCK TABLE change_order IN SHARE ROW EXCLUSIVE MODE")
        new_id = body.id
        if new_id is None:
            max_row = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM change_order").fetchone()
            assert max_row is not None
            new_id = int(max_row[0])
        elif conn.execute("SELECT 1 FROM change_order WHERE id = %s", (new_id,)).fetchone() is not None:
            raise HTTPException(
                409, detail={"code": "DUPLICATE_ID", "message": f"change order {new_id} exists"}
            )
        row = cur.execute(
            "INSERT INTO change_order (id, opportunity_id, amount_delta, currency, status, effective_date, approved_at) "
            "VALUES (%s, %s, %s, %s, %s, coalesce(%s, current_date), "
            "CASE WHEN %s = 'approved' THEN clock_timestamp() END) RETURNING *",
            (
                new_id,
                body.opportunity_id,
                body.amount_delta,
                currency,
                body.status,
                body.effective_date,
                body.status,
            ),
        ).fetchone()
        assert row is not None
        change_order = change_order_json(row)
        event = _approved_event(conn, change_order) if body.status == "approved" else None
    return {"change_order": change_order, "event": event}


@admin.post("/change_orders/{change_order_id}/approve")
def approve_change_order(request: Request, change_order_id: int) -> dict[str, Any]:
    """Approve a draft or submitted change order and emit ``change_order.approved`` (once)."""
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM change_order WHERE id = %s FOR UPDATE", (change_order_id,)
        ).fetchone()
        if row is None:
            raise HTTPException(
                404, detail={"code": "NOT_FOUND", "message": f"change order {change_order_id} not found"}
            )
        if row["status"] == "approved":
            return {"change_order": change_order_json(row), "event": None, "already_approved": True}
        if row["status"] == "rejected":
            raise HTTPException(
                409, detail={"code": "REJECTED", "message": "a rejected change order cannot be approved"}
            )
        row = cur.execute(
            "UPDATE change_order SET status = 'approved', approved_at = clock_timestamp(), "
            "updated_at = clock_timestamp() WHERE id = %s RETURNING *",
            (change_order_id,),
        ).fetchone()
        assert row is not None
        change_order = change_order_json(row)
        event = _approved_event(conn, change_order)
    return {"change_order": change_order, "event": event, "already_approved": False}


@admin.post("/events/redeliver")
def redeliver_events(request: Request, body: RedeliverIn) -> dict[str, Any]:
    """Append copies of earlier events (same event id, new seq): the feed's at-least-once duplicates."""
    appended: list[dict[str, Any]] = []
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (EVENT_LOCK,))
        for seq in body.seqs:
            row = cur.execute(
                "INSERT INTO event (event_id, type, entity_id, occurred_at, data) "
                "SELECT event_id, type, entity_id, occurred_at, data FROM event WHERE seq = %s RETURNING *",
                (seq,),
            ).fetchone()
            if row is None:
                raise HTTPException(
                    404, detail={"code": "NOT_FOUND", "message": f"event seq {seq} not found"}
                )
            appended.append(event_json(row))
    return {"events": appended}


@admin.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    with db_of(request).tx() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM account), (SELECT count(*) FROM opportunity), "
            "(SELECT count(*) FROM opportunity WHERE is_won), (SELECT count(*) FROM change_order), "
            "(SELECT count(*) FROM change_order WHERE status = 'approved'), (SELECT count(*) FROM event), "
            "(SELECT coalesce(max(seq), 0) FROM event)"
        ).fetchone()
    assert row is not None
    return {
        "accounts": row[0],
        "opportunities": row[1],
        "opportunities_won": row[2],
        "change_orders": row[3],
        "change_orders_approved": row[4],
        "events": row[5],
        "last_event_seq": row[6],
    }


SCHEMA_SQL = (Path(__file__).with_name("schema.sql")).read_text()


def create(dsn: str | None = None) -> FastAPI:
    """The CRM simulator app, its state in schema ``sim_crm`` of the PostgreSQL at ``dsn``."""
    app = create_app(
        name="crm",
        title="CRM simulator",
        schema="sim_crm",
        schema_sql=SCHEMA_SQL,
        description=__doc__ or "",
        dsn=dsn,
    )
    app.include_router(api)
    app.include_router(admin)
    return app
