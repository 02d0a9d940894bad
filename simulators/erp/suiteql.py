"""A safe subset of SuiteQL, and the ``q`` filter language of record collections.

SuiteQL: ``SELECT * | col[, col]* FROM <type> [WHERE cond (AND cond)*] [ORDER BY col [ASC|DESC][, ...]]``
with ``cond`` one of ``col = v``, ``col <> v`` / ``col != v``, ``col IN (v, ...)``, ``col >= v``,
``col > v``, ``col <= v``, ``col < v``; ``v`` is a quoted string (``'it''s'``) or a number.
Collection ``q``: ``field OP value (AND field OP value)*`` with ``OP`` in ``IS``, ``ANY_OF``,
``ON_OR_AFTER``, ``AFTER``, ``ON_OR_BEFORE``, ``BEFORE``, ``EMPTY``... (the subset below); values are
double-quoted strings or a bracketed list of them.

Queries are tokenized and parsed into a small tree; SQL is built only from fixed fragments, every
user value (and every body field name) goes in as a parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from simulators.erp.records import LOWER_FIELDS, QUERY_TYPES, Kind, catalog


class QueryError(ValueError):
    """The query text is not in the supported subset (answered as 400 INVALID_PARAMETER)."""


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<sstr>'(?:[^']|'')*')
  | (?P<dstr>"(?:[^"\\]|\\.)*")
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
  | (?P<op><>|!=|>=|<=|=|<|>)
  | (?P<punct>[(),*\[\]])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str

    def is_word(self, word: str) -> bool:
        return self.kind == "ident" and self.text.upper() == word


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QueryError(f"unexpected character at position {pos}")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind == "ws":
            continue
        value = match.group()
        if kind == "sstr":
            tokens.append(Token("str", value[1:-1].replace("''", "'")))
        elif kind == "dstr":
            tokens.append(Token("str", re.sub(r"\\(.)", r"\1", value[1:-1])))
        else:
            tokens.append(Token(kind, value))
    return tokens


@dataclass
class Condition:
    column: str
    op: str  # = <> > >= < <= IN
    values: list[str]


@dataclass
class Query:
    record_type: str
    columns: list[str] | None  # None: SELECT *
    conditions: list[Condition] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)  # (column, descending)


class _Cursor:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self, what: str) -> Token:
        token = self.peek()
        if token is None:
            raise QueryError(f"expected {what}, found end of query")
        self.pos += 1
        return token

    def word(self, word: str) -> None:
        token = self.next(word)
        if not token.is_word(word):
            raise QueryError(f"expected {word}, found {token.text!r}")

    def accept_word(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.is_word(word):
            self.pos += 1
            return True
        return False

    def punct(self, char: str) -> None:
        token = self.next(repr(char))
        if token.kind != "punct" or token.text != char:
            raise QueryError(f"expected {char!r}, found {token.text!r}")

    def accept_punct(self, char: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == char:
            self.pos += 1
            return True
        return False

    def ident(self) -> str:
        token = self.next("a column name")
        if token.kind != "ident":
            raise QueryError(f"expected a column name, found {token.text!r}")
        name = token.text.split(".")[-1]  # allow ``timebill.trandate``
        return name.lower()

    def literal(self) -> str:
        token = self.next("a value")
        if token.kind not in ("str", "num"):
            raise QueryError(f"expected a quoted value or a number, found {token.text!r}")
        return token.text


_KEYWORDS = {"SELECT", "FROM", "WHERE", "AND", "ORDER", "BY", "ASC", "DESC", "IN"}


def parse_suiteql(text: str) -> Query:
    cur = _Cursor(tokenize(text))
    cur.word("SELECT")
    columns: list[str] | None
    if cur.accept_punct("*"):
        columns = None
    else:
        columns = [cur.ident()]
        while cur.accept_punct(","):
            columns.append(cur.ident())
        if any(c.upper() in _KEYWORDS for c in columns):
            raise QueryError("expected a column list")
    cur.word("FROM")
    record_type = cur.ident()
    if record_type not in QUERY_TYPES:
        raise QueryError(f"unknown record type {record_type!r}")
    query = Query(record_type=record_type, columns=columns)
    if cur.accept_word("WHERE"):
        query.conditions.append(_condition(cur))
        while cur.accept_word("AND"):
            query.conditions.append(_condition(cur))
    if cur.accept_word("ORDER"):
        cur.word("BY")
        while True:
            column = cur.ident()
            descending = False
            if cur.accept_word("DESC"):
                descending = True
            else:
                cur.accept_word("ASC")
            query.order.append((column, descending))
            if not cur.accept_punct(","):
                break
    extra = cur.peek()
    if extra is not None:
        raise QueryError(f"unsupported syntax near {extra.text!r}")
    return query


def _condition(cur: _Cursor) -> Condition:
    column = cur.ident()
    if cur.accept_word("IN"):
        cur.punct("(")
        values = [cur.literal()]
        while cur.accept_punct(","):
            values.append(cur.literal())
        cur.punct(")")
        return Condition(column, "IN", values)
    token = cur.next("an operator")
    if token.kind != "op":
        raise QueryError(f"expected an operator after {column}, found {token.text!r}")
    op = "<>" if token.text == "!=" else token.text
    return Condition(column, op, [cur.literal()])


_Q_OPS = {
    "IS": "=",
    "EQUAL": "=",
    "IS_NOT": "<>",
    "ANY_OF": "IN",
    "ON_OR_AFTER": ">=",
    "AFTER": ">",
    "ON_OR_BEFORE": "<=",
    "BEFORE": "<",
    "GREATER": ">",
    "GREATER_OR_EQUAL": ">=",
    "LESS": "<",
    "LESS_OR_EQUAL": "<=",
}


def parse_q(text: str, record_type: str) -> list[Condition]:
    """Parse a record-collection ``q`` filter such as ``lastModifiedDate ON_OR_AFTER "2026-01-01T00:00:00Z"``."""
    cur = _Cursor(tokenize(text))
    conditions: list[Condition] = []
    while True:
        column = cur.ident()
        token = cur.next("an operator")
        op = _Q_OPS.get(token.text.upper()) if token.kind == "ident" else None
        if op is None:
            raise QueryError(f"unsupported operator {token.text!r}")
        if op == "IN":
            bracketed = cur.accept_punct("[")
            if not bracketed:
                cur.punct("(")
            values = [cur.literal()]
            while cur.accept_punct(","):
                values.append(cur.literal())
            cur.punct("]" if bracketed else ")")
        else:
            values = [cur.literal()]
        conditions.append(Condition(column, op, values))
        if cur.peek() is None:
            return conditions
        cur.word("AND")


# --------------------------------------------------------------------------- SQL building

_SYSTEM = {
    "id": ("r.id", "id"),
    "externalid": ("r.external_id", "text"),
    "lastmodifieddate": ("r.last_modified", "ts"),
    "datecreated": ("r.created_at", "ts"),
    "isinactive": ("r.is_inactive", "bool"),
}


def column_sql(record_type: str, column: str) -> tuple[str, list[Any], str]:
    """SQL expression for a column, its parameters and its comparison kind."""
    if column in _SYSTEM:
        expr, kind = _SYSTEM[column]
        return expr, [], kind
    name = LOWER_FIELDS[record_type].get(column)
    if name is None:  # not in the catalog: case-insensitive look-up of any body key, compared as text
        return (
            "(SELECT e.value #>> '{}' FROM jsonb_each(r.body) e WHERE lower(e.key) = %s LIMIT 1)",
            [column],
            "text",
        )
    field_kind: Kind = catalog(record_type)[name]
    if field_kind == "ref":
        return (
            "COALESCE(r.body -> %s ->> 'externalId', r.body -> %s ->> 'refName', r.body -> %s ->> 'id')",
            [name, name, name],
            "text",
        )
    if field_kind == "decimal":
        return "(r.body ->> %s)::numeric", [name], "decimal"
    if field_kind == "bool":
        return "(r.body ->> %s)::boolean", [name], "bool"
    return "(r.body ->> %s)", [name], "text"


_TRUE = {"t", "true", "1", "y", "yes"}
_FALSE = {"f", "false", "0", "n", "no"}
_DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def _value_sql(kind: str, value: str) -> tuple[str, Any]:
    if kind == "id":
        if not value.isdigit():
            raise QueryError(f"id must be an integer, got {value!r}")
        return "%s::bigint", int(value)
    if kind == "ts":
        return "%s::timestamptz", value
    if kind == "bool":
        lowered = value.lower()
        if lowered in _TRUE:
            return "%s::boolean", True
        if lowered in _FALSE:
            return "%s::boolean", False
        raise QueryError(f"expected T or F, got {value!r}")
    if kind == "decimal":
        if not _DECIMAL.match(value):
            raise QueryError(f"expected a number, got {value!r}")
        return "%s::numeric", value
    return "%s::text", value


def where_sql(record_type: str, conditions: list[Condition]) -> tuple[str, list[Any]]:
    parts = ["r.type = %s"]
    params: list[Any] = [record_type]
    for cond in conditions:
        expr, expr_params, kind = column_sql(record_type, cond.column)
        if cond.op == "IN":
            placeholders = []
            values = []
            for v in cond.values:
                ph, val = _value_sql(kind, v)
                placeholders.append(ph)
                values.append(val)
            parts.append(f"{expr} IN ({', '.join(placeholders)})")
            params.extend(expr_params)
            params.extend(values)
        else:
            if cond.op not in ("=", "<>", ">", ">=", "<", "<="):
                raise QueryError(f"unsupported operator {cond.op!r}")
            ph, val = _value_sql(kind, cond.values[0])
            parts.append(f"{expr} {cond.op} {ph}")
            params.extend(expr_params)
            params.append(val)
    return " AND ".join(parts), params


def order_sql(record_type: str, order: list[tuple[str, bool]]) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for column, descending in order:
        expr, expr_params, _ = column_sql(record_type, column)
        parts.append(f"{expr} {'DESC' if descending else 'ASC'}")
        params.extend(expr_params)
    parts.append("r.id ASC")  # a stable tie-breaker, so offset paging never skips or repeats rows
    return ", ".join(parts), params
