"""Snapshots in real PostgreSQL from a seeded firm extracted from the PSA and CRM simulators:
immutable, idempotent per (scenario, as-of, input data versions), pushed idempotently to the
planning simulator over loopback, with views and a chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.forecast.conftest import AS_OF

pytestmark = pytest.mark.integration


def _refresh(dsn: str, run_id: str, planning_url: str | None = None, chart_dir: Path | None = None) -> Any:
    from psa_erp_sync.clients.planning import PlanningClient
    from psa_erp_sync.forecast.refresh import refresh
    from psa_erp_sync.forecast.settings import load_forecast_settings

    planning = PlanningClient(base_url=planning_url, token="t") if planning_url else None
    try:
        with psycopg.connect(dsn) as conn:
            return refresh(
                conn,
                as_of=AS_OF,
                run_id=run_id,
                settings=load_forecast_settings(),
                planning=planning,
                chart_dir=chart_dir,
            )
    finally:
        if planning is not None:
            planning.close()


def test_extract_validates_and_versions_the_inputs(seeded: dict[str, Any]) -> None:
    firm, extracted = seeded["firm"], seeded["extracted"]
    assert extracted["psa.projects"]["rows"] == len(firm.psa["projects"])
    assert extracted["psa.milestones"]["rows"] == len(firm.psa["milestones"])
    assert extracted["crm.opportunities"]["rows"] == len(firm.crm["opportunities"])
    assert extracted["psa.schedule"]["rows"] > 0
    with psycopg.connect(seeded["dsn"]) as conn:
        sources = dict(conn.execute("SELECT source, row_count FROM forecast.extract").fetchall())
        people = conn.execute("SELECT * FROM forecast.src_person LIMIT 1").fetchone()
    assert set(sources) >= {
        "psa.projects",
        "psa.users",
        "psa.schedule",
        "psa.milestones",
        "crm.opportunities",
    }
    assert people is not None and not any("@" in str(v) for v in people)  # ids and rates, no personal data


def test_snapshot_is_written_once_and_immutable(seeded: dict[str, Any]) -> None:
    dsn = seeded["dsn"]
    first = _refresh(dsn, "run-1")
    assert {s["written"] for s in first.snapshots.values()} == {True}
    base = first.snapshots["base"]
    assert base["lines"] > 0
    layers = set(base["totals"]["reporting_minor_by_layer"])
    assert layers == {"actual", "contracted", "pipeline"}
    # Same scenario, as-of and inputs: the same ids, nothing new written (even under another run id).
    again = _refresh(dsn, "run-2")
    assert {k: v["snapshot_id"] for k, v in again.snapshots.items()} == {
        k: v["snapshot_id"] for k, v in first.snapshots.items()
    }
    assert {s["written"] for s in again.snapshots.values()} == {False}
    with psycopg.connect(dsn) as conn:
        snapshot = conn.execute(
            "SELECT run_id, data_versions, line_count FROM forecast.snapshot WHERE snapshot_id = %s",
            (base["snapshot_id"],),
        ).fetchone()
        assert snapshot is not None
        assert snapshot[0] == "run-1" and snapshot[2] == base["lines"]
        assert {
            "psa.projects",
            "psa.schedule",
            "crm.opportunities",
            "ledger.posting",
            "canonical.time_entry",
            "config.forecast",
        } <= set(snapshot[1])
        assert conn.execute("SELECT count(*) FROM forecast.snapshot").fetchone() == (3,)
        for statement in (
            "UPDATE forecast.line SET amount_minor = amount_minor + 1 WHERE snapshot_id = %s",
            "DELETE FROM forecast.snapshot WHERE snapshot_id = %s",
            "UPDATE forecast.contract_balance SET cum_billed_minor = 0 WHERE snapshot_id = %s",
        ):
            with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="immutable"):
                conn.execute(statement, (base["snapshot_id"],))
            conn.rollback()


def test_changed_inputs_make_a_new_snapshot_and_the_views_compare_them(seeded: dict[str, Any]) -> None:
    dsn = seeded["dsn"]
    first = _refresh(dsn, "run-1")
    with psycopg.connect(dsn) as conn:
        # A resource plan changes: one more week of 40 h on the first scheduled project.
        conn.execute(
            "INSERT INTO forecast.src_schedule SELECT 'extra-1', user_ref, project_ref, week_start + 7, 40 "
            "FROM forecast.src_schedule WHERE week_start >= %s ORDER BY schedule_id DESC LIMIT 1",
            (AS_OF,),
        )
        conn.execute("UPDATE forecast.extract SET content_hash = 'changed' WHERE source = 'psa.schedule'")
        conn.commit()
    second = _refresh(dsn, "run-2")
    assert second.snapshots["base"]["snapshot_id"] != first.snapshots["base"]["snapshot_id"]
    assert second.snapshots["base"]["previous_snapshot_id"] == first.snapshots["base"]["snapshot_id"]
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT previous_snapshot_id, sum(forecast_minor), sum(previous_forecast_minor) "
            "FROM forecast.forecast_vs_actual WHERE snapshot_id = %s GROUP BY 1",
            (second.snapshots["base"]["snapshot_id"],),
        ).fetchall()
        latest = conn.execute(
            "SELECT snapshot_id FROM forecast.snapshot_sequence WHERE scenario = 'base' AND is_latest"
        ).fetchone()
    assert latest == (second.snapshots["base"]["snapshot_id"],)
    assert len(rows) == 1 and rows[0][0] == first.snapshots["base"]["snapshot_id"]
    assert rows[0][1] >= rows[0][2] > 0  # one more planned week can only add revenue


def test_planning_push_is_idempotent_over_loopback(seeded: dict[str, Any]) -> None:
    dsn, planning = seeded["dsn"], seeded["planning"]
    first = _refresh(dsn, "run-1", planning.base_url)
    assert set(first.published.values()) == {"created"}
    again = _refresh(dsn, "run-2", planning.base_url)
    assert set(again.published.values()) == {"unchanged"}
    stats = planning.admin("GET", "/stats")
    assert stats["snapshots"] == 3
    assert stats["puts_accepted"] == 6  # three created, three replays answered "unchanged"
    base_id = first.snapshots["base"]["snapshot_id"]
    with psycopg.connect(dsn) as conn:
        ours = conn.execute(
            "SELECT line_count, (SELECT sum(reporting_amount_minor) FROM forecast.line WHERE snapshot_id = %s) "
            "FROM forecast.snapshot WHERE snapshot_id = %s",
            (base_id, base_id),
        ).fetchone()
        published = conn.execute(
            "SELECT status, run_id FROM forecast.publication WHERE snapshot_id = %s", (base_id,)
        ).fetchone()
    from psa_erp_sync.clients.planning import PlanningClient

    with PlanningClient(base_url=planning.base_url, token="t") as client:
        theirs = client.get_snapshot(base_id)
    assert theirs is not None and ours is not None
    assert theirs["line_count"] == ours[0]
    assert theirs["totals"]["reporting_amount"].replace(".", "") == str(ours[1])  # USD: 2 decimals
    assert published == ("created", "run-1")


def test_chart_files_are_written(seeded: dict[str, Any], tmp_path: Path) -> None:
    outcome = _refresh(seeded["dsn"], "run-1", chart_dir=tmp_path)
    assert outcome.chart_html is not None
    page = Path(outcome.chart_html).read_text()
    entities = {p["legal_entity"] for p in seeded["firm"].psa["projects"]}
    assert set(outcome.chart_pngs) == {"firm", *entities}
    for png in outcome.chart_pngs.values():
        data = Path(png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert page.count("<img") == len(entities) + 1 and "previous" in page


def test_contract_balances_are_per_contract_never_netted(seeded: dict[str, Any]) -> None:
    outcome = _refresh(seeded["dsn"], "run-1")
    with psycopg.connect(seeded["dsn"]) as conn:
        rows = conn.execute(
            "SELECT billing_type, contract_asset_minor, contract_liability_minor, cum_revenue_minor - cum_billed_minor "
            "FROM forecast.contract_balance WHERE snapshot_id = %s",
            (outcome.snapshots["base"]["snapshot_id"],),
        ).fetchall()
    assert rows
    for _kind, asset, liability, balance in rows:
        assert asset - liability == balance and min(asset, liability) == 0
    kinds_with_liability = {k for k, _, liability, _ in rows if liability > 0}
    assert "retainer" in kinds_with_liability  # billed in advance
    assert any(asset > 0 for _, asset, _, _ in rows)


def test_rollup_from_project_to_firm_adds_up(seeded: dict[str, Any]) -> None:
    outcome = _refresh(seeded["dsn"], "run-1")
    base_id = outcome.snapshots["base"]["snapshot_id"]
    with psycopg.connect(seeded["dsn"]) as conn:
        levels = dict(
            conn.execute(
                "SELECT level, sum(reporting_amount_minor) FROM forecast.rollup WHERE snapshot_id = %s GROUP BY level",
                (base_id,),
            ).fetchall()
        )
        total = conn.execute(
            "SELECT sum(reporting_amount_minor) FROM forecast.line WHERE snapshot_id = %s", (base_id,)
        ).fetchone()
        firm_usd = conn.execute(
            "SELECT sum(amount_minor) FROM forecast.rollup WHERE snapshot_id = %s AND level = 'firm' AND currency = 'USD'",
            (base_id,),
        ).fetchone()
    assert set(levels) == {"project", "practice", "legal_entity", "firm"}
    assert total is not None and len(set(levels.values()) | {total[0]}) == 1  # every level sums to the lines
    assert firm_usd is not None and firm_usd[0] > 0
    layers = outcome.snapshots["base"]["totals"]["reporting_minor_by_layer"]
    assert sum(layers.values()) == total[0]
