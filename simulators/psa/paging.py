"""Harvest-style pagination on a stable keyset cursor.

Rows are ordered by ``id`` (not by ``spent_date`` as Harvest documents) so that a cursor is a
keyset position: a row updated while a client walks the pages is neither skipped nor repeated.
``links.next`` carries an opaque ``cursor`` (base64url JSON: last id, page number, the total
counted on the first page); ``page=N`` is also accepted (offset paging, as Harvest's v2 did).
``total_entries``/``total_pages`` are counted once, on the request that starts the walk.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import psycopg
from fastapi import Request
from fastapi.responses import Response

from simulators.psa.render import Kind

MAX_PER_PAGE = 2000


class BadRequest(Exception):
    """Raised for malformed paging parameters; rendered as a Harvest-style 400/422."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Cursor:
    after_id: int
    page: int
    total: int

    def encode(self) -> str:
        raw = json.dumps({"a": self.after_id, "p": self.page, "t": self.total}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def decode(token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            return Cursor(int(data["a"]), int(data["p"]), int(data["t"]))
        except (binascii.Error, ValueError, KeyError, TypeError) as exc:
            raise BadRequest(400, "invalid cursor") from exc


def per_page_of(request: Request) -> int:
    raw = request.query_params.get("per_page")
    if raw is None:
        return MAX_PER_PAGE
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(422, "per_page must be an integer") from exc
    if not 1 <= value <= MAX_PER_PAGE:
        raise BadRequest(422, f"per_page must be between 1 and {MAX_PER_PAGE}")
    return value


def _url(request: Request, params: dict[str, str], **extra: str | int) -> str:
    query = {**params, **{k: str(v) for k, v in extra.items()}}
    return str(request.url.replace(query=urlencode(query)))


def paginate(
    conn: psycopg.Connection,
    request: Request,
    kind: Kind,
    where: list[str],
    params: list[Any],
) -> Response:
    """One page of ``kind`` rows matching ``where`` (SQL on ``kind.alias``) as a Harvest list response."""
    per_page = per_page_of(request)
    filters = {k: v for k, v in request.query_params.items() if k not in ("cursor", "page")}
    condition = " AND ".join(f"({w})" for w in where) or "TRUE"
    a = kind.alias
    base = f"FROM {kind.table} {a} WHERE {condition}"

    token = request.query_params.get("cursor")
    offset = 0
    if token:
        cursor = Cursor.decode(token)
        page, after_id, total = cursor.page, cursor.after_id, cursor.total
    else:
        raw_page = request.query_params.get("page", "1")
        try:
            page = int(raw_page)
        except ValueError as exc:
            raise BadRequest(422, "page must be an integer") from exc
        if page < 1:
            raise BadRequest(422, "page must be at least 1")
        after_id = None
        offset = (page - 1) * per_page
        row = conn.execute(f"SELECT count(*) {base}", params).fetchone()
        total = int(row[0]) if row else 0

    keyset = f"AND {a}.id > %s" if after_id is not None else ""
    key_params = [after_id] if after_id is not None else []
    # The page (plus one row, to know whether another follows) is cut first by the id index,
    # then only those rows are joined and rendered.
    page_rows = f"(SELECT {a}.* {base} {keyset} ORDER BY {a}.id LIMIT %s OFFSET %s)"
    sql = f"""
        SELECT count(*), max(x.id) FILTER (WHERE x.rn <= %s),
               coalesce(json_agg(x.j ORDER BY x.id) FILTER (WHERE x.rn <= %s), '[]')::text
          FROM (SELECT y.*, row_number() OVER (ORDER BY y.id) AS rn
                  FROM ({kind.select_json(source=page_rows)}) y) x"""
    row = conn.execute(sql, [per_page, per_page, *params, *key_params, per_page + 1, offset]).fetchone()
    assert row is not None
    fetched, last_id, items = int(row[0]), row[1], row[2]
    has_next = fetched > per_page
    total_pages = max(1, math.ceil(total / per_page))
    meta = {
        "per_page": per_page,
        "total_pages": total_pages,
        "total_entries": total,
        "next_page": page + 1 if has_next else None,
        "previous_page": page - 1 if page > 1 else None,
        "page": page,
        "links": {
            "first": _url(request, filters, page=1),
            "next": _url(request, filters, cursor=Cursor(int(last_id), page + 1, total).encode())
            if has_next
            else None,
            "previous": _url(request, filters, page=page - 1) if page > 1 else None,
            "last": _url(request, filters, page=total_pages),
        },
    }
    body = '{"' + kind.key + '":' + items + "," + json.dumps(meta)[1:]
    return Response(content=body, media_type="application/json")
