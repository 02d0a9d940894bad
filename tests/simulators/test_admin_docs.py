"""docs/simulators.md documents every admin call of every simulator.

The routes come from the FastAPI apps themselves (nothing is started: building an app opens no
database), so a new admin route without its row in the docs fails here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from simulators.crm.app import create as create_crm
from simulators.erp.app import create as create_erp
from simulators.planning.app import create as create_planning
from simulators.psa.app import create as create_psa
from simulators.sap.app import create as create_sap
from simulators.workday.app import create as create_workday

DOCS = Path(__file__).resolve().parents[2] / "docs" / "simulators.md"
SIMULATORS: dict[str, Callable[..., FastAPI]] = {
    "psa": create_psa,
    "crm": create_crm,
    "erp": create_erp,
    "planning": create_planning,
    "sap": create_sap,
    "workday": create_workday,
}
_PARAM = re.compile(r"\{[^}]*\}")


def _calls(text: str) -> set[str]:
    """``METHOD /admin/...`` written in backticks, path parameters normalised to ``{}``."""
    found = re.findall(r"`(GET|PUT|POST|PATCH|DELETE) (/admin[^`\s?\[]*)", text)
    return {f"{method} {_PARAM.sub('{}', path)}" for method, path in found}


def _admin_routes(app: FastAPI) -> set[str]:
    routes = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/admin"):
            for method in route.methods - {"HEAD", "OPTIONS"}:
                routes.add(f"{method} {_PARAM.sub('{}', route.path)}")
    return routes


@pytest.mark.parametrize("name", sorted(SIMULATORS))
def test_every_admin_route_is_documented(name: str) -> None:
    routes = _admin_routes(SIMULATORS[name](dsn="postgresql://unused@127.0.0.1:1/unused"))
    assert len(routes) >= 7, routes  # the common ones at least: the enumeration itself works
    missing = sorted(routes - _calls(DOCS.read_text()))
    assert missing == [], f"admin calls of the {name} simulator missing from docs/simulators.md: {missing}"


def test_the_docs_name_no_admin_call_that_does_not_exist() -> None:
    every = set().union(
        *(
            _admin_routes(create(dsn="postgresql://unused@127.0.0.1:1/unused"))
            for create in SIMULATORS.values()
        )
    )
    assert sorted(_calls(DOCS.read_text()) - every) == []
