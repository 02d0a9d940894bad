"""Declarative dataset references, resolved to OpenLineage datasets only when lineage is asked for.

A flow declares what a step reads and writes at DAG-definition time without touching any
connection (nothing runs at parse time)::

    inputs=[psa("/v2/projects"), ods("master.propagation")]

:func:`resolve` turns them into datasets named as in :mod:`psa_erp_sync.lineage.naming`, reading
the namespace (``scheme://host[:port]`` or ``postgres://host:port``) from the Airflow connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SYSTEMS = ("psa", "erp", "crm", "planning", "workday", "ods")
DEFAULT_CONN_IDS = {s: f"{s}_default" for s in SYSTEMS}


@dataclass(frozen=True)
class DatasetRef:
    system: str  # psa, erp, crm, planning, workday or ods
    name: str  # resource path; ERP record type; ODS "schema.table"
    routed: bool = False  # an ERP record type in every ERP the routing posts to (:func:`routed_erp`)
    only_erp: str | None = None  # routed, but in this ERP only (:func:`erp_in_force`)

    def __post_init__(self) -> None:
        if self.system not in SYSTEMS:
            raise ValueError(f"unknown system {self.system!r}; expected one of {SYSTEMS}")
        if self.system == "ods" and self.name.count(".") != 1:
            raise ValueError(f"an ODS dataset is 'schema.table', not {self.name!r}")


def psa(path: str) -> DatasetRef:
    return DatasetRef("psa", path)


def erp(record_type: str) -> DatasetRef:
    return DatasetRef("erp", record_type)


def routed_erp(record_type: str) -> DatasetRef:
    """``record_type`` in each ERP ``config/erp_routing.yaml`` routes to, each in its own namespace
    (as the posting task declares its outputs; docs/multi-erp.md, "Lineage"). Resolved when lineage
    is asked for, never at parse time."""
    return DatasetRef("erp", record_type, routed=True)


def erp_in_force(erp_name: str, record_type: str) -> DatasetRef:
    """``record_type`` in the ERP ``erp_name`` (e.g. ``sap``), in its own namespace, while the
    routing file in force sends anything to it; nothing otherwise. Resolved when lineage is asked
    for, never at parse time."""
    return DatasetRef("erp", record_type, routed=True, only_erp=erp_name)


def crm(path: str) -> DatasetRef:
    return DatasetRef("crm", path)


def planning(path: str) -> DatasetRef:
    return DatasetRef("planning", path)


def workday(path: str) -> DatasetRef:
    return DatasetRef("workday", path)


def ods(schema_table: str) -> DatasetRef:
    return DatasetRef("ods", schema_table)


def _namespace(system: str, conn_id: str) -> str:
    if system == "ods":
        from psa_erp_sync.hooks.ods import OdsHook

        return OdsHook(conn_id).openlineage_namespace()
    if system == "psa":
        from psa_erp_sync.hooks.psa import PsaHook

        return PsaHook(conn_id).openlineage_namespace()
    if system == "erp":
        from psa_erp_sync.hooks.erp import ErpHook

        return ErpHook(conn_id).openlineage_namespace()
    if system == "crm":
        from psa_erp_sync.hooks.crm import CrmHook

        return CrmHook(conn_id).openlineage_namespace()
    if system == "workday":
        from psa_erp_sync.hooks.workday import WorkdayHook

        return WorkdayHook(conn_id).openlineage_namespace()
    from psa_erp_sync.hooks.planning import PlanningHook

    return PlanningHook(conn_id).openlineage_namespace()


def _routed(record_type: str, erp_conn_id: str, only: str | None = None) -> list[Any]:
    """The dataset of ``record_type`` in each ERP in force (NetSuite alone: ``erp_conn_id``'s), or
    in ``only`` of them when it is in force."""
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.sap import SapHook
    from psa_erp_sync.lineage import naming
    from psa_erp_sync.routing.route import router

    routing = router()
    in_force = routing.erps_in_force()
    out = []
    for erp in in_force:
        if only is not None and erp != only:
            continue
        conn_id = erp_conn_id if in_force == ["netsuite"] else routing.routing.connection_of(erp)
        hook: Any = SapHook(conn_id) if erp == "sap" else ErpHook(conn_id)
        out.append(naming.erp_dataset(erp, hook.openlineage_namespace(), record_type))
    return out


def resolve(
    refs: list[DatasetRef] | tuple[DatasetRef, ...], conn_ids: Mapping[str, str] | None = None
) -> list[Any]:
    """OpenLineage datasets for ``refs`` (one connection lookup per system)."""
    from psa_erp_sync.lineage import naming

    ids = {**DEFAULT_CONN_IDS, **(conn_ids or {})}
    namespaces: dict[str, str] = {}
    database: str | None = None
    out = []
    for ref in refs:
        if ref.system not in namespaces:
            namespaces[ref.system] = _namespace(ref.system, ids[ref.system])
        namespace = namespaces[ref.system]
        if ref.system == "ods":
            if database is None:
                from psa_erp_sync.hooks.ods import OdsHook

                database = OdsHook(ids["ods"]).database()
            schema, table = ref.name.split(".")
            out.append(naming.postgres(namespace, database, schema, table))
        elif ref.system == "erp" and ref.routed:
            out.extend(_routed(ref.name, ids["erp"], ref.only_erp))
        elif ref.system == "erp":
            out.append(naming.erp_record(namespace, ref.name))
        else:
            out.append(naming.http(namespace, ref.name))
    return out
