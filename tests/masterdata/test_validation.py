"""ERP validation against the ERP simulator over loopback: bulk look-ups and a per-run cache,
a verdict with reason codes per record, bad input of every kind, and an ERP outage that is retried
with backoff and then fails clearly (never a silent pass)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from psa_erp_sync.masterdata.validation import (
    REASON_CODES,
    Candidate,
    ErpLookup,
    ErpValidationUnavailable,
    passed,
    record_verdicts,
    validate_batch,
)
from tests.conftest import RunningSimulator
from tests.masterdata.conftest import HOSTILE_NAME, UNICODE_NAME

pytestmark = pytest.mark.integration

GOOD = {"customer": "psa-client-1", "legal_entity": "LE-US1", "currency": "USD", "contract_value": "5000.00"}
CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("ok", GOOD, ()),
    ("unknown-le", GOOD | {"legal_entity": "LE-XX9"}, ("LEGAL_ENTITY_UNKNOWN", "LEGAL_ENTITY_MISMATCH")),
    ("inactive-le", GOOD | {"legal_entity": "LE-OLD"}, ("LEGAL_ENTITY_INACTIVE", "LEGAL_ENTITY_MISMATCH")),
    ("tax-mismatch", GOOD | {"customer": "psa-client-5"}, ("TAX_CODE_MISMATCH",)),
    ("explicit-tax-mismatch", GOOD | {"tax_code": "TAX-GB-S20"}, ("TAX_CODE_MISMATCH",)),
    ("unknown-tax", GOOD | {"tax_code": "TAX-NOPE"}, ("TAX_CODE_UNKNOWN",)),
    ("inactive-customer", GOOD | {"customer": "psa-client-2"}, ("CUSTOMER_INACTIVE",)),
    ("unknown-customer", GOOD | {"customer": "psa-client-999"}, ("CUSTOMER_UNKNOWN",)),
    (
        "duplicate-names",
        {k: v for k, v in GOOD.items() if k != "customer"} | {"customer_name": "Acme Ltd"},
        ("CUSTOMER_AMBIGUOUS",),
    ),
    ("currency-mismatch", GOOD | {"currency": "GBP"}, ("CURRENCY_MISMATCH",)),
    ("currency-unknown", GOOD | {"currency": "EUR"}, ("CURRENCY_UNKNOWN",)),
    ("currency-malformed", GOOD | {"currency": "usd"}, ("CURRENCY_UNKNOWN",)),
    ("unicode-by-name", {"customer_name": UNICODE_NAME, "legal_entity": "LE-UK1", "currency": "GBP"}, ()),
    ("hostile-by-name", {"customer_name": HOSTILE_NAME, "legal_entity": "LE-US1", "currency": "USD"}, ()),
    (
        "hostile-unknown-name",
        {"customer_name": "x' OR '1'='1", "legal_entity": "LE-US1"},
        ("CUSTOMER_UNKNOWN",),
    ),
    ("hostile-ref", GOOD | {"customer": "psa-client-1' OR 1=1 --"}, ("INVALID_REFERENCE",)),
    ("control-chars", {"customer_name": "Bad\x00Name", "legal_entity": "LE-US1"}, ("INVALID_REFERENCE",)),
    ("project-ok", GOOD | {"project_code": "psa-project-10"}, ()),
    ("project-unknown", GOOD | {"project_code": "psa-project-404"}, ("PROJECT_UNKNOWN",)),
    ("project-inactive", GOOD | {"project_code": "psa-project-11"}, ("PROJECT_INACTIVE",)),
    ("contract-negative", GOOD | {"contract_value": "-5.00"}, ("CONTRACT_INVALID",)),
    ("contract-fraction", GOOD | {"contract_value": "10.001"}, ("CONTRACT_INVALID",)),
]


def _candidates() -> list[Candidate]:
    return [Candidate.model_validate({"key": key, **fields}) for key, fields, _ in CASES]


def test_every_bad_input_gets_its_reason_code(erp_master: dict[str, Any], erp_client: Any) -> None:
    verdicts = validate_batch(_candidates(), ErpLookup(erp_client))
    got = {v.key: v.reasons for v in verdicts}
    assert got == {key: reasons for key, _, reasons in CASES}
    assert all(v.ok == (not v.reasons) for v in verdicts)
    assert {v.key: v.customer for v in verdicts}["unicode-by-name"] == "psa-client-6"
    assert {v.key: v.customer for v in verdicts}["hostile-by-name"] == "psa-client-7"
    for reasons in got.values():
        assert set(reasons) <= set(REASON_CODES)


def test_hostile_strings_do_not_reach_the_erp_as_code(
    erp_master: dict[str, Any], erp_client: Any, pg_dsn: str
) -> None:
    validate_batch(_candidates(), ErpLookup(erp_client))
    with psycopg.connect(pg_dsn) as conn:  # the simulator's table is still there and whole
        assert conn.execute("SELECT count(*) FROM sim_erp.record WHERE type = 'customer'").fetchone() == (7,)


def test_bulk_lookups_and_per_run_cache(
    erp_master: dict[str, Any], erp_client: Any, erp_sim: RunningSimulator
) -> None:
    small = _candidates()
    lookup = ErpLookup(erp_client)
    validate_batch(small, lookup)
    few_queries = lookup.queries
    # 3 small tables + customers by id + customers by name + jobs: never one call per record
    assert few_queries <= 6 < len(small)
    before = erp_sim.admin("GET", "/stats")["requests"]
    validate_batch(small, lookup)  # the same run again: everything is cached
    assert lookup.queries == few_queries
    assert erp_sim.admin("GET", "/stats")["requests"] == before
    # Ten times the batch costs the same number of queries on a fresh cache.
    big = [c.model_copy(update={"key": f"{c.key}-{n}"}) for n in range(10) for c in small]
    fresh = ErpLookup(erp_client)
    validate_batch(big, fresh)
    assert fresh.queries == few_queries


def test_erp_outage_is_retried_then_fails_clearly(
    erp_master: dict[str, Any], erp_client: Any, erp_sim: RunningSimulator
) -> None:
    erp_sim.admin(
        "PUT",
        "/faults",
        json=[{"id": "down", "action": "status", "status": 503, "path_regex": "/query/v1/suiteql"}],
    )
    try:
        with pytest.raises(ErpValidationUnavailable, match=r"22 records not validated: ERP unavailable"):
            validate_batch(_candidates(), ErpLookup(erp_client))
        rule = erp_sim.admin("GET", "/faults")["rules"][0]
        assert rule["hits"] == 3  # max_attempts of the client's retry policy, with backoff between
    finally:
        erp_sim.admin("DELETE", "/faults")


def test_failures_become_exception_items_with_owner_and_clear_when_fixed(
    erp_master: dict[str, Any], erp_client: Any, erp_sim: RunningSimulator, clean_master: str
) -> None:
    from psa_erp_sync.config import load_config

    ownership = load_config().ownership
    candidates = [
        Candidate(key="opp-1", customer="psa-client-1", legal_entity="LE-US1", currency="USD"),
        Candidate(key="opp-2", customer="psa-client-2", legal_entity="LE-US1", currency="GBP"),
    ]

    def run(run_id: str) -> None:
        verdicts = validate_batch(candidates, ErpLookup(erp_client))
        with psycopg.connect(clean_master) as conn, conn.transaction():
            record_verdicts(
                conn,
                verdicts,
                domain="project_setup",
                record_type="opportunity",
                source_system="crm",
                owner_for=ownership.owner_for,
                run_id=run_id,
            )

    def open_items() -> set[tuple[str, str, str]]:
        with psycopg.connect(clean_master) as conn:
            return set(
                conn.execute(
                    "SELECT source_id, reason_code, owner FROM exceptions.item WHERE kind = 'validation' AND status = 'open'"
                ).fetchall()
            )

    run("r1")
    assert open_items() == {
        ("opp-2", "CUSTOMER_INACTIVE", "sales-operations"),
        ("opp-2", "CURRENCY_MISMATCH", "sales-operations"),
    }
    with psycopg.connect(clean_master) as conn:
        assert passed(conn, "project_setup", ["opp-1", "opp-2"]) == {"opp-1"}
    run("r2")  # the same failures again: no new rows, occurrences counted
    with psycopg.connect(clean_master) as conn:
        assert conn.execute("SELECT count(*), max(occurrences) FROM exceptions.item").fetchone() == (2, 2)
    # The owner reactivates the customer in the ERP; the deal's currency is still wrong.
    erp_sim.admin("POST", "/seed", json={"customers": [dict(erp_master["customers"][1], is_inactive=False)]})
    run("r3")
    assert open_items() == {("opp-2", "CURRENCY_MISMATCH", "sales-operations")}
    candidates[1] = candidates[1].model_copy(update={"currency": "USD"})
    run("r4")
    assert open_items() == set()
    with psycopg.connect(clean_master) as conn:
        assert passed(conn, "project_setup", ["opp-1", "opp-2"]) == {"opp-1", "opp-2"}
