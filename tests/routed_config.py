"""A copy of the repository's ``config/`` with a routing of a test's own (``PSA_ERP_SYNC_CONFIG_DIR``).

The planner stamps every posting with the route of ``config/erp_routing.yaml`` (every legal entity
to NetSuite by default), and a posting pass for an ERP sends only what is routed to it; so a test
that posts to SAP, or adds a legal entity, routes it in a copy of the config directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT


def routed_config_dir(
    dest: Path,
    routes: dict[str, str] | None = None,
    *,
    extra_entities: dict[str, dict[str, Any]] | None = None,
    routing: dict[str, Any] | None = None,
) -> Path:
    """Copy ``config/`` to ``dest``, add ``extra_entities`` to ``legal_entities.yaml`` and write an
    ``erp_routing.yaml``: ``routing`` as given, or every legal entity to ``routes.get(entity,
    "netsuite")`` for every date. Returns ``dest``."""
    shutil.copytree(ROOT / "config", dest)
    entities_file = dest / "legal_entities.yaml"
    entities = yaml.safe_load(entities_file.read_text(encoding="utf-8"))
    entities["legal_entities"].update(extra_entities or {})
    entities_file.write_text(yaml.safe_dump(entities, sort_keys=False), encoding="utf-8")
    if routing is None:
        routing = {
            "version": 1,
            "erps": {"netsuite": {"connection": "erp_default"}, "sap": {"connection": "sap_default"}},
            "versions": [
                {
                    "version": 1,
                    "legal_entities": {
                        entity: {"effective": [{"erp": (routes or {}).get(entity, "netsuite")}]}
                        for entity in entities["legal_entities"]
                    },
                }
            ],
        }
    (dest / "erp_routing.yaml").write_text(yaml.safe_dump(routing, sort_keys=False), encoding="utf-8")
    return dest


def route_to(monkeypatch: Any, dest: Path, erp: str, **kwargs: Any) -> Path:
    """Route every legal entity to ``erp`` in a config copy at ``dest`` and point
    ``PSA_ERP_SYNC_CONFIG_DIR`` at it (subprocesses inherit it)."""
    from psa_erp_sync.config import LegalEntities

    entities = LegalEntities.model_validate(
        yaml.safe_load((ROOT / "config" / "legal_entities.yaml").read_text(encoding="utf-8"))
    ).legal_entities
    names = [*entities, *(kwargs.get("extra_entities") or {})]
    path = routed_config_dir(dest, dict.fromkeys(names, erp), **kwargs)
    monkeypatch.setenv("PSA_ERP_SYNC_CONFIG_DIR", str(path))
    return path
