"""The ERP simulator's billing side: invoices and credit memos with sourced lines, customer
payments, balanced journals, currency rates, closed periods, and signed webhooks the ingress
verifies. Over loopback against real PostgreSQL."""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from psa_erp_sync.api.ingress import ErpEvent, Secrets, verify
from tests.conftest import RunningSimulator
from tests.simulators.receiver import HookReceiver, settle
from tests.simulators.test_erp_sim import BASE_SEED

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer test-token"}
REC = "/services/rest/record/v1"
SECRET = "erp-hook-secret"


@pytest.fixture
def erp(erp_sim: RunningSimulator) -> RunningSimulator:
    erp_sim.admin("POST", "/seed", json=copy.deepcopy(BASE_SEED))
    return erp_sim


@pytest.fixture
def http(erp: RunningSimulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=erp.base_url, headers=AUTH, timeout=30) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[HookReceiver]:
    r = HookReceiver()
    yield r
    r.close()


def invoice(ext: str, *amounts: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "tranId": ext.upper(),
        "tranDate": "2026-11-30",
        "entity": {"externalId": "psa-client-1"},
        "job": {"externalId": "psa-project-1"},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "item": {
            "items": [
                {"amount": a, "quantity": "1", "rate": a, "sourceType": "timebill", "sourceId": f"psa-te-{n}"}
                for n, a in enumerate(amounts, start=1)
            ]
        },
    }
    body.update(over)
    return body


def put(http: httpx.Client, rtype: str, ext: str, body: dict[str, Any]) -> httpx.Response:
    return http.put(f"{REC}/{rtype}/eid:{ext}", json=body)


def get(http: httpx.Client, rtype: str, ext: str) -> dict[str, Any]:
    response = http.get(f"{REC}/{rtype}/eid:{ext}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def codes(response: httpx.Response) -> list[tuple[str, str]]:
    assert response.status_code == 400, response.text
    return [(d["o:errorCode"], d["o:errorPath"]) for d in response.json()["o:errorDetails"]]


def suiteql(http: httpx.Client, q: str) -> list[dict[str, Any]]:
    response = http.post("/services/rest/query/v1/suiteql", json={"q": q})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_invoice_upsert_is_idempotent_and_total_comes_from_lines(http: httpx.Client) -> None:
    assert put(http, "invoice", "inv-1", invoice("inv-1", "100.00", "25.50")).status_code == 204
    first = get(http, "invoice", "inv-1")
    assert first["total"] == "125.50" and first["amountRemaining"] == "125.50" and first["status"] == "Open"
    # The same upsert again: same record, same lines (rewritten, not appended).
    assert put(http, "invoice", "inv-1", invoice("inv-1", "100.00", "25.50")).status_code == 204
    again = get(http, "invoice", "inv-1")
    assert again["id"] == first["id"] and again["total"] == "125.50"
    lines = suiteql(
        http, f"SELECT * FROM transactionline WHERE transaction = '{first['id']}' ORDER BY linesequencenumber"
    )
    assert [(x["amount"], x["sourcetype"], x["sourceid"]) for x in lines] == [
        ("100.00", "timebill", "psa-te-1"),
        ("25.50", "timebill", "psa-te-2"),
    ]
    # A client cannot set the ERP-managed state.
    assert (
        put(http, "invoice", "inv-1", {"status": "Paid In Full", "amountRemaining": "0"}).status_code == 204
    )
    assert get(http, "invoice", "inv-1")["status"] == "Open"
    # A total that contradicts the lines, and a line without a known source, are refused.
    assert codes(put(http, "invoice", "inv-2", invoice("inv-2", "10.00", total="11.00"))) == [
        ("INVALID_FLD_VALUE", "total")
    ]
    bad = invoice("inv-3", "10.00")
    bad["item"]["items"][0]["sourceType"] = "lunch"
    assert codes(put(http, "invoice", "inv-3", bad)) == [("INVALID_FLD_VALUE", "item.items[0].sourceType")]


def test_invoices_and_credit_memos_through_the_async_batch(http: httpx.Client) -> None:
    items = [{"externalId": f"inv-b{n}", **invoice(f"inv-b{n}", "10.00")} for n in range(3)]
    for attempt in range(2):  # the second submission with another key updates, never duplicates
        response = http.post(
            f"{REC}/invoice/batch",
            json={"items": items},
            headers={"X-NetSuite-idempotency-key": f"k-{attempt}"},
        )
        assert response.status_code == 202, response.text
        result = http.get(f"/services/rest/async/v1/job/{response.json()['jobId']}/result").json()
        assert [i["operation"] for i in result["items"]] == ["insert" if attempt == 0 else "update"] * 3
    assert len(suiteql(http, "SELECT id FROM invoice")) == 3
    memo = {
        "externalId": "cm-1",
        "tranDate": "2026-11-30",
        "entity": {"externalId": "psa-client-1"},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "createdFrom": {"externalId": "inv-b0"},
        "item": {"items": [{"amount": "4.00", "sourceType": "timebill", "sourceId": "psa-te-1"}]},
    }
    response = http.post(
        f"{REC}/creditmemo/batch", json={"items": [memo]}, headers={"X-NetSuite-idempotency-key": "cm"}
    )
    result = http.get(f"/services/rest/async/v1/job/{response.json()['jobId']}/result").json()
    assert result["status"] == "SUCCEEDED", result
    assert get(http, "invoice", "inv-b0")["amountRemaining"] == "6.00"
    too_much = {
        **memo,
        "externalId": "cm-2",
        "item": {"items": [{**memo["item"]["items"][0], "amount": "7.00"}]},
    }
    response = http.post(
        f"{REC}/creditmemo/batch", json={"items": [too_much]}, headers={"X-NetSuite-idempotency-key": "cm2"}
    )
    result = http.get(f"/services/rest/async/v1/job/{response.json()['jobId']}/result").json()
    assert result["items"][0]["error"]["o:errorCode"] == "INVALID_FLD_VALUE"
    assert result["items"][0]["error"]["o:errorPath"] == "createdFrom"


def test_unbalanced_journal_is_refused_per_currency(http: httpx.Client) -> None:
    def journal(*lines: tuple[str, str | None, str | None, str | None]) -> dict[str, Any]:
        return {
            "tranDate": "2026-11-15",
            "subsidiary": {"externalId": "LE-US1"},
            "currency": {"refName": "USD"},
            "line": {
                "items": [
                    {
                        "account": {"externalId": account},
                        **({"debit": debit} if debit else {}),
                        **({"credit": credit} if credit else {}),
                        **({"currency": {"refName": currency}} if currency else {}),
                    }
                    for account, debit, credit, currency in [(a, d, c, cur) for a, d, c, cur in lines]
                ]
            },
        }

    balanced = journal(("1200", "100.00", None, None), ("4000", None, "100.00", None))
    assert put(http, "journalentry", "je-1", balanced).status_code == 204
    unbalanced = journal(("1200", "100.00", None, None), ("4000", None, "99.99", None))
    response = put(http, "journalentry", "je-2", unbalanced)
    assert codes(response) == [("UNBALANCED_JOURNAL", "line")]
    assert "out of balance" in response.json()["o:errorDetails"][0]["detail"]
    # Balanced in total but not per currency: refused too.
    mixed = journal(
        ("1200", "100.00", None, None),
        ("4000", None, "100.00", "GBP"),
    )
    same = journal(("1200", "100.00", None, None), ("4000", None, "100.00", "USD"))  # USD is the journal's
    assert put(http, "journalentry", "je-4", same).status_code == 204
    assert [c for c, _ in codes(put(http, "journalentry", "je-3", mixed))] == ["UNBALANCED_JOURNAL"] * 2
    assert http.get(f"{REC}/journalentry/eid:je-2").status_code == 404
    rows = suiteql(
        http,
        "SELECT debit, credit FROM transactionline WHERE transactiontype = 'journalentry' AND transactionexternalid = 'je-1'",
    )
    assert sorted((r.get("debit") or "", r.get("credit") or "") for r in rows) == [
        ("", "100.00"),
        ("100.00", ""),
    ]


def test_closed_and_ar_locked_periods_refuse_billing_transactions(
    http: httpx.Client, erp: RunningSimulator
) -> None:
    october = invoice("inv-oct", "10.00", tranDate="2026-10-15")
    assert codes(put(http, "invoice", "inv-oct", october)) == [("PERIOD_CLOSED", "tranDate")]
    journal = {
        "tranDate": "2026-10-15",
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "line": {
            "items": [
                {"account": {"externalId": "1"}, "debit": "1.00"},
                {"account": {"externalId": "2"}, "credit": "1.00"},
            ]
        },
    }
    assert codes(put(http, "journalentry", "je-oct", journal)) == [("PERIOD_CLOSED", "tranDate")]
    assert put(http, "invoice", "inv-nov", invoice("inv-nov", "10.00")).status_code == 204
    erp.admin("POST", "/periods/LE-US1-2026-11", json={"arLocked": True})
    assert codes(put(http, "invoice", "inv-nov2", invoice("inv-nov2", "10.00"))) == [
        ("PERIOD_CLOSED", "tranDate")
    ]
    assert put(http, "journalentry", "je-nov", {**journal, "tranDate": "2026-11-15"}).status_code == 204
    void = httpx.post(f"{erp.base_url}/admin/invoices/eid:inv-nov/void")
    assert void.status_code == 400 and void.json()["o:errorDetails"][0]["o:errorCode"] == "PERIOD_CLOSED"


def test_payment_moves_state_and_emits_signed_invoice_paid(
    http: httpx.Client, erp: RunningSimulator, receiver: HookReceiver
) -> None:
    events = ["invoice.created", "invoice.paid", "accountingperiod.closed"]
    erp.admin("POST", "/webhooks", json={"url": receiver.url, "secret": SECRET, "events": events})
    assert put(http, "invoice", "inv-p", invoice("inv-p", "300.00")).status_code == 204
    part = erp.admin(
        "POST", "/invoices/eid:inv-p/payments", json={"amount": "100.00", "tranDate": "2026-11-30"}
    )
    assert part["invoice"]["status"] == "Open" and part["invoice"]["amountRemaining"] == "200.00"
    assert part["payment"]["apply"]["items"][0]["amount"] == "100.00"
    over = httpx.post(f"{erp.base_url}/admin/invoices/eid:inv-p/payments", json={"amount": "250.00"})
    assert over.status_code == 400 and over.json()["o:errorDetails"][0]["o:errorPath"] == "apply"
    rest = erp.admin("POST", "/invoices/eid:inv-p/payments", json={})
    assert rest["invoice"]["status"] == "Paid In Full" and rest["invoice"]["amountRemaining"] == "0.00"
    erp.admin("POST", "/periods/LE-US1-2026-11", json={"closed": True})
    erp.admin("POST", "/periods/LE-US1-2026-11", json={"closed": True})  # no second event
    settle(erp)
    secrets = Secrets(current=SECRET.encode())
    now = datetime.now(UTC)
    got = []
    for headers, body in receiver.received:
        assert verify(secrets, headers["x-erp-timestamp"], body, headers["x-erp-signature"], now)
        assert not verify(
            Secrets(current=b"other"), headers["x-erp-timestamp"], body, headers["x-erp-signature"], now
        )
        event = ErpEvent.model_validate_json(body)
        assert event.delivery_id == headers["x-erp-delivery-id"] and event.event == headers["x-erp-event"]
        got.append((event.event, event.data.externalId))
    assert got == [
        ("invoice.created", "inv-p"),
        ("invoice.paid", "inv-p"),
        ("accountingperiod.closed", "LE-US1-2026-11"),
    ]
    paid = json.loads(receiver.received[1][1])["data"]
    assert paid["status"] == "Paid In Full" and paid["amountRemaining"] == "0.00"
    # Payments read back by SuiteQL, with the lines that say what they paid.
    payments = suiteql(http, "SELECT externalid, payment, customer FROM customerpayment ORDER BY id")
    assert [(p["payment"], p["customer"]) for p in payments] == [
        ("100.00", "psa-client-1"),
        ("200.00", "psa-client-1"),
    ]
    applied = suiteql(
        http, "SELECT appliedto, amount FROM transactionline WHERE transactiontype = 'customerpayment'"
    )
    inv_id = get(http, "invoice", "inv-p")["id"]
    assert {a["appliedto"] for a in applied} == {inv_id}


def test_void_and_dependent_records(http: httpx.Client, erp: RunningSimulator) -> None:
    assert put(http, "invoice", "inv-v", invoice("inv-v", "50.00")).status_code == 204
    voided = erp.admin("POST", "/invoices/eid:inv-v/void")
    assert voided["status"] == "Voided" and voided["amountRemaining"] == "0.00"
    refused = httpx.post(f"{erp.base_url}/admin/invoices/eid:inv-v/payments", json={"amount": "1.00"})
    assert refused.status_code == 400
    assert codes(put(http, "invoice", "inv-v", {"memo": "changed"})) == [("INVALID_FLD_VALUE", "status")]
    assert put(http, "invoice", "inv-w", invoice("inv-w", "50.00")).status_code == 204
    erp.admin("POST", "/invoices/eid:inv-w/payments", json={"amount": "5.00"})
    assert (
        httpx.post(f"{erp.base_url}/admin/invoices/eid:inv-w/void").json()["o:errorDetails"][0]["o:errorCode"]
        == "DEPENDENT_RECORDS"
    )
    assert codes(http.delete(f"{REC}/invoice/eid:inv-w")) == [("DEPENDENT_RECORDS", "id")]
    # Lowering the total below what was paid is refused; above it, the remaining amount follows.
    assert codes(put(http, "invoice", "inv-w", invoice("inv-w", "4.00"))) == [("INVALID_FLD_VALUE", "total")]
    assert put(http, "invoice", "inv-w", invoice("inv-w", "60.00")).status_code == 204
    assert get(http, "invoice", "inv-w")["amountRemaining"] == "55.00"
    # Deleting the payment releases the invoice.
    assert http.delete(f"{REC}/customerpayment/eid:pay-inv-w-1").status_code == 204
    assert get(http, "invoice", "inv-w")["amountRemaining"] == "60.00"


def test_currency_rates_are_records_suiteql_reads_for_a_date(http: httpx.Client) -> None:
    for day, rate in (("2026-10-31", "1.2650000000"), ("2026-11-30", "1.2712345678")):
        body = {
            "baseCurrency": {"refName": "USD"},
            "transactionCurrency": {"refName": "GBP"},
            "exchangeRate": rate,
            "effectiveDate": day,
        }
        assert put(http, "currencyrate", f"GBP-USD-{day}", body).status_code == 204
    rows = suiteql(
        http,
        "SELECT exchangerate, effectivedate FROM currencyrate WHERE basecurrency = 'USD' "
        "AND transactioncurrency = 'GBP' AND effectivedate <= '2026-11-15' ORDER BY effectivedate DESC",
    )
    assert rows[0]["exchangerate"] == "1.2650000000" and rows[0]["effectivedate"] == "2026-10-31"
    bad = {
        "baseCurrency": {"refName": "XXX"},
        "transactionCurrency": {"refName": "GBP"},
        "exchangeRate": "1",
        "effectiveDate": "2026-11-01",
    }
    assert codes(put(http, "currencyrate", "bad", bad)) == [("INVALID_KEY_OR_REF", "baseCurrency")]


def test_webhook_duplicates_and_reorder_follow_the_seed(
    http: httpx.Client, erp: RunningSimulator, receiver: HookReceiver
) -> None:
    erp.admin(
        "PUT",
        "/config",
        json={"webhook_duplicate_rate": 0.3, "webhook_reorder_window": 5, "webhook_seed": 7},
    )
    erp.admin(
        "POST", "/webhooks", json={"url": receiver.url, "secret": SECRET, "events": ["invoice.created"]}
    )
    items = [{"externalId": f"inv-r{n:02d}", **invoice(f"inv-r{n:02d}", "1.00")} for n in range(20)]
    response = http.post(
        f"{REC}/invoice/batch", json={"items": items}, headers={"X-NetSuite-idempotency-key": "r"}
    )
    assert response.status_code == 202
    deliveries = settle(erp)
    assert len(deliveries) == 20
    sends = {d["delivery_id"]: d["sends"] for d in deliveries}
    for d in deliveries:
        rng = random.Random(f"7:{d['seq']}")
        rng.random()
        assert d["sends"] == (2 if rng.random() < 0.3 else 1)
    assert 2 in sends.values()
    counted: dict[str, int] = {}
    for headers, _ in receiver.received:
        counted[headers["x-erp-delivery-id"]] = counted.get(headers["x-erp-delivery-id"], 0) + 1
    assert counted == sends  # a duplicate carries the same delivery id
    order = list(dict.fromkeys(json.loads(b)["data"]["externalId"] for _, b in receiver.received))
    assert order != sorted(order) and sorted(order) == [f"inv-r{n:02d}" for n in range(20)]


def test_a_fault_after_commit_leaves_the_invoice_readable_once(
    http: httpx.Client, erp: RunningSimulator
) -> None:
    erp.admin(
        "POST",
        "/faults",
        json={
            "id": "f",
            "action": "status_after_commit",
            "status": 503,
            "path_regex": "/invoice/",
            "max_hits": 1,
        },
    )
    assert put(http, "invoice", "inv-f", invoice("inv-f", "9.00")).status_code == 503
    assert put(http, "invoice", "inv-f", invoice("inv-f", "9.00")).status_code == 204
    assert len(suiteql(http, "SELECT id FROM invoice WHERE externalid = 'inv-f'")) == 1
    assert len(suiteql(http, "SELECT id FROM transactionline WHERE transactionexternalid = 'inv-f'")) == 1
    time.sleep(0)  # nothing asynchronous to wait for: the upsert committed before the 503


def test_a_refused_delivery_is_redelivered_with_the_same_id_and_body(
    http: httpx.Client, erp: RunningSimulator
) -> None:
    failing = HookReceiver(fail_first=True)
    try:
        erp.admin(
            "POST", "/webhooks", json={"url": failing.url, "secret": SECRET, "events": ["invoice.created"]}
        )
        assert put(http, "invoice", "inv-retry", invoice("inv-retry", "1.00")).status_code == 204
        deliveries = settle(erp)
        assert [(d["status"], d["attempts"]) for d in deliveries] == [("delivered", 2)]
        assert len(failing.received) == 2
        (h1, b1), (h2, b2) = failing.received
        assert h1["x-erp-delivery-id"] == h2["x-erp-delivery-id"] and b1 == b2
        now = datetime.now(UTC)
        assert all(
            verify(Secrets(SECRET.encode()), h["x-erp-timestamp"], b, h["x-erp-signature"], now)
            for h, b in failing.received
        )
    finally:
        failing.close()


def test_a_payment_upserted_by_external_id_applies_to_the_invoice_it_names(http: httpx.Client) -> None:
    assert put(http, "invoice", "inv-x", invoice("inv-x", "80.00")).status_code == 204
    payment = {
        "tranDate": "2026-11-30",
        "customer": {"externalId": "psa-client-1"},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        # A reference as NetSuite renders it back: an internal id that is null and the external id.
        "apply": {"items": [{"doc": {"id": None, "externalId": "inv-x"}, "amount": "30.00"}]},
    }
    for _ in range(2):  # an upsert repeated applies once
        assert put(http, "customerpayment", "pay-x", payment).status_code == 204
        assert get(http, "invoice", "inv-x")["amountRemaining"] == "50.00"
    assert get(http, "customerpayment", "pay-x")["payment"] == "30.00"  # from the applied lines
    changed = {**payment, "apply": {"items": [{"doc": {"externalId": "inv-x"}, "amount": "80.00"}]}}
    assert put(http, "customerpayment", "pay-x", changed).status_code == 204
    assert get(http, "invoice", "inv-x")["status"] == "Paid In Full"
    unknown = {**payment, "apply": {"items": [{"doc": {"externalId": "nope"}, "amount": "1.00"}]}}
    assert codes(put(http, "customerpayment", "pay-y", unknown)) == [
        ("INVALID_KEY_OR_REF", "apply.items[0].doc")
    ]
