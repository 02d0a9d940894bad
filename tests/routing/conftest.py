"""Routing files for the tests: LE-UK1 moves from NetSuite to SAP on 2027-01-01 (docs/multi-erp.md)."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

from psa_erp_sync.routing.route import Router
from psa_erp_sync.routing.settings import ErpRouting

CUTOVER = date(2027, 1, 1)
NETSUITE_ONLY = {"effective": [{"first_day": None, "last_day": None, "erp": "netsuite", "account": None}]}


def uk_cutover(policy: str = "reverse_and_repost", **cutover: Any) -> dict[str, Any]:
    """LE-UK1 on NetSuite until 2026-12-31, on SAP account UK10 from 2027-01-01."""
    return {
        "effective": [
            {"first_day": None, "last_day": date(2026, 12, 31), "erp": "netsuite", "account": None},
            {
                "first_day": CUTOVER,
                "last_day": None,
                "erp": "sap",
                "account": "UK10",
                "correction_policy": policy,
                **cutover,
            },
        ]
    }


def routing_data(**entities: Any) -> dict[str, Any]:
    """A routing file: version 1 all NetSuite, version 2 with ``entities`` replacing theirs."""
    v1 = {"LE-US1": NETSUITE_ONLY, "LE-US2": NETSUITE_ONLY, "LE-UK1": NETSUITE_ONLY}
    v2 = {**copy.deepcopy(v1), **entities}
    return {
        "version": 1,
        "erps": {"netsuite": {"connection": "erp_default"}, "sap": {"connection": "sap_default"}},
        "versions": [{"version": 1, "legal_entities": v1}, {"version": 2, "legal_entities": v2}],
    }


def router_of(**entities: Any) -> Router:
    return Router(ErpRouting.model_validate(routing_data(**entities)))
