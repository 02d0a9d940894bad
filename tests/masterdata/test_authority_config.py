"""Deliverable 1: the systems-of-authority map in config/ (authority, propagation direction,
business owner; the validation rules are code, listed in docs/master-data.md) validates, says what the domain brief says, and documents a
fix for every reason code the master-data code can raise; the rate cards validate."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from psa_erp_sync.config import load_config
from psa_erp_sync.masterdata.setup import load_rate_cards
from psa_erp_sync.masterdata.validation import REASON_CODES

ROOT = Path(__file__).resolve().parents[2]


def test_every_domain_has_authority_direction_and_owner() -> None:
    authority = load_config(ROOT / "config").authority
    for name, domain in authority.domains.items():
        assert authority.flows_from(name) in (domain.authority, "ods"), (
            f"{name}: changes must flow from the authority"
        )
        assert domain.owner, name
    assert authority.owner_of("change_order") == "sales-operations"


def test_every_reason_code_has_a_documented_fix() -> None:
    codes = load_config(ROOT / "config").authority.reason_codes
    raised = {
        *REASON_CODES,
        "REVENUE_LEAKAGE",
        "JOB_MISSING_IN_ERP",
        "PSA_CLIENT_UNMAPPED",
        "PROVISIONING_REJECTED",
        "PSA_PROJECT_MISSING",
        "PSA_PROJECT_INVALID",
        "PSA_CURRENCY_MISMATCH",
        "SAP_MASTER_INVALID",  # psa_erp_sync.masterdata.sap_sync
    }
    assert raised <= set(codes), raised - set(codes)
    assert all(len(code.fix) > 20 for code in codes.values())


def test_an_unknown_authority_is_rejected(tmp_path: Path) -> None:
    for name in ("systems_of_authority", "legal_entities", "close_calendars", "ownership", "mappings"):
        (tmp_path / f"{name}.yaml").write_text((ROOT / "config" / f"{name}.yaml").read_text())
    data = yaml.safe_load((tmp_path / "systems_of_authority.yaml").read_text())
    data["domains"]["customer"]["authority"] = "spreadsheet"
    (tmp_path / "systems_of_authority.yaml").write_text(yaml.safe_dump(data))
    load_config.cache_clear()
    with pytest.raises(ValueError, match="authority"):
        load_config(tmp_path)
    load_config.cache_clear()


def test_rate_cards_validate() -> None:
    cards = load_rate_cards(ROOT / "config" / "rate_cards.yaml")
    assert str(cards.hourly_rate("Strategy", "USD")) == "250.00"
    assert str(cards.hourly_rate("Operations", "GBP")) == "140.00"  # falls back to the default card
    assert cards.hourly_rate("Strategy", "JPY") is None
