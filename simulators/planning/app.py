"""Planning-platform simulator: immutable forecast snapshots per scenario and version.

API (documented in ``docs/simulators.md``, "Planning API"); every ``/api`` call needs
``Authorization: Bearer <token>`` (any non-empty token):

* ``PUT /api/v1/snapshots/{snapshot_id}``: idempotent by snapshot id. A new id answers 201; the
  same id with the same content (lines in any order, amounts compared as numbers) answers 200
  ``unchanged``; the same id with other content answers 409 ``SNAPSHOT_CONFLICT``: a snapshot is
  never overwritten, a new one gets a new id.
* ``GET /api/v1/snapshots?scenario=``: summaries, keyset-paginated by id (``limit``, ``cursor``,
  follow ``next``).
* ``GET /api/v1/snapshots/{snapshot_id}``: the summary with line count and totals
  (``?include_lines=true`` adds the lines).

Amounts are decimal strings (``"1234.50"``, at most 4 decimals), never JSON numbers.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from psycopg.rows import dict_row
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from simulators.common.app import create_app, db_of

MAX_LIMIT = 500
MAX_LINES = 200_000


def _decimal_string(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError('amounts are decimal strings, e.g. "1234.50"')
    try:
        parsed = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError("not a decimal number") from exc
    if not parsed.is_finite():
        raise ValueError("not a finite decimal number")
    exponent = parsed.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise ValueError("at most 4 decimal places")
    return parsed


Amount = Annotated[Decimal, BeforeValidator(_decimal_string)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Ref = Annotated[str, Field(min_length=1, max_length=128)]
SnapshotId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")]


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project_ref: Ref
    practice: Ref
    legal_entity: Ref
    layer: Literal["actual", "contracted", "pipeline", "trend"]
    month: date
    currency: Currency
    amount: Amount
    reporting_amount: Amount

    @field_validator("month")
    @classmethod
    def _first_of_month(cls, value: date) -> date:
        if value.day != 1:
            raise ValueError("month is the first day of the month")
        return value


class SnapshotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scenario: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    version: Annotated[str, Field(min_length=1, max_length=64)]
    as_of: date
    reporting_currency: Currency
    lines: list[LineIn] = Field(max_length=MAX_LINES)

    @model_validator(mode="after")
    def _unique_lines(self) -> SnapshotIn:
        seen: set[tuple[str, str, date]] = set()
        for line in self.lines:
            key = (line.project_ref, line.layer, line.month)
            if key in seen:
                raise ValueError(f"duplicate line for project_ref/layer/month {key[0]}/{key[1]}/{key[2]}")
            seen.add(key)
        return self


def require_bearer(authorization: Annotated[str | None, Header()] = None) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status_code=401,
            detail={"code": "UNAUTHORIZED", "message": "a bearer token is required"},
            headers={"WWW-Authenticate": "Bearer"},
        )


api = APIRouter(prefix="/api/v1", tags=["planning"], dependencies=[Depends(require_bearer)])
admin = APIRouter(prefix="/admin", tags=["admin"])


def _num(value: Decimal) -> str:
    """A number in plain notation without trailing zeros beyond the cents: stable for hashing."""
    text = format(value.normalize(), "f")
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def content_hash(body: SnapshotIn) -> str:
    """sha256 of the snapshot's normalised content: line order and trailing zeros do not matter."""
    lines = sorted(
        (
            {
                "project_ref": line.project_ref,
                "practice": line.practice,
                "legal_entity": line.legal_entity,
                "layer": line.layer,
                "month": line.month.isoformat(),
                "currency": line.currency,
                "amount": _num(line.amount),
                "reporting_amount": _num(line.reporting_amount),
            }
            for line in body.lines
        ),
        key=lambda x: (x["project_ref"], x["layer"], x["month"]),
    )
    canonical = {
        "scenario": body.scenario,
        "version": body.version,
        "as_of": body.as_of.isoformat(),
        "reporting_currency": body.reporting_currency,
        "lines": lines,
    }
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _summary(
    conn: psycopg.Connection, snapshot_id: str, *, totals: bool, lines: bool
) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM snapshot WHERE snapshot_id = %s", (snapshot_id,)).fetchone()
        if row is None:
            return None
        result: dict[str, Any] = {
            "snapshot_id": row["snapshot_id"],
            "scenario": row["scenario"],
            "version": row["version"],
            "as_of": row["as_of"].isoformat(),
            "reporting_currency": row["reporting_currency"],
            "line_count": row["line_count"],
            "content_hash": row["content_hash"],
            "received_at": _ts(row["received_at"]),
            "put_count": row["put_count"],
        }
        if totals:
            by_layer = cur.execute(
                "SELECT layer, sum(reporting_amount) AS total FROM snapshot_line WHERE snapshot_id = %s "
                "GROUP BY layer ORDER BY layer",
                (snapshot_id,),
            ).fetchall()
            by_currency = cur.execute(
                "SELECT currency, sum(amount) AS total FROM snapshot_line WHERE snapshot_id = %s "
                "GROUP BY currency ORDER BY currency",
                (snapshot_id,),
            ).fetchall()
            result["totals"] = {
                "reporting_amount": _num(sum((r["total"] for r in by_layer), Decimal(0))),
                "reporting_amount_by_layer": {r["layer"]: _num(r["total"]) for r in by_layer},
                "amount_by_currency": {r["currency"]: _num(r["total"]) for r in by_currency},
            }
        if lines:
            rows = cur.execute(
                "SELECT * FROM snapshot_line WHERE snapshot_id = %s ORDER BY line_no", (snapshot_id,)
            ).fetchall()
            result["lines"] = [
                {
                    "project_ref": r["project_ref"],
                    "practice": r["practice"],
                    "legal_entity": r["legal_entity"],
                    "layer": r["layer"],
                    "month": r["month"].isoformat(),
                    "currency": r["currency"],
                    "amount": str(r["amount"]),
                    "reporting_amount": str(r["reporting_amount"]),
                }
                for r in rows
            ]
    return result


@api.put("/snapshots/{snapshot_id}")
def put_snapshot(
    request: Request, response: Response, snapshot_id: SnapshotId, body: SnapshotIn
) -> dict[str, Any]:
    """Store a snapshot once; a replay of the same content is a no-op, other content is a conflict."""
    digest = content_hash(body)
    with db_of(request).tx() as conn:
        inserted = conn.execute(
            "INSERT INTO snapshot (snapshot_id, scenario, version, as_of, reporting_currency, content_hash, line_count) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (snapshot_id) DO NOTHING RETURNING snapshot_id",
            (
                snapshot_id,
                body.scenario,
                body.version,
                body.as_of,
                body.reporting_currency,
                digest,
                len(body.lines),
            ),
        ).fetchone()
        if inserted is not None:
            with conn.cursor().copy(
                "COPY snapshot_line (snapshot_id, line_no, project_ref, practice, legal_entity, layer, month, "
                "currency, amount, reporting_amount) FROM STDIN"
            ) as copy:
                for n, line in enumerate(body.lines, start=1):
                    copy.write_row(
                        (
                            snapshot_id,
                            n,
                            line.project_ref,
                            line.practice,
                            line.legal_entity,
                            line.layer,
                            line.month,
                            line.currency,
                            line.amount,
                            line.reporting_amount,
                        )
                    )
            response.status_code = 201
            status = "created"
        else:
            existing = conn.execute(
                "SELECT content_hash FROM snapshot WHERE snapshot_id = %s FOR UPDATE", (snapshot_id,)
            ).fetchone()
            assert existing is not None
            if existing[0] != digest:
                raise HTTPException(
                    409,
                    detail={
                        "code": "SNAPSHOT_CONFLICT",
                        "message": f"snapshot {snapshot_id} exists with other content; snapshots are immutable",
                        "existing_content_hash": existing[0],
                        "content_hash": digest,
                    },
                )
            conn.execute(
                "UPDATE snapshot SET put_count = put_count + 1 WHERE snapshot_id = %s", (snapshot_id,)
            )
            response.status_code = 200
            status = "unchanged"
        summary = _summary(conn, snapshot_id, totals=True, lines=False)
    assert summary is not None
    return {"status": status, **summary}


@api.get("/snapshots/{snapshot_id}")
def get_snapshot(request: Request, snapshot_id: SnapshotId, include_lines: bool = False) -> dict[str, Any]:
    with db_of(request).tx() as conn:
        summary = _summary(conn, snapshot_id, totals=True, lines=include_lines)
    if summary is None:
        raise HTTPException(404, detail={"code": "NOT_FOUND", "message": f"snapshot {snapshot_id} not found"})
    return summary


def _encode_cursor(after: str) -> str:
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, detail={"code": "INVALID_CURSOR", "message": "cursor is not valid"}) from exc


@api.get("/snapshots")
def list_snapshots(
    request: Request,
    scenario: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    conditions = ["snapshot_id > %s"]
    params: list[Any] = [_decode_cursor(cursor) if cursor else ""]
    if scenario is not None:
        conditions.append("scenario = %s")
        params.append(scenario)
    with db_of(request).tx() as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT * FROM snapshot WHERE {' AND '.join(conditions)} ORDER BY snapshot_id LIMIT %s",
            [*params, limit + 1],
        ).fetchall()
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_url = (
        str(request.url.include_query_params(cursor=_encode_cursor(rows[-1]["snapshot_id"]), limit=limit))
        if has_more
        else None
    )
    data = [
        {
            "snapshot_id": r["snapshot_id"],
            "scenario": r["scenario"],
            "version": r["version"],
            "as_of": r["as_of"].isoformat(),
            "reporting_currency": r["reporting_currency"],
            "line_count": r["line_count"],
            "content_hash": r["content_hash"],
            "received_at": _ts(r["received_at"]),
        }
        for r in rows
    ]
    return {"data": data, "next": next_url, "limit": limit}


@admin.get("/stats")
def stats(request: Request) -> dict[str, Any]:
    with db_of(request).tx() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM snapshot), (SELECT count(*) FROM snapshot_line), "
            "(SELECT coalesce(sum(put_count), 0) FROM snapshot)"
        ).fetchone()
    assert row is not None
    return {"snapshots": row[0], "lines": row[1], "puts_accepted": row[2]}


SCHEMA_SQL = Path(__file__).with_name("schema.sql").read_text()


def create(dsn: str | None = None) -> FastAPI:
    """The planning simulator app, its state in schema ``sim_planning`` of the PostgreSQL at ``dsn``."""
    app = create_app(
        name="planning",
        title="Planning platform simulator",
        schema="sim_planning",
        schema_sql=SCHEMA_SQL,
        description=__doc__ or "",
        dsn=dsn,
    )
    app.include_router(api)
    app.include_router(admin)
    return app
