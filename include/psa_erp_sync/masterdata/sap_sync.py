"""ERP -> ODS master data from SAP S/4HANA, beside NetSuite's (:mod:`psa_erp_sync.masterdata.sync`).

For every legal entity the routing file in force sends to SAP (any range, or a parallel run), the
company code the SAP connection maps it to is read through our master-data service
(``ZPSA_MASTERDATA_SRV``, docs/simulators.md): its customers (``CustomerCollection``) and WBS
elements (``WBSElementCollection``), then its posting periods (last, this and next fiscal year of
the run's date).

**Full reads, not a watermark.** SAP offers no reliable change filter: ``gt``/``lt`` on dates let
the boundary in, ``$orderby`` is ignored and there is no ``__count``. So each company code is read
in full, client-driven ``$top``/``$skip`` pages (SAP's own ``__next`` followed within a page), and
de-duplicated by key; the staging dedupe by (id, content hash) makes the re-read harmless: a run
with no change stages nothing new and writes nothing. Offsets shift while SAP adds records mid-read;
a record skipped that way is read by the next run (master data changes slowly; the sync is hourly).

**Where it lands.** ``staging.raw_record`` (source ``sap``, endpoint = the entity set, id
``<company code>/<key>``; SAP's ``__metadata`` envelope is dropped so a new host is no new version),
and the current version in ``master.erp_record`` with ``erp = 'sap'``, the company code, and SAP's own
record types ``sap_customer``, ``sap_wbs_element``, ``sap_posting_period`` (migration 0039): never a
NetSuite row, and never read by the readers that know NetSuite's types only.

**Changes for the PSA.** A new version of a customer (renamed, blocked or unblocked) or of a WBS
element (renamed, closed or reopened) queues the same ``master.propagation`` rows as NetSuite's
(``rename``, ``deactivate``, ``reactivate``; SAP merges nothing) when its legal entity routes to SAP
on the run's date: before the cutover (or in a parallel run, whose primary is the old ERP) the old
ERP still speaks for the PSA, so SAP's versions are held but not carried.

**Cross-reference.** Each new version is written to SAP's cross-reference (``routing.xref``,
kind ``customer`` or ``job``; SAP keys them by our id), so the freeze holds for an entity that left
SAP as for one that left NetSuite: a new mapping after that cutover fails the company code's read
(:class:`~psa_erp_sync.routing.xref.XrefFrozen`) and keeps nothing of it.

**One bad record.** An entity that fails validation (pydantic, at this boundary) is an exception
item (kind ``quarantine``, reason ``SAP_MASTER_INVALID``, domain ``master_data``, the legal
entity's owner; ``detail.fields`` names the fields, never values); the rest is synced. It resolves
on the first read that finds the entity valid.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, ConfigDict, StrictBool, StringConstraints, ValidationError

from psa_erp_sync.masterdata.sync import change_between, speaks_for
from psa_erp_sync.ods import exceptions, staging
from psa_erp_sync.routing import xref
from psa_erp_sync.routing.route import Router

log = logging.getLogger(__name__)

ERP = "sap"
CUSTOMERS = "CustomerCollection"
WBS_ELEMENTS = "WBSElementCollection"
PERIODS = "PostingPeriodCollection"
#: ``master.erp_record.record_type`` of each entity set read, and the cross-reference kind.
RECORD_TYPES = {CUSTOMERS: "sap_customer", WBS_ELEMENTS: "sap_wbs_element"}
XREF_KINDS = {"sap_customer": "customer", "sap_wbs_element": "job"}
PERIOD_TYPE = "sap_posting_period"
REASON = "SAP_MASTER_INVALID"
DOMAIN = "master_data"
PAGE_SIZE = 500

_Key = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[^\x00-\x1f'\"]+$")]
_Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
_Company = Annotated[str, StringConstraints(min_length=1, max_length=4)]


class SapCustomer(BaseModel):
    """An entity of ``CustomerCollection``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    Customer: _Key
    CompanyCode: _Company
    CustomerName: Annotated[str, StringConstraints(min_length=1, max_length=80)]
    Currency: _Currency
    IsBlocked: StrictBool = False

    def view(self) -> tuple[str, str, bool, str | None, str]:
        """(key, name, inactive, parent, currency)."""
        return self.Customer, self.CustomerName, self.IsBlocked, None, self.Currency


class SapWbsElement(BaseModel):
    """An entity of ``WBSElementCollection``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    WBSElement: Annotated[str, StringConstraints(min_length=1, max_length=24, pattern=r"^[^\x00-\x1f'\"]+$")]
    CompanyCode: _Company
    Description: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    Customer: _Key
    Currency: _Currency
    IsClosed: StrictBool = False

    def view(self) -> tuple[str, str, bool, str | None, str]:
        return self.WBSElement, self.Description, self.IsClosed, self.Customer, self.Currency


MODELS: dict[str, type[SapCustomer] | type[SapWbsElement]] = {
    CUSTOMERS: SapCustomer,
    WBS_ELEMENTS: SapWbsElement,
}
_KEYS = {CUSTOMERS: "Customer", WBS_ELEMENTS: "WBSElement"}


@dataclass
class SapSetResult:
    """One entity set (or the periods) of one company code."""

    legal_entity: str
    company_code: str
    record_type: str
    extracted: int = 0
    pages: int = 0
    new_versions: int = 0
    known_versions: int = 0
    changes_queued: int = 0
    invalid: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class SapSyncResult:
    entities: list[str] = field(default_factory=list)
    sets: list[SapSetResult] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        total = {
            k: sum(getattr(s, k) for s in self.sets)
            for k in ("extracted", "new_versions", "known_versions", "changes_queued", "invalid")
        }
        return {
            "erp": ERP,
            "legal_entities": self.entities,
            **total,
            "sets": [s.as_dict() for s in self.sets],
        }


def sap_entities(router: Router) -> list[str]:
    """The legal entities the routing file in force sends anything to SAP (a range or a parallel
    run, past, present or future): the company codes whose master data the sync reads."""
    entities = []
    for entity, routed in sorted(router.active.legal_entities.items()):
        for r in routed.effective:
            parallel = r.parallel_run
            if r.erp == ERP or (parallel is not None and ERP in (parallel.primary, parallel.secondary)):
                entities.append(entity)
                break
    return entities


def read_company(client: Any, entity_set: str, company_code: str, page_size: int) -> tuple[list[Any], int]:
    """Every entity of ``entity_set`` in ``company_code`` in ``$top``/``$skip`` pages until a short
    page, de-duplicated by key (the first kept: offsets may shift mid-read); and the page count."""
    found: dict[str, Any] = {}
    skip = pages = 0
    while True:
        page = client.master_page(entity_set, company_code, top=page_size, skip=skip)
        pages += 1
        for item in page:
            body = {k: v for k, v in item.items() if k != "__metadata"} if isinstance(item, dict) else item
            key = body.get(_KEYS[entity_set]) if isinstance(body, dict) else None
            found.setdefault(
                f"{company_code}/{key}" if key is not None else staging.missing_id_key(body), body
            )
        if len(page) < page_size:
            return list(found.items()), pages
        skip += page_size


def _upsert(
    cur: psycopg.Cursor[Any],
    record_type: str,
    company_code: str,
    fields: dict[str, Any],
    body: dict[str, Any],
    run_id: str,
) -> Any:
    """Write one SAP master record into ``master.erp_record``; its version hash when it changed."""
    cur.execute(
        """
        INSERT INTO master.erp_record AS m (erp, record_type, company_code, external_id, internal_id,
            version_hash, name, subsidiary, currency, parent, is_inactive, body, last_run_id)
        VALUES ('sap', %(type)s, %(company)s, %(ext)s, %(ext)s,
            encode(sha256(convert_to(%(body)s::jsonb::text, 'UTF8')), 'hex'), %(name)s, %(entity)s,
            %(currency)s, %(parent)s, %(inactive)s, %(body)s, %(run)s)
        ON CONFLICT (erp, record_type, company_code, external_id) DO UPDATE SET
            version_hash = EXCLUDED.version_hash, name = EXCLUDED.name, subsidiary = EXCLUDED.subsidiary,
            currency = EXCLUDED.currency, parent = EXCLUDED.parent, is_inactive = EXCLUDED.is_inactive,
            body = EXCLUDED.body, synced_at = now(), last_run_id = EXCLUDED.last_run_id
        WHERE m.version_hash IS DISTINCT FROM EXCLUDED.version_hash
        RETURNING version_hash
        """,
        {"type": record_type, "company": company_code, "body": Jsonb(body), "run": run_id, **fields},
    )
    return cur.fetchone()


def _queue(
    cur: psycopg.Cursor[Any],
    record_type: str,
    company_code: str,
    external_id: str,
    change: str,
    version: str,
    run_id: str,
) -> int:
    cur.execute(
        """
        INSERT INTO master.propagation (erp, company_code, record_type, external_id, change, version_hash,
            created_run_id)
        VALUES ('sap', %s, %s, %s, %s, %s, %s)
        ON CONFLICT (record_type, external_id, change, version_hash) DO NOTHING
        """,
        (company_code, record_type, external_id, change, version, run_id),
    )
    return cur.rowcount


@dataclass(frozen=True)
class CompanyRead:
    """What one run reads of one company code: its legal entity, the run and who owns its items."""

    legal_entity: str
    company_code: str
    run_key: str
    run_id: str
    as_of: datetime
    owner: str


def _invalid_item(
    read: CompanyRead, record_type: str, source_id: str, exc: ValidationError
) -> exceptions.Item:
    fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
    return exceptions.Item(
        kind="quarantine",
        domain=DOMAIN,
        source_system=ERP,
        record_type=record_type,
        source_id=source_id,
        reason_code=REASON,
        owner=read.owner,
        detail={"fields": fields, "company_code": read.company_code},
        legal_entity=read.legal_entity,
    )


def _validated(
    read: CompanyRead, entity_set: str, items: list[tuple[str, Any]]
) -> tuple[list[tuple[str, Any, dict[str, Any]]], list[exceptions.Item]]:
    record_type = RECORD_TYPES[entity_set]
    valid, invalid = [], []
    for source_id, body in items:
        try:
            valid.append((source_id, MODELS[entity_set].model_validate(body), body))
        except ValidationError as exc:
            invalid.append(_invalid_item(read, record_type, source_id, exc))
    return valid, invalid


def _write_versions(
    conn: psycopg.Connection,
    router: Router,
    read: CompanyRead,
    record_type: str,
    valid: list[tuple[str, Any, dict[str, Any]]],
    *,
    carried: bool,
) -> int:
    """Each valid entity's version into ``master.erp_record`` and SAP's cross-reference; the
    changes it makes queued for the PSA when ``carried``. How many were queued."""
    previous = {
        ext: (name, inactive, None)
        for ext, name, inactive in conn.execute(
            "SELECT external_id, name, is_inactive FROM master.erp_record"
            " WHERE erp = 'sap' AND record_type = %s AND company_code = %s",
            (record_type, read.company_code),
        )
    }
    queued = 0
    with conn.cursor() as cur:
        for _, row, body in valid:
            key, name, inactive, parent, currency = row.view()
            fields = {"ext": key, "name": name, "entity": read.legal_entity, "currency": currency}
            fields |= {"parent": parent, "inactive": inactive}
            written = _upsert(cur, record_type, read.company_code, fields, body, read.run_id)
            if written is None:
                continue  # the version held: a re-read
            xref.record(
                conn,
                router,
                target_erp=ERP,
                legal_entity=read.legal_entity,
                kind=XREF_KINDS[record_type],
                our_id=key,
                erp_id=key,
                as_of=read.as_of.date(),
                run_id=read.run_id,
            )
            change = change_between(previous.get(key), name=name, inactive=inactive)
            if change is not None and carried:
                queued += _queue(cur, record_type, read.company_code, key, change, written[0], read.run_id)
    return queued


def sync_company_set(
    conn: psycopg.Connection,
    client: Any,
    router: Router,
    read: CompanyRead,
    entity_set: str,
    *,
    page_size: int = PAGE_SIZE,
) -> SapSetResult:
    """One entity set of one company code: read in full, staged, current versions in
    ``master.erp_record``, SAP's cross-reference written, changes queued, bad entities quarantined."""
    record_type = RECORD_TYPES[entity_set]
    items, pages = read_company(client, entity_set, read.company_code, page_size)
    valid, invalid = _validated(read, entity_set, items)
    out = SapSetResult(
        read.legal_entity, read.company_code, record_type, len(items), pages, invalid=len(invalid)
    )
    carried = speaks_for(router, read.legal_entity, read.as_of.date(), ERP)
    with conn.transaction():
        staged = staging.stage_pages(
            conn,
            [[{"id": source_id, **body} for source_id, _, body in valid]],
            run_key=read.run_key,
            source_system=ERP,
            endpoint=entity_set,
        )
        out.new_versions, out.known_versions = staged.new_versions, staged.known_versions
        out.changes_queued = _write_versions(conn, router, read, record_type, valid, carried=carried)
        exceptions.quarantine_many(conn, invalid, run_id=read.run_id)
        exceptions.resolve_for(
            conn,
            source_system=ERP,
            record_type=record_type,
            source_ids=[source_id for source_id, _, _ in valid],
            kind="quarantine",
            reason_code=REASON,
        )
        staging.record_extract_run(
            conn,
            staged,
            source_system=ERP,
            endpoint=entity_set,
            mode="full",
            window_from=None,
            window_to=read.as_of,
        )
    return out


def _period_body(legal_entity: str, period: Any) -> dict[str, Any]:
    start, end = period.FiscalPeriodStartDate, period.FiscalPeriodEndDate
    external_id = f"{legal_entity}-{start.year:04d}-{start.month:02d}"
    return {
        "id": f"{period.CompanyCode}/{period.FiscalYear}/{period.FiscalPeriod}",
        "externalid": external_id,
        "subsidiary": legal_entity,
        "companycode": period.CompanyCode,
        "fiscalyear": period.FiscalYear,
        "fiscalperiod": period.FiscalPeriod,
        "startdate": start.isoformat(),
        "enddate": end.isoformat(),
        "closed": not period.PostingPeriodIsOpen,
    }


def sync_periods(conn: psycopg.Connection, client: Any, read: CompanyRead) -> SapSetResult:
    """The company code's posting periods (last, this and next fiscal year of ``as_of``), as
    ``sap_posting_period`` rows keyed ``<legal entity>-YYYY-MM`` (as the posting adapter names them)."""
    years = [read.as_of.year + d for d in (-1, 0, 1)]
    bodies = [
        _period_body(read.legal_entity, p)
        for y in years
        for p in client.posting_periods(read.company_code, y)
    ]
    out = SapSetResult(read.legal_entity, read.company_code, PERIOD_TYPE, len(bodies), len(years))
    with conn.transaction():
        staged = staging.stage_pages(
            conn, [bodies], run_key=read.run_key, source_system=ERP, endpoint=PERIODS
        )
        out.new_versions, out.known_versions = staged.new_versions, staged.known_versions
        with conn.cursor() as cur:
            for body in bodies:
                fields = {"ext": body["externalid"], "name": body["externalid"][len(read.legal_entity) + 1 :]}
                fields |= {"entity": read.legal_entity, "currency": None, "parent": None, "inactive": False}
                _upsert(cur, PERIOD_TYPE, read.company_code, fields, body, read.run_id)
        staging.record_extract_run(
            conn,
            staged,
            source_system=ERP,
            endpoint=PERIODS,
            mode="full",
            window_from=None,
            window_to=read.as_of,
        )
    return out


def sync_sap(
    conn: psycopg.Connection,
    client: Any,
    company_codes: Mapping[str, str],
    router: Router,
    *,
    run_key: str,
    run_id: str,
    as_of: datetime,
    owner_for: Any,
    page_size: int = PAGE_SIZE,
) -> SapSyncResult:
    """Every company code of a legal entity routed to SAP: customers, WBS elements, periods.

    Raises ``ValueError`` for an entity routed to SAP that the connection maps to no company code
    (a configuration error: nothing of it can be read), after the mapped ones are synced."""
    result = SapSyncResult(entities=sap_entities(router))
    unmapped = [e for e in result.entities if e not in company_codes]
    for entity in result.entities:
        if entity in unmapped:
            continue
        company = company_codes[entity]
        for entity_set in (CUSTOMERS, WBS_ELEMENTS, PERIODS):
            read = CompanyRead(
                entity, company, f"{run_key}/{entity_set}/{company}", run_id, as_of, owner_for(DOMAIN, entity)
            )
            if entity_set == PERIODS:
                result.sets.append(sync_periods(conn, client, read))
            else:
                result.sets.append(
                    sync_company_set(conn, client, router, read, entity_set, page_size=page_size)
                )
    log.info("synced SAP master data: %s", {k: v for k, v in result.as_dict().items() if k != "sets"})
    if unmapped:
        raise ValueError(
            f"legal entities routed to SAP without a company code in the SAP connection's extra"
            f" (company_codes): {', '.join(unmapped)}; the others were synced"
        )
    return result
