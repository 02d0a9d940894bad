"""Incremental read-back of the ERP's billing records into the ODS: invoices, credit memos,
customer payments (and what they apply to) and journal entries, with their lines.

The ERP is the system of authority for billing, so the ODS keeps its last-read copy
(``billing.erp_*``, migration 0024) for the forecast and the close report. The discipline is the
master-data sync's (:mod:`psa_erp_sync.masterdata.sync`): each record type is read with SuiteQL
``lastmodifieddate >= high watermark - overlap`` (inclusive; NetSuite stamps ``lastModifiedDate`` at
write time, not commit time, so a strict bound would lose a record committed late), its lines
come from the read-only ``transactionline`` table, and every row is validated by pydantic before it
is written. A record is upserted by its internal id (the external id is unique beside it) only when
its content (header and lines) differs from what the ODS holds and it is not older than that
version: the overlap's re-reads change nothing, a record modified twice lands once with its last
version, a voided invoice stays with its state. The watermark advances in the transaction that
writes the rows. SuiteQL has no deleted feed: a record deleted in the ERP stays here as last read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Protocol

import psycopg
from psycopg.types.json import Jsonb
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from psa_erp_sync.clients.erp_models import Flag
from psa_erp_sync.money import Money, to_minor_checked

log = logging.getLogger(__name__)

#: Read order: invoices before what applies to them.
RECORD_TYPES = ("invoice", "creditmemo", "customerpayment", "journalentry")
_LINE_CHUNK = 500


class SuiteQLReader(Protocol):
    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]: ...


class ReadbackError(ValueError):
    """An ERP row failed validation; names the record type and internal id, never values."""


def _integer(value: Any) -> Any:
    if isinstance(value, str):
        return int(Decimal(value))
    return value


Text = Annotated[str, BeforeValidator(str)]


class ErpBillingRow(BaseModel):
    """A SuiteQL row of an invoice, credit memo, customer payment or journal entry (lower-case
    keys, references flattened to their key, ``T``/``F`` flags, money as decimal strings)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: Text
    externalid: str | None = Field(default=None, max_length=255)
    lastmodifieddate: datetime
    tranid: str | None = None
    trandate: date
    duedate: date | None = None
    entity: str | None = None  # invoice / credit memo customer
    customer: str | None = None  # payment customer
    job: str | None = None
    subsidiary: str | None = None
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    total: Money | None = None
    amountremaining: Money | None = None
    payment: Money | None = None
    amount: Money | None = None
    status: str | None = None
    voided: Flag = False
    createdfrom: str | None = None
    memo: str | None = None
    postingperiod: str | None = None


class ErpLineRow(BaseModel):
    """A SuiteQL ``transactionline`` row."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    transaction: Text
    linesequencenumber: Annotated[int, BeforeValidator(_integer)]
    sourcetype: str | None = None
    sourceid: str | None = None
    quantity: Money | None = None
    rate: Money | None = None
    amount: Money | None = None
    debit: Money | None = None
    credit: Money | None = None
    account: str | None = None
    currency: str | None = None
    appliedto: str | None = None
    memo: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class ReadbackResult:
    record_type: str
    mode: str  # full (no watermark yet) | incremental
    read: int
    changed: int
    unchanged: int
    watermark: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "read": self.read,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "watermark": self.watermark.isoformat() if self.watermark else None,
        }


@dataclass(frozen=True)
class JobMapping:
    """How an ERP job external id names a PSA project: ``config/mappings.yaml`` ``external_ids.job``
    (e.g. ``psa-project-{id}``); jobs made by project setup are found in ``master.project_setup``."""

    job_format: str

    def project_of(self, job_ref: str | None) -> str | None:
        if not job_ref:
            return None
        prefix, _, suffix = self.job_format.partition("{id}")
        if job_ref.startswith(prefix) and job_ref.endswith(suffix) and len(job_ref) > len(prefix + suffix):
            return job_ref[len(prefix) : len(job_ref) - len(suffix)]
        return None


def query_for(record_type: str, since: datetime | None) -> str:
    """The SuiteQL of one read: inclusive lower bound, ordered by internal id so paging is stable."""
    if record_type not in RECORD_TYPES:
        raise ValueError(f"not a billing record type: {record_type!r}")
    where = ""
    if since is not None:
        if since.tzinfo is None:
            raise ValueError("since must carry a time zone")
        where = f" WHERE lastmodifieddate >= '{since.astimezone(UTC).isoformat()}'"
    return f"SELECT * FROM {record_type}{where} ORDER BY id"


def _validated(record_type: str, model: type[Any], rows: Iterable[dict[str, Any]]) -> Iterator[Any]:
    for row in rows:
        try:
            yield model.model_validate(row)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
            where = row.get("transaction") or row.get("id")
            raise ReadbackError(f"ERP {record_type} {where!r}: invalid fields {fields}") from None


def read_lines(
    client: SuiteQLReader, record_type: str, internal_ids: Sequence[str]
) -> dict[str, list[tuple[ErpLineRow, dict[str, Any]]]]:
    """The lines of transactions by internal id, grouped per transaction in line order."""
    if not all(i.isdigit() for i in internal_ids):
        raise ReadbackError(f"ERP {record_type}: internal ids are digits")
    out: dict[str, list[tuple[ErpLineRow, dict[str, Any]]]] = {i: [] for i in internal_ids}
    for start in range(0, len(internal_ids), _LINE_CHUNK):
        chunk = ", ".join(f"'{i}'" for i in internal_ids[start : start + _LINE_CHUNK])
        query = f"SELECT * FROM transactionline WHERE transaction IN ({chunk}) ORDER BY id"
        raw = list(client.suiteql(query))
        for line, row in zip(_validated("transactionline", ErpLineRow, raw), raw, strict=True):
            out.setdefault(line.transaction, []).append((line, row))
    for lines in out.values():
        lines.sort(key=lambda pair: pair[0].linesequencenumber)
    return out


def _hash(header: dict[str, Any], lines: list[tuple[ErpLineRow, dict[str, Any]]]) -> str:
    """The version of a record as read: its header and lines (volatile timestamps included: a
    newer ``lastmodifieddate`` is a newer version)."""
    body = {"header": header, "lines": [row for _, row in lines]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _minor(value: Decimal | None, currency: str) -> int | None:
    return None if value is None else to_minor_checked(value, currency)


# --- writers, one per record family ---------------------------------------------------------------

_NEWER = "WHERE t.version_hash IS DISTINCT FROM EXCLUDED.version_hash AND t.last_modified <= EXCLUDED.last_modified"


def _write_invoice(
    cur: psycopg.Cursor[Any],
    record_type: str,
    head: ErpBillingRow,
    lines: list[tuple[ErpLineRow, dict[str, Any]]],
    meta: dict[str, Any],
) -> bool:
    """Upsert one invoice or credit memo and replace its lines; whether it changed."""
    cur.execute(
        f"""
        INSERT INTO billing.erp_invoice AS t (record_type, internal_id, external_id, tran_id, tran_date,
            due_date, customer_ref, job_ref, project_ref, legal_entity, currency, total_minor,
            amount_remaining_minor, status, voided, created_from_ref, last_modified, version_hash, body,
            read_run_id, erp)
        VALUES (%(type)s, %(id)s, %(ext)s, %(tran_id)s, %(tran_date)s, %(due)s, %(customer)s, %(job)s,
            %(project)s, %(le)s, %(currency)s, %(total)s, %(remaining)s, %(status)s, %(voided)s,
            %(created_from)s, %(modified)s, %(hash)s, %(body)s, %(run)s, %(erp)s)
        ON CONFLICT (record_type, internal_id) DO UPDATE SET external_id = EXCLUDED.external_id,
            tran_id = EXCLUDED.tran_id, tran_date = EXCLUDED.tran_date, due_date = EXCLUDED.due_date,
            customer_ref = EXCLUDED.customer_ref, job_ref = EXCLUDED.job_ref,
            project_ref = EXCLUDED.project_ref, legal_entity = EXCLUDED.legal_entity,
            currency = EXCLUDED.currency, total_minor = EXCLUDED.total_minor,
            amount_remaining_minor = EXCLUDED.amount_remaining_minor, status = EXCLUDED.status,
            voided = EXCLUDED.voided, created_from_ref = EXCLUDED.created_from_ref,
            last_modified = EXCLUDED.last_modified, version_hash = EXCLUDED.version_hash,
            body = EXCLUDED.body, read_run_id = EXCLUDED.read_run_id, erp = EXCLUDED.erp, read_at = now()
        {_NEWER}
        RETURNING 1
        """,
        {
            **meta,
            "type": record_type,
            "id": head.id,
            "ext": head.externalid,
            "tran_id": head.tranid,
            "tran_date": head.trandate,
            "due": head.duedate,
            "customer": head.entity,
            "job": head.job,
            "le": head.subsidiary,
            "currency": head.currency,
            "total": _minor(head.total or Decimal(0), head.currency),
            "remaining": _minor(head.amountremaining, head.currency),
            "status": head.status,
            "voided": head.voided or head.status == "Voided",
            "created_from": head.createdfrom,
            "modified": head.lastmodifieddate,
        },
    )
    if cur.fetchone() is None:
        return False
    cur.execute(
        "DELETE FROM billing.erp_invoice_line WHERE record_type = %s AND internal_id = %s",
        (record_type, head.id),
    )
    cur.executemany(
        "INSERT INTO billing.erp_invoice_line (record_type, internal_id, line_no, source_type, source_id,"
        " quantity, rate, amount_minor, currency, description) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            (
                record_type,
                head.id,
                line.linesequencenumber,
                line.sourcetype,
                line.sourceid,
                line.quantity,
                line.rate,
                _minor(line.amount or Decimal(0), line.currency or head.currency),
                line.currency or head.currency,
                line.description,
            )
            for line, _ in lines
        ],
    )
    return True


def _write_payment(
    cur: psycopg.Cursor[Any],
    head: ErpBillingRow,
    lines: list[tuple[ErpLineRow, dict[str, Any]]],
    meta: dict[str, Any],
) -> bool:
    """Upsert one customer payment and replace its applications; whether it changed."""
    cur.execute(
        f"""
        INSERT INTO billing.erp_payment AS t (internal_id, external_id, tran_id, tran_date, customer_ref,
            legal_entity, currency, payment_minor, last_modified, version_hash, body, read_run_id, erp)
        VALUES (%(id)s, %(ext)s, %(tran_id)s, %(tran_date)s, %(customer)s, %(le)s, %(currency)s,
            %(payment)s, %(modified)s, %(hash)s, %(body)s, %(run)s, %(erp)s)
        ON CONFLICT (internal_id) DO UPDATE SET external_id = EXCLUDED.external_id,
            tran_id = EXCLUDED.tran_id, tran_date = EXCLUDED.tran_date,
            customer_ref = EXCLUDED.customer_ref, legal_entity = EXCLUDED.legal_entity,
            currency = EXCLUDED.currency, payment_minor = EXCLUDED.payment_minor,
            last_modified = EXCLUDED.last_modified, version_hash = EXCLUDED.version_hash,
            body = EXCLUDED.body, read_run_id = EXCLUDED.read_run_id, erp = EXCLUDED.erp, read_at = now()
        {_NEWER}
        RETURNING 1
        """,
        {
            **meta,
            "id": head.id,
            "ext": head.externalid,
            "tran_id": head.tranid,
            "tran_date": head.trandate,
            "customer": head.customer,
            "le": head.subsidiary,
            "currency": head.currency,
            "payment": _minor(head.payment or Decimal(0), head.currency),
            "modified": head.lastmodifieddate,
        },
    )
    if cur.fetchone() is None:
        return False
    cur.execute("DELETE FROM billing.erp_payment_application WHERE payment_internal_id = %s", (head.id,))
    cur.executemany(
        "INSERT INTO billing.erp_payment_application (payment_internal_id, line_no, invoice_internal_id,"
        " amount_minor) VALUES (%s, %s, %s, %s)",
        [
            (
                head.id,
                line.linesequencenumber,
                line.appliedto,
                _minor(line.amount or Decimal(0), head.currency),
            )
            for line, _ in lines
        ],
    )
    return True


def _write_journal(
    cur: psycopg.Cursor[Any],
    head: ErpBillingRow,
    lines: list[tuple[ErpLineRow, dict[str, Any]]],
    meta: dict[str, Any],
) -> bool:
    """Upsert one journal entry and replace its lines; whether it changed."""
    cur.execute(
        f"""
        INSERT INTO billing.erp_journal AS t (internal_id, external_id, tran_id, tran_date, legal_entity,
            currency, amount_minor, memo, posting_period, last_modified, version_hash, body, read_run_id)
        VALUES (%(id)s, %(ext)s, %(tran_id)s, %(tran_date)s, %(le)s, %(currency)s, %(amount)s, %(memo)s,
            %(period)s, %(modified)s, %(hash)s, %(body)s, %(run)s)
        ON CONFLICT (internal_id) DO UPDATE SET external_id = EXCLUDED.external_id,
            tran_id = EXCLUDED.tran_id, tran_date = EXCLUDED.tran_date,
            legal_entity = EXCLUDED.legal_entity, currency = EXCLUDED.currency,
            amount_minor = EXCLUDED.amount_minor, memo = EXCLUDED.memo,
            posting_period = EXCLUDED.posting_period, last_modified = EXCLUDED.last_modified,
            version_hash = EXCLUDED.version_hash, body = EXCLUDED.body,
            read_run_id = EXCLUDED.read_run_id, read_at = now()
        {_NEWER}
        RETURNING 1
        """,
        {
            **meta,
            "id": head.id,
            "ext": head.externalid,
            "tran_id": head.tranid,
            "tran_date": head.trandate,
            "le": head.subsidiary,
            "currency": head.currency,
            "amount": _minor(head.amount, head.currency),
            "memo": head.memo,
            "period": head.postingperiod,
            "modified": head.lastmodifieddate,
        },
    )
    if cur.fetchone() is None:
        return False
    cur.execute("DELETE FROM billing.erp_journal_line WHERE journal_internal_id = %s", (head.id,))
    cur.executemany(
        "INSERT INTO billing.erp_journal_line (journal_internal_id, line_no, account, debit_minor,"
        " credit_minor, currency, memo) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        [
            (
                head.id,
                line.linesequencenumber,
                line.account,
                _minor(line.debit, line.currency or head.currency),
                _minor(line.credit, line.currency or head.currency),
                line.currency or head.currency,
                line.memo,
            )
            for line, _ in lines
        ],
    )
    return True


# --- one record type, then all of them -------------------------------------------------------------


def get_watermark(conn: psycopg.Connection, record_type: str) -> datetime | None:
    row = conn.execute(
        "SELECT high_watermark FROM billing.erp_readback_watermark WHERE record_type = %s", (record_type,)
    ).fetchone()
    return row[0] if row else None


def _write(
    cur: psycopg.Cursor[Any],
    record_type: str,
    head: ErpBillingRow,
    lines: list[tuple[ErpLineRow, dict[str, Any]]],
    meta: dict[str, Any],
) -> bool:
    if record_type in ("invoice", "creditmemo"):
        return _write_invoice(cur, record_type, head, lines, meta)
    if record_type == "customerpayment":
        return _write_payment(cur, head, lines, meta)
    return _write_journal(cur, head, lines, meta)


def _project_refs(conn: psycopg.Connection, jobs: JobMapping, job_refs: set[str]) -> dict[str, str]:
    """PSA project of each ERP job: by the external-id convention, else the project setup's link."""
    found = {job: project for job in job_refs if (project := jobs.project_of(job)) is not None}
    rest = sorted(job_refs - set(found))
    if rest:
        for job, project in conn.execute(
            "SELECT job_external_id, psa_project_id::text FROM master.project_setup"
            " WHERE job_external_id = ANY(%s) AND psa_project_id IS NOT NULL",
            (rest,),
        ):
            found[str(job)] = str(project)
    return found


def _store(
    conn: psycopg.Connection,
    *,
    record_type: str,
    heads: Sequence[ErpBillingRow],
    raw: Sequence[dict[str, Any]],
    lines: dict[str, list[tuple[ErpLineRow, dict[str, Any]]]],
    run_id: str,
    jobs: JobMapping,
    erp: str,
    watermark_key: str,
) -> tuple[int, datetime | None]:
    """Upsert what changed (by content hash, never an older version) and the watermark row, in one
    transaction; the records changed and the newest modification read."""
    projects = _project_refs(conn, jobs, {h.job for h in heads if h.job})
    changed = 0
    with conn.transaction(), conn.cursor() as cur:
        for head, row in zip(heads, raw, strict=True):
            row = {k: v for k, v in row.items() if k != "links"}
            mine = lines.get(head.id, [])
            meta = {
                "hash": _hash(row, mine),
                "body": Jsonb(row),
                "run": run_id,
                "project": projects.get(head.job or ""),
                "erp": erp,
            }
            changed += _write(cur, record_type, head, mine, meta)
        newest = max((h.lastmodifieddate for h in heads), default=None)
        cur.execute(
            """
            INSERT INTO billing.erp_readback_watermark AS w (record_type, high_watermark, last_run_id,
                last_read, last_changed)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (record_type) DO UPDATE SET
                high_watermark = greatest(w.high_watermark, EXCLUDED.high_watermark),
                last_run_id = EXCLUDED.last_run_id, last_read = EXCLUDED.last_read,
                last_changed = EXCLUDED.last_changed, updated_at = now()
            """,
            (watermark_key, newest, run_id, len(heads), changed),
        )
    return changed, newest


def read_back_type(
    conn: psycopg.Connection,
    client: SuiteQLReader,
    *,
    record_type: str,
    run_id: str,
    overlap: timedelta,
    jobs: JobMapping,
) -> ReadbackResult:
    """Read one billing record type from ``watermark - overlap`` and upsert what changed."""
    watermark = get_watermark(conn, record_type)
    since = watermark - overlap if watermark is not None else None
    raw = list(client.suiteql(query_for(record_type, since)))
    heads = list(_validated(record_type, ErpBillingRow, raw))
    lines = read_lines(client, record_type, [h.id for h in heads]) if heads else {}
    changed, newest = _store(
        conn,
        record_type=record_type,
        heads=heads,
        raw=raw,
        lines=lines,
        run_id=run_id,
        jobs=jobs,
        erp="netsuite",
        watermark_key=record_type,
    )
    log.info("read back ERP %s: read %d, changed %d", record_type, len(heads), changed)
    return ReadbackResult(
        record_type=record_type,
        mode="incremental" if since is not None else "full",
        read=len(heads),
        changed=changed,
        unchanged=len(heads) - changed,
        watermark=max(filter(None, (newest, watermark)), default=None),
    )


#: The SAP document type read back for each billing record type (journal entries: not on SAP yet).
SAP_DOCUMENT_TYPES = {"invoice": "DR", "creditmemo": "DG", "customerpayment": "DZ"}


def read_back_sap_type(
    conn: psycopg.Connection,
    adapter: Any,
    *,
    record_type: str,
    run_id: str,
    jobs: JobMapping,
    years: Sequence[int] | None = None,
    page_size: int = 100,
) -> ReadbackResult | None:
    """Read one billing record type back from SAP (:class:`~psa_erp_sync.billing.sap.SapBillingAdapter`
    or any adapter with ``client`` and ``mapping``) into the same tables as NetSuite's, ``erp =
    'sap'``. SAP offers no reliable change filter, so every run reads the customer documents of
    the fiscal years (:func:`psa_erp_sync.billing.sap.fiscal_years`) in full, page by page; a record
    is written only when its content hash changed (re-reads write nothing). None for a record type
    SAP does not hold here (journal entries)."""
    from psa_erp_sync.billing import sap

    doc_type = SAP_DOCUMENT_TYPES.get(record_type)
    if doc_type is None:
        return None
    docs = sap.read_documents(
        adapter.client,
        adapter.mapping,
        doc_type=doc_type,
        fiscal_years=years or sap.fiscal_years(adapter.mapping),
        page_size=page_size,
    )
    raw: list[dict[str, Any]] = []
    line_rows: dict[str, list[dict[str, Any]]] = {}
    for doc, entity in docs:
        rows = (
            sap.payment_rows(adapter.mapping, doc)
            if doc_type == "DZ"
            else sap.invoice_rows(adapter.mapping, doc)
        )
        if rows is None:
            continue
        head, lines = rows
        raw.append(json.loads(json.dumps(head | {"sap": entity}, default=str)))
        line_rows[doc.id] = lines
    heads = list(_validated(record_type, ErpBillingRow, raw))
    lines_of = {
        i: list(zip(_validated("transactionline", ErpLineRow, rows), rows, strict=True))
        for i, rows in line_rows.items()
    }
    changed, newest = _store(
        conn,
        record_type=record_type,
        heads=heads,
        raw=raw,
        lines=lines_of,
        run_id=run_id,
        jobs=jobs,
        erp="sap",
        watermark_key=f"sap:{record_type}",
    )
    log.info("read back SAP %s: read %d, changed %d", record_type, len(heads), changed)
    return ReadbackResult(record_type, "full", len(heads), changed, len(heads) - changed, newest)


def read_back(
    conn: psycopg.Connection,
    client: SuiteQLReader,
    *,
    run_id: str,
    overlap: timedelta,
    jobs: JobMapping,
    record_types: Sequence[str] = RECORD_TYPES,
) -> dict[str, ReadbackResult]:
    """Read back every billing record type (each in its own transaction, watermark with it)."""
    return {
        record_type: read_back_type(
            conn, client, record_type=record_type, run_id=run_id, overlap=overlap, jobs=jobs
        )
        for record_type in record_types
    }
