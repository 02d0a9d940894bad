"""The firm loader and CLI, against an in-memory transport that records every admin call."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import httpx
import pytest

from simulators.firm import __main__ as cli
from simulators.firm import load as load_module
from simulators.firm.generator import (
    Firm,
    FirmSpec,
    dirt_report,
    generate_firm,
    iter_expenses,
    iter_schedule,
    iter_time_entries,
    mutations,
)
from simulators.firm.load import apply_mutations, load_firm

PSA, ERP, CRM = "http://psa.test", "http://erp.test", "http://crm.test"


def _no_float(text: str) -> float:
    raise AssertionError(f"float in a request body: {text}")


class Recorder:
    """A fake of the simulators' admin API: records calls, can fail the first N of them."""

    def __init__(self, fail_first: int = 0, status: int = 503) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail_first = fail_first
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content, parse_float=_no_float) if request.content else None
        if self.fail_first > 0:
            self.fail_first -= 1
            return httpx.Response(self.status, headers={"Retry-After": "0"}, json={"error": "busy"})
        self.calls.append((request.method, str(request.url), body))
        return httpx.Response(200, json={"status": "ok"})

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


@pytest.fixture(scope="module")
def small_firm() -> Firm:
    return generate_firm(
        FirmSpec(consultants=30, customers=12, projects=25, opportunities=10, today=date(2026, 11, 26))
    )


def test_load_sends_every_row_in_order_and_in_chunks(small_firm: Firm) -> None:
    recorder = Recorder()
    with recorder.client() as client:
        counts = load_firm(small_firm, psa_url=PSA, erp_url=ERP, crm_url=CRM, chunk_size=500, client=client)
    assert all(method == "POST" and url.endswith("/admin/seed") for method, url, _ in recorder.calls)
    hosts = [url.split("/admin")[0] for _, url, _ in recorder.calls]
    assert hosts == sorted(hosts, key=[ERP, CRM, PSA].index)  # ERP first: it owns customers and periods
    received: dict[str, list[dict[str, Any]]] = {}
    for _, url, body in recorder.calls:
        (name, rows), *rest = body.items()
        assert not rest
        assert 0 < len(rows) <= 500
        system = {ERP: "erp", CRM: "crm", PSA: "psa"}[url.split("/admin")[0]]
        received.setdefault(f"{system}.{name}", []).extend(rows)
    expected = {
        f"{s}.{n}": rows
        for s, lists in (("psa", small_firm.psa), ("erp", small_firm.erp), ("crm", small_firm.crm))
        for n, rows in lists.items()
        if rows
    }
    expected["psa.time_entries"] = [r for c in iter_time_entries(small_firm) for r in c]
    expected["psa.expenses"] = [r for c in iter_expenses(small_firm) for r in c]
    expected["psa.schedule"] = [r for c in iter_schedule(small_firm) for r in c]
    assert received == expected
    assert counts == {k: len(v) for k, v in expected.items()} | {k: 0 for k in counts if k not in expected}
    psa_order = [next(iter(body)) for _, url, body in recorder.calls if url.startswith(PSA)]
    assert psa_order.index("projects") < psa_order.index("user_assignments") < psa_order.index("time_entries")


def test_load_skips_systems_without_url_and_retries_transient_errors(small_firm: Firm) -> None:
    recorder = Recorder(fail_first=2)
    with recorder.client() as client:
        counts = load_firm(small_firm, psa_url=None, erp_url=ERP, crm_url=None, client=client)
    assert set(counts) == {f"erp.{n}" for n in small_firm.erp}
    assert len(recorder.calls) == len(small_firm.erp)  # the two 503s were retried, nothing lost


def test_load_raises_on_a_rejected_seed(small_firm: Firm) -> None:
    recorder = Recorder(fail_first=1, status=422)
    with (
        recorder.client() as client,
        pytest.raises(RuntimeError, match="erp seed of subsidiaries failed with 422"),
    ):
        load_firm(small_firm, psa_url=None, erp_url=ERP, crm_url=None, client=client)


def test_apply_mutations_uses_bulk_for_state_changes_and_patch_for_edits(small_firm: Firm) -> None:
    recorder = Recorder()
    with recorder.client() as client:
        counts = apply_mutations(small_firm, PSA, client=client, bulk_size=7)
    muts = mutations(small_firm)
    assert sum(counts.values()) == len(muts)
    applied: list[tuple[str, str, int]] = []
    for method, url, body in recorder.calls:
        path = url.removeprefix(PSA)
        entity = path.split("/")[2]
        if path.endswith("/bulk"):
            assert method == "POST"
            assert 1 <= len(body["ids"]) <= 7
            applied += [(entity, body["action"], i) for i in body["ids"]]
        else:
            assert method == "PATCH"
            row_id = int(path.rsplit("/", 1)[1])
            applied.append((entity, "edit", row_id))
            assert body == next(m["changes"] for m in muts if m["id"] == row_id)
    paths = {"time_entry": "time_entries", "expense": "expenses"}
    assert applied == [(paths[m["entity"]], m["kind"], m["id"]) for m in muts]


def test_apply_mutations_one_by_one(small_firm: Firm) -> None:
    recorder = Recorder()
    with recorder.client() as client:
        apply_mutations(small_firm, PSA, client=client, bulk=False)
    muts = mutations(small_firm)
    assert len(recorder.calls) == len(muts)
    for (method, url, _), m in zip(recorder.calls, muts, strict=True):
        entity = "time_entries" if m["entity"] == "time_entry" else "expenses"
        expected = {
            "approve": ("POST", f"{PSA}/admin/{entity}/{m['id']}/approve"),
            "unapprove": ("POST", f"{PSA}/admin/{entity}/{m['id']}/unapprove"),
            "edit": ("PATCH", f"{PSA}/admin/{entity}/{m['id']}"),
            "delete": ("DELETE", f"{PSA}/admin/{entity}/{m['id']}"),
        }[m["kind"]]
        assert (method, url) == expected


def test_cli_generates_and_prints_a_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "--seed",
            "7",
            "--consultants",
            "15",
            "--customers",
            "8",
            "--projects",
            "12",
            "--today",
            "2026-11-26",
            "--json-summary",
            "--log-level",
            "WARNING",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    firm = generate_firm(FirmSpec(seed=7, consultants=15, customers=8, projects=12, today=date(2026, 11, 26)))
    assert out["dirt"] == dirt_report(firm)
    assert out["counts"]["psa.users"] == 15
    assert out["counts"]["psa.time_entries"] == sum(len(c) for c in iter_time_entries(firm))
    assert out["month"] == "2026-10-01"
    assert out["loaded"] == {}


def test_cli_loads_through_the_simulators(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder()
    real_client = httpx.Client

    def fake_client(**kwargs: Any) -> httpx.Client:
        return real_client(transport=httpx.MockTransport(recorder))

    monkeypatch.setattr(load_module.httpx, "Client", fake_client)
    code = cli.main(
        [
            "--consultants",
            "10",
            "--customers",
            "6",
            "--projects",
            "8",
            "--month",
            "2026-10",
            "--psa",
            PSA,
            "--erp",
            ERP,
            "--crm",
            CRM,
            "--log-level",
            "WARNING",
        ]
    )
    assert code == 0
    assert "psa.time_entries" in capsys.readouterr().out
    assert any(url.endswith("/bulk") for _, url, _ in recorder.calls)
    assert any(url.startswith(ERP) for _, url, _ in recorder.calls)


@pytest.mark.integration
def test_load_into_the_real_simulators(psa_sim: Any, erp_sim: Any, crm_sim: Any) -> None:
    firm = generate_firm(
        FirmSpec(consultants=25, customers=10, projects=20, opportunities=8, today=date(2026, 11, 26))
    )
    counts = load_firm(
        firm, psa_url=psa_sim.base_url, erp_url=erp_sim.base_url, crm_url=crm_sim.base_url, chunk_size=300
    )
    applied = apply_mutations(firm, psa_sim.base_url, bulk_size=50)
    stats = psa_sim.admin("GET", "/stats")["counts"]
    te_deleted = sum(1 for m in mutations(firm) if m["kind"] == "delete" and m["entity"] == "time_entry")
    ex_deleted = sum(1 for m in mutations(firm) if m["kind"] == "delete" and m["entity"] == "expense")
    assert stats["time_entries"] == counts["psa.time_entries"] - te_deleted
    assert stats["expenses"] == counts["psa.expenses"] - ex_deleted
    for name in ("clients", "users", "projects", "task_assignments", "schedule"):
        assert stats[name] == counts[f"psa.{name}"]
    assert sum(applied.values()) == len(mutations(firm))
