"""The close report on a hand-built month (``tests/reconcile/close_seed.py``) in real PostgreSQL:
each figure to the cent, both currencies, and a mismatch naming the first differing records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from psa_erp_sync.reconcile import close_html
from psa_erp_sync.reconcile import close_report as cr
from psa_erp_sync.reconcile.control_totals import ControlTotalMismatch
from tests.reconcile.close_seed import ENTITY, JOURNAL, PERIOD, FakeErp, erp_rows, seed_month

pytestmark = pytest.mark.integration

AS_OF = datetime(2026, 12, 1, 5, tzinfo=UTC)


def _report(dsn: str, erp: FakeErp | None = None) -> cr.CloseReport:
    with psycopg.connect(dsn) as conn:
        return cr.compute(
            conn,
            erp or FakeErp(erp_rows()),
            legal_entity=ENTITY,
            period=PERIOD,
            functional_currency="EUR",
            run_id="r1",
            as_of=AS_OF,
        )


def _area(report: cr.CloseReport, area: str, currency: str) -> cr.Reconciliation:
    return next(r for r in report.reconciliation if r.area == area and r.currency == currency)


def test_figures_to_the_cent(clean_ods: str) -> None:
    seed_month(clean_ods)
    report = _report(clean_ods)
    by_currency = {c.currency: c for c in report.currencies}
    usd, eur = by_currency["USD"], by_currency["EUR"]
    assert (usd.revenue_recognized_minor, usd.billed_minor) == (30000, 50000)  # 62500 - 12500 credited
    assert (usd.invoiced_minor, usd.credited_minor) == (62500, 12500)
    assert (eur.invoiced_minor, eur.credited_minor) == (0, 0)
    assert (usd.wip_opening_minor, usd.wip_closing_minor, usd.wip_movement_minor) == (20000, 0, -20000)
    assert (usd.deferred_opening_minor, usd.deferred_closing_minor, usd.deferred_movement_minor) == (
        0,
        5000,
        5000,
    )
    assert (usd.unbilled_minor, usd.leakage_count, usd.leakage_minor) == (10000, 1, 7000)
    assert (eur.revenue_recognized_minor, eur.billed_minor, eur.wip_closing_minor) == (15000, 0, 15000)
    assert report.postings == {
        "creditmemo": {"confirmed": 1, "parked": 0, "rejected": 0, "pending": 0},
        "expensereport": {"confirmed": 1, "parked": 0, "rejected": 0, "pending": 0},
        "invoice": {"confirmed": 1, "parked": 0, "rejected": 0, "pending": 0},
        "journalentry": {"confirmed": 1, "parked": 0, "rejected": 0, "pending": 0},
        "timebill": {"confirmed": 2, "parked": 1, "rejected": 0, "pending": 0, "unplanned": 1},
    }
    assert report.open_exceptions == {"billing": 1, "finance-integration": 2}
    assert report.reconciled, [r for r in report.mismatches()]


def test_reconciliation_in_both_currencies(clean_ods: str) -> None:
    seed_month(clean_ods)
    report = _report(clean_ods)
    assert _area(report, "time", "USD").sides == {"psa": 12500, "ledger": 12500, "erp": 12500}
    assert _area(report, "time", "EUR").sides == {"psa": 10000, "ledger": 10000, "erp": 10000}
    # 12500 USD at 0.9234 = 11542.5 -> 11542 EUR (half-even), plus 10000 EUR
    assert _area(report, "time_functional", "EUR").sides == {"psa": 21542, "erp": 21542}
    assert _area(report, "expenses", "EUR").sides == {"psa": 4550, "ledger": 4550, "erp": 4550}
    assert _area(report, "invoices", "USD").sides == {"events": 50000, "document": 50000, "erp": 50000}
    assert _area(report, "journals", "USD").sides == {"journal": 30000, "ledger": 30000, "erp": 30000}
    headline = cr.headline(report)
    assert headline["reconciled"] is True
    assert headline["currencies"]["USD"]["billed"] == "500.00"
    assert headline["currencies"]["USD"]["invoiced"] == "625.00"
    assert headline["currencies"]["USD"]["credited"] == "125.00"
    assert headline["currencies"]["USD"]["leakage"] == "70.00"
    assert headline["postings"]["unplanned"] == 1


def test_foreign_currency_invoices_reconcile_in_the_functional_currency(clean_ods: str) -> None:
    """USD documents of the EUR entity carry their functional total at the ERP's rate; the ERP's
    records are converted at the rate they were booked with (``exchangeRate`` as read back)."""
    seed_month(clean_ods)
    with psycopg.connect(clean_ods) as conn:
        conn.execute(
            "UPDATE billing.document SET functional_currency = 'EUR', fx_rate = 0.92, fx_rate_date = '2026-11-01',"
            " functional_total_minor = round(total_minor * 0.92)"
        )  # 62500 -> 57500, 12500 -> 11500
        conn.execute('UPDATE billing.erp_invoice SET body = \'{"exchangerate": "0.92"}\'::jsonb')
    report = _report(clean_ods)
    assert _area(report, "invoices_functional", "EUR").sides == {"document": 46000, "erp": 46000}
    assert report.reconciled, report.mismatches()

    with psycopg.connect(clean_ods) as conn:  # the ERP booked inv-1 at another rate
        conn.execute(
            "UPDATE billing.erp_invoice SET body = '{\"exchangerate\": \"0.93\"}'::jsonb WHERE external_id = 'inv-1'"
        )
    report = _report(clean_ods)
    assert not report.reconciled
    assert _area(report, "invoices_functional", "EUR").first_differences == [
        "inv-1: document 57500 EUR, erp 58125 EUR (minor units)"
    ]
    assert _area(report, "invoices", "USD").differing == 0  # the transaction currency still agrees


def test_a_mismatch_names_the_first_differing_records(clean_ods: str) -> None:
    seed_month(clean_ods)
    rows = erp_rows()
    rows["timebill"][0]["exchangerate"] = "0.95"  # the ERP booked psa-te-201 at another rate
    rows["timebill"].append(  # and holds a timebill of ours for this entity and month the ODS never had
        {
            "externalid": "psa-te-999",
            "trandate": "2026-11-09",
            "subsidiary": ENTITY,
            "currency": "EUR",
            "exchangerate": "1",
            "hours": "1.00",
            "rate": "10.00",
        }
    )
    with psycopg.connect(clean_ods) as conn:
        conn.execute("UPDATE billing.erp_invoice SET total_minor = 62400 WHERE external_id = 'inv-1'")
    report = _report(clean_ods, FakeErp(rows))
    assert not report.reconciled
    assert _area(report, "invoices", "USD").first_differences == [
        "inv-1: events 62500 USD, document 62500 USD, erp 62400 USD (minor units)"
    ]
    assert _area(report, "time", "EUR").first_differences == [
        "psa-te-999: psa nothing, ledger nothing, erp 1000 EUR (minor units)"
    ]
    assert _area(report, "time_functional", "EUR").first_differences == [
        "psa-te-201: psa 11542 EUR, erp 11875 EUR (minor units)",
        "psa-te-999: psa nothing, erp 1000 EUR (minor units)",
    ]
    with pytest.raises(ControlTotalMismatch) as failure:
        cr.check([report])
    message = str(failure.value)
    assert message.startswith(
        "close report does not reconcile: LE-EU1 2026-11 time EUR: psa 10000, ledger 10000, erp 11000; 1 differing"
    )
    assert "inv-1: events 62500 USD, document 62500 USD, erp 62400 USD" in message
    assert "psa-te-201: psa 11542 EUR, erp 11875 EUR" in message


def test_a_journal_missing_in_the_erp_is_named(clean_ods: str) -> None:
    seed_month(clean_ods)
    with psycopg.connect(clean_ods) as conn:
        conn.execute("DELETE FROM billing.erp_journal")
    report = _report(clean_ods)
    assert _area(report, "journals", "USD").first_differences == [
        f"{JOURNAL}: journal 30000 USD, ledger 30000 USD, erp nothing (minor units)"
    ]


def test_an_unapproved_entry_still_in_the_erp_is_named(clean_ods: str) -> None:
    seed_month(clean_ods)
    with psycopg.connect(clean_ods) as conn:
        conn.execute("UPDATE canonical.time_entry SET approved = false WHERE source_id = '202'")
    report = _report(clean_ods)
    assert _area(report, "time", "EUR").first_differences == [
        "psa-te-202: psa nothing, ledger 10000 EUR, erp 10000 EUR (minor units)"
    ]


def test_the_step_stores_writes_and_fails(clean_ods: str, tmp_path: Path) -> None:
    from types import SimpleNamespace

    seed_month(clean_ods)
    config = SimpleNamespace(
        legal_entities=SimpleNamespace(legal_entities={ENTITY: SimpleNamespace(currency="EUR")})
    )
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        result = close_html.close_report_step(
            conn, FakeErp(erp_rows()), config=config, run_id="r1", as_of=AS_OF, output_dir=str(tmp_path)
        )
        again = close_html.close_report_step(
            conn, FakeErp(erp_rows()), config=config, run_id="r1", as_of=AS_OF, output_dir=str(tmp_path)
        )
        assert result["period"] == PERIOD and again == result
        assert conn.execute("SELECT count(*), bool_and(reconciled) FROM close.report").fetchone() == (1, True)
        assert cr.latest_headlines(conn, PERIOD) == result["headlines"]
        with pytest.raises(psycopg.errors.RaiseException, match="immutable"):
            conn.execute("UPDATE close.report SET reconciled = false")
        page = (tmp_path / "close_LE-EU1_2026-11.html").read_text()
        assert "<svg" in page and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "500.00" in page  # billed USD, formatted from the integers
        assert "625.00" in page and "125.00" in page and "credited" in page  # invoiced, credit memos
        data = json.loads((tmp_path / "close_LE-EU1_2026-11.json").read_text())
        assert data["currencies"][1]["billed_minor"] == 50000
        assert (data["currencies"][1]["invoiced_minor"], data["currencies"][1]["credited_minor"]) == (
            62500,
            12500,
        )
        conn.execute("DELETE FROM billing.erp_journal")
        with pytest.raises(ControlTotalMismatch, match=f"journals USD.*{JOURNAL}: journal 30000 USD"):
            close_html.close_report_step(
                conn, FakeErp(erp_rows()), config=config, run_id="r1", as_of=AS_OF, output_dir=str(tmp_path)
            )
        stored = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT reconciled) FROM close.report"
        ).fetchone()
        assert stored == (2, 1)  # the failing report is stored beside the first
