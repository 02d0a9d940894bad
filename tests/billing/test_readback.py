"""Billing read-back: the ERP simulator's invoices, credit memos, payments and journals, created
through its REST API, read incrementally into ``billing.erp_*`` (overlap window, idempotent
upsert, last version wins, voided invoices kept). Real PostgreSQL, simulator over loopback."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from psa_erp_sync.billing import readback
from tests.conftest import RunningSimulator
from tests.simulators.test_erp_sim import BASE_SEED

pytestmark = pytest.mark.integration

REC = "/services/rest/record/v1"
JOBS = readback.JobMapping("psa-project-{id}")
OVERLAP = timedelta(minutes=60)
DECEMBER = [
    {
        "external_id": f"{le}-2026-12",
        "subsidiary": le,
        "period_name": "Dec 2026",
        "start_date": "2026-12-01",
        "end_date": "2026-12-31",
        "closed": False,
        "all_locked": False,
        "ar_locked": False,
        "ap_locked": False,
    }
    for le in ("LE-US1", "LE-UK1")
]
BILLING_TABLES = (
    "billing.erp_invoice_line, billing.erp_invoice, billing.erp_payment_application, billing.erp_payment,"
    " billing.erp_journal_line, billing.erp_journal, billing.erp_readback_watermark"
)


def truncate_billing(dsn: str) -> None:
    """Empty the read-back tables (``clean_ods`` leaves the billing schema alone): a read-back left
    behind would switch later forecast tests to billing from the ERP."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {BILLING_TABLES}")


@pytest.fixture
def ods(clean_ods: str) -> Iterator[psycopg.Connection]:
    truncate_billing(clean_ods)
    with psycopg.connect(clean_ods) as conn:
        yield conn
    truncate_billing(clean_ods)


@pytest.fixture
def erp(erp_sim: RunningSimulator) -> RunningSimulator:
    seed = copy.deepcopy(BASE_SEED)
    seed["accounting_periods"] += DECEMBER
    erp_sim.admin("POST", "/seed", json=seed)
    return erp_sim


@pytest.fixture
def http(erp: RunningSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=erp.base_url, headers={"Authorization": "Bearer t"}, timeout=30) as client:
        yield client


@pytest.fixture
def client(erp: RunningSimulator) -> Iterator[Any]:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.http import RetryPolicy

    with NetSuiteClient(
        base_url=erp.base_url,
        account_id="A1",
        token="t",
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01),
    ) as netsuite:
        yield netsuite


def invoice(*lines: tuple[str, str, str], job: str = "psa-project-1", **over: Any) -> dict[str, Any]:
    """An invoice body; each line is (amount, sourceType, sourceId)."""
    body: dict[str, Any] = {
        "tranDate": "2026-11-30",
        "entity": {"externalId": "psa-client-1"},
        "job": {"externalId": job},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "item": {"items": [{"amount": a, "sourceType": t, "sourceId": s} for a, t, s in lines]},
    }
    return body | over


def put(http: httpx.Client, rtype: str, ext: str, body: dict[str, Any]) -> None:
    response = http.put(f"{REC}/{rtype}/eid:{ext}", json=body)
    assert response.status_code == 204, response.text


def journal(amount: str) -> dict[str, Any]:
    return {
        "tranDate": "2026-11-30",
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "memo": "revenue",
        "line": {
            "items": [
                {"account": {"externalId": "1300"}, "debit": amount},
                {"account": {"externalId": "4000"}, "credit": amount},
            ]
        },
    }


def seed_billing(http: httpx.Client, erp: RunningSimulator) -> None:
    put(
        http,
        "invoice",
        "inv-1",
        invoice(("1125.00", "timebill", "psa-te-1"), ("80.50", "expensereport", "psa-ex-7")),
    )
    put(
        http,
        "invoice",
        "inv-2",
        invoice(
            ("5000.00", "milestone", "ms-3"),
            job="psa-project-4",
            entity={"externalId": "psa-client-3"},
            subsidiary={"externalId": "LE-UK1"},
            currency={"refName": "GBP"},
        ),
    )
    put(
        http,
        "creditmemo",
        "cm-1",
        invoice(("80.50", "expensereport", "psa-ex-7")) | {"createdFrom": {"externalId": "inv-1"}},
    )
    erp.admin("POST", "/invoices/eid:inv-1/payments", json={"amount": "500.00", "tranDate": "2026-12-05"})
    put(http, "journalentry", "je-1", journal("1205.50"))


def read(conn: psycopg.Connection, client: Any, overlap: timedelta = OVERLAP) -> dict[str, dict[str, Any]]:
    results = readback.read_back(conn, client, run_id="run-1", overlap=overlap, jobs=JOBS)
    return {t: r.as_dict() for t, r in results.items()}


def test_read_back_lands_every_record_with_lines_in_minor_units(
    ods: psycopg.Connection, client: Any, http: httpx.Client, erp: RunningSimulator
) -> None:
    seed_billing(http, erp)
    first = read(ods, client)
    assert {t: (r["mode"], r["read"], r["changed"]) for t, r in first.items()} == {
        "invoice": ("full", 2, 2),
        "creditmemo": ("full", 1, 1),
        "customerpayment": ("full", 1, 1),
        "journalentry": ("full", 1, 1),
    }
    invoices = ods.execute(
        "SELECT record_type, external_id, customer_ref, job_ref, project_ref, legal_entity, currency,"
        " total_minor, amount_remaining_minor, status, voided, created_from_ref"
        " FROM billing.erp_invoice ORDER BY record_type, external_id"
    ).fetchall()
    assert invoices == [
        (
            "creditmemo",
            "cm-1",
            "psa-client-1",
            "psa-project-1",
            "1",
            "LE-US1",
            "USD",
            8050,
            None,
            None,
            False,
            "inv-1",
        ),
        # 1205.50 - 80.50 credited - 500.00 paid
        (
            "invoice",
            "inv-1",
            "psa-client-1",
            "psa-project-1",
            "1",
            "LE-US1",
            "USD",
            120550,
            62500,
            "Open",
            False,
            None,
        ),
        (
            "invoice",
            "inv-2",
            "psa-client-3",
            "psa-project-4",
            "4",
            "LE-UK1",
            "GBP",
            500000,
            500000,
            "Open",
            False,
            None,
        ),
    ]
    lines = ods.execute(
        "SELECT i.external_id, l.line_no, l.source_type, l.source_id, l.amount_minor, l.currency"
        " FROM billing.erp_invoice_line l JOIN billing.erp_invoice i USING (record_type, internal_id)"
        " ORDER BY 1, 2"
    ).fetchall()
    assert lines == [
        ("cm-1", 1, "expensereport", "psa-ex-7", 8050, "USD"),
        ("inv-1", 1, "timebill", "psa-te-1", 112500, "USD"),
        ("inv-1", 2, "expensereport", "psa-ex-7", 8050, "USD"),
        ("inv-2", 1, "milestone", "ms-3", 500000, "GBP"),
    ]
    payment = ods.execute(
        "SELECT p.customer_ref, p.tran_date::text, p.payment_minor, i.external_id, a.amount_minor"
        " FROM billing.erp_payment p JOIN billing.erp_payment_application a ON a.payment_internal_id = p.internal_id"
        " JOIN billing.erp_invoice i ON i.internal_id = a.invoice_internal_id AND i.record_type = 'invoice'"
    ).fetchall()
    assert payment == [("psa-client-1", "2026-12-05", 50000, "inv-1", 50000)]
    journal_lines = ods.execute(
        "SELECT j.external_id, l.account, l.debit_minor, l.credit_minor FROM billing.erp_journal j"
        " JOIN billing.erp_journal_line l ON l.journal_internal_id = j.internal_id ORDER BY l.line_no"
    ).fetchall()
    assert journal_lines == [("je-1", "1300", 120550, None), ("je-1", "4000", None, 120550)]
    marks = dict(
        ods.execute("SELECT record_type, high_watermark IS NOT NULL FROM billing.erp_readback_watermark")
    )
    assert marks == dict.fromkeys(readback.RECORD_TYPES, True)


def test_rerun_rereads_the_overlap_and_changes_nothing_then_takes_the_last_version(
    ods: psycopg.Connection, client: Any, http: httpx.Client, erp: RunningSimulator
) -> None:
    seed_billing(http, erp)
    read(ods, client)
    before = ods.execute(
        "SELECT internal_id, version_hash, read_at FROM billing.erp_invoice ORDER BY 1"
    ).fetchall()
    again = read(ods, client)
    # Everything is inside the overlap window: read again, written never.
    assert {t: (r["mode"], r["read"], r["changed"]) for t, r in again.items()} == {
        "invoice": ("incremental", 2, 0),
        "creditmemo": ("incremental", 1, 0),
        "customerpayment": ("incremental", 1, 0),
        "journalentry": ("incremental", 1, 0),
    }
    assert (
        ods.execute(
            "SELECT internal_id, version_hash, read_at FROM billing.erp_invoice ORDER BY 1"
        ).fetchall()
        == before
    )
    # inv-2 modified twice between reads, inv-3 created and voided, inv-1 paid in full.
    put(
        http,
        "invoice",
        "inv-2",
        invoice(
            ("4000.00", "milestone", "ms-3"),
            job="psa-project-4",
            entity={"externalId": "psa-client-3"},
            subsidiary={"externalId": "LE-UK1"},
            currency={"refName": "GBP"},
        ),
    )
    put(
        http,
        "invoice",
        "inv-2",
        invoice(
            ("4500.00", "milestone", "ms-3"),
            ("10.00", "milestone", "ms-4"),
            job="psa-project-4",
            entity={"externalId": "psa-client-3"},
            subsidiary={"externalId": "LE-UK1"},
            currency={"refName": "GBP"},
        ),
    )
    put(http, "invoice", "inv-3", invoice(("99.00", "timebill", "psa-te-9")))
    erp.admin("POST", "/invoices/eid:inv-3/void")
    erp.admin("POST", "/invoices/eid:inv-1/payments", json={"tranDate": "2026-12-20"})
    third = read(ods, client)
    assert third["invoice"]["changed"] == 3 and third["customerpayment"]["changed"] == 1
    assert third["creditmemo"]["changed"] == 0 and third["journalentry"]["changed"] == 0
    rows = ods.execute(
        "SELECT external_id, total_minor, amount_remaining_minor, status, voided FROM billing.erp_invoice"
        " WHERE record_type = 'invoice' ORDER BY external_id"
    ).fetchall()
    assert rows == [
        ("inv-1", 120550, 0, "Paid In Full", False),
        ("inv-2", 451000, 451000, "Open", False),
        ("inv-3", 9900, 0, "Voided", True),
    ]
    inv2_lines = ods.execute(
        "SELECT source_id, amount_minor FROM billing.erp_invoice_line l JOIN billing.erp_invoice i"
        " USING (record_type, internal_id) WHERE i.external_id = 'inv-2' ORDER BY line_no"
    ).fetchall()
    assert inv2_lines == [("ms-3", 450000), ("ms-4", 1000)]  # the lines replaced, never appended
    assert ods.execute("SELECT count(*) FROM billing.erp_invoice").fetchone() == (4,)


def test_overlap_catches_a_record_stamped_before_the_watermark(
    ods: psycopg.Connection, client: Any, http: httpx.Client, erp: RunningSimulator
) -> None:
    put(http, "invoice", "inv-1", invoice(("10.00", "timebill", "psa-te-1")))
    read(ods, client, overlap=timedelta(0))
    put(http, "invoice", "inv-late", invoice(("20.00", "timebill", "psa-te-2")))
    # inv-late was stamped at write time but committed after a read that advanced the watermark
    # past its stamp (simulated: the watermark moved 30 s beyond its lastModifiedDate).
    stamp = client.get_record("invoice", "inv-late")["lastModifiedDate"]
    ods.execute(
        "UPDATE billing.erp_readback_watermark SET high_watermark = %s::timestamptz + interval '30 seconds'"
        " WHERE record_type = 'invoice'",
        (stamp,),
    )
    ods.commit()
    no_overlap = readback.read_back_type(
        ods, client, record_type="invoice", run_id="r", overlap=timedelta(0), jobs=JOBS
    )
    assert no_overlap.read == 0  # a strict window would lose it
    with_overlap = readback.read_back_type(
        ods, client, record_type="invoice", run_id="r", overlap=timedelta(minutes=1), jobs=JOBS
    )
    # inv-1 (unchanged) and inv-late are both in the window; only inv-late is written.
    assert (with_overlap.read, with_overlap.changed) == (2, 1)
    assert ods.execute(
        "SELECT total_minor FROM billing.erp_invoice WHERE external_id = 'inv-late'"
    ).fetchone() == (2000,)


def test_a_float_amount_is_refused_naming_the_record(ods: psycopg.Connection) -> None:
    class Rows:
        def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
            yield {
                "id": "7",
                "lastmodifieddate": "2026-11-30T10:00:00Z",
                "trandate": "2026-11-30",
                "currency": "USD",
                "total": 12.5,
            }

    with pytest.raises(readback.ReadbackError, match="invoice '7': invalid fields total"):
        readback.read_back_type(ods, Rows(), record_type="invoice", run_id="r", overlap=OVERLAP, jobs=JOBS)
    assert ods.execute("SELECT count(*) FROM billing.erp_readback_watermark").fetchone() == (0,)


def test_job_mapping_and_query_shape() -> None:
    assert JOBS.project_of("psa-project-42") == "42"
    assert JOBS.project_of("crm-opp-7") is None and JOBS.project_of("psa-project-") is None
    assert readback.JobMapping("{id}-job").project_of("9-job") == "9"
    since = datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert readback.query_for("creditmemo", since) == (
        "SELECT * FROM creditmemo WHERE lastmodifieddate >= '2026-11-30T10:00:00+00:00' ORDER BY id"
    )
    with pytest.raises(ValueError, match="not a billing record type"):
        readback.query_for("customer", None)
