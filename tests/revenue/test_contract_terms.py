"""``revenue.source.contract_terms``: the contract value and terms each project is recognized with."""

from __future__ import annotations

from datetime import date

import psycopg

from psa_erp_sync.revenue import source
from psa_erp_sync.revenue.frames import ContractTerms
from psa_erp_sync.revenue.recognition import ChangeOrder, month_index


def _project(conn: psycopg.Connection, ref: str, kind: str, fee: int | None, budget: int | None) -> None:
    conn.execute(
        "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type, is_active,"
        " starts_on, ends_on, fee_minor, budget_minor) VALUES (%s, 'Strategy', 'LE-US1', 'USD', %s, true,"
        " '2026-01-01', '2026-12-31', %s, %s)",
        (ref, kind, fee, budget),
    )


def _opportunity(conn: psycopg.Connection, opp: str, project: str | None, amount: int, *, won: bool) -> None:
    conn.execute(
        "INSERT INTO forecast.src_opportunity (opportunity_id, stage, amount_minor, currency, duration_months,"
        " legal_entity, practice, project_ref, is_closed, is_won) VALUES (%s, 'Closed', %s, 'USD', 6, 'LE-US1',"
        " 'Strategy', %s, %s, %s)",
        (opp, amount, project, won, won),
    )


def test_won_opportunity_first_by_id_then_fee_then_budget(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        _project(conn, "FF1", "fixed_fee", 500, None)
        _project(conn, "FF2", "fixed_fee", 700, None)
        _project(conn, "TM1", "time_and_materials", None, 900)
        _project(conn, "TM2", "time_and_materials", None, None)
        # FF1 has two won opportunities: the first by id in text order ('10' < '9') counts.
        _opportunity(conn, "9", "FF1", 9_000, won=True)
        _opportunity(conn, "10", "FF1", 10_000, won=True)
        _opportunity(conn, "11", "FF1", 11_000, won=False)  # lost: never the value
        _opportunity(conn, "12", "FF2", 12_000, won=False)  # FF2 falls back to its fee
        _opportunity(conn, "13", None, 13_000, won=True)  # won, no project yet
        conn.execute(
            "INSERT INTO forecast.src_change_order (change_order_id, opportunity_id, amount_delta_minor, currency,"
            " status, effective_date) VALUES ('c1', '10', 250, 'USD', 'approved', '2026-03-05'),"
            " ('c2', '10', 999, 'USD', 'proposed', '2026-04-01'), ('c3', '9', -50, 'USD', 'approved', NULL)"
        )
        terms = source.contract_terms(conn)

    dates = {"starts_on": date(2026, 1, 1), "ends_on": date(2026, 12, 31)}
    assert terms == {
        "FF1": ContractTerms(
            10_000, (ChangeOrder(-50, 0), ChangeOrder(250, month_index(date(2026, 3, 5)))), **dates
        ),
        "FF2": ContractTerms(700, (), **dates),
        "TM1": ContractTerms(900, (), **dates),
        "TM2": ContractTerms(None, (), **dates),
    }
