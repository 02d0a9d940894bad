"""The registry of record kinds (include/psa_erp_sync/contracts/kinds.py) agrees with the business
configuration and with every module that reads it."""

from __future__ import annotations

import pytest

from psa_erp_sync.config import load_config
from psa_erp_sync.contracts import kinds


def test_every_kind_has_its_owner_domain_and_external_id_template() -> None:
    config = load_config()
    for kind in kinds.KINDS.values():
        assert config.authority.authority_of(kind.owner_domain) == "psa", kind.name
        # config/mappings.yaml's template for the record type is the registry's prefix + the PSA id
        assert (
            config.mappings.external_id(kind.record_type, 42)
            == kind.external_id(42)
            == f"{kind.external_id_prefix}42"
        )
        assert set(kind.erp_objects) == {"netsuite", "sap"}
        assert kind.erp_objects["netsuite"] == kind.record_type
        assert kind.canonical_table == f"canonical.{kind.table}"


def test_the_lookups_are_one_to_one() -> None:
    assert len(kinds.BY_RECORD_TYPE) == len(kinds.BY_ENDPOINT) == len(kinds.BY_EVENT_TYPE) == len(kinds.KINDS)
    assert kinds.by_record_type("expensereport") is kinds.EXPENSE_ENTRY
    with pytest.raises(KeyError, match="timebill"):
        kinds.by_record_type("invoice")
    assert not set(kinds.REFERENCE_ENDPOINTS) & set(kinds.TRANSACTIONAL_ENDPOINTS)


def test_the_readers_read_the_registry() -> None:
    from psa_erp_sync.extract import psa
    from psa_erp_sync.lineage import naming
    from psa_erp_sync.posting import planner, replay
    from psa_erp_sync.reconcile import time_expense as reconcile
    from psa_erp_sync.stream import time_expense as stream
    from psa_erp_sync.trace import KINDS, parse_source_id
    from psa_erp_sync.validation import time_expense as validation

    assert psa.TRANSACTIONAL == ("/v2/time_entries", "/v2/expenses")
    assert validation.ENDPOINTS == {"time_entry": "/v2/time_entries", "expense_entry": "/v2/expenses"}
    assert stream.TABLE_OF_KIND == validation.TABLES
    assert stream.KIND_OF_EVENT == {"time_entry": "time_entry", "expense": "expense_entry"}
    assert planner.SOURCES == {"timebill": "canonical.time_entry", "expensereport": "canonical.expense_entry"}
    assert replay.KIND_OF["expensereport"] == planner.KINDS["expensereport"] == "expense_entry"
    assert reconcile.EXTERNAL_ID_PREFIX == {"timebill": "psa-te-", "expensereport": "psa-ex-"}
    assert naming.CANONICAL_TABLE == {"timebill": "time_entry", "expensereport": "expense_entry"}
    assert KINDS["time_entry"]["prefix"] == "psa-te-"
    assert parse_source_id("psa-ex-77") == ("77", ["expense_entry"])
    assert parse_source_id(" 77 ") == ("77", ["time_entry", "expense_entry"])
