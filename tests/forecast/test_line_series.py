"""Compact line storage (migration 0007): ``forecast.line_series`` holds one row per snapshot,
project and layer with the monthly amounts as ``bigint[]``; the view ``forecast.line`` unnests it
into exactly the old rows. Checked in real PostgreSQL against hand-built lines: the view, the
immutability triggers, the statement-level snapshot checks, idempotent re-writes and the move of
lines stored before 0007."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import psycopg
import pytest

from psa_erp_sync.forecast import model, store

AS_OF = date(2026, 11, 9)
M0 = model.month_index(AS_OF)

# (project, practice, legal entity, layer, month index, currency, amount, reporting amount):
# a gap (no actual in M0 - 2), a GBP project, a pipeline line, a negative amount (a catch-up),
# the as-of month in two layers, and rows out of order.
HAND_LINES = [
    ("p-2", "Strategy", "LE-UK1", "contracted", M0 + 1, "GBP", 250_000, 317_500),
    ("p-1", "Technology", "LE-US1", "actual", M0 - 3, "USD", 1_000_00, 1_000_00),
    ("p-1", "Technology", "LE-US1", "actual", M0 - 1, "USD", -12_34, -12_34),
    ("p-1", "Technology", "LE-US1", "actual", M0, "USD", 5_00, 5_00),
    ("p-1", "Technology", "LE-US1", "contracted", M0, "USD", 7_000_00, 7_000_00),
    ("p-1", "Technology", "LE-US1", "contracted", M0 + 11, "USD", 9_00, 9_00),
    ("opp-7", "Strategy", "LE-US2", "pipeline", M0 + 4, "USD", 3_333_33, 3_333_33),
    ("p-2", "Strategy", "LE-UK1", "actual", M0 - 12, "GBP", 100, 127),
]
SERIES_ROWS = 5  # (p-1, actual), (p-1, contracted), (p-2, actual), (p-2, contracted), (opp-7, pipeline)


def _lines(rows: list[tuple[Any, ...]]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        rows,
        columns=[
            "project_ref",
            "practice",
            "legal_entity",
            "layer",
            "month",
            "currency",
            "amount_minor",
            "reporting_amount_minor",
        ],
    )[model.LINE_COLUMNS].astype(
        {"month": "int64", "amount_minor": "int64", "reporting_amount_minor": "int64"}
    )


def _result(rows: list[tuple[Any, ...]], scenario: str = "base") -> model.ForecastResult:
    import pandas as pd

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
    capacity = pd.DataFrame(
        {
            "user_ref": ["u1", "u1"],
            "month": [M0, M0 + 1],
            "scheduled_centi": [4_000, 20_000],
            "available_centi": [16_000, 16_000],
            "over_allocated": [False, True],
        }
    )
    return model.ForecastResult(
        scenario=scenario,
        as_of=AS_OF,
        lines=_lines(rows),
        balances=pd.DataFrame(columns=balance_columns),
        capacity=capacity,
        totals={"lines": len(rows)},
    )


def _write(
    conn: psycopg.Connection, result: model.ForecastResult, versions: dict[str, str]
) -> tuple[str, bool]:
    snap = store.snapshot_id(result.scenario, AS_OF, versions)
    written = store.write_snapshot(
        conn, result, snap_id=snap, run_id="run-t", data_versions=versions, reporting_currency="USD"
    )
    conn.commit()
    return snap, written


def _expected(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(
        (p, pr, le, layer, model.month_start(m), cur, amount, rep)
        for p, pr, le, layer, m, cur, amount, rep in rows
    )


_VIEW_ROWS = (
    "SELECT project_ref, practice, legal_entity, layer, month, currency::text, amount_minor, reporting_amount_minor "
    "FROM forecast.line WHERE snapshot_id = %s ORDER BY 1, 2, 3, 4, 5"
)


# --- pure: building the series --------------------------------------------------------------


def test_series_hold_each_project_and_layer_once_with_gaps_as_null() -> None:
    import pandas as pd

    series = store.line_series(_lines(HAND_LINES))
    assert len(series) == SERIES_ROWS
    by_key = {(r.project_ref, r.layer): r for r in series.itertuples()}
    actual = by_key[("p-1", "actual")]
    assert actual.first_month == M0 - 3
    assert actual.amount_minor == "{100000,NULL,-1234,500}"  # M0-3, gap at M0-2, M0-1, M0
    contracted = by_key[("p-1", "contracted")]
    assert contracted.amount_minor == "{700000" + ",NULL" * 10 + ",900}"
    assert by_key[("p-2", "contracted")].reporting_amount_minor == "{317500}"
    assert by_key[("p-2", "actual")].reporting_amount_minor == "{127}"
    assert pd.isna(actual.reporting_amount_minor)  # USD, the reporting currency: no copy stored
    assert (by_key[("opp-7", "pipeline")].practice, by_key[("opp-7", "pipeline")].currency) == (
        "Strategy",
        "USD",
    )


def test_series_refuse_what_the_old_primary_key_refused() -> None:
    with pytest.raises(ValueError, match="same project, layer and month"):
        store.line_series(_lines([*HAND_LINES, HAND_LINES[1]]))
    odd = (
        "p-1",
        "Strategy",
        "LE-US1",
        "actual",
        M0 - 5,
        "USD",
        1,
        1,
    )  # practice differs within (p-1, actual)
    with pytest.raises(ValueError, match="practice differs"):
        store.line_series(_lines([*HAND_LINES, odd]))
    assert store.line_series(_lines([])).empty


def test_capacity_series_per_person_with_gaps_as_null() -> None:
    import pandas as pd

    capacity = pd.DataFrame(
        {
            "user_ref": ["u2", "u1", "u1", "u1"],
            "month": [M0, M0 + 3, M0, M0 + 1],
            "scheduled_centi": [0, 9_000, 4_000, 20_000],
            "available_centi": [16_000, 8_000, 16_000, 16_000],
        }
    )
    capacity["over_allocated"] = capacity["scheduled_centi"] > capacity["available_centi"]
    series = store.capacity_series(capacity).set_index("user_ref")
    assert series.loc["u1", "first_month"] == M0
    assert series.loc["u1", "scheduled_centi"] == "{4000,20000,NULL,9000}"
    assert series.loc["u1", "available_centi"] == "{16000,16000,NULL,8000}"
    assert series.loc["u2", "scheduled_centi"] == "{0}"
    capacity.loc[0, "over_allocated"] = True  # the view derives the flag: a contradicting one is refused
    with pytest.raises(ValueError, match="over_allocated"):
        store.capacity_series(capacity)


# --- real PostgreSQL ------------------------------------------------------------------------

pg = pytest.mark.integration


@pg
def test_view_gives_back_exactly_the_hand_built_lines(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        snap, written = _write(conn, _result(HAND_LINES), {"t": "view"})
        assert written
        assert conn.execute(_VIEW_ROWS, (snap,)).fetchall() == _expected(HAND_LINES)
        stored = conn.execute(
            "SELECT count(*), sum(cardinality(amount_minor)) FROM forecast.line_series WHERE snapshot_id = %s",
            (snap,),
        ).fetchone()
        assert stored == (SERIES_ROWS, 4 + 12 + 1 + 1 + 1)  # the gap and the months between are NULL elements
        # The readers on the view: the store's own, the monthly totals and the rollup.
        assert len(store.read_lines(conn, snap)) == len(HAND_LINES)
        monthly = conn.execute(
            "SELECT sum(actual_minor), sum(contracted_minor), sum(pipeline_minor) FROM forecast.monthly "
            "WHERE snapshot_id = %s",
            (snap,),
        ).fetchone()
        assert monthly == (100_000 - 1_234 + 500 + 127, 700_000 + 900 + 317_500, 333_333)
        firm = conn.execute(
            "SELECT sum(reporting_amount_minor) FROM forecast.rollup WHERE snapshot_id = %s AND level = 'firm'",
            (snap,),
        ).fetchone()
        assert firm == (sum(r[7] for r in HAND_LINES),)
        capacity = conn.execute(
            "SELECT user_ref, month, scheduled_centi, available_centi, over_allocated FROM forecast.capacity "
            "WHERE snapshot_id = %s ORDER BY 1, 2",
            (snap,),
        ).fetchall()
        assert capacity == [
            ("u1", model.month_start(M0), 4_000, 16_000, False),
            ("u1", model.month_start(M0 + 1), 20_000, 16_000, True),
        ]
        # The per-record trace's lookup: one project's actual in one month.
        trace_row = conn.execute(
            "SELECT l.currency, l.amount_minor FROM forecast.snapshot s JOIN forecast.line l ON l.snapshot_id = s.snapshot_id "
            "WHERE l.project_ref = %s AND l.layer = 'actual' AND l.month = date_trunc('month', %s::date)::date",
            ("p-1", model.month_start(M0 - 1).replace(day=17)),
        ).fetchall()
        assert trace_row == [("USD", -1_234)]


@pg
def test_line_storage_is_immutable(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        snap, _ = _write(conn, _result(HAND_LINES), {"t": "immutable"})
        for statement in (
            "UPDATE forecast.line_series SET amount_minor = '{1}', reporting_amount_minor = '{1}' WHERE snapshot_id = %s",
            "DELETE FROM forecast.line_series WHERE snapshot_id = %s",
            "UPDATE forecast.line SET amount_minor = 0 WHERE snapshot_id = %s",
            "DELETE FROM forecast.line WHERE snapshot_id = %s",
            "UPDATE forecast.capacity_series SET scheduled_centi = '{0,0}' WHERE snapshot_id = %s",
            "DELETE FROM forecast.capacity_series WHERE snapshot_id = %s",
            "UPDATE forecast.capacity SET scheduled_centi = 0 WHERE snapshot_id = %s",
            "DELETE FROM forecast.capacity WHERE snapshot_id = %s",
        ):
            with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"):
                conn.execute(statement, (snap,))
            conn.rollback()
        assert conn.execute(_VIEW_ROWS, (snap,)).fetchall() == _expected(HAND_LINES)


@pg
def test_rows_must_name_an_existing_snapshot(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        snap, _ = _write(conn, _result(HAND_LINES), {"t": "fk"})
        for statement in (
            "INSERT INTO forecast.line_series VALUES (%s, 'p-9', 'actual', 'x', 'LE-US1', 'USD', '2026-01-01', '{1}', '{1}')",
            "INSERT INTO forecast.capacity_series VALUES (%s, 'u9', '2026-01-01', '{1}', '{1}')",
            "INSERT INTO forecast.contract_balance VALUES (%s, 'p-9', 'fixed_fee', 'LE-US1', 'USD', 1, 0, 0, 0, 0, NULL, 0, 0, 0, 0, 0, 0)",
        ):
            with pytest.raises(psycopg.errors.ForeignKeyViolation, match="does not exist"):
                conn.execute(statement, ("fc-base-20261109-0000000000000000",))
            conn.rollback()
            conn.execute(statement, (snap,))  # an existing snapshot: accepted
            conn.rollback()


@pg
def test_the_header_commits_with_its_lines_or_not_at_all(clean_ods: str) -> None:
    bad = _result(HAND_LINES)
    bad.capacity.loc[1, "user_ref"] = None  # NOT NULL: the last COPY of the snapshot fails
    with psycopg.connect(clean_ods) as conn:
        with pytest.raises(psycopg.errors.NotNullViolation):
            _write(conn, bad, {"t": "atomic"})
        conn.rollback()
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM forecast.snapshot), (SELECT count(*) FROM forecast.line_series)"
        ).fetchone()
    assert counts == (0, 0)


@pg
def test_rewriting_the_same_snapshot_writes_nothing(clean_ods: str) -> None:
    versions = {"t": "idempotent"}
    with psycopg.connect(clean_ods) as conn:
        snap, written = _write(conn, _result(HAND_LINES), versions)
        assert written
        before = conn.execute(
            "SELECT xmin::text, project_ref, layer FROM forecast.line_series WHERE snapshot_id = %s ORDER BY 2, 3",
            (snap,),
        ).fetchall()
        again, written_again = _write(conn, _result(HAND_LINES), versions)
        assert (again, written_again) == (snap, False)
        after = conn.execute(
            "SELECT xmin::text, project_ref, layer FROM forecast.line_series WHERE snapshot_id = %s ORDER BY 2, 3",
            (snap,),
        ).fetchall()
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM forecast.snapshot), (SELECT count(*) FROM forecast.line_series), "
            "(SELECT count(*) FROM forecast.capacity)"
        ).fetchone()
    assert after == before  # the same row versions: nothing rewritten
    assert counts == (1, SERIES_ROWS, 2)


@pg
@pytest.mark.parametrize("parallel", [False, True], ids=["one-connection", "parallel-connections"])
def test_scenarios_written_each_whole_and_only_once(clean_ods: str, parallel: bool) -> None:
    versions = {"t": f"parallel={parallel}"}
    results = [_result(HAND_LINES, scenario) for scenario in ("base", "best", "worst")]
    results[2] = _result(HAND_LINES[:4], "worst")
    ids = {r.scenario: store.snapshot_id(r.scenario, AS_OF, versions) for r in results}

    def write_all() -> dict[str, bool]:
        with psycopg.connect(clean_ods) as conn:
            return store.write_snapshots(
                conn,
                results,
                snap_ids=ids,
                run_id="run-p",
                data_versions=versions,
                reporting_currency="USD",
                parallel=parallel,
            )

    assert write_all() == {"base": True, "best": True, "worst": True}
    assert write_all() == {"base": False, "best": False, "worst": False}
    with psycopg.connect(clean_ods) as conn:
        for result in results:
            rows = conn.execute(_VIEW_ROWS, (ids[result.scenario],)).fetchall()
            assert rows == sorted(tuple(r.values()) for r in store.read_lines(conn, ids[result.scenario]))
            assert rows == _expected(HAND_LINES[:4] if result.scenario == "worst" else HAND_LINES)
        assert conn.execute("SELECT count(*), count(DISTINCT run_id) FROM forecast.snapshot").fetchone() == (
            3,
            1,
        )


# --- the migration moves lines stored before it ---------------------------------------------


@pytest.fixture
def db_before_0007(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database migrated up to (not including) 0007."""
    import os

    from psa_erp_sync.ods import migrate

    name = f"pes_test_0007_{os.getpid()}"
    server = pg_dsn
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
    every = migrate.discover()
    with monkeypatch.context() as patch:
        patch.setattr(migrate, "discover", lambda: [m for m in every if m.version < 7])
        migrate.apply(dsn)
    yield dsn
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pg
def test_migration_moves_the_existing_lines(db_before_0007: str) -> None:
    from psa_erp_sync.ods import migrate

    snap = "fc-base-20261109-00000000000000aa"
    with psycopg.connect(db_before_0007) as conn:
        conn.execute(
            "INSERT INTO forecast.snapshot (snapshot_id, scenario, as_of, run_id, data_versions, reporting_currency) "
            "VALUES (%s, 'base', %s, 'old-run', '{}', 'USD')",
            (snap, AS_OF),
        )
        conn.execute(
            "INSERT INTO forecast.capacity VALUES (%s, 'u1', %s, 4000, 16000, false), (%s, 'u1', %s, 9000, 8000, true)",
            (snap, model.month_start(M0), snap, model.month_start(M0 + 2)),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO forecast.line VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (snap, p, pr, le, layer, model.month_start(m), cur_, a, r)
                    for p, pr, le, layer, m, cur_, a, r in HAND_LINES
                ],
            )
        conn.commit()
    assert migrate.apply(db_before_0007)[0] == "0007_forecast_line_series.sql"
    with psycopg.connect(db_before_0007) as conn:
        assert conn.execute(_VIEW_ROWS, (snap,)).fetchall() == _expected(HAND_LINES)
        assert conn.execute(
            "SELECT count(*), count(reporting_amount_minor) FROM forecast.line_series"
        ).fetchone() == (SERIES_ROWS, 2)  # only the GBP series keep their own reporting amounts
        kinds = conn.execute(
            "SELECT relname, relkind::text FROM pg_class WHERE oid IN ('forecast.line'::regclass, 'forecast.capacity'::regclass)"
        ).fetchall()
        assert dict(kinds) == {"line": "v", "capacity": "v"}
        assert conn.execute(
            "SELECT month, scheduled_centi, available_centi, over_allocated FROM forecast.capacity ORDER BY month"
        ).fetchall() == [
            (model.month_start(M0), 4000, 16000, False),
            (model.month_start(M0 + 2), 9000, 8000, True),
        ]
        assert conn.execute("SELECT scheduled_centi::text FROM forecast.capacity_series").fetchall() == [
            ("{4000,NULL,9000}",)
        ]
        # New snapshots land next to the moved one, and the views see both.
        new_snap, written = _write(conn, _result(HAND_LINES[:3], scenario="best"), {"t": "after"})
        assert written
        months = conn.execute(
            "SELECT snapshot_id, count(*) FROM forecast.monthly GROUP BY 1 ORDER BY 1", ()
        ).fetchall()

    def entity_months(rows: list[tuple[Any, ...]]) -> int:
        return len({(le, m) for _, _, le, _, m, *_ in rows})

    assert dict(months) == {new_snap: entity_months(HAND_LINES[:3]), snap: entity_months(HAND_LINES)}


@pg
def test_binary_copy_round_trips_every_column_kind(clean_ods: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store writes by binary COPY (store/pgbinary): non-ASCII and NULL text, int64 extremes,
    NULL array elements, NULL bigint, empty text, and rows split over several COPY chunks."""
    import pandas as pd

    from psa_erp_sync.forecast import pgbinary

    monkeypatch.setattr(pgbinary, "CHUNK_ROWS", 2)  # 5 series, 3 balances: more than one chunk each
    big = 2**63 - 1
    rows = [
        *HAND_LINES,
        ("p-3", "Données & Analytique", "LE-UK1", "actual", M0 - 1, "GBP", -big, big),
        ("p-3", "Données & Analytique", "LE-UK1", "actual", M0 + 1, "GBP", 0, 0),
    ]
    result = _result(rows)
    money = [c for c in store.BALANCE_MONEY_COLUMNS]
    balances = pd.DataFrame(
        {
            "project_ref": ["p-1", "p-2", "p-3"],
            "billing_type": ["fixed_fee", "milestone", "retainer"],
            "legal_entity": ["LE-US1", "LE-UK1", "LE-UK1"],
            "currency": ["USD", "GBP", "GBP"],
        }
    )
    for i, column in enumerate(money):
        balances[column] = [0, i, -big if column == "backlog_minor" else i * 1_000]
    balances["prior_cum_revenue_minor"] = pd.array([None, 5, big], dtype="Int64")
    balances["contract_liability_minor"] = 0
    result = model.ForecastResult(
        scenario=result.scenario,
        as_of=AS_OF,
        lines=result.lines,
        balances=balances,
        capacity=result.capacity,
        totals=result.totals,
    )
    with psycopg.connect(clean_ods) as conn:
        snap, written = _write(conn, result, {"t": "binary"})
        assert written
        assert conn.execute(_VIEW_ROWS, (snap,)).fetchall() == _expected(rows)
        assert conn.execute(
            "SELECT amount_minor, reporting_amount_minor, first_month FROM forecast.line_series "
            "WHERE snapshot_id = %s AND project_ref = 'p-3'",
            (snap,),
        ).fetchone() == ([-big, None, 0], [big, None, 0], model.month_start(M0 - 1))
        stored = conn.execute(
            f"SELECT project_ref, billing_type, legal_entity, currency::text, {', '.join(money)} "
            "FROM forecast.contract_balance WHERE snapshot_id = %s ORDER BY project_ref",
            (snap,),
        ).fetchall()
        expected = [
            tuple(r)
            for r in balances[["project_ref", "billing_type", "legal_entity", "currency", *money]]
            .astype(object)
            .where(balances.notna(), None)
            .itertuples(index=False)
        ]
        assert stored == expected
        assert stored[0][4 + money.index("prior_cum_revenue_minor")] is None


def test_content_hash_is_pandas_row_hash_of_the_lines() -> None:
    """``lines_hash`` hashes the text columns through their codes (factorized once for the
    series too); the digest must stay the one over pandas' plain row hashes, order-free."""
    import hashlib

    import numpy as np
    import pandas as pd

    def plain(lines: Any) -> str:
        rows = pd.util.hash_pandas_object(lines[model.LINE_COLUMNS], index=False).to_numpy(np.uint64)
        total = int(rows.sum(dtype=np.uint64)) if len(rows) else 0
        return hashlib.sha256(f"{len(rows)}:{total}".encode()).hexdigest()

    rows = [*HAND_LINES, ("p-3", "Données", "LE-UK1", "actual", M0, "GBP", -(2**63), 2**63 - 1)]
    lines = _lines(rows)
    assert store.lines_hash(lines) == plain(lines)
    assert store.lines_hash(_lines(list(reversed(rows)))) == plain(lines)
    assert store.lines_hash(_lines([])) == plain(_lines([]))
    changed = _lines([*rows[:-1], ("p-3", "Données", "LE-UK1", "actual", M0, "GBP", -(2**63), 0)])
    assert store.lines_hash(changed) != plain(lines)
