"""Foreign-currency work end to end: a EUR legal entity serving a USD customer in USD (and a JPY one).

Real path: Harvest payloads staged in a real PostgreSQL ODS, ``validate_run`` with the ERP's rates
read into ``master.currency_rate`` by ``masterdata.fx.sync_currency_rates``, the planner and engine
(``post_record_type``) against the ERP simulator over loopback, and the product's reconciliation
(``reconcile_erp``) in both currencies. The EUR entity LE-DE1 is added to a copy of the repository's
config (config/legal_entities.yaml holds no EUR entity), and routed to NetSuite in that copy's
erp_routing.yaml (a legal entity without a route is refused when the routing file is loaded).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

DE = "LE-DE1"
USD_PROJECT, JPY_PROJECT = 40, 50
AS_OF = datetime(2026, 11, 20, 12, tzinfo=UTC)
ERP_SEED: dict[str, list[dict[str, Any]]] = {
    "subsidiaries": [
        {
            "external_id": DE,
            "name": "Northwind Beratung GmbH",
            "country": "DE",
            "currency": "EUR",
            "is_inactive": False,
        },
    ],
    "currencies": [{"symbol": s, "name": s} for s in ("USD", "EUR", "JPY")],
    "employees": [{"external_id": "psa-user-3", "subsidiary": DE, "is_inactive": False}],
    "customers": [
        {
            "external_id": "psa-client-3",
            "company_name": "Acme Corp.",
            "subsidiary": DE,
            "currency": "USD",
            "is_inactive": False,
        },
        {
            "external_id": "psa-client-4",
            "company_name": "Kaisha KK",
            "subsidiary": DE,
            "currency": "JPY",
            "is_inactive": False,
        },
    ],
    "jobs": [
        {
            "external_id": f"psa-project-{p}",
            "name": f"Project {p}",
            "customer": f"psa-client-{c}",
            "subsidiary": DE,
            "currency": cur,
            "billing_type": "time_and_materials",
            "contract_value": "100000.00",
            "is_inactive": False,
        }
        for p, c, cur in ((USD_PROJECT, 3, "USD"), (JPY_PROJECT, 4, "JPY"))
    ],
    "accounting_periods": [
        {
            "external_id": f"{DE}-2026-{m}",
            "subsidiary": DE,
            "period_name": f"2026-{m}",
            "start_date": f"2026-{m}-01",
            "end_date": f"2026-{m}-{d}",
            "closed": False,
            "all_locked": False,
            "ar_locked": False,
            "ap_locked": False,
        }
        for m, d in (("10", "31"), ("11", "30"), ("12", "31"))
    ],
}
# 1 USD = 0.9234567891 EUR from 2026-11-01; 1 JPY = 0.0061 EUR from 2026-11-01
RATES = {"USD": Decimal("0.9234567891"), "JPY": Decimal("0.0061")}


def _entry(sid: int, project: int, hours: str, rate: str, day: str = "2026-11-02") -> dict[str, Any]:
    return {
        "id": sid,
        "spent_date": day,
        "user": {"id": 3, "name": "x"},
        "project": {"id": project, "name": "p"},
        "task": {"id": 10, "name": "t"},
        "hours": float(hours),
        "notes": f"n{sid}",
        "is_locked": True,
        "is_closed": True,
        "is_billed": False,
        "billable": True,
        "billable_rate": float(rate),
        "created_at": "2026-11-02T10:00:00Z",
        "updated_at": "2026-11-03T10:00:00Z",
    }


def _expense(sid: int, total: str) -> dict[str, Any]:
    return {
        "id": sid,
        "spent_date": "2026-11-04",
        "user": {"id": 3, "name": "x"},
        "project": {"id": USD_PROJECT, "name": "p"},
        "expense_category": {"id": 3, "name": "Hotel"},
        "total_cost": float(total),
        "billable": True,
        "is_closed": True,
        "is_locked": False,
        "is_billed": False,
        "created_at": "2026-11-04T10:00:00Z",
        "updated_at": "2026-11-04T10:00:00Z",
    }


ENTRIES = [
    _entry(301, USD_PROJECT, "7.5", "133.33"),
    _entry(302, USD_PROJECT, "1.25", "99.99"),
    _entry(303, JPY_PROJECT, "7.5", "15000"),
]
EXPENSES = [_expense(401, "212.45")]


DE_ENTITY = {
    "country": "DE",
    "currency": "EUR",
    "timezone": "Europe/Berlin",
    "close_calendar": "DE",
    "closed_period_policy": "post_to_first_open",
}


def _config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The repository's config with LE-DE1 added and routed (to NetSuite, as every entity)."""
    from psa_erp_sync.config import load_config
    from tests.routed_config import route_to

    config_dir = route_to(monkeypatch, tmp_path / "config", "netsuite", extra_entities={DE: DE_ENTITY})
    with (config_dir / "close_calendars.yaml").open("a", encoding="utf-8") as calendars:
        calendars.write(
            "  DE:\n    holidays_country: DE\n    close_window: {start_business_day: -2, end_business_day: 3}\n"
        )
    return load_config(config_dir)


class Firm:
    """One test's ODS, ERP simulator and config."""

    def __init__(self, dsn: str, erp: RunningSimulator, config: Any) -> None:
        self.dsn, self.erp, self.config = dsn, erp, config
        erp.admin("POST", "/seed", json=copy.deepcopy(ERP_SEED))
        with psycopg.connect(dsn, autocommit=True) as conn:  # master data outlives clean_ods
            conn.execute("TRUNCATE master.currency_rate")

    def client(self) -> Any:
        from psa_erp_sync.clients.erp import NetSuiteClient

        return NetSuiteClient(base_url=self.erp.base_url, account_id="A", token="t", timeout=5)

    def add_rate(self, currency: str, rate: Decimal, day: str = "2026-11-01") -> None:
        body = {
            "baseCurrency": {"refName": "EUR"},
            "transactionCurrency": {"refName": currency},
            "exchangeRate": str(rate),
            "effectiveDate": day,
        }
        with self.client() as erp:
            erp.upsert("currencyrate", f"{currency}-EUR-{day}", body)

    def stage(self, run_key: str) -> None:
        from psa_erp_sync.ods import staging

        with psycopg.connect(self.dsn) as conn:
            staging.stage_pages(
                conn, [ENTRIES], run_key=run_key, source_system="psa", endpoint="/v2/time_entries"
            )
            staging.stage_pages(
                conn, [EXPENSES], run_key=run_key, source_system="psa", endpoint="/v2/expenses"
            )

    def validate(self, run_key: str) -> dict[str, Any]:
        """Read the ERP's rates into the ODS (as master_data_sync does), then validate both kinds."""
        from psa_erp_sync.masterdata.fx import sync_currency_rates
        from psa_erp_sync.validation import time_expense as validation
        from psa_erp_sync.validation.fx import RateBook
        from psa_erp_sync.validation.time_expense import ProjectRef, PsaReference

        out = {}
        with psycopg.connect(self.dsn) as conn, self.client() as erp:
            sync_currency_rates(conn, erp)
            ref = PsaReference(
                projects={
                    USD_PROJECT: ProjectRef(USD_PROJECT, True, DE, "USD"),
                    JPY_PROJECT: ProjectRef(JPY_PROJECT, True, DE, "JPY"),
                },
                users={3: True},
                task_assignments=frozenset({(USD_PROJECT, 10), (JPY_PROJECT, 10)}),
                expense_categories=frozenset({3}),
                fx_rates=RateBook.from_ods(conn),
            )
            for kind in ("time_entry", "expense_entry"):
                with conn.transaction():
                    result = validation.validate_run(
                        conn,
                        kind=kind,
                        run_key=run_key,
                        ref=ref,
                        config=self.config,
                        as_of=AS_OF,
                        dag_run_id=run_key,
                    )
                result.check()
                out[kind] = result.as_dict()
        return out

    def post(self, record_type: str, run_id: str) -> Any:
        from psa_erp_sync.posting.engine import EngineSettings
        from psa_erp_sync.posting.service import post_record_type

        with self.client() as erp:
            return post_record_type(
                dsn=self.dsn,
                client=erp,
                record_type=record_type,
                config=self.config,
                settings=EngineSettings(batch_size=10, max_concurrency=2, progress_every_s=3600),
                run_id=run_id,
            )

    def reconcile(self, run_id: str) -> dict[str, Any]:
        from psa_erp_sync.reconcile.time_expense import reconcile_erp

        functional = {name: le.currency for name, le in self.config.legal_entities.legal_entities.items()}
        with psycopg.connect(self.dsn) as conn, self.client() as erp:
            return reconcile_erp(conn, erp, dag_id="fx", run_id=run_id, functional_currency=functional)

    def forecast_actuals(self) -> dict[str, int]:
        """November revenue per project in the reporting currency, as the forecast consolidates it."""
        from psa_erp_sync.forecast import inputs, model
        from psa_erp_sync.forecast.settings import load_forecast_settings

        settings = load_forecast_settings()
        with psycopg.connect(self.dsn) as conn:
            for project, currency in ((USD_PROJECT, "USD"), (JPY_PROJECT, "JPY")):
                conn.execute(
                    "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
                    " is_active) VALUES (%s, 'Data', %s, %s, 'time_and_materials', true)",
                    (str(project), DE, currency),
                )
            conn.execute("INSERT INTO forecast.src_person VALUES ('3', %s, 'EUR', true, 144000, 5000)", (DE,))
            loaded = inputs.load_inputs(conn, as_of=AS_OF.date(), settings=settings, prior_snapshot_id=None)
        november = model.month_index(AS_OF.date())
        actuals = loaded.actuals[loaded.actuals["month"] == november]
        revenue = {str(r.project_ref): int(r.revenue_minor) for r in actuals.itertuples()}
        # In the reporting currency: USD as it is; JPY at the forecast's 0.0067 (112500 JPY = 753.75 USD).
        assert model.to_reporting(revenue[str(JPY_PROJECT)], "JPY", settings) == 75375
        return revenue

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute(sql, params).fetchall()


@pytest.fixture
def firm(clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Firm:
    return Firm(clean_ods, erp_sim, _config(monkeypatch, tmp_path))


def test_fx_work_is_quarantined_without_a_rate_then_posted_and_reconciled_in_both_currencies(
    firm: Firm,
) -> None:
    from psa_erp_sync.reconcile.control_totals import ControlTotalMismatch

    # No ERP rate yet: every foreign-currency entry is quarantined FX_RATE_MISSING, naming the pair.
    firm.stage("fx/run-1")
    first = firm.validate("fx/run-1")
    assert first["time_entry"]["by_reason"] == {"FX_RATE_MISSING": 3}
    assert first["expense_entry"]["by_reason"] == {"FX_RATE_MISSING": 1}
    items = firm.rows(
        "SELECT source_id, detail FROM exceptions.item WHERE reason_code = 'FX_RATE_MISSING' AND status = 'open'"
        " ORDER BY source_id"
    )
    assert [i[0] for i in items] == ["301", "302", "303", "401"]
    assert items[0][1] == {
        "transaction_currency": "USD",
        "functional_currency": "EUR",
        "spent_date": "2026-11-02",
    }
    firm.post("timebill", "post-0")
    assert firm.erp.admin("GET", "/records/timebill", params={"limit": 100})["items"] == []

    # Treasury enters the rates in the ERP; the next run's sweep reads the unchanged entries again
    # (a new run key for the same versions) and validates them with the rates just synced.
    for currency, rate in RATES.items():
        firm.add_rate(currency, rate)
    firm.stage("fx/run-2")
    second = firm.validate("fx/run-2")
    assert second["time_entry"]["valid"] == 3 and second["expense_entry"]["valid"] == 1
    assert firm.rows(
        "SELECT count(*) FROM exceptions.item WHERE reason_code = 'FX_RATE_MISSING' AND status = 'open'"
    ) == [(0,)]

    # Both amounts in the ODS: transaction and functional (half-even once), with the rate and its date.
    canonical = {
        r[0]: r[1:]
        for r in firm.rows(
            "SELECT source_id, amount_minor, currency, functional_amount_minor, functional_currency, fx_rate, fx_rate_date::text,"
            " fx_rate_source FROM canonical.time_entry UNION ALL SELECT source_id, amount_minor, currency,"
            " functional_amount_minor, functional_currency, fx_rate, fx_rate_date::text, fx_rate_source FROM canonical.expense_entry"
        )
    }
    # 7.50 h x 133.33 USD = 999.975 -> 999.98 USD; x 0.9234567891 = 923.4383... -> 923.44 EUR
    assert canonical["301"][:4] == (99998, "USD", 92344, "EUR")
    assert canonical["301"][4:] == (RATES["USD"], "2026-11-01", "erp:currencyrate")
    # 1.25 h x 99.99 = 124.9875 -> 124.99 USD; x rate = 115.4238... -> 115.42 EUR
    assert canonical["302"][:4] == (12499, "USD", 11542, "EUR")
    # JPY has no minor unit: 7.5 h x 15000 JPY = 112500 JPY; x 0.0061 = 686.25 EUR
    assert canonical["303"][:4] == (112500, "JPY", 68625, "EUR")
    # 212.45 USD x rate = 196.1904... -> 196.19 EUR
    assert canonical["401"][:4] == (21245, "USD", 19619, "EUR")

    # Posted in the transaction currency with the ERP's rate; the ledger keeps both amounts.
    firm.post("timebill", "post-1")
    firm.post("expensereport", "post-1")
    timebills = {
        i["externalId"]: i for i in firm.erp.admin("GET", "/records/timebill", params={"limit": 100})["items"]
    }
    assert timebills["psa-te-301"]["currency"] == {"refName": "USD"}
    assert Decimal(timebills["psa-te-301"]["exchangeRate"]) == RATES["USD"]
    assert Decimal(timebills["psa-te-303"]["exchangeRate"]) == RATES["JPY"]
    expense = firm.erp.admin("GET", "/records/expensereport", params={"limit": 100})["items"][0]
    assert (expense["amount"], Decimal(expense["exchangeRate"])) == ("212.45", RATES["USD"])
    ledger = dict(
        (r[0], r[1:])
        for r in firm.rows(
            "SELECT source_id, state, amount_minor, currency, functional_amount_minor, functional_currency, fx_rate"
            " FROM ledger.posting"
        )
    )
    assert ledger["301"] == ("confirmed", 99998, "USD", 92344, "EUR", RATES["USD"])
    assert ledger["303"] == ("confirmed", 112500, "JPY", 68625, "EUR", RATES["JPY"])

    # The forecast: posted FX work is a project's actuals in its (transaction) currency, consolidated
    # into the reporting currency by the forecast's rates (config/forecast.yaml), as every project is.
    revenue = firm.forecast_actuals()
    assert revenue == {str(USD_PROJECT): 99998 + 12499 + 21245, str(JPY_PROJECT): 112500}

    # Reconciled in both currencies, per legal entity, period and currency.
    report = firm.reconcile("rec-1")
    groups = report["timebill"]["both_currencies"]
    assert groups["differing"] == [] and groups["groups"] == 2  # (LE-DE1, 2026-11, USD) and (.., JPY)
    # Control totals in both currencies: transaction per currency, functional per functional currency.
    stages = dict(
        firm.rows(
            "SELECT stage, amounts FROM audit.control_total WHERE run_id = 'rec-1' AND record_type = 'timebill'"
        )
    )
    assert stages["erp_readback"] == {"JPY": "112500", "USD": str(99998 + 12499)}
    assert (
        stages["erp_readback_functional"]
        == stages["expected_in_erp_functional"]
        == {"EUR": str(92344 + 11542 + 68625)}
    )
    from psa_erp_sync.reconcile import control_totals as ct

    with psycopg.connect(firm.dsn) as conn:
        assert ct.canonical_functional(conn, "expense_entry").amounts == {"EUR": 19619}

    # Broken on purpose: the ERP's rate of one timebill changed (same transaction amount, so only
    # the functional amounts differ): the run fails naming the group and the record.
    body = {"exchangeRate": "0.95"}
    with firm.client() as erp:
        erp.upsert("timebill", "psa-te-302", body)
    with pytest.raises(ControlTotalMismatch) as failed:
        firm.reconcile("rec-2")
    message = str(failed.value)
    assert "timebill in both currencies: LE-DE1 2026-11 USD" in message, message
    assert (
        "psa-te-302: expected 12499 USD = 11542 EUR (minor units), ERP has 12499 USD = 11874 EUR (minor units)"
        in message
    ), message
    assert "psa-te-301" not in message, message
