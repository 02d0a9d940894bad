"""Signed webhook ingress: PSA and ERP events into the durable ``inbox`` (issue 7), mounted by
``plugins/psa_erp_sync_plugin.py`` under ``/ingress``.

- ``schemas``: the strict request models, the answers, the header patterns;
- ``signing``: secrets (Airflow connection / environment), rotation overlap, HMAC verification;
- ``writer``: the ingress's own pool and ``InboxWriter`` (SQL in ``psa_erp_sync.ods.inbox``);
- ``app``: ``create_app``, the routes and the per-request checks (its docstring is the OpenAPI
  description and lists them in order).

The names below are the ingress's public surface (``from psa_erp_sync.api import ingress``).
Tunables are read from the module that defines them: to change the secret cache in a test, set
``ingress.signing.SECRET_CACHE_S``.
"""

from __future__ import annotations

from psa_erp_sync.api.ingress import app, schemas, signing, writer
from psa_erp_sync.api.ingress.app import (
    INGRESS_CONN_ID,
    INGRESS_THREADS,
    MAX_BODY_BYTES,
    RETRY_AFTER_S,
    SOURCES,
    TIMESTAMP_TOLERANCE_S,
    IngressBusy,
    IngressThreads,
    create_app,
    ingress_conn_id,
)
from psa_erp_sync.api.ingress.schemas import (
    _DELIVERY_ID,
    _EVENT,
    ERP_EVENTS,
    MODELS,
    PSA_EVENTS,
    Accepted,
    ErpEvent,
    ErpRecordRef,
    PsaEvent,
    PsaRecordRef,
    Rejected,
    inline_schema,
)
from psa_erp_sync.api.ingress.signing import (
    CONN_IDS,
    SecretMisconfigured,
    Secrets,
    SecretUnavailable,
    parse_valid_until,
    secrets_from_airflow,
    signature_of,
    verify,
)
from psa_erp_sync.api.ingress.writer import (
    CONNECT_TIMEOUT_S,
    EXCEPTION_DOMAIN,
    EXCEPTION_RECORD_TYPE,
    POOL_MAX_SIZE,
    POOL_TIMEOUT_S,
    STATEMENT_TIMEOUT_MS,
    InboxWriter,
    open_pool,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "CONN_IDS",
    "ERP_EVENTS",
    "EXCEPTION_DOMAIN",
    "EXCEPTION_RECORD_TYPE",
    "INGRESS_CONN_ID",
    "INGRESS_THREADS",
    "MAX_BODY_BYTES",
    "MODELS",
    "POOL_MAX_SIZE",
    "POOL_TIMEOUT_S",
    "PSA_EVENTS",
    "RETRY_AFTER_S",
    "SOURCES",
    "STATEMENT_TIMEOUT_MS",
    "TIMESTAMP_TOLERANCE_S",
    "_DELIVERY_ID",
    "_EVENT",
    "Accepted",
    "ErpEvent",
    "ErpRecordRef",
    "InboxWriter",
    "IngressBusy",
    "IngressThreads",
    "PsaEvent",
    "PsaRecordRef",
    "Rejected",
    "SecretMisconfigured",
    "SecretUnavailable",
    "Secrets",
    "app",
    "create_app",
    "ingress_conn_id",
    "inline_schema",
    "open_pool",
    "parse_valid_until",
    "schemas",
    "secrets_from_airflow",
    "signature_of",
    "signing",
    "verify",
    "writer",
]
