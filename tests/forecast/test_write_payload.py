"""The store's COPY payloads and sharing decisions, built faster (perf-forecast9), are exactly what
they were: the binary rows against a per-row encoder written from PostgreSQL's format, the series'
sort against ``np.lexsort``, and a later snapshot whose actual lines equal the first one's (its
actual series then not built, its actual lines not hashed again) against the whole build."""

from __future__ import annotations

import dataclasses
import struct
from datetime import date
from typing import Any

import numpy as np
import pytest

from psa_erp_sync.forecast import model, pgbinary, store
from psa_erp_sync.forecast.settings import SCENARIOS, load_forecast_settings

AS_OF = date(2026, 11, 9)


def _field(value: bytes | None) -> bytes:
    return struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value


def _array(elements: list[int | None] | None) -> bytes | None:
    """A bigint[] in binary COPY, one element at a time (PostgreSQL's array_send)."""
    if elements is None:
        return None
    has_null = int(any(e is None for e in elements))
    out = struct.pack(">iiiii", 1, has_null, pgbinary.INT8_OID, len(elements), 1)
    for e in elements:
        out += struct.pack(">i", -1) if e is None else struct.pack(">iq", 8, e)
    return out


def _reference_rows(texts: list[str | None], arrays: list[list[int | None] | None]) -> bytes:
    out = b""
    for text, elements in zip(texts, arrays, strict=True):
        out += (
            struct.pack(">h", 2) + _field(None if text is None else text.encode()) + _field(_array(elements))
        )
    return out


def test_rows_equal_a_per_row_encoder() -> None:
    """NULL and UTF-8 text, NULL arrays, NULL elements, widths 1..w, values at the int64 limits."""
    rng = np.random.default_rng(7)
    n, w = 400, 5
    values = rng.integers(-(2**63), 2**63 - 1, size=(n, w), dtype=np.int64)
    values[0, 0], values[1, 0] = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    present = rng.random((n, w)) > 0.2
    width = rng.integers(1, w + 1, size=n)
    absent = rng.random(n) < 0.1
    texts = [None if i % 17 == 0 else ("é" * (i % 4)) + f"p{i}" for i in range(n)]
    column = pgbinary.Int8Array(values, present, width, absent)
    arrays: list[list[int | None] | None] = [
        None if absent[r] else [int(values[r, j]) if present[r, j] else None for j in range(int(width[r]))]
        for r in range(n)
    ]
    built = pgbinary.rows([pgbinary.text(np.array(texts, dtype=object)), pgbinary.int8_array(column)], n)
    assert bytes(built) == _reference_rows(texts, arrays)


@pytest.mark.parametrize("big", [False, True])
def test_key_month_order_is_lexsort(big: bool) -> None:
    """Runs already in order, ties (kept in their order), negative months; and keys so large that
    the combined number would overflow (then lexsort itself)."""
    rng = np.random.default_rng(3)
    key = np.repeat(rng.integers(0, 50, size=300), rng.integers(1, 6, size=300))
    month = rng.integers(-30, 30, size=len(key))
    if big:
        key = key * (2**58)
    order = store._key_month_order(key.astype(np.int64), month.astype(np.int64))
    assert np.array_equal(order, np.lexsort((month, key)))
    assert len(store._key_month_order(np.zeros(0, np.int64), np.zeros(0, np.int64))) == 0


@pytest.fixture(scope="module")
def results() -> list[model.ForecastResult]:
    from devtools.bench_forecast import synthetic_inputs

    return model.compute_scenarios(
        synthetic_inputs(300, 12, AS_OF, seed=5), load_forecast_settings(), SCENARIOS
    )


def _parts(result: model.ForecastResult, shared: store.SharedRows, snap_id: str) -> Any:
    coded = model.line_codes(result) or store._coded(result.lines)
    parts = store._snapshot_parts(result, coded, shared)
    if parts.shares_from is None:
        shared.keep(snap_id, parts.series, result.capacity, parts.actual)
    return parts


def _non_actual(series: Any) -> tuple[Any, ...]:
    keys, amount, reporting = series
    rows = keys["layer"].to_numpy(dtype=object) != "actual"
    kept = keys[rows].reset_index(drop=True)
    return kept, store._subset(amount, rows), store._subset(reporting, rows)


def _same_series(a: Any, b: Any) -> bool:
    return a[0].equals(b[0]) and all(store._same(x, y) for x, y in zip(a[1:], b[1:], strict=True))


def test_a_later_snapshot_with_equal_actual_lines_builds_only_its_other_series(
    results: list[model.ForecastResult],
) -> None:
    """Its content hash is the whole lines' hash, its series the other layers' of the whole build,
    and it names the first snapshot, as the whole build and :meth:`SharedRows.same_as` decide."""
    shared = store.SharedRows()
    first = _parts(results[0], shared, "fc-base")
    assert first.shares_from is None and first.content_hash == store.lines_hash(results[0].lines)
    for result in results[1:]:
        parts = _parts(result, shared, "fc-x")
        whole = store._line_series_parts(result.lines)
        assert parts.shares_from == "fc-base" == shared.same_as(whole, result.capacity)
        assert parts.content_hash == store.lines_hash(result.lines)
        assert _same_series(parts.series, _non_actual(whole))
        assert not (parts.series[0]["layer"] == "actual").any()


def test_actual_lines_that_differ_or_are_coded_otherwise_take_the_whole_build(
    results: list[model.ForecastResult],
) -> None:
    """One actual amount changed: not shared, every series built. The same lines under other
    codes (the distinct values in another order): compared as series, decided as before."""
    shared = store.SharedRows()
    _parts(results[0], shared, "fc-base")
    lines = results[1].lines.copy(deep=True)
    actual = lines.index[lines["layer"] == "actual"][0]
    lines.loc[actual, ["amount_minor", "reporting_amount_minor"]] += 1
    changed = dataclasses.replace(results[1], lines=lines, codes=None)
    parts = _parts(changed, shared, "fc-best")
    assert parts.shares_from is None and parts.content_hash == store.lines_hash(lines)
    assert _same_series(parts.series, store._line_series_parts(lines))

    codes = model.line_codes(results[2])
    assert codes is not None
    project_codes, projects = codes["project_ref"]
    flipped = len(projects) - 1 - np.asarray(project_codes)
    recoded = dataclasses.replace(
        results[2], codes={**codes, "project_ref": (flipped, np.asarray(projects, dtype=object)[::-1])}
    )
    shared = store.SharedRows()
    _parts(results[0], shared, "fc-base")
    assert not store._ActualRows.of(recoded.lines, recoded.codes or {}).equals(shared._rows)  # type: ignore[arg-type]
    parts = _parts(recoded, shared, "fc-worst")
    whole = store._line_series_parts(recoded.lines, recoded.codes)
    assert parts.shares_from == shared.same_as(whole, recoded.capacity)  # decided by the series, as before
    assert _same_series(parts.series, whole)
    assert parts.content_hash == store.lines_hash(results[2].lines)


def test_the_remembered_actual_lines_are_copies(results: list[model.ForecastResult]) -> None:
    """Changing the first result's lines and codes after it was kept changes nothing remembered:
    a later result equal to what was written is still found equal line by line."""
    codes = model.line_codes(results[0])
    assert codes is not None
    own = {c: (np.array(k), np.array(u, dtype=object)) for c, (k, u) in codes.items()}
    first = dataclasses.replace(results[0], lines=results[0].lines.copy(deep=True), codes=own)
    shared = store.SharedRows()
    _parts(first, shared, "fc-base")
    actual = np.flatnonzero(first.lines["layer"].to_numpy(dtype=object) == "actual")[0]
    first.lines.iloc[actual, first.lines.columns.get_loc("amount_minor")] += 1
    own["project_ref"][0][actual] = own["project_ref"][0][actual] + 1
    own["project_ref"][1][0] = "changed"
    later = model.line_codes(results[1])
    assert later is not None
    rows = store._ActualRows.of(results[1].lines, later)
    assert shared.same_rows(rows, results[1].capacity) == "fc-base"
