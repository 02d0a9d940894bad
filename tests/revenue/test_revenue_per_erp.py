"""Revenue journals on every ERP the firm runs (issue 15): LE-UK1 moves from NetSuite to SAP on
2026-10-01, LE-US1 stays on NetSuite. Real PostgreSQL, the NetSuite and SAP simulators over loopback.

The firm of ``tests/revenue/conftest.py`` with TM1 (time and materials) and RET1 (retainer) moved
to LE-UK1: September's journals of both entities go to NetSuite, October's LE-UK1 journals to SAP
(placed by SAP's periods, routed by their posting date), LE-US1's to NetSuite. Each ERP holds what
the ledger says, to the cent, per journal and in control totals; a rerun sends nothing; a delta
journal (October recomputed after more delivered time) is one more SAP entry; a 5xx after SAP
committed a journal entry is resolved by reading back: exactly one document.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from psa_erp_sync.clients.erp import NetSuiteClient
from psa_erp_sync.clients.sap import S4HanaClient, journal_reference
from psa_erp_sync.config import load_config
from psa_erp_sync.forecast.settings import load_forecast_settings
from psa_erp_sync.posting.adapter import SapAdapter, SapMapping
from psa_erp_sync.posting.engine import EngineSettings
from psa_erp_sync.posting.periods import PeriodBook
from psa_erp_sync.reconcile import close_report, revenue_journals, sap_readback
from psa_erp_sync.revenue import service
from psa_erp_sync.revenue.posting import post_planned_journals
from psa_erp_sync.revenue.recognition import month_index
from psa_erp_sync.revenue.sap import revenue_entries
from tests.conftest import ROOT, RunningSimulator
from tests.revenue.conftest import seed_firm, time_entry
from tests.routed_config import routed_config_dir

pytestmark = pytest.mark.integration

UK, US, COMPANY = "LE-UK1", "LE-US1", "2010"
MONTHS = (9, 10, 11)


def _routing() -> dict[str, Any]:
    entities = yaml.safe_load((ROOT / "config" / "legal_entities.yaml").read_text())["legal_entities"]
    routes: dict[str, Any] = {e: {"effective": [{"erp": "netsuite"}]} for e in entities}
    routes[UK] = {
        "effective": [
            {"first_day": None, "last_day": "2026-09-30", "erp": "netsuite"},
            {
                "first_day": "2026-10-01",
                "last_day": None,
                "erp": "sap",
                "correction_policy": "reverse_and_repost",
            },
        ]
    }
    return {
        "version": 1,
        "erps": {"netsuite": {"connection": "erp_default"}, "sap": {"connection": "sap_default"}},
        "versions": [{"version": 1, "legal_entities": routes}],
    }


def _month_end(month: int) -> date:
    return date(2026, month + 1, 1) - timedelta(days=1)


def _seed(dsn: str, erp: RunningSimulator, sap: RunningSimulator) -> None:
    seed_firm(dsn)
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "UPDATE forecast.src_project SET legal_entity = %s WHERE project_ref IN ('TM1', 'RET1')", (UK,)
        )
        for month in MONTHS:  # NetSuite's LE-UK1 periods, as master_data_sync stores them
            conn.execute(
                "INSERT INTO master.erp_record (record_type, external_id, internal_id, version_hash, subsidiary,"
                " is_inactive, body) VALUES ('accountingperiod', %s, %s, 'v', %s, false, %s)",
                (
                    f"UK1-2026-{month:02d}",
                    f"uk{month}",
                    UK,
                    psycopg.types.json.Jsonb(
                        {
                            "externalid": f"UK1-2026-{month:02d}",
                            "subsidiary": UK,
                            "startdate": f"2026-{month:02d}-01",
                            "enddate": _month_end(month).isoformat(),
                            "closed": "F",
                            "isquarter": "F",
                            "isyear": "F",
                        }
                    ),
                ),
            )
    erp.admin(
        "POST",
        "/seed",
        json={
            "subsidiaries": [
                {"external_id": e, "name": e, "country": "US", "currency": "USD", "is_inactive": False}
                for e in (US, UK)
            ],
            "currencies": [{"symbol": "USD", "name": "US Dollar"}],
            "accounting_periods": [
                {
                    "external_id": f"{prefix}-2026-{m:02d}",
                    "subsidiary": entity,
                    "period_name": f"2026-{m:02d}",
                    "start_date": date(2026, m, 1).isoformat(),
                    "end_date": _month_end(m).isoformat(),
                }
                for entity, prefix in ((US, "US1"), (UK, "UK1"))
                for m in MONTHS
            ],
        },
    )
    sap.admin(
        "POST",
        "/seed",
        json={
            "company_codes": [{"company_code": COMPANY, "currency": "GBP"}],
            "posting_periods": [
                {"company_code": COMPANY, "fiscal_year": 2026, "period": m, "open": True}
                for m in range(1, 13)
            ],
        },
    )


@pytest.fixture
def two_erps(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[str, NetSuiteClient, SapAdapter]]:
    monkeypatch.setenv(
        "PSA_ERP_SYNC_CONFIG_DIR", str(routed_config_dir(tmp_path / "config", routing=_routing()))
    )
    _seed(clean_ods, erp_sim, sap_sim)
    mapping = SapMapping(company_codes={UK: COMPANY}, fiscal_years=(2026,))
    with (
        NetSuiteClient(base_url=erp_sim.base_url, account_id="A", token="t", timeout=10) as ns,
        S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret", timeout=10) as sap,
    ):
        yield clean_ods, ns, SapAdapter(sap, mapping)


def _recognize(dsn: str, sap: SapAdapter, *months: int) -> None:
    sap_periods = PeriodBook.from_rows(sap.read_periods())
    with psycopg.connect(dsn) as conn:
        for month in months:
            service.compute_and_store_period(
                conn,
                period=month_index(date(2026, month, 1)),
                run_id="rev",
                settings=load_forecast_settings(),
                config=load_config(),
                periods_by_erp={"sap": sap_periods},
            )
        conn.commit()


def _post(dsn: str, ns: NetSuiteClient, sap: SapAdapter, run_id: str) -> dict[str, Any]:
    return post_planned_journals(
        dsn=dsn,
        client=ns,
        adapters={"sap": sap},
        config=load_config(),
        run_id=run_id,
        settings=EngineSettings(batch_size=3, max_concurrency=2, progress_every_s=3600),
    )


def _ledger(dsn: str) -> list[tuple[str, str, str, str, date, int]]:
    with psycopg.connect(dsn) as conn:
        return [
            (str(k), str(x), str(e), str(t), date.fromisoformat(str(d)), int(a))
            for k, x, e, t, d, a in conn.execute(
                "SELECT idempotency_key, external_id, legal_entity, target_erp, payload->>'tranDate', amount_minor"
                " FROM ledger.posting_full WHERE record_type = 'journalentry' AND state IN ('confirmed', 'resolved')"
                " ORDER BY 2"
            )
        ]


def _sap_debits(sap: SapAdapter) -> dict[str, list[int]]:
    """SAP's revenue documents per reference: the debits of each (a duplicate shows as two)."""
    out: dict[str, list[int]] = {}
    for entry in revenue_entries(sap.client, [COMPANY]):
        assert entry.debit_minor == entry.credit_minor  # balanced
        out.setdefault(entry.reference, []).append(entry.debit_minor)
    return out


def _netsuite_debits(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {
            str(x): sum(int(Decimal(line["debit"]) * 100) for line in b["line"]["items"] if "debit" in line)
            for x, b in conn.execute(
                "SELECT external_id, body FROM sim_erp.record WHERE type = 'journalentry'"
            )
        }


def test_each_entity_s_journals_reach_the_erp_of_their_posting_date(
    two_erps: tuple[str, NetSuiteClient, SapAdapter], sap_sim: RunningSimulator
) -> None:
    dsn, ns, sap = two_erps
    _recognize(dsn, sap, 9, 10)
    first = _post(dsn, ns, sap, "post-1")
    rows = _ledger(dsn)
    assert first["planned"] == first["posted"] == len(rows) > 0
    assert (first["rejected"], first["still_pending"]) == (0, 0)
    to_sap = {r[0]: r for r in rows if r[3] == "sap"}
    to_ns = {r[1]: r for r in rows if r[3] == "netsuite"}
    # routed by posting date: LE-UK1 from October on to SAP, everything else to NetSuite
    assert {(r[2], r[4].month) for r in to_sap.values()} == {(UK, 10)}
    assert {(r[2], r[4].month) for r in to_ns.values()} == {(UK, 9), (US, 9), (US, 10)}
    assert first["by_erp"]["sap"]["posted"] == len(to_sap) and first["by_erp"]["netsuite"]["posted"] == len(
        to_ns
    )

    # each ERP holds its journals, balanced, to the cent
    assert _sap_debits(sap) == {journal_reference(k): [r[5]] for k, r in to_sap.items()}
    assert _netsuite_debits(dsn) == {x: r[5] for x, r in to_ns.items()}
    with psycopg.connect(dsn) as conn:
        results = revenue_journals.reconcile(conn, netsuite=ns, sap=(sap.client, [COMPANY]), run_id="rec")
        conn.commit()
        stages = dict(
            conn.execute(
                "SELECT stage, amounts FROM audit.control_total WHERE run_id = 'rec' AND record_type = 'journalentry'"
            ).fetchall()
        )
    revenue_journals.check(results)
    sap_total = sum(r[5] for r in to_sap.values())
    assert results["sap"].held.amounts == results["sap"].ledger.amounts == {"USD": sap_total}
    assert results["netsuite"].held.amounts == {"USD": sum(r[5] for r in to_ns.values())}
    assert stages["revenue_erp:sap"] == stages["revenue_ledger:sap"] == {"USD": str(sap_total)}
    # SAP's expense read-back (headers psa:<id>) never counts a revenue entry (headers rev:<key>)
    assert sap_readback.journals(sap.client, [COMPANY], sap.mapping.expense_account) == {}

    # the close report's journals of LE-UK1's October: SAP's read-back is its ERP side
    with psycopg.connect(dsn) as conn:
        _, keys = revenue_journals.ledger_side(conn, "sap")
        held = revenue_journals.sap_side(sap.client, [COMPANY], keys)
        october = close_report.reconcile_journals(conn, legal_entity=UK, period="2026-10", elsewhere=held)
        blind = close_report.reconcile_journals(conn, legal_entity=UK, period="2026-10")
    assert october and all(r.matched for r in october)
    assert not all(r.matched for r in blind)  # without SAP's read-back the report cannot say

    # a rerun plans and sends nothing
    docs = sap_sim.admin("GET", "/stats")["journal_entries"]
    again = _post(dsn, ns, sap, "post-2")
    assert (again["planned"], again["posted"], again["still_pending"]) == (0, 0, 0)
    assert sap_sim.admin("GET", "/stats")["journal_entries"] == docs

    # a delta: October recomputed after 30,000 more of TM1's time -> one more SAP entry
    with psycopg.connect(dsn) as conn:
        time_entry(conn, "5", "TM1", date(2026, 10, 20), 3, amount=30_000)
        conn.execute("UPDATE canonical.time_entry SET legal_entity = %s WHERE project_ref = 'TM1'", (UK,))
        conn.commit()
    _recognize(dsn, sap, 10)
    delta = _post(dsn, ns, sap, "post-3")
    assert (delta["planned"], delta["posted"], delta["by_erp"]["sap"]["posted"]) == (1, 1, 1)
    assert sap_sim.admin("GET", "/stats")["journal_entries"] == docs + 1
    revenue_by_tm1 = 0
    for doc in sap.client.journal_entries(COMPANY):
        for item in doc.to_Item.results if doc.to_Item else ():
            if item.DocumentItemText.startswith("rev-TM1-LE-UK1-202610") and item.GLAccount == "4000":
                sign = 1 if item.DebitCreditCode == "H" else -1
                revenue_by_tm1 += sign * int(Decimal(item.AmountInTransactionCurrency) * 100)
    assert revenue_by_tm1 == 100_000  # October's T&M revenue: 70,000 + 30,000, in two entries
    with psycopg.connect(dsn) as conn:
        revenue_journals.check(revenue_journals.reconcile(conn, netsuite=ns, sap=(sap.client, [COMPANY])))


def test_a_5xx_after_sap_committed_leaves_exactly_one_document(
    two_erps: tuple[str, NetSuiteClient, SapAdapter], sap_sim: RunningSimulator
) -> None:
    dsn, ns, sap = two_erps
    _recognize(dsn, sap, 10)
    sap_sim.admin(
        "POST",
        "/faults",
        json={
            "id": "5xx-after",
            "action": "status_after_commit",
            "status": 502,
            "method": "POST",
            "path_regex": "JournalEntryCollection$",
            "every_nth": 1,
            "max_hits": 2,
        },
    )
    outcome = _post(dsn, ns, sap, "post-1")
    hits = {r["id"]: r["hits"] for r in sap_sim.admin("GET", "/faults")["rules"]}
    assert hits["5xx-after"] == 2  # two entries were committed and answered 502
    assert (outcome["still_pending"], outcome["rejected"]) == (0, 0)
    to_sap = {r[0]: r for r in _ledger(dsn) if r[3] == "sap"}
    assert len(to_sap) >= 2
    assert _sap_debits(sap) == {journal_reference(k): [r[5]] for k, r in to_sap.items()}  # one each
    with psycopg.connect(dsn) as conn:
        revenue_journals.check(revenue_journals.reconcile(conn, sap=(sap.client, [COMPANY])))
    again = _post(dsn, ns, sap, "post-2")
    assert (again["posted"], again["still_pending"]) == (0, 0)
    assert _sap_debits(sap) == {journal_reference(k): [r[5]] for k, r in to_sap.items()}


def test_the_dag_s_steps_place_and_post_per_erp(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``recognize_revenue`` reads SAP's periods through the routed adapters, and
    ``JournalPostingOperator`` posts each journal through the connection of its route's ERP."""
    from datetime import UTC, datetime

    from psa_erp_sync.hooks.sap import SapHook
    from psa_erp_sync.operators.revenue import JournalPostingOperator
    from psa_erp_sync.revenue.steps import recognize_step
    from tests.two_erps import connect_two_erps

    connect_two_erps(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim, seed=False, routing=_routing())
    _seed(clean_ods, erp_sim, sap_sim)
    hook = SapHook("sap_default")
    with hook.get_client() as client, psycopg.connect(clean_ods) as conn:
        step = recognize_step(
            conn,
            run_id="rev",
            as_of=datetime(2026, 11, 3, tzinfo=UTC),
            params={"period": "2026-10", "periods_back": 1},
            config=load_config(),
            erp_adapters={"sap": hook.adapter(client)},
        )
        conn.commit()
    assert [p["period"] for p in step["periods"]] == ["2026-09", "2026-10"]
    with psycopg.connect(clean_ods) as conn:
        placed = conn.execute(
            "SELECT DISTINCT posting_period FROM revenue.journal WHERE legal_entity = %s AND period_month = '2026-10-01'",
            (UK,),
        ).fetchall()
    assert placed == [("LE-UK1-2026-10",)]  # SAP's period, not NetSuite's UK1-2026-10

    op = JournalPostingOperator(task_id="post_journals")
    outcome = op.execute({"ti": None, "run_id": "post"})  # type: ignore[arg-type]  # a minimal Context
    assert outcome["by_erp"]["sap"]["posted"] == 2  # TM1 and RET1's October, LE-UK1
    assert outcome["by_erp"]["netsuite"]["posted"] == outcome["posted"] - 2
    assert outcome["still_pending"] == 0
    assert sap_sim.admin("GET", "/stats")["journal_entries"] == 2

    # the DAG's reconcile_journals step: each ERP against the ledger, a cent off is named
    from psa_erp_sync.clients.erp import NetSuiteClient as _Ns
    from psa_erp_sync.posting.adapter import NetSuiteAdapter
    from psa_erp_sync.reconcile.control_totals import ControlTotalMismatch
    from psa_erp_sync.revenue.steps import reconcile_journals_step

    with (
        _Ns(base_url=erp_sim.base_url, account_id="A1", token="t") as ns,
        hook.get_client() as client,
        psycopg.connect(clean_ods) as conn,
    ):
        adapters = {"netsuite": NetSuiteAdapter(ns), "sap": hook.adapter(client)}
        totals = reconcile_journals_step(
            conn, run_id="rec", dag_id="revenue_recognition", erp_adapters=adapters
        )
        assert totals["sap"]["erp"] == totals["sap"]["ledger"] and totals["sap"]["ledger"]["count"] == 2
        assert totals["netsuite"]["erp"] == totals["netsuite"]["ledger"]
        conn.execute(
            "UPDATE ledger.posting SET amount_minor = amount_minor + 1 WHERE idempotency_key ="
            " (SELECT min(idempotency_key) FROM ledger.posting WHERE target_erp = 'sap' AND record_type = 'journalentry')"
        )
        conn.commit()
        with pytest.raises(ControlTotalMismatch, match=r"sap: rev-.*-LE-UK1-202610-USD-1: ledger"):
            reconcile_journals_step(conn, run_id="rec2", dag_id="revenue_recognition", erp_adapters=adapters)


def test_an_unresolved_ambiguous_entry_is_read_back_by_the_engine_not_resent(
    two_erps: tuple[str, NetSuiteClient, SapAdapter], sap_sim: RunningSimulator
) -> None:
    """SAP commits the first entry and answers 502; the client's own look-up fails too (503 on every
    read it tries), so the batch is ``ambiguous``: the engine reads it back by reference
    (``RevenueSapAdapter.read_back``) and resends only what SAP does not hold."""
    from psa_erp_sync.clients.http import RetryPolicy

    dsn, ns, adapter = two_erps
    _recognize(dsn, adapter, 10)
    retry = RetryPolicy(max_attempts=2, base_delay_s=0.01)
    faults = [
        {
            "id": "5xx-after",
            "action": "status_after_commit",
            "status": 502,
            "method": "POST",
            "path_regex": "JournalEntryCollection$",
            "max_hits": 1,
        },
        {
            "id": "reads-down",
            "action": "status",
            "status": 503,
            "method": "GET",
            "path_regex": "JournalEntryCollection$",
            "max_hits": retry.max_attempts,
        },
    ]
    sap_sim.admin("PUT", "/faults", json=faults)
    with S4HanaClient(
        base_url=sap_sim.base_url, user="PSA_COMM", password="secret", timeout=10, retry=retry
    ) as c:
        outcome = _post(dsn, ns, SapAdapter(c, adapter.mapping), "post-1")
    hits = {r["id"]: r["hits"] for r in sap_sim.admin("GET", "/faults")["rules"]}
    assert hits == {"5xx-after": 1, "reads-down": retry.max_attempts}
    assert (outcome["still_pending"], outcome["rejected"]) == (0, 0)
    assert outcome["by_erp"]["sap"]["ambiguous_resolved"] >= 1
    to_sap = {r[0]: r for r in _ledger(dsn) if r[3] == "sap"}
    assert len(to_sap) == 2
    assert _sap_debits(adapter) == {journal_reference(k): [r[5]] for k, r in to_sap.items()}  # one each
