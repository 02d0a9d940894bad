"""Immutable, versioned forecast snapshots in the ``forecast`` schema.

A snapshot's id is derived from (scenario, as-of date, input data versions), so refreshing
again on unchanged inputs finds the snapshot already written and writes nothing: idempotent per
(scenario, as-of, input data versions). Rows are never updated or deleted (triggers refuse it);
changed inputs give a new id and a new snapshot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from psa_erp_sync.forecast import billing_kpis, model, pgbinary

if TYPE_CHECKING:
    import pandas as pd
    import psycopg


def snapshot_version(scenario: str, as_of: date, data_versions: dict[str, str]) -> str:
    """16 hex digits of sha256 over (scenario, as-of, data versions)."""
    canonical = json.dumps(
        {"scenario": scenario, "as_of": as_of.isoformat(), "data_versions": data_versions},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def snapshot_id(scenario: str, as_of: date, data_versions: dict[str, str]) -> str:
    """``fc-{scenario}-{yyyymmdd}-{version}``: deterministic, valid for the planning API."""
    return f"fc-{scenario}-{as_of:%Y%m%d}-{snapshot_version(scenario, as_of, data_versions)}"


TEXT_LINE_COLUMNS = model.TEXT_LINE_COLUMNS


def _coded(lines: pd.DataFrame) -> dict[str, tuple[Any, Any]]:
    """Integer codes and distinct values of the lines' text columns, factorized once for both
    the content hash and the series."""
    import pandas as pd

    return {
        c: pd.factorize(lines[c].to_numpy(dtype=object), use_na_sentinel=False) for c in TEXT_LINE_COLUMNS
    }


def lines_hash(lines: pd.DataFrame, coded: dict[str, tuple[Any, Any]] | None = None) -> str:
    """A digest of the lines independent of their order: the line count and the wrapping sum
    of a 64-bit hash per line (pandas' row hash), hashed once more with sha256. The text
    columns are hashed as categoricals of their codes, which pandas hashes exactly like the
    strings (one hash per distinct value instead of factorizing again)."""
    coded = _coded(lines) if coded is None else coded
    return _digest(len(lines), _sum(_row_hashes(lines, coded)))


def _row_hashes(lines: pd.DataFrame, coded: dict[str, tuple[Any, Any]]) -> Any:
    """pandas' 64-bit hash of each line (uint64): a function of the line's values alone, so the
    lines' digest can be summed in parts (see :class:`SharedRows`)."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(
        {
            c: pd.Categorical.from_codes(
                coded[c][0], pd.Index(np.asarray(coded[c][1], dtype=object), dtype=object)
            )
            if c in coded
            else lines[c].to_numpy()
            for c in model.LINE_COLUMNS
        }
    )
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(np.uint64)


def _sum(hashes: Any) -> int:
    """The wrapping (mod 2^64) sum of row hashes."""
    import numpy as np

    return int(hashes.sum(dtype=np.uint64)) if len(hashes) else 0


def _digest(count: int, total: int) -> str:
    return hashlib.sha256(f"{count}:{total}".encode()).hexdigest()


def exists(conn: psycopg.Connection, snap_id: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM forecast.snapshot WHERE snapshot_id = %s", (snap_id,)).fetchone()
        is not None
    )


def write_snapshots(
    conn: psycopg.Connection,
    results: list[model.ForecastResult],
    *,
    snap_ids: dict[str, str],
    run_id: str,
    data_versions: dict[str, str],
    reporting_currency: str,
    parallel: bool = False,
) -> dict[str, bool]:
    """Write each scenario's snapshot once (see :func:`write_snapshot`); scenario -> written now.

    With ``parallel`` and more than one snapshot, each is written on its own connection to the
    same database (opened from ``conn``'s parameters), in its own thread and transaction. Each
    snapshot still commits with all its rows or not at all; a failure in one leaves the others
    written, and a re-run writes only the missing ones. Off by default: on the shared 2-core
    machine it did not measurably win and took 40 % more memory (docs/forecast.md)."""

    def one(result: model.ForecastResult, target: psycopg.Connection, shared: SharedRows | None) -> bool:
        return write_snapshot(
            target,
            result,
            snap_id=snap_ids[result.scenario],
            run_id=run_id,
            data_versions=data_versions,
            reporting_currency=reporting_currency,
            shared=shared,
        )

    if not parallel or len(results) < 2:
        shared = SharedRows()  # one after the other: the scenario-free rows stored once
        return {r.scenario: one(r, conn, shared) for r in results}
    from concurrent.futures import ThreadPoolExecutor

    from psa_erp_sync.ods import connections

    def own(result: model.ForecastResult) -> bool:
        with connections.connect_like(conn) as target:
            return one(result, target, None)  # concurrent: each stores all its rows

    with ThreadPoolExecutor(max_workers=len(results), thread_name_prefix="forecast-write") as pool:
        written = list(pool.map(own, results))
    return {r.scenario: w for r, w in zip(results, written, strict=True)}


def write_as_computed(
    conn: psycopg.Connection,
    results: Iterable[model.ForecastResult],
    *,
    snap_ids: dict[str, str],
    run_id: str,
    data_versions: dict[str, str],
    reporting_currency: str,
) -> dict[str, bool]:
    """:func:`write_snapshot` of each result on ``conn`` by one writer thread while this thread
    takes the next result from ``results`` (lazy, e.g. :func:`model.iter_scenarios`: the next
    scenario is computed while the previous one is written); scenario -> written now.

    The snapshots are written one at a time, in order, each in its own transaction with all its
    rows or none, exactly as :func:`write_snapshots` writes them. A failed write (rolled back)
    is raised here once the result being computed is done, and nothing after it is written. A
    failed compute is raised after the write in flight has ended (committed or rolled back).
    ``conn`` must not be used by the caller until this returns."""
    from concurrent.futures import Future, ThreadPoolExecutor

    shared = SharedRows()  # written in order: the scenario-free rows stored once

    def one(result: model.ForecastResult) -> bool:
        return write_snapshot(
            conn,
            result,
            snap_id=snap_ids[result.scenario],
            run_id=run_id,
            data_versions=data_versions,
            reporting_currency=reporting_currency,
            shared=shared,
        )

    written: dict[str, bool] = {}
    in_flight: tuple[str, Future[bool]] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="forecast-write") as writer:
        for result in results:  # computes the next result while the writer writes
            if in_flight is not None:
                written[in_flight[0]] = in_flight[1].result()  # a failed write raises here
            in_flight = (result.scenario, writer.submit(one, result))
        if in_flight is not None:
            written[in_flight[0]] = in_flight[1].result()
    return written


def write_snapshot(
    conn: psycopg.Connection,
    result: model.ForecastResult,
    *,
    snap_id: str,
    run_id: str,
    data_versions: dict[str, str],
    reporting_currency: str,
    shared: SharedRows | None = None,
) -> bool:
    """Write the snapshot once; True if written now, False if it already existed (no change).

    With ``shared`` (one per refresh, see :class:`SharedRows`), a snapshot whose actual-layer
    series and capacity series equal those of the first snapshot written now through it stores
    none of them and names that snapshot in ``shares_from``; the views read them from there.
    One whose contract balances equal that snapshot's stores none and names it in
    ``balances_from`` (migration 0064); the view ``forecast.contract_balance`` reads them there."""
    with conn.transaction():
        if exists(conn, snap_id):
            return False  # written before: nothing to hash or write
        coded = model.line_codes(result) or _coded(result.lines)
        parts = _snapshot_parts(result, coded, shared)
        balances_from = None if shared is None else shared.same_balances(result.balances)
        header = (snap_id, run_id, data_versions, reporting_currency, parts.content_hash)
        if not _insert_header(conn, result, header, (parts.shares_from, balances_from)):
            return False
        _copy_series(conn, snap_id, parts.series, without_actual=parts.shares_from is not None)
        if balances_from is None:
            _copy_balances(conn, snap_id, result.balances)
        if parts.shares_from is None:
            _copy_capacity(conn, snap_id, _capacity_parts(result.capacity))
        billing_kpis.write(conn, snap_id, result.billing_kpis)
    if shared is not None and parts.shares_from is None:
        shared.keep(snap_id, parts.series, result.capacity, parts.actual, result.balances)
    return True


@dataclass
class _Parts:
    """What a snapshot writes: its series, the snapshot it shares from, its content hash, and
    its actual-layer lines (kept by :class:`SharedRows` for the next snapshot)."""

    series: _SeriesParts
    shares_from: str | None
    content_hash: str
    actual: _ActualRows | None = None


def _snapshot_parts(
    result: model.ForecastResult, coded: dict[str, tuple[Any, Any]], shared: SharedRows | None
) -> _Parts:
    """The series and content hash of ``result``, and whether it shares from ``shared``'s snapshot.

    When its actual-layer lines equal the remembered snapshot's (:meth:`SharedRows.same_rows`),
    only the other layers' lines are built into series and hashed: the actual series would be
    built only to be found equal and dropped, and the actual lines' row hashes are the
    remembered ones (a row's hash depends on its values alone; the digest sums them). Otherwise
    everything is built and compared as series (:meth:`SharedRows.same_as`)."""
    if shared is None:
        return _Parts(_line_series_parts(result.lines, coded), None, lines_hash(result.lines, coded))
    actual = _ActualRows.of(result.lines, coded)
    shares_from = shared.same_rows(actual, result.capacity)
    if shares_from is not None:
        other = ~actual.mask
        lines = result.lines[other]
        rest = {c: (codes[other], uniques) for c, (codes, uniques) in coded.items()}
        total = (_sum(_row_hashes(lines, rest)) + shared.actual_hash) % 2**64
        return _Parts(_line_series_parts(lines, rest), shares_from, _digest(len(result.lines), total))
    series = _line_series_parts(result.lines, coded)
    hashes = _row_hashes(result.lines, coded)
    actual.hash = _sum(hashes[actual.mask])
    content_hash = _digest(len(result.lines), _sum(hashes))
    return _Parts(series, shared.same_as(series, result.capacity), content_hash, actual)


def _insert_header(
    conn: psycopg.Connection,
    result: model.ForecastResult,
    header: tuple[str, str, dict[str, str], str, str],
    shared_from: tuple[str | None, str | None],
) -> bool:
    """The snapshot's ``forecast.snapshot`` row; False if another writer inserted it first.
    ``shared_from``: its ``shares_from`` and ``balances_from``."""
    snap_id, run_id, data_versions, reporting_currency, content_hash = header
    inserted = conn.execute(
        "INSERT INTO forecast.snapshot (snapshot_id, scenario, as_of, run_id, data_versions, "
        "reporting_currency, version, content_hash, line_count, totals, shares_from, balances_from) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (snapshot_id) DO NOTHING "
        "RETURNING snapshot_id",
        (
            snap_id,
            result.scenario,
            result.as_of,
            run_id,
            Jsonb(data_versions),
            reporting_currency,
            snap_id.rsplit("-", 1)[-1],
            content_hash,
            len(result.lines),
            Jsonb(result.totals),
            *shared_from,
        ),
    ).fetchone()
    return inserted is not None


_SeriesParts = tuple["pd.DataFrame", pgbinary.Int8Array, pgbinary.Int8Array]
_CapacityParts = tuple[Any, Any, pgbinary.Int8Array, pgbinary.Int8Array]


class SharedRows:
    """The scenario-free rows of one refresh, stored once (migration 0060).

    The actual layer and the capacity check do not depend on the scenario (``model.prepare``
    computes them once). The first snapshot written now through this object stores them and is
    remembered; each later one whose rows are *equal* to those (compared here, whatever produced
    them) stores only its other series and names the first in ``shares_from``. Only a snapshot
    written now is remembered: one found already stored may hold rows of other settings. Not
    for snapshots written concurrently (the one named must be committed, or in the same
    transaction, before the one naming it)."""

    def __init__(self) -> None:
        self.snap_id: str | None = None
        self._actual: tuple[Any, ...] = ()
        self._capacity: pd.DataFrame | None = None
        self._rows: _ActualRows | None = None
        self._balances: pd.DataFrame | None = None

    def keep(
        self,
        snap_id: str,
        series: _SeriesParts,
        capacity: pd.DataFrame,
        rows: _ActualRows | None = None,
        balances: pd.DataFrame | None = None,
    ) -> None:
        """Remember a snapshot written now: its actual series and a copy of its capacity check
        (a copy: the model hands every scenario the same frame, which a caller could change),
        its actual-layer lines (already copies) with their row hashes' sum, and a copy of its
        contract balances (it stored them all: only a snapshot naming no other is kept)."""
        if self.snap_id is None:
            self.snap_id, self._actual, self._capacity = snap_id, _actual_series(series), capacity.copy()
            self._rows = rows
            self._balances = None if balances is None else balances.copy()

    def same_balances(self, balances: pd.DataFrame) -> str | None:
        """The remembered snapshot's id if ``balances`` equal its own (values, dtypes, column
        names and order, index: its stored rows are built from exactly these), else None."""
        if self.snap_id is None or self._balances is None or not len(balances):
            return None
        return self.snap_id if balances.equals(self._balances) else None

    @property
    def actual_hash(self) -> int:
        """The wrapping sum of the remembered snapshot's actual lines' row hashes."""
        return 0 if self._rows is None else self._rows.hash

    def same_rows(self, rows: _ActualRows, capacity: pd.DataFrame) -> str | None:
        """The remembered snapshot's id if ``rows``, the actual-layer lines of a result (their
        codes, the codes' distinct values and the numbers, row by row), and the ``capacity``
        check equal its own. Equal lines in the same order under the same codes make the same
        actual series (:meth:`same_as` would find them equal), so they need not be built."""
        if self.snap_id is None or self._rows is None or self._capacity is None:
            return None
        if not rows.equals(self._rows) or not capacity.equals(self._capacity):
            return None
        return self.snap_id

    def same_as(self, series: _SeriesParts, capacity: pd.DataFrame) -> str | None:
        """The remembered snapshot's id if ``series``' actual layer and the ``capacity`` check
        (values, dtypes, order; its series are built from exactly these) equal its own."""
        if self.snap_id is None or self._capacity is None or not capacity.equals(self._capacity):
            return None
        same = all(_same(a, b) for a, b in zip(_actual_series(series), self._actual, strict=True))
        return self.snap_id if same else None


@dataclass
class _ActualRows:
    """The lines of layer ``actual`` of one result: which rows (``mask``), and copies of their
    text columns' codes, of the codes' distinct values and of their other columns."""

    mask: Any
    codes: tuple[Any, ...]
    uniques: tuple[Any, ...]
    numbers: tuple[Any, ...]
    hash: int = 0  # the wrapping sum of their row hashes, set once computed

    @classmethod
    def of(cls, lines: pd.DataFrame, coded: dict[str, tuple[Any, Any]]) -> _ActualRows:
        import numpy as np

        layer_codes, layers = coded["layer"]
        mask = np.isin(layer_codes, np.flatnonzero(np.asarray(layers, dtype=object) == "actual"))
        return cls(
            mask,
            tuple(np.asarray(coded[c][0])[mask] for c in TEXT_LINE_COLUMNS),
            tuple(np.array(coded[c][1], dtype=object) for c in TEXT_LINE_COLUMNS),
            tuple(lines[c].to_numpy()[mask] for c in model.LINE_COLUMNS if c not in TEXT_LINE_COLUMNS),
        )

    def equals(self, other: _ActualRows) -> bool:
        """Value by value and row by row (a value numpy cannot compare, e.g. a missing one, is
        unequal: the snapshot is then compared as series)."""
        import numpy as np

        try:
            return all(
                np.array_equal(a, b)
                for mine, theirs in (
                    (self.codes, other.codes),
                    (self.uniques, other.uniques),
                    (self.numbers, other.numbers),
                )
                for a, b in zip(mine, theirs, strict=True)
            )
        except (TypeError, ValueError):
            return False


def _actual_series(series: _SeriesParts) -> tuple[Any, ...]:
    """The key columns and month matrices of the series of layer ``actual``."""
    keys, amount, reporting = series
    mask = keys["layer"].to_numpy(dtype=object) == "actual"
    return (
        *(keys[c].to_numpy()[mask] for c in KEY_COLUMNS),
        _subset(amount, mask),
        _subset(reporting, mask),
    )


def _subset(column: pgbinary.Int8Array, rows: Any) -> pgbinary.Int8Array:
    absent = None if column.absent is None else column.absent[rows]
    return pgbinary.Int8Array(column.values[rows], column.present[rows], column.width[rows], absent)


def _same(a: Any, b: Any) -> bool:
    """Equal as stored: arrays element by element, month matrices within each row's months."""
    import numpy as np

    if not isinstance(a, pgbinary.Int8Array) or not isinstance(b, pgbinary.Int8Array):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if not np.array_equal(a.width, b.width):
        return False
    w = int(a.width.max()) if len(a.width) else 0
    inside = np.arange(w) < np.asarray(a.width)[:, None]
    present_a, present_b = a.present[:, :w] & inside, b.present[:, :w] & inside
    absent_a = np.zeros(len(a.width), bool) if a.absent is None else np.asarray(a.absent, bool)
    absent_b = np.zeros(len(b.width), bool) if b.absent is None else np.asarray(b.absent, bool)
    return bool(
        np.array_equal(present_a, present_b)
        and np.array_equal(np.where(present_a, a.values[:, :w], 0), np.where(present_b, b.values[:, :w], 0))
        and np.array_equal(absent_a, absent_b)
    )


SERIES_COLUMNS = [
    "project_ref",
    "layer",
    "practice",
    "legal_entity",
    "currency",
    "first_month",
    "amount_minor",
    "reporting_amount_minor",
]
KEY_COLUMNS = SERIES_COLUMNS[:6]


def line_series(lines: pd.DataFrame) -> pd.DataFrame:
    """The lines as ``forecast.line_series`` rows, readable: one per (project, layer), with the
    amounts of the months ``first_month ..`` as PostgreSQL array literals (``NULL`` for a month
    without a line). ``reporting_amount_minor`` is None when it equals ``amount_minor`` month by
    month (a series in the reporting currency); the view ``forecast.line`` then repeats the
    amount. The store writes the same rows (:func:`_line_series_parts`) in binary."""
    keys, amount, reporting = _line_series_parts(lines)
    out = keys.copy()
    out["amount_minor"] = _array_literals(amount)
    out["reporting_amount_minor"] = _array_literals(reporting)
    return out[SERIES_COLUMNS]


def _line_series_parts(
    lines: pd.DataFrame, coded: dict[str, tuple[Any, Any]] | None = None
) -> tuple[pd.DataFrame, pgbinary.Int8Array, pgbinary.Int8Array]:
    """The series' key columns (``first_month`` as a month index), their amounts and their own
    reporting amounts (absent where equal to the amounts) as month matrices. Vectorised."""
    import numpy as np
    import pandas as pd

    if not len(lines):
        keys = pd.DataFrame({c: pd.Series(dtype="object") for c in KEY_COLUMNS}).astype(
            {"first_month": "int64"}
        )
        empty = pgbinary.Int8Array(np.zeros((0, 1), np.int64), np.zeros((0, 1), bool), np.zeros(0, np.int64))
        return keys, empty, empty
    coded = _coded(lines) if coded is None else coded
    project_code, layer_code = coded["project_ref"][0], coded["layer"][0]
    key = project_code.astype(np.int64) * (int(layer_code.max()) + 1) + layer_code
    order, series, starts, first, width, offset = _month_runs(
        key, lines["month"].to_numpy(dtype=np.int64), "lines for the same project, layer and month"
    )
    first_rows = order[starts]
    out = pd.DataFrame({c: lines[c].to_numpy(dtype=object)[first_rows] for c in ("project_ref", "layer")})
    for column in ("practice", "legal_entity", "currency"):
        # Compared as integer codes: the same within each series, or refused.
        codes, uniques = coded[column]
        codes = codes[order]
        head = codes[starts]
        if not np.array_equal(codes, head[series]):
            raise ValueError(f"{column} differs between the months of a project and layer")
        out[column] = np.asarray(uniques, dtype=object)[head]
    out["first_month"] = first
    amount = lines["amount_minor"].to_numpy(dtype=np.int64)[order]
    reporting = lines["reporting_amount_minor"].to_numpy(dtype=np.int64)[order]
    differs = np.bincount(series, weights=amount != reporting, minlength=len(starts)) > 0
    return (
        out,
        _matrix(amount, series, offset, width),
        _matrix(reporting, series, offset, width, absent=~differs),
    )


def _matrix(values: Any, series: Any, offset: Any, width: Any, absent: Any = None) -> pgbinary.Int8Array:
    """``values[i]`` at month ``offset[i]`` of series ``series[i]``, as a month matrix."""
    import numpy as np

    shape = (len(width), int(width.max()))
    matrix = np.zeros(shape, dtype=np.int64)
    present = np.zeros(shape, dtype=bool)
    matrix[series, offset] = values
    present[series, offset] = True
    return pgbinary.Int8Array(matrix, present, width, absent)


def _month_runs(key: Any, month: Any, duplicate: str) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Group rows by ``key`` into runs of months: the sort order, each sorted row's run, the
    runs' first rows, first months and widths (first to last month), each row's offset in its run."""
    import numpy as np

    order = _key_month_order(key, month)
    key, month = key[order], month[order]
    new_run = np.empty(len(key), dtype=bool)
    new_run[0] = True
    np.not_equal(key[1:], key[:-1], out=new_run[1:])
    if np.any(~new_run[1:] & (month[1:] == month[:-1])):
        raise ValueError(f"two {duplicate}")
    run = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.append(starts[1:], len(key)) - 1
    first = month[starts]
    return order, run, starts, first, month[ends] - first + 1, month - first[run]


def _key_month_order(key: Any, month: Any) -> Any:
    """``np.lexsort((month, key))``: the rows by key, then month, equal pairs in their order.

    When ``key x months + month`` fits in int64 it is one stable argsort of that number instead
    (the same order: the combined number orders exactly as the pair). The model emits the lines
    in long runs already in that order, which the stable sort (timsort on int64) merges rather
    than sorting, several times faster than lexsort's two passes."""
    import numpy as np

    if not len(key):
        return np.zeros(0, dtype=np.intp)
    low, high = int(month.min()), int(month.max())
    span = high - low + 1
    if int(key.min()) < 0 or (int(key.max()) + 1) * span >= 2**62:
        return np.lexsort((month, key))
    return np.argsort(key * span + (month - low), kind="stable")


CAPACITY_SERIES_COLUMNS = ["user_ref", "first_month", "scheduled_centi", "available_centi"]


def capacity_series(capacity: pd.DataFrame) -> pd.DataFrame:
    """The capacity check as ``forecast.capacity_series`` rows, readable: one per person, with
    scheduled and available centi-hours per month from ``first_month`` as array literals. The
    view ``forecast.capacity`` derives ``over_allocated`` (scheduled > available), so a row whose
    flag says otherwise is refused. The store writes the same rows (:func:`_capacity_parts`) in binary."""
    users, first, scheduled, available = _capacity_parts(capacity)
    import pandas as pd

    return pd.DataFrame(
        {
            "user_ref": users,
            "first_month": first,
            "scheduled_centi": _array_literals(scheduled),
            "available_centi": _array_literals(available),
        },
        columns=CAPACITY_SERIES_COLUMNS,
    ).astype({"first_month": "int64"})


def _capacity_parts(capacity: pd.DataFrame) -> tuple[Any, Any, pgbinary.Int8Array, pgbinary.Int8Array]:
    """Per person: user_ref, first month index, scheduled and available month matrices."""
    import numpy as np
    import pandas as pd

    if not len(capacity):
        empty = pgbinary.Int8Array(np.zeros((0, 1), np.int64), np.zeros((0, 1), bool), np.zeros(0, np.int64))
        return np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), empty, empty
    scheduled = capacity["scheduled_centi"].to_numpy(dtype=np.int64)
    available = capacity["available_centi"].to_numpy(dtype=np.int64)
    if not np.array_equal(capacity["over_allocated"].to_numpy(dtype=bool), scheduled > available):
        raise ValueError("over_allocated must be scheduled > available")
    user_code, users = pd.factorize(capacity["user_ref"].to_numpy(dtype=object), use_na_sentinel=False)
    order, run, starts, first, width, offset = _month_runs(
        user_code.astype(np.int64),
        capacity["month"].to_numpy(dtype=np.int64),
        "capacity rows for the same person and month",
    )
    return (
        np.asarray(users, dtype=object)[user_code[order[starts]]],
        first,
        _matrix(scheduled[order], run, offset, width),
        _matrix(available[order], run, offset, width),
    )


def _array_literals(column: pgbinary.Int8Array) -> Any:
    """``{v0,NULL,v2}`` per row of the month matrix; None where the array is absent."""
    import numpy as np

    n = len(column.width)
    if not n:
        return np.zeros(0, dtype=object)
    text_type = np.dtypes.StringDType()
    inside = np.arange(column.values.shape[1]) < column.width[:, None]
    cells = np.where(inside, "NULL", "").astype(text_type)
    cells[column.present] = column.values[column.present].astype(text_type)
    separators = np.where(inside, ",", "").astype(text_type)
    text = np.strings.add("{", cells[:, 0])
    for j in range(1, column.values.shape[1]):
        text = np.strings.add(np.strings.add(text, separators[:, j]), cells[:, j])
    out = np.strings.add(text, "}").astype(object)
    if column.absent is not None:
        out[np.asarray(column.absent, dtype=bool)] = None
    return out


def _days_since_2000(months: Any) -> Any:
    """PostgreSQL date values (days since 2000-01-01) of the first days of month indexes."""
    import numpy as np

    unique, inverse = np.unique(np.asarray(months, dtype=np.int64), return_inverse=True)
    days = np.array([model.month_start(int(m)).toordinal() - pgbinary.PG_EPOCH_ORDINAL for m in unique])
    return days[inverse].astype(np.int64) if len(unique) else np.zeros(0, dtype=np.int64)


def _copy_series(
    conn: psycopg.Connection, snap_id: str, series: _SeriesParts, *, without_actual: bool = False
) -> None:
    """Binary COPY of the lines' series (:mod:`pgbinary`): one statement, no text parsing;
    ``without_actual``: all but the actual layer's (another snapshot holds them)."""
    import numpy as np

    keys, amount, reporting = series
    if without_actual:
        rows = keys["layer"].to_numpy(dtype=object) != "actual"
        keys = keys[rows].reset_index(drop=True)
        amount, reporting = _subset(amount, rows), _subset(reporting, rows)
    if not len(keys):
        return
    text_columns = {
        c: keys[c].to_numpy(dtype=object)
        for c in ("project_ref", "layer", "practice", "legal_entity", "currency")
    }
    days = _days_since_2000(keys["first_month"].to_numpy(dtype=np.int64))

    def fields(part: slice) -> list[list[tuple[Any, Any]]]:
        return [
            pgbinary.constant_text(snap_id, part.stop - part.start),
            *(pgbinary.text(text_columns[c][part]) for c in KEY_COLUMNS[:5]),
            pgbinary.dates(days[part]),
            pgbinary.int8_array(_rows_of(amount, part)),
            pgbinary.int8_array(_rows_of(reporting, part)),
        ]

    pgbinary.copy(conn, "forecast.line_series", ["snapshot_id", *SERIES_COLUMNS], len(keys), fields)


def _copy_capacity(conn: psycopg.Connection, snap_id: str, capacity: _CapacityParts) -> None:
    users, first, scheduled, available = capacity
    if not len(users):
        return
    days = _days_since_2000(first)

    def fields(part: slice) -> list[list[tuple[Any, Any]]]:
        return [
            pgbinary.constant_text(snap_id, part.stop - part.start),
            pgbinary.text(users[part]),
            pgbinary.dates(days[part]),
            pgbinary.int8_array(_rows_of(scheduled, part)),
            pgbinary.int8_array(_rows_of(available, part)),
        ]

    pgbinary.copy(
        conn, "forecast.capacity_series", ["snapshot_id", *CAPACITY_SERIES_COLUMNS], len(users), fields
    )


def _rows_of(column: pgbinary.Int8Array, part: slice) -> pgbinary.Int8Array:
    absent = None if column.absent is None else column.absent[part]
    return pgbinary.Int8Array(column.values[part], column.present[part], column.width[part], absent)


BALANCE_TEXT_COLUMNS = ["project_ref", "billing_type", "legal_entity", "currency"]
BALANCE_MONEY_COLUMNS = [
    "transaction_price_minor",
    "cost_to_date_minor",
    "etc_minor",
    "eac_minor",
    "cum_revenue_minor",
    "prior_cum_revenue_minor",
    "catch_up_minor",
    "cum_billed_minor",
    "contract_asset_minor",
    "contract_liability_minor",
    "expected_loss_minor",
    "backlog_minor",
]


def _copy_balances(conn: psycopg.Connection, snap_id: str, balances: pd.DataFrame) -> None:
    """Binary COPY of the contract balances; a missing (NA) amount is NULL."""
    import numpy as np
    import pandas as pd

    if not len(balances):
        return
    texts = {c: balances[c].to_numpy(dtype=object) for c in BALANCE_TEXT_COLUMNS}
    nulls = {c: pd.isna(balances[c]).to_numpy() for c in BALANCE_MONEY_COLUMNS}
    money = {c: pd.to_numeric(balances[c]).fillna(0).to_numpy(dtype=np.int64) for c in BALANCE_MONEY_COLUMNS}

    def fields(part: slice) -> list[list[tuple[Any, Any]]]:
        return [
            pgbinary.constant_text(snap_id, part.stop - part.start),
            *(pgbinary.text(texts[c][part]) for c in BALANCE_TEXT_COLUMNS),
            *(
                pgbinary.int8(money[c][part], nulls[c][part] if nulls[c].any() else None)
                for c in BALANCE_MONEY_COLUMNS
            ),
        ]

    pgbinary.copy(
        conn,
        "forecast.contract_balance_row",
        ["snapshot_id", *BALANCE_TEXT_COLUMNS, *BALANCE_MONEY_COLUMNS],
        len(balances),
        fields,
    )


def read_lines(conn: psycopg.Connection, snap_id: str) -> list[dict[str, Any]]:
    """The snapshot's lines in key order, as stored."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT project_ref, practice, legal_entity, layer, month, currency, amount_minor, "
            "reporting_amount_minor FROM forecast.line WHERE snapshot_id = %s ORDER BY project_ref, layer, month",
            (snap_id,),
        )
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def monthly_totals(conn: psycopg.Connection, snap_id: str) -> list[tuple[str, date, str, int]]:
    """(legal entity, month, layer, reporting minor) of one snapshot, for charts and reports."""
    rows = conn.execute(
        "SELECT legal_entity, month, layer, sum(reporting_amount_minor)::bigint FROM forecast.line "
        "WHERE snapshot_id = %s GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        (snap_id,),
    ).fetchall()
    return [(str(le), month, str(layer), int(total)) for le, month, layer, total in rows]
