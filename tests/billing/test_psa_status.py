"""Invoice status back to the PSA, against the simulators over loopback and a real ODS: an ERP
invoice becomes a PSA invoice with its entries billed; an ERP payment reaches the PSA through the
signed webhook, the ingress and the inbox within seconds; duplicated and reordered webhooks change
nothing; a dropped webhook is fixed by the sweep; a voided invoice is closed."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest

from psa_erp_sync.api import ingress
from psa_erp_sync.billing import psa_status_runs as runs
from psa_erp_sync.billing.psa_status import mirror_invoice, target_of
from psa_erp_sync.clients.erp import NetSuiteClient
from psa_erp_sync.clients.psa import HarvestClient, PsaApiError
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

SECRET = "erp-status-secret"
REC = "/services/rest/record/v1"
TIME_IDS = (10_000, 10_002)  # billable, rate 175.00, client 100 in simulators/psa/sample.py
EXPENSE_ID = 20_000  # billable 100.50, client 100


@pytest.fixture
def ods(clean_ods: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute("TRUNCATE billing.psa_invoice, billing.psa_status_sweep")
        yield conn


@pytest.fixture
def psa(psa_sim: RunningSimulator, psa_client: HarvestClient) -> HarvestClient:
    from simulators.psa import sample

    psa_sim.admin("POST", "/seed", json=sample.build())
    return psa_client


@pytest.fixture
def erp(erp_sim: RunningSimulator) -> Iterator[NetSuiteClient]:
    from tests.simulators.test_erp_sim import BASE_SEED

    seed = copy.deepcopy(BASE_SEED)
    seed["customers"].append(
        {
            "external_id": "psa-client-100",
            "company_name": "Client 0",
            "subsidiary": "LE-US1",
            "currency": "USD",
            "tax_code": "TX-US-EXEMPT",
            "is_inactive": False,
        }
    )
    erp_sim.admin("POST", "/seed", json=seed)
    with NetSuiteClient(base_url=erp_sim.base_url, account_id="A1", token="t") as client:
        yield client


@pytest.fixture
def ingress_url(clean_ods: str, erp_sim: RunningSimulator) -> Iterator[str]:
    """Our ingress on loopback, subscribed to the ERP simulator's invoice events."""
    ingress.signing.SECRET_CACHE_S = 0.0
    app = ingress.create_app(dsn=clean_ods, secrets=lambda source: ingress.Secrets(SECRET.encode()))
    server = RunningSimulator("ingress", app).start()
    erp_sim.admin(
        "POST",
        "/webhooks",
        json={"url": f"{server.base_url}/erp/events", "secret": SECRET, "events": list(runs.INVOICE_EVENTS)},
    )
    yield server.base_url
    server.stop()
    app.state.inbox_writer.close()


def put_invoice(erp_sim: RunningSimulator, psa: HarvestClient, ext: str, **over: Any) -> None:
    """An ERP invoice billing two PSA time entries and one expense (amounts as the PSA has them),
    unless ``item`` is given."""
    items = []
    for entry_id in () if "item" in over else TIME_IDS:
        entry = psa.get_time_entry(entry_id)
        assert entry is not None and entry["billable"] and not entry["is_billed"]
        amount = (Decimal(str(entry["hours"])) * Decimal(str(entry["billable_rate"]))).quantize(
            Decimal("0.01")
        )
        items.append({"amount": str(amount), "sourceType": "timebill", "sourceId": f"psa-te-{entry_id}"})
    if "item" not in over:
        items.append({"amount": "100.50", "sourceType": "expensereport", "sourceId": f"psa-ex-{EXPENSE_ID}"})
    body = {
        "tranId": ext.upper(),
        "tranDate": "2026-11-30",
        "entity": {"externalId": "psa-client-100"},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "item": {"items": items},
        **over,
    }
    response = httpx.put(
        f"{erp_sim.base_url}{REC}/invoice/eid:{ext}", json=body, headers={"Authorization": "Bearer t"}
    )
    assert response.status_code == 204, response.text


def psa_invoice(psa: HarvestClient, ext: str) -> Any:
    return psa.find_invoice(ext.upper(), client_id=100)


def drain_until(
    ods: psycopg.Connection,
    psa: HarvestClient,
    erp: NetSuiteClient,
    ext: str,
    state: str,
    timeout: float = 5.0,
) -> float:
    """Run the webhook consumer (as the inbox-triggered DAG run does) until the PSA shows ``state``;
    the seconds it took."""
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < timeout:
        n += 1
        runs.process_events(ods, psa, erp, run_id=f"asset_triggered__{n}")
        found = psa_invoice(psa, ext)
        if found is not None and found.state == state:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"PSA invoice {ext} not {state} within {timeout} s: {psa_invoice(psa, ext)}")


def test_erp_states_map_forward_to_harvest_states() -> None:
    d = Decimal
    assert target_of("Open", d("100"), d("100"), d(0)).state == "open"
    assert target_of("Open", d("100"), d("40"), d("60")).state == "open"
    assert target_of("Paid In Full", d("100"), d(0), d("100")).state == "paid"
    assert target_of("Paid In Full", d("100"), d(0), d(0)).state == "closed"  # credited in full
    assert target_of("Voided", d("100"), d(0), d(0)).state == "closed"


def test_created_then_paid_through_the_webhook_within_seconds(
    ods: psycopg.Connection,
    psa: HarvestClient,
    erp: NetSuiteClient,
    erp_sim: RunningSimulator,
    ingress_url: str,
) -> None:
    put_invoice(erp_sim, psa, "inv-st-1")
    drain_until(ods, psa, erp, "inv-st-1", "open")
    shown = psa_invoice(psa, "inv-st-1")
    erp_total = erp.read_billing("invoice", "inv-st-1").total
    assert shown.amount == erp_total and shown.due_amount == erp_total
    for entry_id in TIME_IDS:
        entry = psa.get_time_entry(entry_id)
        assert entry is not None and entry["is_billed"] is True
        assert entry["invoice"] == {"id": shown.id, "number": "INV-ST-1"}
    expense = psa.get_expense(EXPENSE_ID)
    assert expense is not None and expense["is_billed"] and expense["invoice"]["id"] == shown.id
    # A billed entry cannot be edited in the PSA any more (Harvest locks invoiced entries).
    with pytest.raises(PsaApiError):
        psa._write("PATCH", f"/v2/time_entries/{TIME_IDS[0]}", {"notes": "changed after invoicing"})

    # A partial payment (no webhook: the ERP announces only paid in full) waits for the sweep.
    erp_sim.admin("POST", "/invoices/eid:inv-st-1/payments", json={"amount": "100.00"})
    erp_sim.admin("POST", "/invoices/eid:inv-st-1/payments", json={})  # the rest: invoice.paid
    took = drain_until(ods, psa, erp, "inv-st-1", "paid")
    print(f"ERP payment -> PSA paid in {took:.2f} s")
    assert took < 5.0
    paid = psa_invoice(psa, "inv-st-1")
    assert paid.due_amount == 0 and [p.amount for p in psa.iter_invoice_payments(paid.id)] == [erp_total]
    row = ods.execute(
        "SELECT psa_invoice_id, psa_state, erp_status, paid_minor FROM billing.psa_invoice"
        " WHERE erp_external_id = 'inv-st-1'"
    ).fetchone()
    assert row == (paid.id, "paid", "Paid In Full", int(erp_total * 100))
    statuses = ods.execute("SELECT DISTINCT status FROM inbox.event WHERE source_system = 'erp'").fetchall()
    assert statuses == [("processed",)]


def test_duplicated_and_reordered_webhooks_change_nothing(
    ods: psycopg.Connection,
    psa: HarvestClient,
    erp: NetSuiteClient,
    erp_sim: RunningSimulator,
    ingress_url: str,
) -> None:
    erp_sim.admin("PUT", "/config", json={"webhook_duplicate_rate": 1.0, "webhook_reorder_window": 4})
    put_invoice(erp_sim, psa, "inv-st-2")
    erp_sim.admin("POST", "/invoices/eid:inv-st-2/payments", json={})
    # Both events (each delivered twice, possibly paid before created) arrive; then the consumer runs.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kinds = ods.execute("SELECT DISTINCT event_type FROM inbox.event ORDER BY 1").fetchall()
        if len(kinds) == 2:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # the duplicates right behind
    deliveries = erp_sim.admin("GET", "/webhooks/deliveries")["deliveries"]
    assert [d["sends"] for d in deliveries] == [2, 2]  # every delivery arrived twice
    result = runs.process_events(ods, psa, erp, run_id="asset_triggered__dup")
    assert result.invoices == 1 and result.outcomes == {"created": 1}
    paid = psa_invoice(psa, "inv-st-2")
    assert paid.state == "paid" and len(list(psa.iter_invoice_payments(paid.id))) == 1
    # The created event delivered again after the payment (an older event): state does not move back.
    invoice_id = erp.read_billing("invoice", "inv-st-2").id
    ods.execute(
        "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, payload)"
        " VALUES ('late-created-1', 'erp', 'invoice.created', %s, '{}'::jsonb)",
        (invoice_id,),
    )
    again = runs.process_events(ods, psa, erp, run_id="asset_triggered__late")
    assert again.outcomes == {"unchanged": 1}
    assert psa_invoice(psa, "inv-st-2").state == "paid"
    assert len(list(psa.iter_invoices(client_id=100))) == 1
    # A read of the ERP older than the one mirrored (an open invoice, before its payment) is ignored.
    current = erp.get_invoice(invoice_id)
    assert current is not None and current.last_modified_date is not None
    older = current.model_copy(
        update={
            "status": "Open",
            "amount_remaining": current.total,
            "last_modified_date": current.last_modified_date - timedelta(minutes=5),
        }
    )
    assert mirror_invoice(ods, psa, older, paid=Decimal(0), run_id="late-read") == "stale"
    assert psa_invoice(psa, "inv-st-2").state == "paid"


def test_a_dropped_webhook_is_fixed_by_the_sweep_and_a_void_closes(
    ods: psycopg.Connection,
    psa: HarvestClient,
    erp: NetSuiteClient,
    erp_sim: RunningSimulator,
) -> None:
    # No subscription at all: every webhook is lost. The sweep alone must get the PSA right.
    put_invoice(erp_sim, psa, "inv-st-3")
    first = runs.sweep(ods, psa, erp, run_id="scheduled__1", as_of=datetime.now(UTC))
    assert first.outcomes == {"created": 1} and psa_invoice(psa, "inv-st-3").state == "open"
    erp_sim.admin("POST", "/invoices/eid:inv-st-3/payments", json={"amount": "50.00"})
    partial = runs.sweep(ods, psa, erp, run_id="scheduled__2", as_of=datetime.now(UTC))
    assert partial.outcomes == {"updated": 1}
    shown = psa_invoice(psa, "inv-st-3")
    assert shown.state == "open" and shown.amount - shown.due_amount == Decimal("50.00")
    # The overlap window reads it again: the payment is not recorded twice.
    runs.sweep(ods, psa, erp, run_id="scheduled__2b", as_of=datetime.now(UTC))
    assert [p.amount for p in psa.iter_invoice_payments(shown.id)] == [Decimal("50.00")]
    erp_sim.admin("POST", "/invoices/eid:inv-st-3/payments", json={})
    runs.sweep(ods, psa, erp, run_id="scheduled__3", as_of=datetime.now(UTC))
    assert psa_invoice(psa, "inv-st-3").state == "paid"
    quiet = runs.sweep(ods, psa, erp, run_id="scheduled__4", as_of=datetime.now(UTC))
    assert set(quiet.outcomes) <= {"unchanged"}

    # A voided ERP invoice closes its PSA invoice (entries stay billed: Harvest keeps them on it).
    put_invoice(erp_sim, psa, "inv-st-4", item={"items": [_milestone_line()]})
    runs.sweep(ods, psa, erp, run_id="scheduled__5", as_of=datetime.now(UTC))
    assert psa_invoice(psa, "inv-st-4").state == "open"
    erp_sim.admin("POST", "/invoices/eid:inv-st-4/void", json={})
    runs.sweep(ods, psa, erp, run_id="scheduled__6", as_of=datetime.now(UTC))
    assert psa_invoice(psa, "inv-st-4").state == "closed"


def _milestone_line() -> dict[str, str]:
    return {"amount": "2500.00", "sourceType": "milestone", "sourceId": "psa-ms-800"}


def test_a_psa_refusal_opens_an_exception_item_and_a_later_success_resolves_it(
    ods: psycopg.Connection,
    psa: HarvestClient,
    erp: NetSuiteClient,
    erp_sim: RunningSimulator,
) -> None:
    put_invoice(erp_sim, psa, "inv-st-5")
    runs.sweep(ods, psa, erp, run_id="scheduled__1", as_of=datetime.now(UTC))
    # A second ERP invoice bills an entry the PSA already shows billed: the PSA refuses (422).
    line = {"amount": "10.00", "sourceType": "timebill", "sourceId": f"psa-te-{TIME_IDS[0]}"}
    put_invoice(erp_sim, psa, "inv-st-6", item={"items": [line]})
    internal_id = erp.read_billing("invoice", "inv-st-6").id
    ods.execute(
        "INSERT INTO inbox.event (delivery_id, source_system, event_type, source_id, payload)"
        " VALUES ('refused-1', 'erp', 'invoice.created', %s, '{}'::jsonb)",
        (internal_id,),
    )
    result = runs.process_events(ods, psa, erp, run_id="asset_triggered__refused")  # does not raise
    assert result.outcomes == {"rejected": 1} and psa_invoice(psa, "inv-st-6") is None
    item = "SELECT status, owner, kind FROM exceptions.item WHERE reason_code = 'PSA_INVOICE_REFUSED' AND source_id = 'inv-st-6'"
    assert ods.execute(item).fetchone() == ("open", "finance-integration", "propagation")
    assert ods.execute("SELECT status, outcome FROM inbox.event").fetchone() == ("processed", "rejected")
    # Finance voids the wrong ERP invoice: the sweep finds nothing to bill and resolves the item.
    erp_sim.admin("POST", "/invoices/eid:inv-st-6/void", json={})
    swept = runs.sweep(ods, psa, erp, run_id="scheduled__2", as_of=datetime.now(UTC))
    assert swept.outcomes["voided_unmirrored"] == 1
    assert ods.execute(item).fetchone() == ("resolved", "finance-integration", "propagation")


def test_the_sweep_lists_each_clients_psa_invoices_once(
    ods: psycopg.Connection,
    psa: HarvestClient,
    erp: NetSuiteClient,
    erp_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many new ERP invoices of one client: one listing of its PSA invoices per run, not one per
    invoice (O(n^2) before); an earlier create whose mapping was never stored is still found."""
    n = 25
    for k in range(n):
        put_invoice(erp_sim, psa, f"inv-ix-{k}", item={"items": [_milestone_line()]})
    # inv-ix-0 exists in the PSA already (a create whose mapping was never stored)
    earlier = psa.create_invoice(
        client_id=100,
        number="INV-IX-0",
        line_items=[{"kind": "Service", "description": "x", "unit_price": "2500.00"}],
    )
    listings: list[int | None] = []
    real = psa.iter_invoices

    def counted(**kw: Any) -> Any:
        listings.append(kw.get("client_id"))
        return real(**kw)

    monkeypatch.setattr(psa, "iter_invoices", counted)
    result = runs.sweep(ods, psa, erp, run_id="scheduled__ix1", as_of=datetime.now(UTC))
    assert result.outcomes == {"created": n} and listings == [100]
    monkeypatch.undo()
    numbers = [i.number for i in psa.iter_invoices(client_id=100) if i.number.startswith("INV-IX-")]
    assert sorted(numbers) == sorted(f"INV-IX-{k}" for k in range(n))  # none twice
    assert psa_invoice(psa, "inv-ix-0").id == earlier.id
