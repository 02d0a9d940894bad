"""OData V2 as SAP Gateway speaks it: the JSON envelope, errors, dates, the ``$filter`` subset, ``$batch``.

Only what the simulator serves: ``$filter`` takes ``Property op literal`` terms joined by ``and``
(``eq``, ``ne``, ``gt``, ``ge``, ``lt``, ``le``); ``or``, parentheses and functions answer 400.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

_EPOCH = date(1970, 1, 1)
_SAP_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


class ODataError(Exception):
    """An error answered in SAP Gateway's OData V2 error body."""

    def __init__(self, status: int, code: str, message: str, *, target: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target

    def body(self, service: str = "") -> dict[str, Any]:
        detail = {
            "code": self.code,
            "message": self.message,
            "propertyref": self.target,
            "severity": "error",
            "target": self.target,
            "transition": False,
        }
        return {
            "error": {
                "code": self.code,
                "message": {"lang": "en", "value": self.message},
                "innererror": {
                    "application": {
                        "component_id": "",
                        "service_namespace": "/SAP/",
                        "service_id": service,
                        "service_version": "0001",
                    },
                    "transactionid": uuid.uuid4().hex.upper(),
                    "timestamp": datetime.now(UTC).strftime("%Y%m%d%H%M%S.%f")[:-3],
                    "Error_Resolution": {
                        "SAP_Transaction": "For backend administrators: use ADT feed reader "
                        '"SAP Gateway Error Log" or run transaction /IWFND/ERROR_LOG',
                        "SAP_Note": "See SAP Note 1797736 for error analysis",
                    },
                    "errordetails": [detail],
                },
            }
        }


def bad_request(message: str, code: str = "/IWBEP/CM_MGW_RT/000", target: str = "") -> ODataError:
    return ODataError(400, code, message, target=target)


# --------------------------------------------------------------------------- values


def sap_date(value: date) -> str:
    """``/Date(ms)/``: midnight UTC of the day, in milliseconds since the epoch."""
    return f"/Date({(value - _EPOCH).days * 86_400_000})/"


def sap_timestamp(value: datetime) -> str:
    return f"/Date({int(value.timestamp() * 1000)}+0000)/"


def parse_sap_date(value: Any, name: str) -> date:
    """A ``/Date(ms)/`` (optionally with an offset) holding midnight UTC of a day."""
    match = _SAP_DATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise bad_request(f"Property '{name}' has an invalid value: expected /Date(ms)/", target=name)
    ms = int(match.group(1))
    if ms % 86_400_000:
        raise bad_request(f"Property '{name}' must be a date (midnight UTC)", target=name)
    return _EPOCH + timedelta(days=ms // 86_400_000)


def decimal_string(value: Any, name: str, *, scale: int, maximum: Decimal) -> Decimal:
    """An ``Edm.Decimal``: in OData V2 JSON a string such as ``"7.50"``; numbers are refused."""
    if not isinstance(value, str):
        raise bad_request(f"Property '{name}' is an Edm.Decimal: send a string such as \"7.50\"", target=name)
    try:
        parsed = Decimal(value)
    except ArithmeticError as exc:
        raise bad_request(f"Property '{name}' has an invalid value '{value}'", target=name) from exc
    exponent = parsed.as_tuple().exponent
    if not parsed.is_finite() or (isinstance(exponent, int) and exponent < -scale):
        raise bad_request(f"Property '{name}' has more than {scale} decimals", target=name)
    if parsed < 0 or parsed > maximum:
        raise bad_request(f"Property '{name}' is out of range (0 to {maximum})", target=name)
    return parsed


# --------------------------------------------------------------------------- $filter


@dataclass(frozen=True)
class Term:
    prop: str
    op: str
    value: Any  # str, bool, int, Decimal or date


_TOKEN = re.compile(
    r"\s*(?:(?P<datetime>datetime'(?P<dt>[^']*)')|(?P<str>'(?P<s>(?:[^']|'')*)')"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_/]*)|(?P<num>-?\d+(?:\.\d+)?[mMdD]?)|(?P<other>\S))"
)
_OPS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})


def parse_filter(text: str) -> list[Term]:
    """``A eq 'x' and B gt datetime'2025-06-01T00:00:00'`` -> terms (only ``and`` joins them)."""
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            break
        pos = match.end()
        if match.group("datetime") is not None:
            try:
                tokens.append(("lit", datetime.fromisoformat(match.group("dt")).date()))
            except ValueError as exc:
                raise bad_request(f"Invalid datetime literal in $filter: {match.group('dt')}") from exc
        elif match.group("str") is not None:
            tokens.append(("lit", match.group("s").replace("''", "'")))
        elif match.group("word") is not None:
            word = match.group("word")
            if word in ("true", "false"):
                tokens.append(("lit", word == "true"))
            else:
                tokens.append(("word", word))
        elif match.group("num") is not None:
            tokens.append(("lit", Decimal(match.group("num").rstrip("mMdD"))))
        else:
            raise bad_request(f"$filter not supported by this service near {match.group('other')!r}")
    terms: list[Term] = []
    i = 0
    while i < len(tokens):
        if i + 3 > len(tokens):
            raise bad_request("Invalid $filter expression")
        (k1, prop), (k2, op), (k3, value) = tokens[i], tokens[i + 1], tokens[i + 2]
        if k1 != "word" or k2 != "word" or op not in _OPS or k3 != "lit":
            raise bad_request("$filter supports only 'Property op literal' terms joined by 'and'")
        terms.append(Term(prop, op, value))
        i += 3
        if i < len(tokens):
            if tokens[i] != ("word", "and"):
                raise bad_request("$filter supports only 'and' between terms")
            i += 1
            if i >= len(tokens):
                raise bad_request("Invalid $filter expression")
    return terms


_SQL_OP = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
# The quirk: SAP Gateway converts date literals through the user's time zone, so range operators on
# dates are off by a day at the boundary. Here gt/lt behave like ge/le (the boundary day leaks in).
_DATE_RANGE_QUIRK = {"gt": ">=", "lt": "<="}


def where_sql(
    terms: list[Term], columns: dict[str, str], date_columns: frozenset[str]
) -> tuple[str, list[Any]]:
    """SQL conditions for ``terms`` over ``columns`` (OData property -> column); unknown: 400."""
    conditions: list[str] = []
    params: list[Any] = []
    for term in terms:
        column = columns.get(term.prop)
        if column is None:
            raise bad_request(f"Property '{term.prop}' cannot be used in $filter", target=term.prop)
        op = _SQL_OP[term.op]
        if term.prop in date_columns:
            if not isinstance(term.value, date):
                raise bad_request(f"Property '{term.prop}' is compared with datetime'...'", target=term.prop)
            op = _DATE_RANGE_QUIRK.get(term.op, op)
        elif isinstance(term.value, date):
            raise bad_request(f"Property '{term.prop}' is not a date", target=term.prop)
        conditions.append(f"{column} {op} %s")
        params.append(term.value if not isinstance(term.value, Decimal) else str(term.value))
    return (" AND ".join(conditions) or "TRUE"), params


def parse_key(segment: str) -> dict[str, str]:
    """``Name(A='x',B='y')`` key predicate -> ``{"A": "x", "B": "y"}``."""
    found = dict(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)='((?:[^']|'')*)'", segment))
    return {k: v.replace("''", "'") for k, v in found.items()}


def select(entity: dict[str, Any], fields: str | None) -> dict[str, Any]:
    if not fields:
        return entity
    wanted = {f.strip() for f in fields.split(",") if f.strip()}
    return {k: v for k, v in entity.items() if k in wanted or k == "__metadata"}


# --------------------------------------------------------------------------- $batch


@dataclass
class Part:
    headers: dict[str, str]
    body: bytes


@dataclass
class InnerRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def boundary_of(content_type: str) -> str:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not match or not content_type.lower().startswith("multipart/mixed"):
        raise bad_request("A $batch request needs Content-Type multipart/mixed with a boundary")
    return match.group(1)


def _split_head(blob: bytes) -> tuple[dict[str, str], bytes]:
    for sep in (b"\r\n\r\n", b"\n\n"):
        if sep in blob:
            head, body = blob.split(sep, 1)
            break
    else:
        head, body = blob, b""
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines():
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return headers, body


def split_multipart(body: bytes, boundary: str) -> list[Part]:
    delimiter = b"--" + boundary.encode()
    parts: list[Part] = []
    chunks = body.split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n").removeprefix(b"\n")
        chunk = chunk.removesuffix(b"\r\n").removesuffix(b"\n")
        headers, content = _split_head(chunk)
        parts.append(Part(headers, content))
    if len(chunks) < 2:
        raise bad_request("The $batch body has no part with the declared boundary")
    return parts


def parse_inner(part: Part) -> InnerRequest:
    if not part.headers.get("content-type", "").lower().startswith("application/http"):
        raise bad_request("A $batch part must be application/http or a multipart/mixed changeset")
    text = part.body
    line_end = text.find(b"\n")
    request_line = (text if line_end < 0 else text[:line_end]).decode("latin-1").strip()
    pieces = request_line.split(" ")
    if len(pieces) < 2:
        raise bad_request(f"Invalid request line in $batch: {request_line!r}")
    headers, body = _split_head(b"" if line_end < 0 else text[line_end + 1 :])
    return InnerRequest(pieces[0].upper(), pieces[1], headers, body.rstrip(b"\r\n"))


_REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    500: "Internal Server Error",
}


def http_part(status: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    all_headers = dict(headers)
    if body:
        all_headers.setdefault("content-type", "application/json")
    all_headers["content-length"] = str(len(body))
    lines += [f"{k}: {v}" for k, v in all_headers.items()]
    head = "\r\n".join(lines).encode() + b"\r\n\r\n"
    return (
        b"Content-Type: application/http\r\nContent-Length: "
        + str(len(head) + len(body)).encode()
        + b"\r\ncontent-transfer-encoding: binary\r\n\r\n"
        + head
        + body
    )


def multipart(boundary: str, parts: list[tuple[str, bytes]]) -> bytes:
    """``parts``: (content type line or "" for application/http parts already headed, bytes)."""
    out = b""
    for content_type, payload in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        if content_type:
            out += f"Content-Type: {content_type}\r\n\r\n".encode()
        out += payload + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"
