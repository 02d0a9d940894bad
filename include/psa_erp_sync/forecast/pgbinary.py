"""PostgreSQL binary COPY payloads built column-wise with numpy: no Python object per row.

A row of the binary COPY format is an int16 field count followed, per field, by an int32 byte
length (-1 for NULL) and that many bytes. Every field here is laid out as a fixed-width byte
matrix (one row per table row) plus a mask of the bytes that row keeps; the rows are the kept
bytes in row-major order, so one boolean index over the concatenated matrices gives the payload.
Supported: text (and char(n)), bigint, date and one-dimensional bigint[] with NULL elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
INT8_OID = 20
PG_EPOCH_ORDINAL = date(2000, 1, 1).toordinal()
CHUNK_ROWS = 20_000  # bounds the byte matrices' memory (~ chunk x row width)
_CELL = [("length", ">i4"), ("value", ">i8")]  # one bigint[] element, packed: 12 bytes


@dataclass(frozen=True)
class Int8Array:
    """One bigint[] per row: ``values[r, :width[r]]`` with ``present`` False for a NULL element;
    a row with ``absent`` True is a NULL array."""

    values: Any  # int64 (n, w)
    present: Any  # bool (n, w)
    width: Any  # int (n,)
    absent: Any = None  # bool (n,) or None


def _be(values: Any, dtype: str) -> Any:
    import numpy as np

    column = np.ascontiguousarray(np.asarray(values).astype(dtype))
    return column.view(np.uint8).reshape(len(column), column.dtype.itemsize)


def _length(length: Any) -> tuple[Any, Any]:
    return _be(length, ">i4"), None


def text(values: Any) -> list[tuple[Any, Any]]:
    """A text or char(n) column; None (or another NA) is NULL. UTF-8 encoded by numpy (no Python loop)."""
    import numpy as np
    import pandas as pd

    items = np.asarray(values, dtype=object)
    null = pd.isna(items)
    if null.any():
        items = np.where(null, "", items)
    try:
        encoded = items.astype("S")  # ASCII, the usual case: numpy encodes it in one pass
    except UnicodeEncodeError:
        encoded = np.strings.encode(items.astype(np.dtypes.StringDType()), "utf-8")
    if encoded.dtype.itemsize == 0:  # only empty strings
        encoded = encoded.astype("S1")
    length = np.strings.str_len(encoded).astype(np.int64)
    length[null] = -1
    data = encoded.view(np.uint8).reshape(len(encoded), encoded.dtype.itemsize)
    keep = np.arange(encoded.dtype.itemsize) < length[:, None]
    return [_length(length), (data, keep)]


def constant_text(value: str, n: int) -> list[tuple[Any, Any]]:
    """A text column holding ``value`` in each of ``n`` rows."""
    import numpy as np

    raw = np.frombuffer(value.encode(), dtype=np.uint8)
    return [_length(np.full(n, len(raw))), (np.broadcast_to(raw, (n, len(raw))), None)]


def int8(values: Any, null: Any = None) -> list[tuple[Any, Any]]:
    """A bigint column; ``null`` marks NULL rows."""
    import numpy as np

    values = np.asarray(values, dtype=np.int64)
    if null is None:
        return [_length(np.full(len(values), 8)), (_be(values, ">i8"), None)]
    null = np.asarray(null, dtype=bool)
    keep = np.repeat(~null[:, None], 8, axis=1)
    return [_length(np.where(null, -1, 8)), (_be(np.where(null, 0, values), ">i8"), keep)]


def dates(days_since_2000: Any) -> list[tuple[Any, Any]]:
    """A date column given as days since 2000-01-01 (PostgreSQL's date epoch)."""
    import numpy as np

    return [_length(np.full(len(days_since_2000), 4)), (_be(days_since_2000, ">i4"), None)]


def int8_array(column: Int8Array) -> list[tuple[Any, Any]]:
    """A bigint[] column: header (ndim 1, has-null flag, element type, length, lower bound 1)
    then per element an int32 length (8, or -1 for NULL) and the int64.

    The cells are one packed big-endian record array (``>i4`` length, ``>i8`` value: 12 bytes),
    filled by two field assignments, so numpy swaps the bytes while it copies; a NULL cell keeps
    only its length, so its value bytes need no zeroing."""
    import numpy as np

    n, w = column.values.shape
    width = np.asarray(column.width, dtype=np.int64)
    inside = np.arange(w) < width[:, None]
    present = column.present & inside
    absent = np.zeros(n, dtype=bool) if column.absent is None else np.asarray(column.absent, dtype=bool)
    cell_keep = np.where(present, 12, np.where(inside, 4, 0))
    cell_keep[absent] = 0
    cells = np.empty((n, w), dtype=_CELL)
    cells["length"] = np.where(present, 8, -1)
    cells["value"] = column.values
    cell_mask = (np.arange(12) < cell_keep[:, :, None]).reshape(n, w * 12)
    has_null = (inside & ~present).any(axis=1)
    header = np.stack(
        [np.ones(n, dtype=np.int64), has_null.astype(np.int64), np.full(n, INT8_OID), width, np.ones(n)],
        axis=1,
    )
    header_bytes = _be(header.ravel(), ">i4").reshape(n, 20)
    header_keep = np.repeat(~absent[:, None], 20, axis=1)
    length = np.where(absent, -1, 20 + cell_keep.sum(axis=1))
    return [
        _length(length),
        (header_bytes, header_keep),
        (cells.view(np.uint8).reshape(n, w * 12), cell_mask),
    ]


def rows(fields: list[list[tuple[Any, Any]]], n: int) -> Any:
    """The binary COPY rows (no header or trailer) of ``n`` rows from the fields' byte pieces,
    as a one-dimensional uint8 array (a buffer: ``bytes(rows(...))`` is the payload).

    The pieces are placed side by side in one preallocated byte matrix and one mask (a piece
    without a mask keeps all its bytes: a slice set to True, no matrix of ones built and
    concatenated), then both are flattened and the kept bytes taken in one pass."""
    import numpy as np

    pieces = [(_be(np.full(n, len(fields)), ">i2"), None)]
    for field in fields:
        pieces.extend(field)
    total = sum(p[0].shape[1] for p in pieces)
    data = np.empty((n, total), dtype=np.uint8)
    mask = np.empty((n, total), dtype=bool)
    at = 0
    for piece, keep in pieces:
        width = piece.shape[1]
        data[:, at : at + width] = piece
        mask[:, at : at + width] = True if keep is None else keep
        at += width
    return data.reshape(-1)[mask.reshape(-1)]


def copy(conn: psycopg.Connection, table: str, columns: list[str], n: int, fields_of: Any) -> None:
    """``COPY table (columns) FROM STDIN (FORMAT binary)`` in chunks of rows;
    ``fields_of(slice)`` gives the fields (see :func:`rows`) of those rows. Chunks are sent by a
    writer thread while the next one is built."""
    from psycopg.copy import QueuedLibpqWriter

    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT binary)"
    # The queued writer sends each chunk from its own thread (the GIL is released while the
    # socket waits on the server), so the next chunk is built while the server parses this one.
    with conn.cursor() as cur, cur.copy(sql, writer=QueuedLibpqWriter(cur)) as copier:
        copier.write(HEADER)
        for start in range(0, n, CHUNK_ROWS):
            part = slice(start, min(n, start + CHUNK_ROWS))
            # The array's own buffer, not a bytes copy: the queue holds it until it is sent, and
            # psycopg slices a memoryview without copying where it splits a large buffer.
            copier.write(memoryview(rows(fields_of(part), part.stop - part.start)))
        copier.write(TRAILER)


# --- reading: columns aggregated into arrays, parsed with numpy ---------------------------------

_ELEMENT = {"int4": (23, ">i4"), "int8": (20, ">i8")}


def read_arrays(
    conn: psycopg.Connection,
    sql: str,
    params: Any,
    kinds: dict[str, str],
    filters: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The rows of ``sql`` column-wise: ``kinds`` names its columns in order with their element
    type (``int4`` / ``int8``: int64 arrays, NOT NULL; ``text``: a list of str, for small
    columns only). Each column crosses as ONE ``array_agg`` in a binary ``COPY`` row, so the
    client parses fixed-width elements with ``numpy.frombuffer`` instead of a protocol message,
    a Python object per value and a CSV parse per row. The aggregates of one query level take
    their rows in the same order, so position ``i`` of every unfiltered column is the same row;
    ``filters`` (column -> SQL condition) keeps only the rows meeting it, in the same order."""
    aggs = [
        f"array_agg({name})" + (f" FILTER (WHERE {filters[name]})" if filters and name in filters else "")
        for name in kinds
    ]
    data = bytearray()
    with conn.cursor().copy(
        f"COPY (SELECT {', '.join(aggs)} FROM ({sql}) q) TO STDOUT (FORMAT binary)", params
    ) as copy:
        for block in copy:
            data += block
    return _parse_row(bytes(data), kinds)


def _parse_row(data: bytes, kinds: dict[str, str]) -> dict[str, Any]:
    """The one row of a binary COPY of arrays (see :func:`read_arrays`)."""
    import numpy as np

    if not data.startswith(HEADER[:11]):
        raise ValueError("not a binary COPY stream")
    pos = 19 + int.from_bytes(data[15:19], "big")
    if int.from_bytes(data[pos : pos + 2], "big", signed=True) != len(kinds):
        raise ValueError("unexpected field count in the binary COPY row")
    pos += 2
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        length = int.from_bytes(data[pos : pos + 4], "big", signed=True)
        pos += 4
        field = memoryview(data)[pos : pos + max(length, 0)]
        pos += max(length, 0)
        if kind == "text":
            out[name] = _text_elements(field) if length >= 0 else []
        else:
            out[name] = _fixed_elements(field, kind) if length >= 0 else np.zeros(0, dtype=np.int64)
    return out


def _array_header(field: memoryview) -> tuple[int, int, int]:
    """(element count, element type oid, offset of the first element) of a binary array."""
    ndim = int.from_bytes(field[0:4], "big")
    oid = int.from_bytes(field[8:12], "big")
    if ndim == 0:
        return 0, oid, 12
    if ndim != 1:
        raise ValueError("only one-dimensional arrays are read")
    return int.from_bytes(field[12:16], "big"), oid, 20


def _fixed_elements(field: memoryview, kind: str) -> Any:
    import numpy as np

    n, oid, start = _array_header(field)
    want_oid, dtype = _ELEMENT[kind]
    if n and oid != want_oid:
        raise ValueError(f"array of type {oid}, expected {kind}")
    cells = np.frombuffer(field, dtype=np.dtype([("len", ">i4"), ("v", dtype)]), count=n, offset=start)
    if n and not (cells["len"] == np.dtype(dtype).itemsize).all():
        raise ValueError(f"NULL element in a {kind} column read as array")
    return cells["v"].astype(np.int64)


def _text_elements(field: memoryview) -> list[str]:
    n, _, pos = _array_header(field)
    values = []
    for _ in range(n):
        length = int.from_bytes(field[pos : pos + 4], "big", signed=True)
        pos += 4
        if length < 0:
            raise ValueError("NULL element in a text column read as array")
        values.append(bytes(field[pos : pos + length]).decode())
        pos += length
    return values
