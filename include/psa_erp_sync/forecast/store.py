"""Immutable, versioned forecast snapshots in the ``forecast`` schema.

A snapshot's id is derived from (scenario, as-of date, input data versions), so refreshing
again on unchanged inputs finds the snapshot already written and writes nothing: idempotent per
(scenario, as-of, input data versions). Rows are never updated or deleted (triggers refuse it);
changed inputs give a new id and a new snapshot.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb

from psa_erp_sync.forecast import model

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


def lines_hash(lines: pd.DataFrame) -> str:
    """A digest of the lines independent of their order: the line count and the wrapping sum
    of a 64-bit hash per line (pandas' row hash), hashed once more with sha256."""
    import numpy as np
    import pandas as pd

    rows = pd.util.hash_pandas_object(lines[model.LINE_COLUMNS], index=False).to_numpy(np.uint64)
    total = int(rows.sum(dtype=np.uint64)) if len(rows) else 0
    return hashlib.sha256(f"{len(rows)}:{total}".encode()).hexdigest()


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

    def one(result: model.ForecastResult, target: psycopg.Connection) -> bool:
        return write_snapshot(
            target,
            result,
            snap_id=snap_ids[result.scenario],
            run_id=run_id,
            data_versions=data_versions,
            reporting_currency=reporting_currency,
        )

    if not parallel or len(results) < 2:
        return {r.scenario: one(r, conn) for r in results}
    from concurrent.futures import ThreadPoolExecutor

    from psa_erp_sync.ods import connections

    def own(result: model.ForecastResult) -> bool:
        with connections.connect_like(conn) as target:
            return one(result, target)

    with ThreadPoolExecutor(max_workers=len(results), thread_name_prefix="forecast-write") as pool:
        written = list(pool.map(own, results))
    return {r.scenario: w for r, w in zip(results, written, strict=True)}


def write_snapshot(
    conn: psycopg.Connection,
    result: model.ForecastResult,
    *,
    snap_id: str,
    run_id: str,
    data_versions: dict[str, str],
    reporting_currency: str,
) -> bool:
    """Write the snapshot once; True if written now, False if it already existed (no change)."""
    with conn.transaction():
        if exists(conn, snap_id):
            return False  # written before: nothing to hash or write
        inserted = conn.execute(
            "INSERT INTO forecast.snapshot (snapshot_id, scenario, as_of, run_id, data_versions, "
            "reporting_currency, version, content_hash, line_count, totals) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (snapshot_id) DO NOTHING "
            "RETURNING snapshot_id",
            (
                snap_id,
                result.scenario,
                result.as_of,
                run_id,
                Jsonb(data_versions),
                reporting_currency,
                snap_id.rsplit("-", 1)[-1],
                lines_hash(result.lines),
                len(result.lines),
                Jsonb(result.totals),
            ),
        ).fetchone()
        if inserted is None:
            return False
        _copy_series(conn, snap_id, line_series(result.lines))
        balance_columns = [
            "project_ref",
            "billing_type",
            "legal_entity",
            "currency",
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
        _copy(conn, "contract_balance", snap_id, result.balances, balance_columns)
        _copy(
            conn,
            "capacity_series",
            snap_id,
            capacity_series(result.capacity),
            CAPACITY_SERIES_COLUMNS,
            month_columns=("first_month",),
        )
    return True


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


def line_series(lines: pd.DataFrame) -> pd.DataFrame:
    """The lines as ``forecast.line_series`` rows: one per (project, layer), with the amounts of
    the months ``first_month ..`` as PostgreSQL array literals (``NULL`` for a month without a
    line). ``reporting_amount_minor`` is None when it equals ``amount_minor`` month by month (a
    series in the reporting currency); the view ``forecast.line`` then repeats the amount.
    Vectorised: no Python loop over lines or series."""
    import numpy as np
    import pandas as pd

    if not len(lines):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SERIES_COLUMNS}).astype(
            {"first_month": "int64"}
        )
    project_code, _ = pd.factorize(lines["project_ref"].to_numpy(dtype=object), use_na_sentinel=False)
    layer_code, _ = pd.factorize(lines["layer"].to_numpy(dtype=object), use_na_sentinel=False)
    key = project_code.astype(np.int64) * (int(layer_code.max()) + 1) + layer_code
    order, series, starts, first, width, offset = _month_runs(
        key, lines["month"].to_numpy(dtype=np.int64), "lines for the same project, layer and month"
    )
    out = pd.DataFrame({c: lines[c].to_numpy(dtype=object)[order[starts]] for c in ("project_ref", "layer")})
    for column in ("practice", "legal_entity", "currency"):
        values = lines[column].to_numpy(dtype=object)[order]
        head = values[starts]
        if not np.array_equal(values, head[series]):
            raise ValueError(f"{column} differs between the months of a project and layer")
        out[column] = head
    out["first_month"] = first
    amount = lines["amount_minor"].to_numpy(dtype=np.int64)[order]
    reporting = lines["reporting_amount_minor"].to_numpy(dtype=np.int64)[order]
    out["amount_minor"] = _array_literals(amount, series, offset, width)
    differs = np.bincount(series, weights=amount != reporting, minlength=len(starts)) > 0
    own_reporting = np.full(len(starts), None, dtype=object)
    if differs.any():
        # Renumber the series that need their own reporting amounts 0..k-1.
        kept = differs[series]
        renumbered = np.cumsum(differs) - 1
        own_reporting[differs] = _array_literals(
            reporting[kept], renumbered[series[kept]], offset[kept], width[differs]
        )
    out["reporting_amount_minor"] = own_reporting
    return out[SERIES_COLUMNS]


def _month_runs(key: Any, month: Any, duplicate: str) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Group rows by ``key`` into runs of months: the sort order, each sorted row's run, the
    runs' first rows, first months and widths (first to last month), each row's offset in its run."""
    import numpy as np

    order = np.lexsort((month, key))
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


CAPACITY_SERIES_COLUMNS = ["user_ref", "first_month", "scheduled_centi", "available_centi"]


def capacity_series(capacity: pd.DataFrame) -> pd.DataFrame:
    """The capacity check as ``forecast.capacity_series`` rows: one per person, with scheduled
    and available centi-hours per month from ``first_month`` as array literals. The view
    ``forecast.capacity`` derives ``over_allocated`` (scheduled > available), so a row whose flag
    says otherwise is refused."""
    import numpy as np
    import pandas as pd

    if not len(capacity):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in CAPACITY_SERIES_COLUMNS}).astype(
            {"first_month": "int64"}
        )
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
    return pd.DataFrame(
        {
            "user_ref": np.asarray(users, dtype=object)[user_code[order[starts]]],
            "first_month": first,
            "scheduled_centi": _array_literals(scheduled[order], run, offset, width),
            "available_centi": _array_literals(available[order], run, offset, width),
        }
    )


def _array_literals(values: Any, series: Any, offset: Any, width: Any) -> Any:
    """``{v0,NULL,v2}`` per series: ``values[i]`` at position ``offset[i]`` of series
    ``series[i]``, which has ``width[s]`` months; months without a value are NULL."""
    import numpy as np

    text_type = np.dtypes.StringDType()
    months = np.arange(int(width.max()))
    inside = months < width[:, None]
    cells = np.where(inside, "NULL", "").astype(text_type)
    cells[series, offset] = values.astype(text_type)
    separators = np.where(inside, ",", "").astype(text_type)
    text = np.strings.add("{", cells[:, 0])
    for j in months[1:]:
        text = np.strings.add(np.strings.add(text, separators[:, j]), cells[:, j])
    return np.strings.add(text, "}").astype(object)


def _copy_series(conn: psycopg.Connection, snap_id: str, series: pd.DataFrame) -> None:
    """COPY the series as CSV built column-wise with numpy strings (faster than ``to_csv`` at
    this size): text fields quoted, an absent reporting array an empty (NULL) field."""
    import numpy as np
    import pandas as pd

    if not len(series):
        return
    text_type = np.dtypes.StringDType()

    def quoted(values: Any) -> Any:
        text = np.asarray(values, dtype=object).astype(text_type)
        return np.strings.add(np.strings.add('"', np.strings.replace(text, '"', '""')), '"')

    unique_months, month_of = np.unique(series["first_month"].to_numpy(dtype=np.int64), return_inverse=True)
    labels = np.array([model.month_start(int(m)).isoformat() for m in unique_months], dtype=object)
    reporting = series["reporting_amount_minor"].to_numpy(dtype=object)
    absent = pd.isna(reporting)
    reporting_field = np.where(absent, "", quoted(np.where(absent, "", reporting)))
    fields = [
        quoted(series["project_ref"]),
        quoted(series["layer"]),
        quoted(series["practice"]),
        quoted(series["legal_entity"]),
        quoted(series["currency"]),
        labels[month_of].astype(text_type),
        quoted(series["amount_minor"]),
        reporting_field.astype(text_type),
    ]
    row = quoted(np.full(len(series), snap_id, dtype=object))
    for field in fields:
        row = np.strings.add(np.strings.add(row, ","), field)
    payload = "\n".join(row.tolist()) + "\n"
    sql = f"COPY forecast.line_series (snapshot_id, {', '.join(SERIES_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
    with conn.cursor().copy(sql) as copy:
        copy.write(payload)


def _copy(
    conn: psycopg.Connection,
    table: str,
    snap_id: str,
    frame: pd.DataFrame,
    columns: list[str],
    month_columns: tuple[str, ...] = (),
) -> None:
    """COPY the frame as CSV (one buffer, no per-row Python objects); empty cells are NULL."""
    import io

    data = frame[columns].copy()
    for column in month_columns:
        labels = {int(m): model.month_start(int(m)).isoformat() for m in data[column].unique()}
        data[column] = data[column].map(labels)
    data.insert(0, "snapshot_id", snap_id)
    buffer = io.StringIO()
    data.to_csv(buffer, index=False, header=False, lineterminator="\n")
    sql = f"COPY forecast.{table} (snapshot_id, {', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
    with conn.cursor().copy(sql) as copy:
        copy.write(buffer.getvalue())


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
