"""Corrections on SAP (issue 15, deliverable 2): SAP behaves as NetSuite does for a record held in a
closed period, an adjusted expense, and a ``reverse_and_repost`` across the cutover whose record is
held in a closed period of the old ERP.

Real PostgreSQL, the NetSuite and SAP simulators over loopback, the posting task
(``IdempotentPostingOperator``, every routed ERP) and the reconciliation task
(``ErpReconciliationOperator``): LE-UK1 on NetSuite until 2026-12-31, on SAP (company code 2010)
from 2027-01-01 (``tests/two_erps.py``), its closed-period policy ``post_to_first_open`` here.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
import yaml

from psa_erp_sync.config import load_config
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.adapter import CORRECTION_TEXT, SapAdapter, SapMapping
from tests.conftest import RunningSimulator
from tests.two_erps import COMPANY, UK, connect_two_erps, expense_entry, post, time_entry

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fresh_config() -> Iterator[None]:
    """``load_config()`` is cached by its argument (None: ``PSA_ERP_SYNC_CONFIG_DIR``): these tests
    read their own copy, and leave no cached copy of it behind."""
    load_config.cache_clear()
    yield
    load_config.cache_clear()


def _connect(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dsn: str, erp: RunningSimulator, sap: RunningSimulator
) -> None:
    config_dir = connect_two_erps(monkeypatch, tmp_path, dsn, erp, sap)
    entities_file = config_dir / "legal_entities.yaml"
    entities = yaml.safe_load(entities_file.read_text(encoding="utf-8"))
    entities["legal_entities"][UK]["closed_period_policy"] = "post_to_first_open"
    entities_file.write_text(yaml.safe_dump(entities, sort_keys=False), encoding="utf-8")


def _sap_period(sap: RunningSimulator, year: int, month: int, open_: bool) -> None:
    sap.admin(
        "POST",
        "/periods",
        json=[{"company_code": COMPANY, "fiscal_year": year, "period": month, "open": open_}],
    )


def _reconcile(run_id: str) -> dict[str, Any]:
    from psa_erp_sync.operators.time_expense import ErpReconciliationOperator

    op = ErpReconciliationOperator(task_id="reconcile_erp")
    context = {"ti": None, "run_id": run_id, "dag": SimpleNamespace(dag_id="sap_corrections_test")}
    return op.execute(context)  # type: ignore[arg-type]  # a plain dict stands in for the task context


def _journals(sap: RunningSimulator, company: str = COMPANY) -> list[dict[str, Any]]:
    """Every SAP journal entry with its items (the remote side, read through the OData service)."""
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.clients.sap import S4HanaClient

    retry = RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0)
    with S4HanaClient(base_url=sap.base_url, user="PSA_COMM", password="secret", retry=retry) as client:
        docs = client.journal_entries(company)
    return [
        {
            "header": d.DocumentHeaderText,
            "date": d.PostingDate.isoformat(),
            "items": [
                (i.GLAccount, i.AmountInTransactionCurrency, i.DebitCreditCode, i.DocumentItemText)
                for i in (d.to_Item.results if d.to_Item else ())
            ],
        }
        for d in docs
    ]


def _corrections(sap: RunningSimulator) -> list[tuple[str, str, str]]:
    """SAP's correcting journals: (source, seq, action, hours) from their item text, and their date."""
    out = []
    for doc in _journals(sap):
        match = CORRECTION_TEXT.match(doc["items"][0][3])
        if match is not None:
            out.append((match.group("source"), match.group("action"), doc["date"]))
    return out


def _live_hours(sap: RunningSimulator) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for r in sap.admin("GET", "/timesheets")["items"]:
        if r["TimeSheetStatus"] in ("10", "20", "30", "40"):
            source = r["TimeSheetDataFields"]["TimeSheetNoteText"].split("] psa:")[1].split()[0]
            assert source not in out, f"two live SAP records for {source}"
            out[source] = Decimal(r["TimeSheetDataFields"]["RecordedHours"])
    return out


def _clean(report: dict[str, Any], record_type: str, erp: str) -> dict[str, Any]:
    """The reconciliation of ``record_type`` in ``erp``, asserted clean (ledger = ERP = expected)."""
    part = report[record_type]["by_erp"][erp]
    assert part["erp"] == part["expected"] == part["posted_per_ledger"], part
    erp: dict[str, Any] = part["erp"]
    return erp


def _open_items(dsn: str) -> list[tuple[str, str, Any]]:
    with psycopg.connect(dsn) as conn:
        return [
            (r[0], r[1], r[2])
            for r in conn.execute(
                "SELECT source_id, reason_code, detail FROM exceptions.item WHERE status = 'open'"
            )
        ]


def test_a_time_entry_held_in_a_closed_sap_period_is_corrected_by_journals(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _connect(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 3, "2027-01-04", "a3", "2.00")
        time_entry(conn, 4, "2027-01-05", "a4", "1.00")
    assert post("timebill", "c-1")["posted"] == 2
    _sap_period(sap_sim, 2027, 1, False)  # SAP closes January: the records cannot change there
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 3, "2027-01-04", "a3b", "2.75")  # +0.75 h, +75.00
    out = post("timebill", "c-2")
    assert (out["rejected"], out["still_pending"], out["parked"]) == (0, 0, 0), (out, _open_items(clean_ods))
    assert _live_hours(sap_sim) == {"3": Decimal("2.00"), "4": Decimal("1.00")}  # untouched in January
    assert _corrections(sap_sim) == [("3", "adjust", "2027-02-01")]  # one journal, first open period
    [doc] = [d for d in _journals(sap_sim) if CORRECTION_TEXT.match(d["items"][0][3])]
    assert doc["items"] == [
        ("1200", Decimal("75.00"), "S", "psa:3 te c1 adjust h:0.75"),
        ("4000", Decimal("75.00"), "H", "psa:3 te c1 adjust h:0.75"),
    ]
    sap = _clean(_reconcile("c-r2"), "timebill", "sap")
    assert (sap["count"], sap["hours"], sap["amounts_minor"]) == (2, "3.75", {"GBP": 37_500})

    # Stacked: down to 1.50 h (-125.00 against record + first journal), then 4 unapproved.
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 3, "2027-01-04", "a3c", "1.50")
        conn.execute("UPDATE canonical.time_entry SET approved = false WHERE source_id = '4'")
    out = post("timebill", "c-3")
    assert (out["rejected"], out["still_pending"]) == (0, 0), out
    assert _corrections(sap_sim) == [
        ("3", "adjust", "2027-02-01"),
        ("3", "adjust", "2027-02-01"),
        ("4", "reverse", "2027-02-01"),
    ]
    sap = _clean(_reconcile("c-r3"), "timebill", "sap")
    assert (sap["count"], sap["hours"], sap["amounts_minor"]) == (1, "1.50", {"GBP": 15_000})
    assert post("timebill", "c-4")["posted"] == 0  # nothing left to do
    assert _open_items(clean_ods) == []


@pytest.mark.parametrize("fault", ["status_after_commit", "drop_after_commit"])
def test_an_ambiguous_correcting_journal_is_read_back_and_lands_once(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fault: str,
) -> None:
    """SAP commits the journal, then answers 503 or drops the connection: the outcome is ambiguous,
    the reference is read back, and SAP holds exactly one correcting journal per correction."""
    _connect(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 3, "2027-01-04", "a3", "2.00")
        expense_entry(conn, 12, "2027-01-15", 12_001)
    post("timebill", "f-1")
    post("expensereport", "f-1")
    _sap_period(sap_sim, 2027, 1, False)
    rule = {
        "id": "amb",
        "action": fault,
        "method": "POST",
        "path_regex": "JournalEntryCollection$",
        "max_hits": 4,
    }
    if fault == "status_after_commit":
        rule["status"] = 503
    sap_sim.admin("POST", "/faults", json=rule)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 3, "2027-01-04", "a3b", "3.00")
        conn.execute(
            "UPDATE canonical.expense_entry SET version_hash = 'v2', amount_minor = 9999 WHERE source_id = '12'"
        )
    for record_type in ("timebill", "expensereport"):
        out = post(record_type, "f-2")
        assert (out["rejected"], out["still_pending"]) == (0, 0), out
    assert sap_sim.admin("GET", "/faults")["rules"][0]["hits"] >= 2  # both corrections met the fault
    assert sorted(_corrections(sap_sim)) == [("12", "adjust", "2027-02-01"), ("3", "adjust", "2027-02-01")]
    report = _reconcile("f-r")
    time, expenses = _clean(report, "timebill", "sap"), _clean(report, "expensereport", "sap")
    assert (time["hours"], time["amounts_minor"]) == ("3.00", {"GBP": 30_000})
    assert expenses["amounts_minor"] == {"GBP": 9_999}
    for record_type in ("timebill", "expensereport"):
        assert post(record_type, "f-3")["posted"] == 0


def test_an_expense_adjusted_twice_in_sap_counts_once_at_its_latest_amount(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    _connect(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        expense_entry(conn, 12, "2027-01-15", 12_001)
        expense_entry(conn, 13, "2027-01-16", 5_000)
    assert post("expensereport", "e-1")["posted"] == 2
    for version, amount in (("v2", 15_000), ("v3", 9_999)):
        if version == "v3":  # the second adjustment's document commits, then SAP answers 503
            rule = {"id": "amb", "action": "status_after_commit", "status": 503, "method": "POST"}
            sap_sim.admin(
                "POST", "/faults", json={**rule, "path_regex": "JournalEntryCollection$", "max_hits": 1}
            )
        with psycopg.connect(clean_ods, autocommit=True) as conn:
            conn.execute(
                "UPDATE canonical.expense_entry SET version_hash = %s, amount_minor = %s WHERE source_id = '12'",
                (version, amount),
            )
        out = post("expensereport", f"e-{version}")
        assert (out["posted"], out["rejected"]) == (1, 0), out
    assert sap_sim.admin("GET", "/faults")["rules"][0]["hits"] == 1
    docs = [d for d in _journals(sap_sim) if d["header"] == "psa:12"]
    assert len(docs) == 3  # the expense, then one document per adjustment (the ambiguous one once)
    # The last adjustment mirrors 150.00 and books 99.99, in one document.
    assert [(a, amt, dc) for a, amt, dc, _ in docs[2]["items"]] == [
        ("2000", Decimal("150.00"), "S"),
        ("6100", Decimal("150.00"), "H"),
        ("6100", Decimal("99.99"), "S"),
        ("2000", Decimal("99.99"), "H"),
    ]
    sap = _clean(_reconcile("e-r"), "expensereport", "sap")
    assert (sap["count"], sap["amounts_minor"]) == (2, {"GBP": 9_999 + 5_000})
    # Unapproved after the adjustments: the mirror of the latest version; nothing held.
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("UPDATE canonical.expense_entry SET approved = false WHERE source_id = '12'")
    assert post("expensereport", "e-4")["reversed"] == 1
    sap = _clean(_reconcile("e-r2"), "expensereport", "sap")
    assert (sap["count"], sap["amounts_minor"]) == (1, {"GBP": 5_000})
    assert _open_items(clean_ods) == []


def test_reverse_and_repost_across_the_cutover_with_the_old_period_closed(
    clean_ods: str,
    erp_sim: RunningSimulator,
    sap_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """NetSuite holds December entries; NetSuite closes December. Entry 2 moves into January (SAP)
    with more hours, entry 5 only gets more hours: NetSuite gets a correcting journal reversing each
    in its first open period, SAP the new version, instead of a ROUTE_CUTOVER_CORRECTION park."""
    _connect(monkeypatch, tmp_path, clean_ods, erp_sim, sap_sim)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 1, "2026-12-30", "a1", "1.50")
        time_entry(conn, 2, "2026-12-31", "a2", "2.00")
        time_entry(conn, 5, "2026-12-31", "a5", "1.00")
    assert post("timebill", "x-1")["by_erp"]["netsuite"]["posted"] == 3
    erp_sim.admin("POST", f"/periods/{UK}-2026-12", json={"closed": True})
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 2, "2027-01-02", "a2b", "2.50")  # moved across the cutover
        time_entry(conn, 5, "2026-12-31", "a5b", "1.25")  # same day, its correction falls in January
    out = post("timebill", "x-2")
    assert (out["rejected"], out["still_pending"], out["parked"]) == (0, 0, 0), out
    assert _open_items(clean_ods) == []
    journals = erp_sim.admin("GET", "/records/journalentry", params={"limit": 100})["items"]
    assert sorted((j["externalId"], j["custbody_psa_action"], j["amount"]) for j in journals) == [
        ("psa-te-2-c1", "reverse", "-200.00"),
        ("psa-te-5-c1", "reverse", "-100.00"),
    ]
    assert _live_hours(sap_sim) == {"2": Decimal("2.50"), "5": Decimal("1.25")}
    with psycopg.connect(clean_ods) as conn:
        rows = conn.execute(
            "SELECT action, target_erp, corrects IS NOT NULL, state FROM ledger.posting WHERE source_id = '2' ORDER BY seq"
        ).fetchall()
    assert rows == [
        ("post", "netsuite", False, "confirmed"),
        ("reverse", "netsuite", True, "confirmed"),
        ("post", "sap", False, "confirmed"),
    ]
    report = _reconcile("x-r")
    netsuite, sap = _clean(report, "timebill", "netsuite"), _clean(report, "timebill", "sap")
    assert (netsuite["count"], netsuite["amounts_minor"]) == (1, {"GBP": 15_000})  # entry 1 only
    assert (sap["count"], sap["hours"], sap["amounts_minor"]) == (2, "3.75", {"GBP": 37_500})
    assert post("timebill", "x-3")["posted"] == 0
    # Held per target ERP: a later change of 2 is an ordinary adjustment in SAP (January open there),
    # not a correcting journal counting NetSuite's reversal.
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        time_entry(conn, 2, "2027-01-02", "a2c", "3.00")
    out = post("timebill", "x-4")
    assert out["by_erp"]["sap"]["posted"] == 1 and out["rejected"] == 0, out
    assert _live_hours(sap_sim)["2"] == Decimal("3.00")
    assert _corrections(sap_sim) == []
    _clean(_reconcile("x-r2"), "timebill", "sap")


# -- the engine's read-back of a correcting journal (a process that died after SAP committed) ------
MAPPING = SapMapping(company_codes={"LE-US1": "1010"}, fiscal_years=(2026,))


def _correcting(seq: int, amount: str, hours: str, action: ledger.Action = "adjust") -> ledger.Posting:
    """A correcting journal as the planner writes it (``planner.correcting_posting``) of psa-te-1,
    held in a closed October, booked in November."""
    key = ledger.idempotency_key("timebill", "psa", "1", f"v{seq}", action, seq)
    payload = {
        "externalId": f"psa-te-1-c{seq}",
        "tranDate": "2026-11-01",
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "postingPeriod": {"externalId": "LE-US1-2026-11"},
        "amount": amount,
        "memo": f"psa:1 v:v{seq} key:{key[:16]} corrects:psa-te-1 orig-date:2026-10-05 orig-period:LE-US1-2026-10",
        "custbody_psa_corrects": "psa-te-1",
        "custbody_psa_action": action,
        "custbody_psa_hours": hours,
    }
    minor = int(Decimal(amount) * 100)
    return ledger.Posting(
        key,
        "timebill",
        "psa",
        "1",
        f"v{seq}",
        f"psa-te-1-c{seq}",
        action,
        "pending",
        payload,
        "LE-US1",
        "LE-US1-2026-11",
        minor,
        "USD",
        corrects="psa-te-1",
    )


def test_a_correcting_journal_sap_committed_before_a_crash_is_read_back_not_resent(
    clean_ods: str, sap_sim: RunningSimulator
) -> None:
    """The ledger row is ``sent`` and SAP holds the journal (the process died before the answer was
    recorded): the next pass reads the journal back by its reference and resolves the row; an
    hours-only correction (no money) still lands in SAP, carrying its hours; nothing is sent twice."""
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.clients.sap import S4HanaClient
    from psa_erp_sync.posting.engine import EngineSettings, PostingEngine

    sap_sim.admin(
        "POST",
        "/seed",
        json={
            "company_codes": [{"company_code": "1010", "currency": "USD"}],
            "work_agreements": [],
            "posting_periods": [
                {"company_code": "1010", "fiscal_year": 2026, "period": m, "open": m >= 11}
                for m in range(1, 13)
            ],
        },
    )
    crashed, hours_only = _correcting(1, "-50.00", "-0.50"), _correcting(2, "0.00", "0.25")
    retry = RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0)
    with S4HanaClient(base_url=sap_sim.base_url, user="PSA_COMM", password="secret", retry=retry) as client:
        adapter = SapAdapter(client, MAPPING)
        with psycopg.connect(clean_ods) as conn:
            ledger.insert_planned(conn, [crashed, hours_only])
            ledger.mark_sent(conn, [crashed], batch_key=None, dag_run_id="died", task_try=1)
        assert adapter.post_batch("journalentry", [crashed], "died").items[0].status == "confirmed"
        outcome = PostingEngine(
            dsn=clean_ods,
            client=adapter,
            record_type="timebill",
            config=load_config(),
            settings=EngineSettings(batch_size=10, max_concurrency=1, max_rounds=3),
            dag_run_id="resume",
            sleep=lambda _: None,
        ).run()
        held = adapter.read_back([crashed, hours_only])
    assert (outcome.ambiguous_resolved, outcome.posted) == (1, 1), outcome
    assert held[crashed.idempotency_key].carries(crashed.idempotency_key)
    assert held[hours_only.idempotency_key].carries(hours_only.idempotency_key)
    texts = sorted(d["items"][0][3] for d in _journals(sap_sim, "1010"))
    assert texts == ["psa:1 te c1 adjust h:-0.50", "psa:1 te c2 adjust h:0.25"]  # one each
    carrier = next(d for d in _journals(sap_sim, "1010") if d["items"][0][3].endswith("h:0.25"))
    assert [(a, amt, dc) for a, amt, dc, _ in carrier["items"]] == [
        ("1200", Decimal("0.01"), "S"),
        ("1200", Decimal("0.01"), "H"),
    ]  # no money moves: one cent on and off the receivable
    with psycopg.connect(clean_ods) as conn:
        assert ledger.counts(conn, "timebill") == {"resolved": 1, "confirmed": 1}
