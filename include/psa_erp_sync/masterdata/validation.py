"""Synchronous ERP validation of master-data references, in bulk, with a per-run cache.

A batch of :class:`Candidate` records (a deal to provision, a project to activate, a posting to
pre-check) names a customer, a legal entity, a currency, a tax code, a project code and a
contract value. :func:`validate_batch` collects every key of the batch first, fetches what the
cache does not hold with one SuiteQL query per record type and chunk of keys (small tables -
subsidiaries, currencies, tax codes - in one query each), then judges each record without another
call: a :class:`Verdict` per record, ``ok`` or the reason codes that block it.

Currency: a deal's currency must match its legal entity's and its customer's. A posting on an
existing job (the candidate names ``project_code``) is judged as the ERP judges the transaction:
the job's currency binds, else the posting subsidiary's; the customer's currency plays no part, so no
``CURRENCY_MISMATCH`` is raised for postings the ERP accepts.

The ERP being down is never a pass: the client retries with backoff, then
:class:`ErpValidationUnavailable` names how many records were left unvalidated. No Airflow here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from psa_erp_sync.money import Money
from psa_erp_sync.ods import exceptions

log = logging.getLogger(__name__)

EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SMALL_TABLES = ("subsidiary", "currency", "taxcode")

#: Every reason code a verdict can carry, in the order they are checked.
REASON_CODES = (
    "INVALID_REFERENCE",
    "LEGAL_ENTITY_UNKNOWN",
    "LEGAL_ENTITY_INACTIVE",
    "PERIOD_UNKNOWN",
    "CUSTOMER_UNKNOWN",
    "CUSTOMER_AMBIGUOUS",
    "CUSTOMER_INACTIVE",
    "LEGAL_ENTITY_MISMATCH",
    "CURRENCY_UNKNOWN",
    "CURRENCY_MISMATCH",
    "TAX_CODE_UNKNOWN",
    "TAX_CODE_MISMATCH",
    "PROJECT_UNKNOWN",
    "PROJECT_INACTIVE",
    "CONTRACT_INVALID",
)


class ErpValidationUnavailable(RuntimeError):
    """The ERP could not be asked (after retries with backoff): nothing was validated, nothing passes."""


class SuiteQLSource(Protocol):
    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]: ...


class Candidate(BaseModel):
    """One record to validate. References are ERP external ids; ``customer_name`` is used only
    when the source carries no customer external id (and must then match exactly one customer)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

    key: str = Field(min_length=1, max_length=200)
    customer: str | None = None
    customer_name: str | None = Field(default=None, max_length=255)
    legal_entity: str | None = None
    currency: str | None = None
    tax_code: str | None = None
    project_code: str | None = None
    contract_value: Money | None = None


@dataclass(frozen=True)
class Verdict:
    key: str
    ok: bool
    reasons: tuple[str, ...] = ()
    customer: str | None = None  # the ERP customer external id the record resolved to
    legal_entity: str | None = None

    @property
    def reason(self) -> str | None:
        return self.reasons[0] if self.reasons else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "ok": self.ok,
            "reasons": list(self.reasons),
            "customer": self.customer,
            "legal_entity": self.legal_entity,
        }


def quote(value: str) -> str:
    """A SuiteQL string literal. Control characters are refused before we get here."""
    if _CONTROL.search(value):
        raise ValueError("control characters cannot be queried")
    return "'" + value.replace("'", "''") + "'"


def _chunks(values: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class ErpLookup:
    """A per-run cache of ERP master records, filled in bulk. Never one call per record.

    :param client: anything with ``suiteql`` (the NetSuite client).
    :param chunk_size: keys per ``IN (...)`` query.
    """

    client: SuiteQLSource
    chunk_size: int = 200
    queries: int = 0
    _rows: dict[str, dict[str, dict[str, Any] | None]] = field(default_factory=dict)
    _complete: set[str] = field(default_factory=set)
    _names: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def _query(self, text: str) -> list[dict[str, Any]]:
        from psa_erp_sync.clients.erp import ErpThrottled, ErpUnavailable

        self.queries += 1
        try:
            return list(self.client.suiteql(text))
        except (ErpUnavailable, ErpThrottled) as exc:
            raise ErpValidationUnavailable(f"ERP unavailable during validation: {exc}") from exc

    def all_of(self, record_type: str) -> dict[str, dict[str, Any] | None]:
        """Every record of a small table (subsidiaries, currencies, tax codes), fetched once."""
        if record_type not in self._complete:
            rows = self._query(f"SELECT * FROM {record_type} ORDER BY id")
            cache = self._rows.setdefault(record_type, {})
            for row in rows:
                cache[str(row.get("externalid"))] = row
            self._complete.add(record_type)
        return self._rows[record_type]

    def by_external_ids(self, record_type: str, keys: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        cache = self._rows.setdefault(record_type, {})
        wanted = sorted({k for k in keys if EXTERNAL_ID.match(k)} - set(cache))
        if record_type not in self._complete:
            for chunk in _chunks(wanted, self.chunk_size):
                literals = ", ".join(quote(k) for k in chunk)
                rows = self._query(
                    f"SELECT * FROM {record_type} WHERE externalid IN ({literals}) ORDER BY id"
                )
                for key in chunk:
                    cache[key] = None
                for row in rows:
                    cache[str(row.get("externalid"))] = row
        return cache

    def customers_named(self, names: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        wanted = sorted({n for n in names if n and not _CONTROL.search(n)} - set(self._names))
        for chunk in _chunks(wanted, self.chunk_size):
            literals = ", ".join(quote(n) for n in chunk)
            rows = self._query(f"SELECT * FROM customer WHERE companyname IN ({literals}) ORDER BY id")
            for name in chunk:
                self._names[name] = []
            for row in rows:
                self._names.setdefault(str(row.get("companyname")), []).append(row)
                self._rows.setdefault("customer", {})[str(row.get("externalid"))] = row
        return self._names


def _inactive(row: Mapping[str, Any]) -> bool:
    return str(row.get("isinactive", "F")).upper() == "T"


def _valid_ref(value: str | None) -> bool:
    return value is None or bool(EXTERNAL_ID.match(value))


def _bound_currency(job: Mapping[str, Any], sub: Mapping[str, Any] | None) -> str | None:
    """The currency the ERP requires of a transaction on ``job``: the job's own, else the posting
    subsidiary's (the candidate's legal entity). None when nothing binds."""
    if job.get("currency") not in (None, ""):
        return str(job["currency"])
    if sub is None or sub.get("currency") in (None, ""):
        return None
    return str(sub["currency"])


def _customer(candidate: Candidate, lookup: ErpLookup, reasons: list[str]) -> dict[str, Any] | None:
    """For :func:`judge`: the candidate's ERP customer (by external id, else by an unambiguous
    name), adding the reasons it fails on."""
    customer = None
    if candidate.customer is not None:
        if _valid_ref(candidate.customer):
            customer = lookup.by_external_ids("customer", [candidate.customer]).get(candidate.customer)
            if customer is None:
                reasons.append("CUSTOMER_UNKNOWN")
    elif candidate.customer_name is not None and not _CONTROL.search(candidate.customer_name):
        matches = lookup.customers_named([candidate.customer_name]).get(candidate.customer_name, [])
        if not matches:
            reasons.append("CUSTOMER_UNKNOWN")
        elif len(matches) > 1:
            reasons.append("CUSTOMER_AMBIGUOUS")  # never guess between same-named customers
        else:
            customer = matches[0]
    if customer is not None:
        if _inactive(customer):
            reasons.append("CUSTOMER_INACTIVE")
        if candidate.legal_entity is not None and customer.get("subsidiary") != candidate.legal_entity:
            reasons.append("LEGAL_ENTITY_MISMATCH")
    return customer


def judge(candidate: Candidate, lookup: ErpLookup) -> Verdict:
    """The verdict on one record, from the cache alone (call :func:`prefetch` first)."""
    reasons: list[str] = []
    refs = (candidate.customer, candidate.legal_entity, candidate.tax_code, candidate.project_code)
    if not all(_valid_ref(r) for r in refs) or (
        candidate.customer_name is not None and _CONTROL.search(candidate.customer_name)
    ):
        reasons.append("INVALID_REFERENCE")
    subsidiaries = lookup.all_of("subsidiary")
    currencies = lookup.all_of("currency")
    tax_codes = lookup.all_of("taxcode")

    sub = None
    if candidate.legal_entity is not None and _valid_ref(candidate.legal_entity):
        sub = subsidiaries.get(candidate.legal_entity)
        if sub is None:
            reasons.append("LEGAL_ENTITY_UNKNOWN")
        elif _inactive(sub):
            reasons.append("LEGAL_ENTITY_INACTIVE")

    customer = _customer(candidate, lookup, reasons)

    job = None
    if candidate.project_code is not None and _valid_ref(candidate.project_code):
        job = lookup.by_external_ids("job", [candidate.project_code]).get(candidate.project_code)

    if candidate.currency is not None:
        if not CURRENCY.match(candidate.currency) or candidate.currency not in currencies:
            reasons.append("CURRENCY_UNKNOWN")
        elif job is not None:
            # A posting on a job: judged as the ERP judges the transaction. The job's currency
            # binds; a job without one takes its subsidiary's. The customer's does not count.
            if _bound_currency(job, sub) not in (None, candidate.currency):
                reasons.append("CURRENCY_MISMATCH")
        elif (sub is not None and sub.get("currency") != candidate.currency) or (
            customer is not None and customer.get("currency") not in (None, "", candidate.currency)
        ):
            reasons.append("CURRENCY_MISMATCH")

    tax_key = candidate.tax_code or (
        str(customer["taxcode"]) if customer and customer.get("taxcode") else None
    )
    if tax_key is not None and _valid_ref(tax_key):
        tax = tax_codes.get(tax_key)
        if tax is None or _inactive(tax):
            reasons.append("TAX_CODE_UNKNOWN")
        elif sub is not None and tax.get("country") != sub.get("country"):
            reasons.append("TAX_CODE_MISMATCH")

    if candidate.project_code is not None and _valid_ref(candidate.project_code):
        if job is None:
            reasons.append("PROJECT_UNKNOWN")
        elif _inactive(job):
            reasons.append("PROJECT_INACTIVE")

    value = candidate.contract_value
    if value is not None and (value <= 0 or value.as_tuple().exponent < -2):  # type: ignore[operator]
        reasons.append("CONTRACT_INVALID")

    ordered = tuple(code for code in REASON_CODES if code in reasons)
    return Verdict(
        key=candidate.key,
        ok=not ordered,
        reasons=ordered,
        customer=str(customer["externalid"]) if customer else None,
        legal_entity=candidate.legal_entity,
    )


def prefetch(candidates: Sequence[Candidate], lookup: ErpLookup) -> None:
    """Fill the cache for the whole batch: a handful of bulk queries, whatever the batch size."""
    for table in SMALL_TABLES:
        lookup.all_of(table)
    lookup.by_external_ids("customer", [c.customer for c in candidates if c.customer])
    lookup.customers_named([c.customer_name for c in candidates if c.customer is None and c.customer_name])
    lookup.by_external_ids("job", [c.project_code for c in candidates if c.project_code])


def validate_batch(candidates: Sequence[Candidate], lookup: ErpLookup) -> list[Verdict]:
    """One verdict per candidate, in order.

    :raises ErpValidationUnavailable: the ERP could not be asked; no verdict is returned.
    """
    try:
        prefetch(candidates, lookup)
    except ErpValidationUnavailable as exc:
        raise ErpValidationUnavailable(f"{len(candidates)} records not validated: {exc}") from exc
    return [judge(c, lookup) for c in candidates]


def record_verdicts(
    conn: psycopg.Connection,
    verdicts: Sequence[Verdict],
    *,
    domain: str,
    record_type: str,
    source_system: str,
    owner_for: Any,
    run_id: str,
) -> dict[str, int]:
    """Store each record's latest verdict and keep the exception queue in step with it.

    A failing record gets one open ``validation`` item per reason (owner from ownership.yaml); a
    record that passes, or no longer fails for a reason, has those items resolved. Idempotent.
    """
    items = [
        exceptions.Item(
            kind="validation",
            domain=domain,
            source_system=source_system,
            record_type=record_type,
            source_id=v.key,
            reason_code=reason,
            owner=owner_for(domain, v.legal_entity),
            detail={"reasons": list(v.reasons)},
            legal_entity=v.legal_entity if v.legal_entity and EXTERNAL_ID.match(v.legal_entity) else None,
        )
        for v in verdicts
        for reason in v.reasons
    ]
    exceptions.quarantine_many(conn, items, run_id=run_id)
    resolved = exceptions.close_reasons_not_in(
        conn,
        kind="validation",
        source_system=source_system,
        record_type=record_type,
        verdicts=[(v.key, v.reasons) for v in verdicts],
    )
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO master.validation_verdict (domain, record_key, ok, reason_codes, run_id)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (domain, record_key) DO UPDATE SET ok = EXCLUDED.ok,
                reason_codes = EXCLUDED.reason_codes, run_id = EXCLUDED.run_id, validated_at = now()
            """,
            [(domain, v.key, v.ok, list(v.reasons), run_id) for v in verdicts],
        )
    return {"exception_items": len(items), "resolved": resolved}


def passed(conn: psycopg.Connection, domain: str, keys: Sequence[str]) -> set[str]:
    """Keys whose latest stored verdict is ok: the gate before anything is activated."""
    rows = conn.execute(
        "SELECT record_key FROM master.validation_verdict WHERE domain = %s AND ok AND record_key = ANY(%s)",
        (domain, list(keys)),
    ).fetchall()
    return {r[0] for r in rows}


def summarize(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    by_reason: dict[str, int] = {}
    for v in verdicts:
        for reason in v.reasons:
            by_reason[reason] = by_reason.get(reason, 0) + 1
    return {
        "valid": sum(1 for v in verdicts if v.ok),
        "invalid": sum(1 for v in verdicts if not v.ok),
        "by_reason": dict(sorted(by_reason.items())),
    }
