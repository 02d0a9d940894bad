"""The authority map decides which PSA user fields HR overwrites, and every HR reason code has a fix."""

from __future__ import annotations

from pathlib import Path

import yaml

from psa_erp_sync.config import load_config
from psa_erp_sync.hr import propagate

ROOT = Path(__file__).resolve().parents[2]


def test_hr_owns_people_legal_entity_and_cost_rate() -> None:
    config = load_config(ROOT / "config")
    assert propagate.hr_owned_fields(config) == (
        "first_name",
        "last_name",
        "legal_entity",
        "is_active",
        "cost_rate",
    )
    codes = config.authority.reason_codes
    for code in (
        propagate.EDITED_IN_PSA,
        propagate.HOME_LEGAL_ENTITY_UNKNOWN,
        propagate.PSA_WRITE_FAILED,
        propagate.ERP_WRITE_FAILED,
    ):
        assert code in codes and len(codes[code].fix) > 20, code
    assert config.ownership.owner_for("hr") == "people-operations"
    from datetime import date

    from psa_erp_sync.routing.route import route

    assert route("LE-UK1", date(2026, 12, 6)).connection == "erp_default"  # the routing file's default


def test_a_domain_the_map_gives_to_another_system_is_not_overwritten(tmp_path: Path) -> None:
    for path in (ROOT / "config").glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    data = yaml.safe_load((tmp_path / "systems_of_authority.yaml").read_text())
    data["domains"]["cost_rate"] = {
        "authority": "psa",
        "propagation": "psa_to_erp",
        "owner": "delivery-operations",
    }
    (tmp_path / "systems_of_authority.yaml").write_text(yaml.safe_dump(data))
    load_config.cache_clear()
    try:
        assert "cost_rate" not in propagate.hr_owned_fields(load_config(tmp_path))
    finally:
        load_config.cache_clear()
