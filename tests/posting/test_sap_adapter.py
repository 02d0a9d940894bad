"""The posting engine with the SAP adapter against the SAP simulator: each posting action and answer.

Ledger rows are written by hand in the planner's ERP-neutral shape (the planner is NetSuite's and
SAP's alike); the engine, the ledger and the exception queue are the real ones in PostgreSQL.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from psa_erp_sync.clients.erp import NetSuiteClient
from psa_erp_sync.clients.http import RetryPolicy
from psa_erp_sync.clients.sap import S4HanaClient, journal_reference
from psa_erp_sync.config import Config, load_config
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.adapter import (
    NetSuiteAdapter,
    SapAdapter,
    SapMapping,
    adapter_for,
    as_adapter,
)
from psa_erp_sync.posting.engine import EngineSettings, Outcome, PostingEngine
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

MAPPING = SapMapping(company_codes={"LE-US1": "1010", "LE-UK1": "2010"}, fiscal_years=(2026,))


@pytest.fixture
def sap(sap_sim: RunningSimulator) -> RunningSimulator:
    sap_sim.admin(
        "POST",
        "/seed",
        json={
            "company_codes": [
                {"company_code": "1010", "currency": "USD"},
                {"company_code": "2010", "currency": "GBP"},
            ],
            "work_agreements": [
                {"external_id": "psa-user-1", "company_code": c, "person_work_agreement": "50000001"}
                for c in ("1010", "2010")
            ],
            "posting_periods": [
                {"company_code": c, "fiscal_year": 2026, "period": m, "open": m >= 10}
                for c in ("1010", "2010")
                for m in range(1, 13)
            ],
        },
    )
    return sap_sim


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config()


def _client(sap: RunningSimulator) -> S4HanaClient:
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0)
    return S4HanaClient(
        base_url=sap.base_url, user="PSA_COMM", password="secret", retry=retry, sleep=lambda _: None
    )


def _time(
    n: int,
    *,
    version: str = "v1",
    action: ledger.Action = "post",
    seq: int = 0,
    hours: str = "1.50",
    day: str = "2026-10-05",
    entity: str = "LE-US1",
    user: str = "psa-user-1",
) -> ledger.Posting:
    key = ledger.idempotency_key("timebill", "psa", str(n), version, action, seq)
    period = f"{entity}-{day[:7]}"
    payload: dict[str, Any] = {
        "externalId": f"psa-te-{n}",
        "tranDate": day,
        "employee": {"externalId": user},
        "customer": {"externalId": "psa-project-7"},
        "subsidiary": {"externalId": entity},
        "currency": {"refName": "USD"},
        "isBillable": True,
        "memo": f"psa:{n} v:{version} key:{key[:16]}",
        "postingPeriod": {"externalId": period},
        "hours": hours,
        "rate": "100.00",
    }
    if action == "reverse":
        payload = {"externalId": f"psa-te-{n}", "reverses": payload}
    return ledger.Posting(
        key,
        "timebill",
        "psa",
        str(n),
        version,
        f"psa-te-{n}",
        action,
        "pending",
        payload,
        entity,
        period,
        int(Decimal(hours) * 10000),
        "USD",
    )


def _expense(n: int, *, action: ledger.Action = "post") -> ledger.Posting:
    key = ledger.idempotency_key("expensereport", "psa", str(n), "v1", action, 0)
    payload: dict[str, Any] = {
        "externalId": f"psa-ex-{n}",
        "tranDate": "2026-10-06",
        "employee": {"externalId": "psa-user-1"},
        "customer": {"externalId": "psa-project-7"},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "memo": f"psa:{n} v:v1 key:{key[:16]}",
        "postingPeriod": {"externalId": "LE-US1-2026-10"},
        "amount": "42.17",
        "category": "Travel",
    }
    if action == "reverse":
        payload = {"externalId": f"psa-ex-{n}", "reverses": payload}
    return ledger.Posting(
        key,
        "expensereport",
        "psa",
        str(n),
        "v1",
        f"psa-ex-{n}",
        action,
        "pending",
        payload,
        "LE-US1",
        "LE-US1-2026-10",
        4217,
        "USD",
    )


def _run(
    dsn: str,
    client: S4HanaClient,
    config: Config,
    postings: list[ledger.Posting],
    record_type: str = "timebill",
) -> Outcome:
    with psycopg.connect(dsn) as conn:
        ledger.insert_planned(conn, postings)
    return PostingEngine(
        dsn=dsn,
        client=SapAdapter(client, MAPPING),
        record_type=record_type,
        config=config,
        settings=EngineSettings(batch_size=10, max_concurrency=2, max_rounds=4),
        dag_run_id="sap-adapter",
        sleep=lambda _: None,
    ).run()


def _states(dsn: str, record_type: str = "timebill") -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return ledger.counts(conn, record_type)


def _live(sap: RunningSimulator) -> dict[str, dict[str, Any]]:
    """Live records by the PSA source id in their note."""
    out = {}
    for r in sap.admin("GET", "/timesheets")["items"]:
        if r["TimeSheetStatus"] in ("10", "20", "30", "40"):
            source = r["TimeSheetDataFields"]["TimeSheetNoteText"].split("] psa:")[1].split()[0]
            assert source not in out, f"two live records for {source}"
            out[source] = r
    return out


def test_post_adjust_through_a_successor_and_reverse(
    clean_ods: str, sap: RunningSimulator, config: Config
) -> None:
    with _client(sap) as client:
        outcome = _run(clean_ods, client, config, [_time(1), _time(2), _time(3, entity="LE-XX")])
        assert outcome.posted == 2 and outcome.rejected == 1
        assert outcome.rejected_by_code == {"COMPANY_CODE_UNMAPPED": 1}  # pre-flight: never sent
        live = _live(sap)
        assert set(live) == {"1", "2"}
        first = live["1"]
        assert first["TimeSheetDataFields"]["TimeSheetNoteText"].startswith(
            f"[psa:{_time(1).idempotency_key}] "
        )
        sap.admin("POST", f"/timesheets/{first['TimeSheetRecord']}/approve")
        # A new approved version of 1 (an approved record changes through a successor) and 2 reversed.
        outcome = _run(
            clean_ods,
            client,
            config,
            [_time(1, version="v2", action="adjust", seq=1, hours="2.25"), _time(2, action="reverse", seq=1)],
        )
        assert outcome.posted == 1 and outcome.reversed == 1
    live = _live(sap)
    assert set(live) == {"1"}
    successor = live["1"]
    assert successor["TimeSheetPredecessorRecord"] == first["TimeSheetRecord"]
    assert successor["TimeSheetDataFields"]["RecordedHours"] == "2.25"
    statuses = {r["TimeSheetRecord"]: r["TimeSheetStatus"] for r in sap.admin("GET", "/timesheets")["items"]}
    assert statuses[first["TimeSheetRecord"]] == "50"
    assert sorted(statuses.values()) == ["20", "50", "60"]  # 2 cancelled, kept by SAP
    assert _states(clean_ods) == {"confirmed": 4, "rejected": 1}


def test_an_ambiguous_batch_is_read_back_by_tag_never_resent(
    clean_ods: str, sap: RunningSimulator, config: Config
) -> None:
    sap.admin(
        "POST",
        "/faults",
        json={
            "id": "after",
            "action": "status_after_commit",
            "status": 502,
            "path_regex": r"/\$batch$",
            "max_hits": 1,
        },
    )
    with _client(sap) as client:
        outcome = _run(clean_ods, client, config, [_time(n) for n in range(1, 6)])
    assert sap.admin("GET", "/faults")["rules"][0]["hits"] == 1
    assert outcome.ambiguous_resolved == 5 and outcome.posted == 0
    assert _states(clean_ods) == {"resolved": 5}
    assert set(_live(sap)) == {"1", "2", "3", "4", "5"}
    assert sap.admin("GET", "/stats")["counters"]["batches"] == 1  # read back, never sent again


def test_a_failing_second_changeset_is_sent_again_alone(
    clean_ods: str, sap: RunningSimulator, config: Config
) -> None:
    sap.admin("PUT", "/config", json={"fail_batch_changeset": 2})
    with _client(sap) as client:
        outcome = _run(clean_ods, client, config, [_time(n) for n in range(1, 4)])
    assert outcome.posted == 3 and outcome.rejected == 0
    assert _states(clean_ods) == {"confirmed": 3}
    assert set(_live(sap)) == {"1", "2", "3"}


def test_a_period_closed_mid_pass_gets_the_entity_policy(
    clean_ods: str, sap: RunningSimulator, config: Config
) -> None:
    # Planned in October while open; SAP closed October before the pass sent them (F5/201).
    sap.admin(
        "POST",
        "/periods",
        json=[
            {"company_code": c, "fiscal_year": 2026, "period": 10, "open": False} for c in ("1010", "2010")
        ],
    )
    with _client(sap) as client:
        outcome = _run(clean_ods, client, config, [_time(1), _time(2, entity="LE-UK1")])
    assert outcome.period_closed_replanned == 2 and outcome.parked_after_period_closed == 1
    live = _live(sap)
    assert set(live) == {"1"}  # LE-US1 posts to the first open period, LE-UK1 parks
    assert live["1"]["TimeSheetDate"] == "/Date(1793491200000)/"  # 2026-11-01
    assert "orig-period:LE-US1-2026-10" in live["1"]["TimeSheetDataFields"]["TimeSheetNoteText"]
    with psycopg.connect(clean_ods) as conn:
        letters = conn.execute(
            "SELECT reason_code FROM exceptions.item WHERE kind = 'dead_letter'"
        ).fetchall()
    assert letters == []


def test_expenses_are_journal_entries_and_a_reversal_mirrors_them(
    clean_ods: str, sap: RunningSimulator, config: Config
) -> None:
    with _client(sap) as client:
        outcome = _run(clean_ods, client, config, [_expense(1)], "expensereport")
        assert outcome.posted == 1
        [doc] = client.find_journal_entries("1010", _expense(1).idempotency_key)
        assert doc.DocumentReferenceID == journal_reference(_expense(1).idempotency_key)
        assert doc.to_Item is not None
        assert [
            (i.GLAccount, i.AmountInTransactionCurrency, i.DebitCreditCode) for i in doc.to_Item.results
        ] == [("6100", Decimal("42.17"), "S"), ("2000", Decimal("42.17"), "H")]
        outcome = _run(clean_ods, client, config, [_expense(1, action="reverse")], "expensereport")
        assert outcome.reversed == 1
        [mirror] = client.find_journal_entries("1010", _expense(1, action="reverse").idempotency_key)
        assert mirror.to_Item is not None
        assert [i.DebitCreditCode for i in mirror.to_Item.results if i.GLAccount == "6100"] == ["H"]
    assert _states(clean_ods, "expensereport") == {"confirmed": 2}


def test_periods_and_master_data_in_the_engines_vocabulary(sap: RunningSimulator) -> None:
    with _client(sap) as client:
        adapter = SapAdapter(client, MAPPING)
        rows = adapter.read_periods()
        assert adapter.read_master_data("legal_entity") == {"LE-US1", "LE-UK1"}
        assert adapter.read_master_data("employee") is None  # not readable through these services
    october = next(r for r in rows if r["externalid"] == "LE-US1-2026-10")
    assert october["subsidiary"] == "LE-US1" and october["closed"] is False
    assert next(r for r in rows if r["externalid"] == "LE-UK1-2026-09")["closed"] is True


def test_adapter_for_picks_the_adapter_by_erp_name(sap: RunningSimulator) -> None:
    netsuite = NetSuiteClient(base_url="http://erp.test", account_id="A", token="t")
    assert isinstance(adapter_for("netsuite", netsuite), NetSuiteAdapter)
    assert isinstance(as_adapter(netsuite), NetSuiteAdapter)  # a bare client: NetSuite, as before
    with _client(sap) as client:
        adapter = adapter_for("SAP", client, sap_mapping=MAPPING)
        assert isinstance(adapter, SapAdapter) and as_adapter(adapter) is adapter
        with pytest.raises(ValueError, match="company codes"):
            adapter_for("sap", client)
    with pytest.raises(ValueError, match="no ERP adapter"):
        adapter_for("oracle", netsuite)


def test_the_sap_hook_builds_the_adapter_from_its_connection(
    clean_ods: str, sap: RunningSimulator, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``IdempotentPostingOperator(erp="sap")`` does: the mapping comes from the connection."""
    import json

    from psa_erp_sync.hooks.sap import SapHook

    conn = {
        "conn_type": "http",
        "host": sap.base_url,
        "login": "PSA_COMM",
        "password": "secret",
        "extra": {"company_codes": {"LE-US1": "1010"}, "activity_type": "T001"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SAP_ADAPTERTEST", json.dumps(conn))
    hook = SapHook("sap_adaptertest")
    with hook.get_client() as client:
        adapter = hook.adapter(client)
        assert isinstance(adapter, SapAdapter)
        assert adapter.mapping.company_codes == {"LE-US1": "1010"} and adapter.mapping.activity_type == "T001"
        with psycopg.connect(clean_ods) as db:
            ledger.insert_planned(db, [_time(1)])
        outcome = PostingEngine(
            dsn=clean_ods,
            client=adapter,
            record_type="timebill",
            config=config,
            settings=EngineSettings(batch_size=10, max_concurrency=1),
            dag_run_id="hook",
            sleep=lambda _: None,
        ).run()
    assert outcome.posted == 1
    assert _live(sap)["1"]["TimeSheetDataFields"]["ActivityType"] == "T001"


def test_a_journal_batch_failing_midway_is_read_back_never_resent(
    clean_ods: str, sap: RunningSimulator, config: Config
) -> None:
    """SAP takes a second document with the same reference: after the first entry of a batch
    landed, a throttled second one must not make the engine resend the batch."""
    sap.admin(
        "POST",
        "/faults",
        json={
            "id": "429",
            "action": "throttle",
            "method": "POST",
            "retry_after": 0,
            "path_regex": "JournalEntryCollection$",
            "after": 1,
            "max_hits": 3,
        },
    )
    expenses = [_expense(n) for n in (1, 2, 3)]
    with _client(sap) as client:
        outcome = _run(clean_ods, client, config, expenses, "expensereport")
        assert sap.admin("GET", "/faults")["rules"][0]["hits"] == 3  # the client gave up on the second
        assert outcome.posted == 3 and outcome.rejected == 0
        docs = [client.find_journal_entries("1010", e.idempotency_key) for e in expenses]
    assert [len(d) for d in docs] == [1, 1, 1]  # one document per expense
    assert sap.admin("GET", "/stats")["journal_entries"] == 3
    assert _states(clean_ods, "expensereport") == {"confirmed": 3}


def test_an_expense_adjustment_is_refused_before_any_call(
    clean_ods: str, sap: RunningSimulator, config: Config
) -> None:
    adjust = _expense(1)
    adjust = ledger.Posting(**{**adjust.__dict__, "action": "adjust"})
    with _client(sap) as client:
        outcome = _run(clean_ods, client, config, [adjust], "expensereport")
    assert outcome.rejected_by_code == {"SAP_EXPENSE_ADJUST_UNSUPPORTED": 1}
    assert sap.admin("GET", "/stats")["journal_entries"] == 0


def test_the_posting_operator_posts_to_sap_when_told(
    clean_ods: str,
    psa_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """``IdempotentPostingOperator(erp="sap")``: planner, ledger and engine as for NetSuite, the SAP
    hook and adapter from the connection; the entities are routed to SAP (the routing file)."""
    import json

    from tests.routed_config import route_to

    route_to(monkeypatch, tmp_path / "config", "sap")

    from psa_erp_sync.operators.posting import IdempotentPostingOperator
    from tests.conftest import connect_airflow
    from tests.posting.sap_worker import COMPANY_CODES
    from tests.posting.test_sap_fault_injection import _prepare

    approved = _prepare(clean_ods, psa_sim, sap_sim, consultants=4)
    connect_airflow(monkeypatch, clean_ods)
    conn = {
        "conn_type": "http",
        "host": sap_sim.base_url,
        "login": "PSA_COMM",
        "password": "secret",
        "extra": {"company_codes": COMPANY_CODES, "activity_type": "T001"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_SAP_OPTEST", json.dumps(conn))
    op = IdempotentPostingOperator(
        task_id="post_timebills", record_type="timebill", erp="sap", erp_conn_id="sap_optest"
    )
    result = op.execute({"ti": None, "run_id": "sap-operator"})  # type: ignore[arg-type]
    outcome = result["outcome"]
    assert outcome["still_pending"] == 0 and outcome["posted"] > 0, outcome
    assert len(_live(sap_sim)) == outcome["posted"]
    assert outcome["posted"] + outcome["rejected"] + outcome["parked"] == approved
    _inputs, outputs = op.lineage_datasets()
    assert outputs[0].namespace == f"http://127.0.0.1:{sap_sim.port}"  # the SAP system, not NetSuite
