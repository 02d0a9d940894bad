"""Incremental ERP -> ODS sync of master data, and detection of ERP-owned changes for the PSA.

Same discipline as the PSA extracts (:mod:`psa_erp_sync.extract.psa`): each record type is read
with SuiteQL ``lastmodifieddate >= high watermark - overlap`` (never a strict ``>``: the ERP stamps
``lastModifiedDate`` at write time, not commit time, so a record committed late would slip past
a strict bound); rows are staged in ``staging.raw_record`` deduplicated by (id, content hash), so
the overlap's re-reads are harmless; the watermark advances in the same transaction as the rows.
The current version of each record lands in ``master.erp_record``; a customer or job whose name,
status or merge target changed queues a ``master.propagation`` row for the PSA, while its legal
entity routes to NetSuite on the run's date (:func:`speaks_for`: after a cutover away from NetSuite
the new ERP speaks for the PSA; the old one's versions are still held).

Each new version of a customer or job of a legal entity is also written to NetSuite's
cross-reference (``routing.xref``, :mod:`psa_erp_sync.routing.xref`): after the entity's cutover
away from NetSuite, a changed or new mapping there is refused (``XrefFrozen``) and the sync fails
with that error, so the old ERP's mappings stay what its records were posted with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from psa_erp_sync.clients.erp_models import Flag
from psa_erp_sync.masterdata.validation import SuiteQLSource
from psa_erp_sync.money import Money, to_minor
from psa_erp_sync.ods import staging
from psa_erp_sync.routing import xref
from psa_erp_sync.routing.route import RouteNotFound, Router
from psa_erp_sync.routing.route import router as default_router

log = logging.getLogger(__name__)

ERP = "erp"
#: Read order: references before the records that point at them.
RECORD_TYPES = ("subsidiary", "currency", "taxcode", "customer", "job", "accountingperiod")
PROPAGATED = ("customer", "job")
#: The ERP this sync reads (a name of ``erps`` in ``config/erp_routing.yaml``), whose
#: cross-reference the customers and jobs of each legal entity are.
XREF_ERP = "netsuite"
MERGED_INTO = "custentity_merged_into"  # NetSuite keeps a merged customer inactive; we record where it went


class MasterRow(BaseModel):
    """A SuiteQL row of a master record (lower-case keys, references flattened, ``T``/``F`` flags)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Annotated[str, BeforeValidator(str)]
    externalid: str = Field(min_length=1, max_length=255)
    lastmodifieddate: datetime
    isinactive: Flag = False
    companyname: str | None = None
    name: str | None = None
    periodname: str | None = None
    itemid: str | None = None
    symbol: str | None = None
    subsidiary: str | None = None
    currency: str | None = None
    taxcode: str | None = None
    parent: str | None = None
    country: str | None = None
    contractvalue: Money | None = None
    custentity_merged_into: str | None = None

    @property
    def display_name(self) -> str | None:
        return self.companyname or self.name or self.periodname or self.itemid or self.symbol


@dataclass(frozen=True)
class SyncResult:
    record_type: str
    mode: str
    extracted: int
    new_versions: int
    known_versions: int
    changes_queued: int
    watermark: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "extracted": self.extracted,
            "new_versions": self.new_versions,
            "known_versions": self.known_versions,
            "changes_queued": self.changes_queued,
            "watermark": self.watermark.isoformat() if self.watermark else None,
        }


def query_for(record_type: str, since: datetime | None) -> str:
    """The SuiteQL of one read: inclusive lower bound, ordered so paging is stable."""
    if record_type not in RECORD_TYPES:
        raise ValueError(f"not a master record type: {record_type!r}")
    where = ""
    if since is not None:
        where = f" WHERE lastmodifieddate >= '{since.astimezone(UTC).isoformat()}'"
    return f"SELECT * FROM {record_type}{where} ORDER BY lastmodifieddate, id"


def change_between(
    previous: tuple[Any, ...] | None, *, name: str | None, inactive: bool, merged: str | None = None
) -> str | None:
    """Which ERP-owned change the PSA must follow, if any, between the version held
    (``previous`` = (name, inactive, merged into), None at first sight) and the one read. The same
    rules for every ERP (SAP: blocked or closed is inactive; it merges nothing)."""
    if previous is None:  # first sight: only a state the PSA may not have yet
        if merged:
            return "merge"
        return "deactivate" if inactive else None
    name_before, inactive_before, merged_before = previous
    if merged and merged != merged_before:
        return "merge"
    if inactive and not inactive_before:
        return "deactivate"
    if not inactive and inactive_before:
        return "reactivate"
    if name != name_before:
        return "rename"
    return None


def speaks_for(router: Router, legal_entity: str | None, day: date, erp: str) -> bool:
    """Whether ``erp``'s changes of ``legal_entity``'s records are carried to the PSA on ``day``:
    the ERP the entity routes to that day (before a cutover, and in a parallel run, whose primary is
    the old ERP, the old one; after it, the new one). A record without a routed entity is
    NetSuite's, as before routing."""
    try:
        return router.route(legal_entity, day).erp == erp if legal_entity else erp == XREF_ERP
    except RouteNotFound:
        return erp == XREF_ERP


def _change(previous: tuple[Any, ...] | None, row: MasterRow) -> str | None:
    return change_between(
        previous, name=row.display_name, inactive=row.isinactive, merged=row.custentity_merged_into
    )


def _upsert(
    cur: psycopg.Cursor[Any], record_type: str, row: MasterRow, payload: dict[str, Any], *, run_id: str
) -> Any:
    """Write one ERP master record into ``master.erp_record``; its version hash when it changed
    (a new record or a new version), else None."""
    cur.execute(
        """
        INSERT INTO master.erp_record AS m (record_type, external_id, internal_id, version_hash, name,
            subsidiary, currency, tax_code, parent, country, merged_into, contract_minor, is_inactive,
            last_modified, body, last_run_id)
        VALUES (%(type)s, %(ext)s, %(id)s, encode(sha256(convert_to(%(body)s::jsonb::text, 'UTF8')), 'hex'),
            %(name)s, %(sub)s, %(cur)s, %(tax)s, %(parent)s, %(country)s, %(merged)s, %(contract)s,
            %(inactive)s, %(modified)s, %(body)s, %(run)s)
        ON CONFLICT (erp, record_type, company_code, external_id) DO UPDATE SET internal_id = EXCLUDED.internal_id,
            version_hash = EXCLUDED.version_hash, name = EXCLUDED.name, subsidiary = EXCLUDED.subsidiary,
            currency = EXCLUDED.currency, tax_code = EXCLUDED.tax_code, parent = EXCLUDED.parent,
            country = EXCLUDED.country, merged_into = EXCLUDED.merged_into,
            contract_minor = EXCLUDED.contract_minor, is_inactive = EXCLUDED.is_inactive,
            last_modified = EXCLUDED.last_modified, body = EXCLUDED.body, synced_at = now(),
            last_run_id = EXCLUDED.last_run_id
        WHERE m.version_hash IS DISTINCT FROM EXCLUDED.version_hash
        RETURNING version_hash
        """,
        {
            "type": record_type,
            "ext": row.externalid,
            "id": row.id,
            "body": Jsonb(payload),
            "name": row.display_name,
            "sub": row.subsidiary,
            "cur": row.currency,
            "tax": row.taxcode,
            "parent": row.parent,
            "country": row.country,
            "merged": row.custentity_merged_into,
            "contract": (
                to_minor(row.contractvalue, row.currency or "USD") if row.contractvalue is not None else None
            ),
            "inactive": row.isinactive,
            "modified": row.lastmodifieddate,
            "run": run_id,
        },
    )
    return cur.fetchone()


def _queue_changes(
    cur: psycopg.Cursor[Any],
    record_type: str,
    changed: list[tuple[MasterRow, dict[str, Any], str]],
    *,
    run_id: str,
) -> int:
    """Queue each change for the PSA in ``master.propagation``; how many were new."""
    queued = 0
    for row, info, change in changed:
        cur.execute(
            """
            INSERT INTO master.propagation (record_type, external_id, change, version_hash, detail, created_run_id)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (record_type, external_id, change, version_hash) DO NOTHING
            """,
            (
                record_type,
                row.externalid,
                change,
                info["version"],
                Jsonb({"merged_into": row.custentity_merged_into} if change == "merge" else {}),
                run_id,
            ),
        )
        queued += cur.rowcount
    return queued


def _record_xref(
    conn: psycopg.Connection,
    router: Router,
    record_type: str,
    row: MasterRow,
    *,
    as_of: datetime,
    run_id: str,
) -> None:
    """Write a new version's NetSuite id to the entity's cross-reference (refused after cutover)."""
    if row.subsidiary:
        xref.record(
            conn,
            router,
            target_erp=XREF_ERP,
            legal_entity=row.subsidiary,
            kind=record_type,
            our_id=row.externalid,
            erp_id=row.id,
            as_of=as_of.date(),
            run_id=run_id,
        )


def sync_record_type(
    conn: psycopg.Connection,
    client: SuiteQLSource,
    *,
    record_type: str,
    run_key: str,
    run_id: str,
    as_of: datetime,
    overlap: timedelta,
    router: Router | None = None,
) -> SyncResult:
    """Read one record type incrementally into staging and ``master.erp_record``; queue changes.

    Raises :class:`~psa_erp_sync.routing.xref.XrefFrozen` (nothing of the page is kept) when a
    customer or job of a legal entity that left NetSuite at a cutover on or before ``as_of`` maps
    to a new NetSuite id."""
    router = router or default_router()
    watermark = staging.get_watermark(conn, ERP, record_type)
    since = watermark - overlap if watermark is not None else None
    raw = list(client.suiteql(query_for(record_type, since)))
    rows = [MasterRow.model_validate(r) for r in raw]
    with conn.transaction():
        result = staging.stage_pages(conn, [raw], run_key=run_key, source_system=ERP, endpoint=record_type)
        previous = {
            ext: (name, inactive, merged)
            for ext, name, inactive, merged in conn.execute(
                "SELECT external_id, name, is_inactive, merged_into FROM master.erp_record"
                " WHERE erp = 'netsuite' AND record_type = %s AND external_id = ANY(%s)",
                (record_type, [r.externalid for r in rows]),
            )
        }
        changed: list[tuple[MasterRow, dict[str, Any], str]] = []
        with conn.cursor() as cur:
            for row, payload in zip(rows, raw, strict=True):
                written = _upsert(cur, record_type, row, payload, run_id=run_id)
                if written is None or record_type not in PROPAGATED:
                    continue  # unchanged version (an overlap re-read), or not propagated
                _record_xref(conn, router, record_type, row, as_of=as_of, run_id=run_id)
                change = _change(previous.get(row.externalid), row)
                if change is not None and speaks_for(router, row.subsidiary, as_of.date(), XREF_ERP):
                    changed.append((row, {"version": written[0]}, change))
            queued = _queue_changes(cur, record_type, changed, run_id=run_id)
        staging.record_extract_run(
            conn,
            result,
            source_system=ERP,
            endpoint=record_type,
            mode="incremental" if since is not None else "full",
            window_from=since,
            window_to=as_of,
        )
        newest = max((r.lastmodifieddate for r in rows), default=None)
        staging.advance_watermark(conn, ERP, record_type, newest)
    log.info(
        "synced ERP %s: read %d, new versions %d, known %d, changes for the PSA %d",
        record_type,
        result.extracted,
        result.new_versions,
        result.known_versions,
        queued,
    )
    return SyncResult(
        record_type=record_type,
        mode="incremental" if since is not None else "full",
        extracted=result.extracted,
        new_versions=result.new_versions,
        known_versions=result.known_versions,
        changes_queued=queued,
        watermark=newest or watermark,
    )
