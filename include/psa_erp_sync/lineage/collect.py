"""Lineage for ``@task`` code through the provider's hook lineage collector.

Plain ``@task`` functions have no ``get_openlineage_facets_*`` methods; the OpenLineage provider
then reads what was reported to Airflow's hook lineage collector during the task. PostgreSQL URIs
(``postgres://host:port/database/schema/table``) convert to the same datasets our operators
return (namespace ``postgres://host:port``, name ``database.schema.table``). HTTP(S) URIs have no
converter and are dropped by the provider, so steps that call the PSA, ERP, CRM or planning APIs
are operators (see :mod:`psa_erp_sync.operators`), not ``@task`` functions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


def ods_uri(namespace: str, database: str, schema: str, table: str) -> str:
    return f"{namespace}/{database}/{schema}/{table}"


def report_ods(
    ods_hook: object,
    *,
    inputs: Iterable[tuple[str, str]] = (),
    outputs: Iterable[tuple[str, str]] = (),
) -> None:
    """Report ODS tables read and written by the running task (no-op when lineage is off)."""
    try:
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

        namespace = ods_hook.openlineage_namespace()  # type: ignore[attr-defined]
        database = ods_hook.database()  # type: ignore[attr-defined]
        collector = get_hook_lineage_collector()
        for schema, table in inputs:
            collector.add_input_asset(context=ods_hook, uri=ods_uri(namespace, database, schema, table))
        for schema, table in outputs:
            collector.add_output_asset(context=ods_hook, uri=ods_uri(namespace, database, schema, table))
    except Exception:
        log.warning("could not report lineage to the hook lineage collector", exc_info=True)
