"""The versioned YAML in config/ validates, and it says what the domain brief says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from psa_erp_sync.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_config_loads_and_cross_checks() -> None:
    config = load_config(ROOT / "config")
    assert config.legal_entities.reporting_currency == "USD"
    assert set(config.legal_entities.legal_entities) == {"LE-US1", "LE-US2", "LE-UK1"}


@pytest.mark.parametrize(
    ("domain", "authority"),
    [
        ("customer", "erp"),
        ("legal_entity", "erp"),
        ("currency", "erp"),
        ("tax_code", "erp"),
        ("opportunity", "crm"),
        ("contract_value", "crm"),
        ("change_order", "crm"),
        ("project_plan", "psa"),
        ("resource_allocation", "psa"),
        ("milestone", "psa"),
        ("time_entry", "psa"),
        ("expense_entry", "psa"),
        ("invoice", "erp"),
        ("revenue_posting", "erp"),
        ("accounting_period", "erp"),
        ("forecast_scenario", "planning"),
    ],
)
def test_systems_of_authority_match_the_domain_brief(domain: str, authority: str) -> None:
    assert load_config(ROOT / "config").authority.authority_of(domain) == authority


def test_owner_resolution_most_specific_wins() -> None:
    ownership = load_config(ROOT / "config").ownership
    assert ownership.owner_for("time_expense", "LE-UK1") == "finance-ops-uk"
    assert ownership.owner_for("time_expense", "LE-XX9") == "finance-integration"
    assert ownership.owner_for("nonexistent") == ownership.default


def test_bad_config_is_rejected_with_the_field_named(tmp_path: Path) -> None:
    for name in ("systems_of_authority", "legal_entities", "close_calendars", "ownership", "mappings"):
        (tmp_path / f"{name}.yaml").write_text((ROOT / "config" / f"{name}.yaml").read_text())
    data = yaml.safe_load((tmp_path / "legal_entities.yaml").read_text())
    data["legal_entities"]["LE-US1"]["currency"] = "usd"
    (tmp_path / "legal_entities.yaml").write_text(yaml.safe_dump(data))
    load_config.cache_clear()
    with pytest.raises(ValueError, match="currency"):
        load_config(tmp_path)
    load_config.cache_clear()


def test_example_connections_hold_no_secrets() -> None:
    connections = json.loads((ROOT / "config" / "connections.example.json").read_text())
    for conn_id, conn in connections.items():
        if conn_id.startswith("_"):
            continue
        assert conn.get("password", "").startswith("local-") or "password" not in conn, conn_id
