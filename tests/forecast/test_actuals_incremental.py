"""The forecast's actuals kept incrementally (``forecast/actuals.py``, migration 0043) equal the full
derivation a refresh ran before (a frozen copy below) after inserts, corrections, reversals,
re-postings, unapprovals, deletions, moves, rate changes and person changes; and they are crash
safe: the queue moves only with the data, in one transaction, and a change committed while a
catch-up runs is picked up by the next one.

Real PostgreSQL; the rows are what validation and the posting engine write.
"""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

import psycopg
import pytest

from psa_erp_sync.forecast import actuals, inputs, model
from psa_erp_sync.forecast.settings import ForecastSettings, load_forecast_settings

# --- the full derivation a refresh ran before 0043 (frozen: the oracle) -------------------------

_POSTED = """
    SELECT DISTINCT ON (source_system, source_id) source_system, source_id, action, amount_minor
    FROM ledger.posting WHERE record_type = %s AND state IN ('confirmed', 'resolved') AND NOT shadow
    ORDER BY source_system, source_id, seq DESC
"""


def full_derivation(conn: psycopg.Connection, as_of: date, projects: Any, settings: ForecastSettings) -> Any:
    import numpy as np
    import pandas as pd

    m_year = inputs._M_YEAR
    posted_time = inputs._frame(
        conn,
        f"""
        SELECT t.project_ref, {m_year.format(d="t.spent_date")}, coalesce(sum(p.amount_minor) FILTER (WHERE t.billable), 0)
        FROM canonical.time_entry t
        JOIN ({_POSTED}) p ON p.source_system = t.source_system AND p.source_id = t.source_id
        WHERE p.action IN ('post', 'adjust') AND t.approved AND NOT t.is_deleted AND t.spent_date <= %(as_of)s
        GROUP BY 1, 2
        """.replace("%s", "%(time)s"),
        {"time": "timebill", "as_of": as_of},
        {"project_ref": "object", "month": "int64", "revenue_minor": "int64"},
    )
    posted_expenses = inputs._frame(
        conn,
        f"""
        SELECT e.project_ref, {m_year.format(d="e.spent_date")}, coalesce(sum(p.amount_minor), 0)
        FROM canonical.expense_entry e
        JOIN ({_POSTED}) p ON p.source_system = e.source_system AND p.source_id = e.source_id
        WHERE p.action IN ('post', 'adjust') AND e.approved AND e.billable AND NOT e.is_deleted
              AND e.spent_date <= %(as_of)s
        GROUP BY 1, 2
        """.replace("%s", "%(expense)s"),
        {"expense": "expensereport", "as_of": as_of},
        {"project_ref": "object", "month": "int64", "revenue_minor": "int64"},
    )
    cost = inputs._frame(
        conn,
        f"""
        SELECT t.project_ref, {m_year.format(d="t.spent_date")}, coalesce(h.currency, p.currency),
               sum(round(t.hours * 100)::bigint * coalesce(h.rate_minor, p.cost_rate_minor))
        FROM canonical.time_entry t JOIN forecast.src_person p ON p.user_ref = t.user_ref
        {inputs._HR_RATE_ON.format(rates=inputs._HR_RATES, u="t.user_ref", d="t.spent_date")}
        WHERE t.approved AND NOT t.is_deleted AND t.spent_date <= %(as_of)s
        GROUP BY 1, 2, 3
        """,
        {"as_of": as_of},
        {"project_ref": "object", "month": "int64", "cost_currency": "object", "cost_centi": "int64"},
    )
    currency_of = projects.set_index("project_ref")["currency"]
    cost = cost[cost["project_ref"].isin(currency_of.index)]
    if len(cost):
        rate = {c: model.fx_factor(c, settings)[0] for c in settings.fx_rates}
        src = cost["cost_currency"].map(rate).to_numpy(dtype=np.int64)
        dst = cost["project_ref"].map(currency_of).map(rate).to_numpy(dtype=np.int64)
        cost = cost.assign(cost_minor=model.muldiv(cost["cost_centi"].to_numpy(), src, dst * 100))
    else:
        cost = cost.assign(cost_minor=pd.Series(dtype="int64"))
    revenue = (
        pd.concat([posted_time, posted_expenses]).groupby(["project_ref", "month"])["revenue_minor"].sum()
    )
    costs = cost.groupby(["project_ref", "month"])["cost_minor"].sum()
    out = pd.concat([revenue, costs], axis=1).fillna(0).astype("int64").reset_index()
    out.columns = list(model.ACTUAL_COLUMNS)
    return out


# --- a small firm, written as validation and the posting engine write it -----------------------

_keys = itertools.count()


def _time(
    conn: psycopg.Connection, sid: str, project: str, day: str, user: str, hours: str, **kw: Any
) -> None:
    conn.execute(
        "INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref, project_ref,"
        " legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved, fingerprint,"
        " source_updated_at, record) VALUES ('psa', %s, 'v1', %s, %s, %s, 'LE-US1', %s, %s, 10000, 0, 'USD', %s,"
        " %s, now(), '{}') ON CONFLICT (source_system, source_id) DO UPDATE SET spent_date = EXCLUDED.spent_date,"
        " user_ref = EXCLUDED.user_ref, project_ref = EXCLUDED.project_ref, hours = EXCLUDED.hours,"
        " billable = EXCLUDED.billable, approved = EXCLUDED.approved, version_hash = 'v2', validated_at = now()",
        (sid, day, user, project, hours, kw.get("billable", True), kw.get("approved", True), f"fp{sid}"),
    )


def _expense(conn: psycopg.Connection, sid: str, project: str, day: str, amount: int, **kw: Any) -> None:
    conn.execute(
        "INSERT INTO canonical.expense_entry (source_system, source_id, version_hash, spent_date, user_ref,"
        " project_ref, legal_entity, category, billable, amount_minor, currency, approved, fingerprint,"
        " source_updated_at, record) VALUES ('psa', %s, 'v1', %s, 'u1', %s, 'LE-US1', 'travel', %s, %s, 'USD', %s,"
        " %s, now(), '{}')",
        (sid, day, project, kw.get("billable", True), amount, kw.get("approved", True), f"fpe{sid}"),
    )


def _post(
    conn: psycopg.Connection,
    sid: str,
    amount: int | None,
    *,
    action: str = "post",
    state: str = "confirmed",
    record_type: str = "timebill",
    shadow: bool = False,
) -> str:
    key = f"k{next(_keys)}"
    conn.execute(
        "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
        " external_id, action, state, legal_entity, amount_minor, currency, shadow)"
        " VALUES (%s, %s, 'psa', %s, 'v1', %s, %s, %s, 'LE-US1', %s, 'USD', %s)",
        (key, record_type, sid, f"x{sid}", action, state, amount, shadow),
    )
    return key


def _firm(conn: psycopg.Connection) -> None:
    # clean_ods leaves the HR schema alone: this firm's workers go first.
    conn.execute("DELETE FROM hr.cost_rate WHERE employee_id IN ('E1', 'E2')")
    conn.execute("DELETE FROM hr.worker WHERE employee_id IN ('E1', 'E2')")
    for ref, currency in (("P1", "USD"), ("P2", "USD"), ("P3", "GBP")):
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active) VALUES (%s, 'Strategy', 'LE-US1', %s, 'time_and_materials', true)",
            (ref, currency),
        )
    for user, rate, currency in (("1", 5_000, "USD"), ("2", 6_000, "USD"), ("3", 4_000, "GBP")):
        conn.execute(
            "INSERT INTO forecast.src_person (user_ref, legal_entity, currency, is_active,"
            " weekly_capacity_seconds, cost_rate_minor) VALUES (%s, 'LE-US1', %s, true, 144000, %s)",
            (user, currency, rate),
        )
    # User 1 has HR rates (one from October), user 2 none, user 3 a PSA rate only; user 9 no person.
    conn.execute(
        "INSERT INTO hr.worker (employee_id, worker_wid, first_name, last_name, legal_entity, hire_date,"
        " version_hash, psa_user_id) VALUES ('E1', 'W1', 'A', 'B', 'LE-US1', '2020-01-01', 'h', 1)"
    )
    conn.execute(
        "INSERT INTO hr.cost_rate (employee_id, effective_from, rate_minor, currency) VALUES"
        " ('E1', '2026-01-01', 7000, 'USD'), ('E1', '2026-10-01', 7500, 'USD')"
    )
    _time(conn, "t1", "P1", "2026-09-10", "1", "2.50")
    _post(conn, "t1", 25_000)
    _time(conn, "t2", "P1", "2026-10-03", "2", "1.25", billable=False)
    _post(conn, "t2", 12_500)
    _time(conn, "t3", "P2", "2026-10-20", "3", "3.00")  # posted later: cost only for now
    _time(conn, "t4", "P3", "2026-11-05", "9", "4.00")  # user 9 has no person: revenue only
    _post(conn, "t4", 40_000)
    _time(conn, "t5", "P2", "2026-11-09", "1", "1.00")
    _post(conn, "t5", 10_000)
    _time(conn, "t6", "P1", "2026-11-20", "1", "6.00")  # after the as-of day: not yet counted
    _post(conn, "t6", 60_000)
    _time(conn, "t7", "P9", "2026-10-07", "2", "2.00")  # unknown project: revenue, no cost
    _post(conn, "t7", 20_000)
    _time(conn, "t8", "P2", "2026-10-08", "2", "5.00", approved=False)
    _expense(conn, "e1", "P1", "2026-10-11", 3_300)
    _post(conn, "e1", 3_300, record_type="expensereport")
    _expense(conn, "e2", "P2", "2026-11-02", 4_400, billable=False)
    _post(conn, "e2", 4_400, record_type="expensereport")
    _post(conn, "t9", 99_999)  # a posting without a canonical entry: nothing
    _post(conn, "t1", 77_777, shadow=True)  # a parallel run's copy: never the record's own


AS_OFS = (date(2026, 9, 30), date(2026, 10, 31), date(2026, 11, 9), date(2026, 11, 30), date(2027, 1, 31))


def _projects(conn: psycopg.Connection) -> Any:
    return inputs._projects(conn, model.month_index(date(2026, 11, 9)))


def _assert_equal(conn: psycopg.Connection, settings: ForecastSettings) -> None:
    import pandas.testing as pdt

    projects = _projects(conn)
    for as_of in AS_OFS:
        expected = full_derivation(conn, as_of, projects, settings)
        got = inputs._actuals(conn, as_of, projects, settings)
        pdt.assert_frame_equal(got, expected, obj=f"actuals as of {as_of}")


def _stored(conn: psycopg.Connection) -> tuple[list[Any], list[Any]]:
    sources = conn.execute("SELECT * FROM forecast.actual_source ORDER BY 1, 2, 3").fetchall()
    cells = conn.execute("SELECT * FROM forecast.actual_month ORDER BY 1, 2, 3").fetchall()
    return sources, cells


def test_no_actuals_and_cost_only_equal_the_full_derivation(clean_ods: str) -> None:
    """The read's edges (its cells cross as integer codes): nothing at all, then cost only."""
    import pandas.testing as pdt

    settings = load_forecast_settings()
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active) VALUES ('P1', 'Strategy', 'LE-US1', 'USD', 'fixed_fee', true)"
        )
        projects = _projects(conn)
        for step in ("empty", "cost only"):
            if step == "cost only":
                conn.execute(
                    "INSERT INTO forecast.src_person (user_ref, legal_entity, currency, is_active,"
                    " weekly_capacity_seconds, cost_rate_minor) VALUES ('1', 'LE-US1', 'GBP', true, 144000, 5000)"
                )
                _time(conn, "t1", "P1", "2026-09-10", "1", "2.50")
            got = inputs._actuals(conn, date(2026, 11, 9), projects, settings)
            expected = full_derivation(conn, date(2026, 11, 9), projects, settings)
            pdt.assert_frame_equal(got, expected, obj=step)
            assert len(got) == (0 if step == "empty" else 1)


def test_incremental_actuals_equal_the_full_derivation(clean_ods: str) -> None:
    settings = load_forecast_settings()
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _firm(conn)
        assert actuals.catch_up(conn)["rebuilt"]  # never built: everything derived
        _assert_equal(conn, settings)
        assert actuals.catch_up(conn) == {"rebuilt": False, "queued": 0, "rate_sources": 0, "rederived": 0}
        # revenue: P1 Sep, Oct, Nov; P2 Nov; P3 Nov; P9 Oct. Cost: P1 Sep, Oct, Nov; P2 Oct (GBP), Nov; P9 Oct.
        assert conn.execute("SELECT count(*) FROM forecast.actual_month").fetchone() == (12,)

        # New work, posted through the engine's states (pending -> sent -> confirmed).
        _time(conn, "t10", "P2", "2026-11-03", "2", "2.00")
        key = _post(conn, "t10", 20_000, state="pending")
        conn.execute("UPDATE ledger.posting SET state = 'sent' WHERE idempotency_key = %s", (key,))
        _assert_equal(conn, settings)  # sent: not yet revenue
        conn.execute("UPDATE ledger.posting SET state = 'confirmed' WHERE idempotency_key = %s", (key,))
        _post(conn, "t3", 30_000)  # t3 posted at last
        _assert_equal(conn, settings)

        # Corrections: t1's hours changed (a new version) and adjusted in the ERP.
        _time(conn, "t1", "P1", "2026-09-10", "1", "3.00")
        _post(conn, "t1", 30_000, action="adjust")
        # Reversal of t5, and t6 reversed then posted again (re-posting).
        _post(conn, "t5", -10_000, action="reverse")
        _post(conn, "t6", -60_000, action="reverse")
        _post(conn, "t6", 61_000, action="post")
        # A rejected or ambiguous posting never counts; one resolved does.
        _post(conn, "t10", 1, action="adjust", state="rejected")
        amb = _post(conn, "t7", 21_000, action="adjust", state="ambiguous")
        _assert_equal(conn, settings)
        conn.execute("UPDATE ledger.posting SET state = 'resolved' WHERE idempotency_key = %s", (amb,))
        # Unapproved, deleted, moved to another project and month, approved at last.
        _time(conn, "t2", "P1", "2026-10-03", "2", "1.25", billable=False, approved=False)
        conn.execute("UPDATE canonical.time_entry SET is_deleted = true WHERE source_id = 't4'")
        _time(conn, "t7", "P2", "2026-11-01", "2", "2.00")
        _time(conn, "t8", "P2", "2026-10-08", "2", "5.00")
        # Expenses: e2 becomes billable, e1 deleted in the PSA.
        conn.execute("UPDATE canonical.expense_entry SET billable = true WHERE source_id = 'e2'")
        conn.execute("UPDATE canonical.expense_entry SET is_deleted = true WHERE source_id = 'e1'")
        # Bookkeeping only (what validation does for an unchanged re-read): queues nothing.
        before = conn.execute("SELECT count(*) FROM forecast.actual_change").fetchone()
        conn.execute("UPDATE canonical.time_entry SET source_read_at = now(), source_updated_at = now()")
        assert conn.execute("SELECT count(*) FROM forecast.actual_change").fetchone() == before
        _assert_equal(conn, settings)

        # Cost rates: a new HR rate for user 1, user 3's PSA rate, user 9 becomes a person and
        # user 2 stops being one (a new PSA extract); then user 2 gets an HR worker.
        conn.execute(
            "INSERT INTO hr.cost_rate (employee_id, effective_from, rate_minor, currency) VALUES ('E1', '2026-11-01', 8000, 'USD')"
        )
        conn.execute("UPDATE forecast.src_person SET cost_rate_minor = 4100 WHERE user_ref = '3'")
        conn.execute("DELETE FROM forecast.src_person WHERE user_ref = '2'")
        conn.execute(
            "INSERT INTO forecast.src_person (user_ref, legal_entity, currency, is_active, weekly_capacity_seconds,"
            " cost_rate_minor) VALUES ('9', 'LE-UK1', 'GBP', true, 144000, 3000)"
        )
        _assert_equal(conn, settings)
        conn.execute(
            "INSERT INTO forecast.src_person (user_ref, legal_entity, currency, is_active, weekly_capacity_seconds,"
            " cost_rate_minor) VALUES ('2', 'LE-US1', 'USD', true, 144000, 6000)"
        )
        conn.execute(
            "INSERT INTO hr.worker (employee_id, worker_wid, first_name, last_name, legal_entity, hire_date,"
            " version_hash, psa_user_id) VALUES ('E2', 'W2', 'C', 'D', 'LE-US1', '2020-01-01', 'h', 2)"
        )
        conn.execute(
            "INSERT INTO hr.cost_rate (employee_id, effective_from, rate_minor, currency) VALUES ('E2', '2026-10-15', 6500, 'USD')"
        )
        _assert_equal(conn, settings)
        # Incremental, not rebuilt: the stored contributions equal a rebuild's.
        incremental = _stored(conn)
        assert actuals.rebuild(conn)["rebuilt"]
        assert _stored(conn) == incremental
        _assert_equal(conn, settings)


def test_truncated_sources_rebuild(clean_ods: str) -> None:
    settings = load_forecast_settings()
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _firm(conn)
        actuals.catch_up(conn)
        conn.execute("TRUNCATE canonical.expense_entry")
        assert conn.execute("SELECT count(*) FROM forecast.actual_state").fetchone() == (0,)
        _assert_equal(conn, settings)


def test_the_queue_moves_only_with_the_data(clean_ods: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_forecast_settings()
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _firm(conn)
        actuals.catch_up(conn)
        _post(conn, "t3", 30_000)
        _post(conn, "t1", -25_000, action="reverse")
        cells = _stored(conn)

    # A catch-up that fails after taking the queue changes nothing: queue, sums, sources.
    derived = actuals._derived

    def broken(only_changed: bool) -> str:
        return derived(only_changed).replace("WHERE t.approved", "WHERE t.hours / 0 > 0 AND t.approved")

    monkeypatch.setattr(actuals, "_derived", broken)
    with psycopg.connect(clean_ods) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            actuals.catch_up(conn)
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM forecast.actual_change").fetchone() == (2,)
        assert _stored(conn) == cells
    monkeypatch.undo()

    # One inside the refresh's transaction that never commits (a crash): the same.
    with psycopg.connect(clean_ods) as conn:
        conn.execute("SELECT 1")  # the refresh's open transaction (data versions read)
        assert actuals.catch_up(conn)["queued"] == 2
        assert conn.execute("SELECT count(*) FROM forecast.actual_change").fetchone() == (0,)
        conn.rollback()
    with psycopg.connect(clean_ods) as conn:
        assert conn.execute("SELECT count(*) FROM forecast.actual_change").fetchone() == (2,)
        assert _stored(conn) == cells

    # A change that commits while a catch-up is open is left queued for the next one, not lost.
    with psycopg.connect(clean_ods) as first, psycopg.connect(clean_ods, autocommit=True) as other:
        first.execute("SELECT 1")
        assert actuals.catch_up(first)["queued"] == 2
        _post(other, "t5", 15_000, action="adjust")  # commits now, after the catch-up read the queue
        first.commit()
        assert other.execute("SELECT count(*) FROM forecast.actual_change").fetchone() == (1,)
        assert actuals.catch_up(other)["queued"] == 1
        _assert_equal(other, settings)


@pytest.mark.parametrize("column", ["amount_minor", "state"])
def test_updates_of_a_confirmed_posting_are_queued(clean_ods: str, column: str) -> None:
    settings = load_forecast_settings()
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _firm(conn)
        actuals.catch_up(conn)
        value = "12345" if column == "amount_minor" else "'superseded'"
        conn.execute(f"UPDATE ledger.posting SET {column} = {value} WHERE source_id = 't5' AND NOT shadow")
        queued = conn.execute("SELECT DISTINCT kind, source_id FROM forecast.actual_change").fetchall()
        assert queued == [("time_entry", "t5")]
        _assert_equal(conn, settings)


def test_the_read_keeps_the_tables_integer_types(clean_ods: str) -> None:
    """The as-of month's sums are cast to ``actual_month``'s types, so the union does not turn the
    whole months' 1.2 M cells into numeric and back (docs/performance.md "perf-forecast10")."""
    sql, params = actuals.read_sql(date(2026, 11, 20))
    with psycopg.connect(clean_ods) as conn:
        cur = conn.execute(f"SELECT * FROM ({sql}) q LIMIT 0", params)
        types = {str(d.name): d.type_code for d in cur.description or []}
    int8, int4 = 20, 23
    assert types == {
        "project_key": int4,
        "month": int4,
        "currency": 25,
        "revenue_minor": int8,
        "revenue_n": int4,
        "cost_centi": int8,
        "cost_n": int4,
    }
