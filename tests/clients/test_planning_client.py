"""PlanningClient against the running planning simulator: idempotent PUT, ambiguity, read-back."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from psa_erp_sync.clients.planning import (
    PlanningClient,
    PlanningError,
    SnapshotConflictError,
    snapshot_payload,
)
from psa_erp_sync.contracts.v1 import ForecastLine, ForecastSnapshot

pytestmark = pytest.mark.integration


def snapshot(
    snapshot_id: str = "fc-base-1", *, usd_minor: int = 123456, scenario: str = "base"
) -> ForecastSnapshot:
    return ForecastSnapshot.model_validate(
        {
            "snapshot_id": snapshot_id,
            "scenario": scenario,
            "version": "2026-11-26",
            "as_of": date(2026, 11, 26),
            "run_id": "manual__2026-11-26T12:00:00+00:00",
            "data_versions": {"psa": "h1"},
            "reporting_currency": "USD",
            "lines": [
                ForecastLine(
                    project_ref="psa-project-1",
                    practice="data",
                    legal_entity="LE-US1",
                    layer="contracted",
                    month=date(2026, 12, 1),
                    currency="USD",
                    amount_minor=usd_minor,
                    reporting_amount_minor=usd_minor,
                ),
                ForecastLine(
                    project_ref="psa-project-2",
                    practice="cloud",
                    legal_entity="LE-JP1",
                    layer="pipeline",
                    month=date(2027, 1, 1),
                    currency="JPY",
                    amount_minor=150000,
                    reporting_amount_minor=100050,
                ),
            ],
        }
    )


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(sim: Any, sleeps: Sleeps | None = None) -> PlanningClient:
    return PlanningClient(
        base_url=sim.base_url, token="test-token", sleep=sleeps if sleeps is not None else Sleeps()
    )


def test_payload_converts_minor_units_per_currency() -> None:
    payload = snapshot_payload(snapshot())
    assert payload["lines"][0]["amount"] == "1234.56"
    assert payload["lines"][1]["amount"] == "150000"  # JPY has no minor unit
    assert payload["lines"][1]["reporting_amount"] == "1000.50"
    assert "run_id" not in payload


def test_put_is_created_then_unchanged_then_conflict(planning_sim: Any) -> None:
    with client(planning_sim) as planning:
        first = planning.put_snapshot(snapshot())
        assert first.status == "created"
        assert first.line_count == 2
        assert first.totals["reporting_amount"] == "2235.06"
        assert planning.put_snapshot(snapshot()).status == "unchanged"
        with pytest.raises(SnapshotConflictError) as info:
            planning.put_snapshot(snapshot(usd_minor=1))
        assert info.value.status_code == 409


def test_read_back(planning_sim: Any) -> None:
    with client(planning_sim) as planning:
        planning.put_snapshot(snapshot())
        stored = planning.get_snapshot("fc-base-1", include_lines=True)
        assert stored is not None
        assert stored["line_count"] == 2
        assert stored["totals"]["amount_by_currency"] == {"JPY": "150000.00", "USD": "1234.56"}
        assert [line["project_ref"] for line in stored["lines"]] == ["psa-project-1", "psa-project-2"]
        assert planning.get_snapshot("unknown") is None


def test_lists_snapshots_by_scenario_across_pages(planning_sim: Any) -> None:
    with client(planning_sim) as planning:
        for i in range(5):
            planning.put_snapshot(snapshot(f"fc-base-{i}"))
        planning.put_snapshot(snapshot("fc-worst-0", scenario="worst"))
        ids = [s["snapshot_id"] for s in planning.iter_snapshots(scenario="base", page_size=2)]
        assert ids == [f"fc-base-{i}" for i in range(5)]


@pytest.mark.parametrize("action", ["status_after_commit", "drop_after_commit"])
def test_ambiguous_failure_is_resolved_by_the_idempotent_retry(planning_sim: Any, action: str) -> None:
    """The platform commits, the client never hears: the retried PUT answers 200 unchanged."""
    planning_sim.admin(
        "POST", "/faults", json={"id": "amb", "action": action, "status": 503, "method": "PUT", "max_hits": 1}
    )
    sleeps = Sleeps()
    with client(planning_sim, sleeps) as planning:
        receipt = planning.put_snapshot(snapshot())
    assert receipt.status == "unchanged"
    assert len(sleeps) == 1
    assert planning_sim.admin("GET", "/stats") == {"snapshots": 1, "lines": 2, "puts_accepted": 2}


def test_throttle_honours_retry_after(planning_sim: Any) -> None:
    planning_sim.admin(
        "POST",
        "/faults",
        json={"id": "t", "action": "throttle", "method": "PUT", "max_hits": 1, "retry_after": 4},
    )
    sleeps = Sleeps()
    with client(planning_sim, sleeps) as planning:
        assert planning.put_snapshot(snapshot()).status == "created"
    assert sleeps == [4.0]


def test_validation_error_names_fields_only(planning_sim: Any) -> None:
    with client(planning_sim) as planning, pytest.raises(PlanningError) as info:
        planning.put_snapshot_payload("bad", {"scenario": "base"})
    assert info.value.status_code == 422
    assert info.value.code == "VALIDATION_ERROR"
    assert "body.version" in str(info.value)
