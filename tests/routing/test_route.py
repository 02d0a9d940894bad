"""Where a record goes: by legal entity and posting date, across a cutover, per correction policy.

Pure units over routing files built in the test (tests/routing/conftest.py), plus the repository's
own config/erp_routing.yaml (today's behaviour: everything to NetSuite).
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from psa_erp_sync.routing.route import Route, RouteNotFound, Router, route
from psa_erp_sync.routing.settings import ErpRouting, load_routing
from tests.conftest import ROOT
from tests.routing.conftest import CUTOVER, router_of, routing_data, uk_cutover

NS = "netsuite"


def test_the_default_file_routes_every_entity_to_netsuite_on_any_date() -> None:
    for entity in ("LE-US1", "LE-US2", "LE-UK1"):
        for day in (date(1999, 1, 1), date(2026, 12, 31), CUTOVER, date(2040, 6, 30)):
            got = route(entity, day)
            assert (got.erp, got.account, got.connection) == (NS, None, "erp_default"), (entity, day)


def test_the_cutover_boundary_day_decides_by_posting_date() -> None:
    router = router_of(**{"LE-UK1": uk_cutover()})
    last_old, first_new = router.route("LE-UK1", date(2026, 12, 31)), router.route("LE-UK1", CUTOVER)
    assert (last_old.erp, last_old.account, last_old.connection) == (NS, None, "erp_default")
    assert (first_new.erp, first_new.account, first_new.connection) == ("sap", "UK10", "sap_default")
    assert last_old.version == first_new.version == 2  # the highest version is in force
    # Only the posting date counts: a 2026 entry routed "in 2027" still goes to NetSuite.
    assert router.route("LE-UK1", date(2026, 6, 1)).erp == NS
    assert router.route("LE-US1", CUTOVER).erp == NS  # the other entities did not move


def test_versions_are_kept_and_the_highest_is_in_force() -> None:
    data = routing_data(**{"LE-UK1": uk_cutover()})
    data["versions"] = list(reversed(data["versions"]))
    with pytest.raises(ValidationError, match="oldest first"):
        ErpRouting.model_validate(data)
    only_v1 = routing_data()
    only_v1["versions"] = only_v1["versions"][:1]
    assert Router(ErpRouting.model_validate(only_v1)).route("LE-UK1", CUTOVER) == Route(
        "LE-UK1", NS, None, 1, "erp_default"
    )


def test_a_correction_across_the_cutover_follows_the_policy() -> None:
    held = router_of(**{"LE-UK1": uk_cutover()}).route("LE-UK1", date(2026, 12, 15))
    repost = router_of(**{"LE-UK1": uk_cutover("reverse_and_repost")})
    actions = repost.routes_for_correction(held, date(2027, 1, 1))
    assert [(a, r.erp, r.account) for a, r in actions] == [("reverse", NS, None), ("post", "sap", "UK10")]
    adjust = router_of(**{"LE-UK1": uk_cutover("adjust_in_old")})
    assert [(a, r.erp) for a, r in adjust.routes_for_correction(held, date(2027, 3, 1))] == [("adjust", NS)]
    # Before the cutover nothing crosses: adjust where it is held, whatever the policy.
    assert [(a, r.erp) for a, r in repost.routes_for_correction(held, date(2026, 12, 31))] == [("adjust", NS)]
    # A record held in SAP, corrected after the cutover, stays in SAP.
    in_sap = repost.route("LE-UK1", date(2027, 2, 1))
    assert repost.routes_for_correction(in_sap, date(2027, 5, 1)) == [("adjust", in_sap)]


def test_a_parallel_run_posts_to_both_erps_inside_its_window_only() -> None:
    run = {"first_day": date(2026, 11, 1), "last_day": date(2026, 12, 31), "primary": NS, "secondary": "sap"}
    router = router_of(**{"LE-UK1": uk_cutover(parallel_run=run)})
    inside = router.parallel_targets("LE-UK1", date(2026, 11, 1))
    assert [(r.erp, r.account) for r in inside] == [(NS, None), ("sap", "UK10")]
    assert [r.erp for r in router.parallel_targets("LE-UK1", date(2026, 12, 31))] == [NS, "sap"]
    assert [r.erp for r in router.parallel_targets("LE-UK1", date(2026, 10, 31))] == [NS]
    assert [r.erp for r in router.parallel_targets("LE-UK1", CUTOVER)] == ["sap"]
    assert [r.erp for r in router.parallel_targets("LE-US1", date(2026, 11, 15))] == [NS]


def _refused(entity: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        ErpRouting.model_validate(routing_data(**{"LE-UK1": entity}))


def test_the_file_refuses_overlaps_gaps_unknown_erps_and_cutovers_without_a_policy() -> None:
    ok = uk_cutover()
    overlap = uk_cutover()
    overlap["effective"][1]["first_day"] = date(2026, 12, 31)
    _refused(overlap, "overlap")
    gap = uk_cutover()
    gap["effective"][1]["first_day"] = date(2027, 1, 5)
    _refused(gap, "route nowhere")
    unknown = uk_cutover()
    unknown["effective"][1]["erp"] = "oracle"
    _refused(unknown, r"unknown ERP \['oracle'\]")
    no_policy = uk_cutover()
    del no_policy["effective"][1]["correction_policy"]
    _refused(no_policy, "needs a correction_policy")
    open_middle = uk_cutover()
    open_middle["effective"][0]["last_day"] = None
    _refused(open_middle, "only the last range may be open-ended")
    bad_run = uk_cutover(
        parallel_run={
            "first_day": date(2026, 12, 1),
            "last_day": date(2027, 1, 31),
            "primary": NS,
            "secondary": "sap",
        }
    )
    _refused(bad_run, "must lie in the dates that route to its primary")
    ErpRouting.model_validate(routing_data(**{"LE-UK1": ok}))  # the good one passes


def test_a_declared_gap_routes_nowhere_and_says_so() -> None:
    gap = uk_cutover()
    gap["effective"][1].update(first_day=date(2027, 1, 5), after_gap=True)
    router = router_of(**{"LE-UK1": gap})
    assert router.route("LE-UK1", date(2027, 1, 5)).erp == "sap"
    with pytest.raises(RouteNotFound, match="LE-UK1 routes to no ERP on 2027-01-03"):
        router.route("LE-UK1", date(2027, 1, 3))
    with pytest.raises(RouteNotFound, match="'LE-XX' has no ERP route"):
        router.route("LE-XX", date(2027, 1, 3))


def test_the_loader_checks_entities_against_legal_entities_yaml(tmp_path: Path) -> None:
    shutil.copy(ROOT / "config" / "legal_entities.yaml", tmp_path / "legal_entities.yaml")
    data = routing_data(**{"LE-ZZ9": {"effective": [{"erp": NS}]}})
    (tmp_path / "erp_routing.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=r"unknown legal entities \['LE-ZZ9'\]"):
        load_routing(tmp_path)
    data = routing_data()
    del data["versions"][1]["legal_entities"]["LE-US2"]
    (tmp_path / "erp_routing.yaml").write_text(yaml.safe_dump(data))
    load_routing.cache_clear()
    with pytest.raises(ValueError, match=r"routes no ERP for \['LE-US2'\]"):
        load_routing(tmp_path)
    load_routing.cache_clear()


def test_the_erps_in_force_are_those_the_version_in_force_sends_to() -> None:
    """What a posting task without ``erp=`` works: one pass per ERP routed to, in ``erps`` order."""
    assert router_of().erps_in_force() == [NS]
    assert router_of(**{"LE-UK1": uk_cutover()}).erps_in_force() == [NS, "sap"]


def test_an_unrouted_entity_is_a_route_not_found_never_a_key_error() -> None:
    router = router_of()
    with pytest.raises(RouteNotFound, match="LE-DE1"):
        router.route("LE-DE1", CUTOVER)
    with pytest.raises(RouteNotFound, match="LE-DE1"):
        router.cutovers("LE-DE1")
    with pytest.raises(RouteNotFound, match="LE-DE1"):
        router.parallel_targets("LE-DE1", CUTOVER)


def test_a_routed_account_no_connection_posts_as_is_named() -> None:
    """A route to SAP account UK10 is worked only by a pass whose connection is that account."""
    router = router_of(**{"LE-UK1": uk_cutover()})
    assert router.accounts_not_worked("sap", "default") == ["UK10"]
    assert router.accounts_not_worked("sap", "UK10") == []
    assert router.accounts_not_worked(NS, "A1") == []  # account: null is the connection's own
