"""A period's recognition computed from the ODS and stored, against real PostgreSQL: figures,
balanced journals, idempotent recomputes, a late cost in a closed period moved to the first open
one, and the forecast's actuals equal to the recognized (and journaled) revenue per month."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.forecast import inputs as forecast_inputs
from psa_erp_sync.forecast import model
from psa_erp_sync.forecast.settings import load_forecast_settings
from psa_erp_sync.revenue import service, store
from psa_erp_sync.revenue.recognition import month_index
from tests.revenue.conftest import period_row, seed_firm, time_entry

pytestmark = pytest.mark.integration
SEP, OCT = month_index(date(2026, 9, 1)), month_index(date(2026, 10, 1))


@pytest.fixture
def firm(clean_ods: str) -> str:
    seed_firm(clean_ods)
    return clean_ods


def _run(conn: psycopg.Connection, period: int, run_id: str = "r1") -> service.PeriodOutcome:
    return service.compute_and_store_period(
        conn, period=period, run_id=run_id, settings=load_forecast_settings(), config=load_config()
    )


def _recognized(conn: psycopg.Connection) -> dict[tuple[str, int], int]:
    return store.latest_period_revenue(conn, [SEP, OCT])


def _journal_lines(conn: psycopg.Connection, project: str) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT to_char(j.period_month, 'YYYY-MM'), j.seq, j.state, j.posting_period, l.role, l.debit_minor,"
        " l.credit_minor FROM revenue.journal j JOIN revenue.journal_line l USING (idempotency_key)"
        " WHERE j.project_ref = %s ORDER BY j.period_month, j.seq, l.line_no",
        (project,),
    ).fetchall()


def test_periods_recognized_stored_and_journaled(firm: str) -> None:
    with psycopg.connect(firm) as conn:
        sep, oct_ = _run(conn, SEP), _run(conn, OCT)
        assert (sep.contracts, oct_.contracts) == (3, 4)  # MS1 has nothing before Oct
        assert _recognized(conn) == {
            ("FF1", SEP): 250_000,
            ("FF1", OCT): 250_000,
            ("TM1", SEP): 50_000,
            ("TM1", OCT): 70_000,
            ("MS1", OCT): 100_000,  # m2 is completed, not signed off
            ("RET1", SEP): 100_000,
            ("RET1", OCT): 100_000,
        }
        assert _journal_lines(conn, "FF1") == [
            ("2026-09", 1, "planned", "US1-2026-09", "revenue", 0, 250_000),
            ("2026-09", 1, "planned", "US1-2026-09", "contract_asset", 250_000, 0),
            ("2026-10", 1, "planned", "US1-2026-10", "revenue", 0, 250_000),
            ("2026-10", 1, "planned", "US1-2026-10", "contract_asset", 250_000, 0),
        ]
        debits, credits = conn.execute(
            "SELECT sum(debit_minor), sum(credit_minor) FROM revenue.journal_line"
        ).fetchone() or (0, 0)
        assert debits == credits == 250_000 * 2 + 120_000 + 100_000 + 100_000 * 2

        # A recompute with nothing changed writes nothing new.
        again = _run(conn, OCT, run_id="r2")
        assert (again.recognitions_written, again.journals, again.unchanged) == (
            0,
            {"post": 0, "moved": 0, "park": 0},
            4,
        )
        assert conn.execute("SELECT count(*) FROM revenue.journal").fetchone() == (7,)


def test_late_cost_in_a_closed_period_moves_to_the_first_open_one(firm: str) -> None:
    with psycopg.connect(firm) as conn:
        _run(conn, SEP)
        with conn.transaction():
            period_row(conn, 9, closed=True)
            time_entry(conn, "5", "FF1", date(2026, 9, 28), 10)  # 100,000 of late September cost
        outcome = _run(conn, SEP, run_id="r2")
        assert outcome.journals == {"post": 0, "moved": 1, "park": 0}
        # Sep now: 300,000 / (300,000 + 600,000) -> 333,333.33 -> 333,333; 83,333 more than posted.
        assert _recognized(conn)[("FF1", SEP)] == 333_333
        assert _journal_lines(conn, "FF1")[2:] == [
            ("2026-09", 2, "planned", "US1-2026-10", "revenue", 0, 83_333),
            ("2026-09", 2, "planned", "US1-2026-10", "contract_asset", 83_333, 0),
        ]
        assert _run(conn, SEP, run_id="r3").journals == {"post": 0, "moved": 0, "park": 0}


def _unbalanced(conn: psycopg.Connection) -> None:
    with conn.transaction():  # the check runs at commit
        conn.execute(
            "INSERT INTO revenue.journal (idempotency_key, external_id, project_ref, legal_entity, period_month,"
            " currency, seq, inputs_hash, state, posting_period, debit_minor, credit_minor, run_id)"
            " VALUES ('k', 'e', 'P', 'LE-US1', '2026-09-01', 'USD', 1, 'h', 'planned', 'x', 10, 10, 'r')"
        )
        conn.execute(
            "INSERT INTO revenue.journal_line VALUES ('k', 1, '4000', 'revenue', 0, 10),"
            " ('k', 2, '1250', 'contract_asset', 9, 0)"
        )


def test_an_unbalanced_journal_is_refused_by_the_database(firm: str) -> None:
    with psycopg.connect(firm) as conn, pytest.raises(psycopg.errors.CheckViolation):
        _unbalanced(conn)


def test_forecast_actuals_equal_the_recognized_revenue_of_every_closed_month(firm: str) -> None:
    with psycopg.connect(firm) as conn:
        _run(conn, SEP)
        _run(conn, OCT)
        settings = load_forecast_settings()
        inputs = forecast_inputs.load_inputs(
            conn, as_of=date(2026, 11, 9), settings=settings, prior_snapshot_id=None
        )
        lines = model.compute(inputs, settings, "base").lines
        actual = lines[(lines.layer == "actual") & lines.month.isin([SEP, OCT])]
        forecast = {(r.project_ref, r.month): r.amount_minor for r in actual.itertuples()}
        assert forecast == _recognized(conn)
        # ... which is what the journals credit to revenue in those periods (the ERP's revenue).
        journaled = store.journal_revenue_by_posting_period(conn)
        assert forecast == {
            (ref, SEP if period.endswith("09") else OCT): amount
            for (ref, period), amount in journaled.items()
        }


def test_forecast_shows_a_moved_delta_where_the_erp_holds_it(firm: str) -> None:
    """A late September cost after September closed: the delta goes to October in the ERP, and
    the forecast's September and October are what the ERP holds; the months still add up."""
    with psycopg.connect(firm) as conn:
        _run(conn, SEP)
        _run(conn, OCT)
        with conn.transaction():
            period_row(conn, 9, closed=True)
            time_entry(conn, "5", "FF1", date(2026, 9, 28), 10)
        _run(conn, SEP, run_id="r2")  # +83,333 for September, planned in October
        _run(conn, OCT, run_id="r2")  # October: 555,556 - 333,333 = 222,223, 27,777 less than planned
        journaled = store.journal_revenue_by_posting_period(conn)
        assert (journaled[("FF1", "US1-2026-09")], journaled[("FF1", "US1-2026-10")]) == (
            250_000,
            250_000 + 83_333 - 27_777,
        )
        settings = load_forecast_settings()
        inputs = forecast_inputs.load_inputs(
            conn, as_of=date(2026, 11, 9), settings=settings, prior_snapshot_id=None
        )
        result = model.compute(inputs, settings, "base")
        lines = result.lines
        ff = lines[(lines.project_ref == "FF1") & (lines.layer == "actual")].set_index("month")[
            "amount_minor"
        ]
        assert (ff[SEP], ff[OCT]) == (250_000, 305_556)  # the ERP's months, not the recomputed ones
        cum = result.balances.set_index("project_ref").loc["FF1", "cum_revenue_minor"]
        assert ff.sum() == cum  # November takes the rest: totals still tie


def test_an_empty_ods_recognizes_nothing(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        outcome = _run(conn, OCT)
    assert outcome.as_dict()["contracts"] == 0 and outcome.journals == {"post": 0, "moved": 0, "park": 0}


def test_no_known_period_parks_the_journal_for_finance(firm: str) -> None:
    with psycopg.connect(firm) as conn:
        with conn.transaction():
            conn.execute("DELETE FROM master.erp_record WHERE record_type = 'accountingperiod'")
        outcome = _run(conn, SEP)
        assert outcome.journals == {"post": 0, "moved": 0, "park": 3}
        items = conn.execute(
            "SELECT kind, domain, record_type, reason_code, detail->>'project_ref' FROM exceptions.item"
            " ORDER BY 5"
        ).fetchall()
        assert items == [
            ("parked", "revenue", "journalentry", "PERIOD_UNKNOWN", ref) for ref in ("FF1", "RET1", "TM1")
        ]
        # A parked journal counts as planned: the recompute parks nothing new.
        assert _run(conn, SEP, run_id="r2").journals == {"post": 0, "moved": 0, "park": 0}
        assert conn.execute("SELECT count(*) FROM revenue.journal WHERE state = 'parked'").fetchone() == (3,)
