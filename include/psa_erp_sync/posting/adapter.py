"""The ERP adapter: what the posting engine needs from an ERP, implemented for NetSuite and SAP.

The engine, the ledger, the period policy, dead letters, replay and reconciliation work on ledger
postings whose payload is the ERP-neutral record the planner builds (external id, date, employee,
project, legal entity, hours or amount, and a memo that names the idempotency key). An adapter
turns those postings into one ERP's writes and answers in one vocabulary:

- :meth:`ErpAdapter.validate`: a pre-flight of a batch; refusals become dead letters without a call;
- :meth:`ErpAdapter.post_batch`: per record ``confirmed`` (ERP id, period), ``rejected`` (codes) or
  ``ambiguous`` (the engine reads it back before anything is sent again);
- :meth:`ErpAdapter.reverse`: a reversal of the record itself;
- :meth:`ErpAdapter.read_back`: what the ERP holds for each posting's external id, and which
  idempotency keys that record proves it was written by;
- :meth:`ErpAdapter.read_periods`, :meth:`ErpAdapter.read_master_data`.

Failures of a whole request are the :mod:`psa_erp_sync.clients.erp` errors for every ERP
(``ErpAmbiguous``, ``ErpThrottled``, ``ErpAuthFailed``, ``ErpRejected``, ``ErpUnavailable``), so the
engine classifies answers once (docs/posting.md, "How ERP answers are classified").

:class:`NetSuiteAdapter` wraps today's client calls unchanged (upsert by external id in async
batches, read-back by external id with the key in the memo). :class:`SapAdapter` writes timesheet
records through ``TimeSheetOperation`` C/U/D in ``$batch`` changesets and expenses as journal
entries; SAP has no external id, so the record carries the key as a tag and the source id in its
note (docs/multi-erp.md, "The adapter interface").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, Literal, Protocol

from pydantic import ValidationError

from psa_erp_sync.clients import erp as ns
from psa_erp_sync.clients import sap
from psa_erp_sync.clients.erp_models import ErrorDetail
from psa_erp_sync.clients.sap_models import (
    JournalEntry,
    JournalEntryInput,
    JournalEntryItemInput,
    Single,
    TimeSheetEntry,
    TimeSheetInput,
)
from psa_erp_sync.posting.ledger import CORRECTION_TYPE, Posting
from psa_erp_sync.posting.periods import PERIOD_QUERY

Errors = list[tuple[str, str | None]]
MasterData = Literal["employee", "project", "legal_entity"]
PERIOD_CLOSED = "PERIOD_CLOSED"


@dataclass(frozen=True)
class RecordOutcome:
    """The ERP's answer for one record of a batch."""

    external_id: str
    status: Literal["confirmed", "rejected", "ambiguous"]
    erp_id: str | None = None
    period: str | None = None
    errors: Errors = field(default_factory=list)


@dataclass(frozen=True)
class BatchOutcome:
    items: list[RecordOutcome]
    replayed: bool = False  # NetSuite: the batch key was used before, these are the earlier answers


@dataclass(frozen=True)
class Held:
    """What the ERP holds for a posting's external id: its id, period, and the idempotency keys
    (or their first 16 characters) the record proves it was written by."""

    erp_id: str | None
    period: str | None
    keys: tuple[str, ...] = ()
    #: What the record holds, as the ERP reports it (None: not read, or not held by that kind of
    #: record): its hours (time), its rate (NetSuite time) and its amount (expenses, journals), in
    #: the transaction currency. The parallel run's reconciliation values the ERP's side with them.
    hours: Decimal | None = None
    rate: Decimal | None = None
    amount: Decimal | None = None

    def carries(self, idempotency_key: str) -> bool:
        return any(k and idempotency_key.startswith(k) for k in self.keys)


class ErpAdapter(Protocol):
    """What the posting engine needs from an ERP (one implementation per ERP)."""

    name: str

    def validate(self, postings: Sequence[Posting]) -> dict[str, Errors]:
        """Pre-flight: errors by external id of the postings that must not be sent."""
        ...

    def post_batch(self, erp_type: str, postings: Sequence[Posting], batch_key: str) -> BatchOutcome: ...
    def reverse(self, posting: Posting) -> bool:
        """Reverse the record itself; False when the ERP held nothing (already reversed)."""
        ...

    def read_back(self, postings: Sequence[Posting]) -> dict[str, Held]:
        """By idempotency key: what the ERP holds for each posting's external id (absent: nothing)."""
        ...

    def read_periods(self) -> list[dict[str, Any]]:
        """Accounting periods as rows of :class:`~psa_erp_sync.posting.periods.PeriodBook`."""
        ...

    def read_master_data(self, kind: MasterData) -> set[str] | None:
        """External ids the ERP knows of that kind; None when the ERP offers no such read."""
        ...


# --------------------------------------------------------------------------- NetSuite

_MEMO_KEY = re.compile(r"key:([0-9a-f]{16})")
_MASTER_TABLES = {"employee": "employee", "project": "job", "legal_entity": "subsidiary"}


#: The values a read-back reads besides the key, per NetSuite record type.
_HELD_VALUES = {"timebill": ", hours, rate", "expensereport": ", amount"}


def _decimal(value: Any) -> Decimal | None:
    return None if value is None or value == "" else Decimal(str(value))


def _quote(values: Sequence[str]) -> str:
    # External ids are validated as [A-Za-z0-9_-] by the client; quote defensively anyway.
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def one_by_one(postings: Sequence[Posting], post: Callable[[Posting], RecordOutcome]) -> BatchOutcome:
    """One request per posting, in order. An ERP that takes a second document with the same
    reference (SAP) must never see a batch resent once one entry landed: after a failure of a later
    request the rest of the batch is answered ``ambiguous`` and the engine reads it back; a failure
    of the first raises (nothing of the batch was written by this call: the engine decides)."""
    items: list[RecordOutcome] = []
    for n, p in enumerate(postings):
        try:
            items.append(post(p))
        except ns.ErpError:
            if n == 0:
                raise
            items.extend(RecordOutcome(q.external_id, "ambiguous") for q in postings[n:])
            break
    return BatchOutcome(items)


class NetSuiteAdapter:
    """Today's NetSuite path: upsert by external id (async batch, batch idempotency key), DELETE by
    external id, read-back by external id through SuiteQL (the memo carries ``key:<16>``)."""

    name = "netsuite"

    def __init__(self, client: Any) -> None:
        self.client = client

    def validate(self, postings: Sequence[Posting]) -> dict[str, Errors]:
        return {}  # NetSuite validates in the batch: its per-record answers are the dead letters

    def post_batch(self, erp_type: str, postings: Sequence[Posting], batch_key: str) -> BatchOutcome:
        result = self.client.submit_batch(erp_type, [p.payload for p in postings], batch_key)
        items = []
        for item in result.items:
            if item.ok:
                items.append(RecordOutcome(str(item.external_id), "confirmed", item.id))
                continue
            errors = item.errors or ([item.error] if item.error else [])
            codes = [(e.code, e.path) for e in errors] or [("UNKNOWN", None)]
            items.append(RecordOutcome(str(item.external_id), "rejected", errors=codes))
        return BatchOutcome(items, replayed=bool(result.replayed))

    def reverse(self, posting: Posting) -> bool:
        return bool(self.client.delete(posting.record_type, posting.external_id))

    def read_back(self, postings: Sequence[Posting]) -> dict[str, Held]:
        """One SuiteQL query per ERP record type (callers send at most 100 postings)."""
        held: dict[str, Held] = {}
        for erp_type in sorted({p.erp_type for p in postings}):
            same = [p for p in postings if p.erp_type == erp_type]
            query = (
                f"SELECT id, externalid, memo, postingperiod{_HELD_VALUES.get(erp_type, '')} FROM {erp_type}"
                f" WHERE externalid IN ({_quote(sorted({p.external_id for p in same}))})"
            )
            rows = {str(r.get("externalid") or r.get("externalId")): r for r in self.client.suiteql(query)}
            for p in same:
                row = rows.get(p.external_id)
                if row is not None:
                    period = row.get("postingperiod")
                    held[p.idempotency_key] = Held(
                        str(row["id"]) if row.get("id") is not None else None,
                        str(period) if period else None,
                        tuple(_MEMO_KEY.findall(str(row.get("memo") or ""))),
                        hours=_decimal(row.get("hours")),
                        rate=_decimal(row.get("rate")),
                        amount=_decimal(row.get("amount")),
                    )
        return held

    def read_periods(self) -> list[dict[str, Any]]:
        return list(self.client.suiteql(PERIOD_QUERY))

    def read_master_data(self, kind: MasterData) -> set[str] | None:
        table = _MASTER_TABLES[kind]
        return {
            str(r["externalid"])
            for r in self.client.suiteql(f"SELECT externalid FROM {table}")
            if r.get("externalid")
        }


# --------------------------------------------------------------------------- SAP


@dataclass(frozen=True)
class SapMapping:
    """How the ERP-neutral posting maps onto one SAP system.

    :param company_codes: legal entity -> company code (a legal entity without one is refused by
        :meth:`SapAdapter.validate` as ``COMPANY_CODE_UNMAPPED``).
    :param activity_type: ``ActivityType`` of the timesheet records.
    :param expense_account: GL account debited by an expense journal entry.
    :param payable_account: GL account credited by it.
    :param revenue_account: GL account a time entry's correcting journal credits when its revenue
        grows (debited when it shrinks), against ``receivable_account`` (unbilled receivables).
    :param fiscal_years: the years whose posting periods are read (default: last, this and next).
    """

    company_codes: dict[str, str]
    activity_type: str = ""
    expense_account: str = "6100"
    payable_account: str = "2000"
    revenue_account: str = "4000"
    receivable_account: str = "1200"
    fiscal_years: tuple[int, ...] = ()

    def company_code(self, legal_entity: str | None) -> str | None:
        return self.company_codes.get(legal_entity or "")

    def legal_entity(self, company_code: str) -> str | None:
        for entity, code in self.company_codes.items():
            if code == company_code:
                return entity
        return None


def _ref(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name) or {}
    return str(value.get("externalId") or "") if isinstance(value, dict) else str(value)


def _period_start(period: str | None) -> date | None:
    """Start of a period id ``<legal entity>-YYYY-MM`` (the ids :meth:`SapAdapter.read_periods` makes)."""
    match = re.search(r"-(\d{4})-(\d{2})$", period or "")
    return date(int(match.group(1)), int(match.group(2)), 1) if match else None


def _booking_day(payload: dict[str, Any]) -> date:
    """The entry's date, or the first day of the period the policy moved it to (SAP books a
    timesheet record or a journal entry in the period of its date; the memo keeps the original)."""
    day = date.fromisoformat(str(payload["tranDate"]))
    start = _period_start(_ref(payload, "postingPeriod"))
    return start if start is not None and start > day else day


def _source_marker(source_id: str) -> str:
    return f"psa:{source_id} "


_TAG = re.compile(r"^\[psa:([A-Za-z0-9_.:-]{1,64})\]")
#: The item text of a correcting journal on SAP: the source id, the record kind (``te`` time,
#: ``ex`` expense), the ledger ``seq`` (``<external id>-c<seq>``), the action and, for time, the
#: signed hours it carries (SAP journal items have no quantity for them).
CORRECTION_TEXT = re.compile(
    r"^psa:(?P<source>\S+) (?P<kind>te|ex) c(?P<seq>\d+) (?P<action>adjust|reverse)(?: h:(?P<hours>-?\d+\.\d+))?$"
)
_KIND = {"timebill": "te", "expensereport": "ex"}
_CENT = Decimal("0.01")


def _journal_route(p: Posting) -> bool:
    """Whether a posting goes to SAP as a journal entry: an expense, or any correcting record."""
    return p.record_type == "expensereport" or p.corrects is not None


@dataclass
class _Live:
    """The live timesheet records of the work agreements a batch touches, read once per batch."""

    by_agreement: dict[tuple[str, str], list[TimeSheetEntry]] = field(default_factory=dict)

    def of_source(self, pwa: str, company: str, source_id: str) -> TimeSheetEntry | None:
        marker = _source_marker(source_id)
        live = [
            e
            for e in self.by_agreement.get((pwa, company), [])
            if e.is_live and marker in e.TimeSheetDataFields.TimeSheetNoteText + " "
        ]
        return max(live, key=lambda e: e.TimeSheetRecord) if live else None


class SapAdapter:
    """SAP S/4HANA over :class:`~psa_erp_sync.clients.sap.S4HanaClient`.

    Time (``timebill``): one changeset per record in one ``$batch`` (each atomic, answered on its
    own): ``post`` creates (``TimeSheetOperation`` C), ``adjust`` changes the live record (U; an
    approved one gets a successor naming it in ``TimeSheetPredecessorRecord``), ``reverse`` cancels
    it (D, status 60). Every record written carries ``[psa:<key>]`` and the planner's memo
    (``psa:<source id> v:... key:...``) in ``TimeSheetNoteText``. Expenses (``expensereport``):
    balanced journal entries whose ``DocumentReferenceID`` derives from the key; a reversal is the
    mirrored entry. CSRF tokens are fetched and refreshed by the client.
    """

    name = "sap"

    def __init__(self, client: sap.S4HanaClient, mapping: SapMapping) -> None:
        self.client = client
        self.mapping = mapping

    # -- errors: SAP's failures of a whole request in the engine's vocabulary
    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sap.SapAmbiguous as exc:
            raise ns.ErpAmbiguous(str(exc), method=exc.method, path=exc.path, status=exc.status) from exc
        except sap.SapThrottled as exc:
            raise ns.ErpThrottled(exc.retry_after) from exc
        except sap.SapAuthFailed as exc:
            raise ns.ErpAuthFailed(401, [ErrorDetail.model_validate({"o:errorCode": "SAP_AUTH"})]) from exc
        except sap.SapUnavailable as exc:
            raise ns.ErpUnavailable(str(exc)) from exc
        except sap.SapRejected as exc:
            detail = ErrorDetail.model_validate({"o:errorCode": _code(exc), "detail": exc.message[:200]})
            raise ns.ErpRejected(exc.status, [detail]) from exc

    # -- payloads
    def _company(self, posting: Posting, payload: dict[str, Any]) -> str:
        code = self.mapping.company_code(_ref(payload, "subsidiary") or posting.legal_entity)
        if code is None:
            raise KeyError("subsidiary")
        return code

    def _timesheet(self, posting: Posting, payload: dict[str, Any]) -> TimeSheetInput:
        return TimeSheetInput(
            person_work_agreement_external_id=_ref(payload, "employee"),
            company_code=self._company(posting, payload),
            day=_booking_day(payload),
            hours=Decimal(str(payload["hours"])),
            activity_type=self.mapping.activity_type,
            wbs_element=_ref(payload, "customer"),
            note=str(payload.get("memo") or ""),
        )

    def _journal(self, posting: Posting, payload: dict[str, Any], *, mirrored: bool) -> JournalEntryInput:
        amount = Decimal(str(payload["amount"]))
        debit, credit = self.mapping.expense_account, self.mapping.payable_account
        if mirrored:
            debit, credit = credit, debit
        text = f"psa:{posting.lane_source}"[:50]
        return JournalEntryInput(
            company_code=self._company(posting, payload),
            document_date=date.fromisoformat(str(payload["tranDate"])),
            posting_date=_booking_day(payload),
            currency=_ref(payload, "currency") or str((payload.get("currency") or {}).get("refName") or ""),
            header_text=text[:25],
            items=(
                JournalEntryItemInput(gl_account=debit, amount=amount, debit_credit="S", text=text),
                JournalEntryItemInput(gl_account=credit, amount=amount, debit_credit="H", text=text),
            ),
        )

    def _entry_of(self, p: Posting, *, mirrored: bool = False) -> JournalEntryInput | None:
        """The journal entry a posting writes: a correcting journal (None: it carries nothing), an
        expense adjustment (the replaced version mirrored and the new one, in one document), or
        the expense itself (``mirrored``: its reversal)."""
        if p.corrects:
            return self._correcting_journal(p)
        if p.action == "adjust":
            return self._adjusting_journal(p)
        payload = p.payload.get("reverses") if mirrored else p.payload
        return self._journal(p, payload or {}, mirrored=mirrored)

    def _adjusting_journal(self, p: Posting) -> JournalEntryInput:
        """An adjusted expense in one balanced document: the version SAP holds (``replaces``, which
        the planner carries) mirrored, and the new version, dated as the new one. The expense
        account then nets to the new amount over the record's documents, whatever was adjusted
        before; the document's reference derives from the adjustment's key, so a read-back finds
        both halves or neither."""
        replaced = p.payload.get("replaces")
        if not isinstance(replaced, dict):
            raise _Unsupported("SAP_EXPENSE_ADJUST_UNSUPPORTED", "replaces")
        old = self._journal(p, replaced, mirrored=True)
        new = self._journal(p, p.payload, mirrored=False)
        if (old.company_code, old.currency) != (new.company_code, new.currency):
            raise _Unsupported("SAP_EXPENSE_ADJUST_UNSUPPORTED", "currency")
        return new.model_copy(update={"items": (*old.items, *new.items)})

    def _correcting_journal(self, p: Posting) -> JournalEntryInput | None:
        """A correction of a record SAP holds in a closed period (docs/posting.md "Closed periods"):
        a balanced journal entry in the first open period carrying the signed difference (the
        planner's ``amount``): time moves it between unbilled receivables and revenue, expenses
        between the expense and the payables account (as the record did). The item text names the
        source, the kind, the seq, the action and (time) the signed hours: the read-back and the
        reconciliation read them from SAP. A difference of hours only moves one cent on and off the
        receivable (SAP refuses an empty item); nothing at all to carry is None (nothing is sent)."""
        payload = p.payload
        currency = str((payload.get("currency") or {}).get("refName") or "")
        delta = Decimal(str(payload["amount"]))
        hours = Decimal(str(payload.get("custbody_psa_hours") or 0))
        if delta == 0 and hours == 0:
            return None
        seq = p.external_id.rsplit("-c", 1)[-1]
        text = f"psa:{p.lane_source} {_KIND.get(p.record_type, 'te')} c{seq} {p.action}"
        if p.record_type != "expensereport":
            text += f" h:{hours:.2f}"
            grows, shrinks = self.mapping.receivable_account, self.mapping.revenue_account
        else:
            grows, shrinks = self.mapping.expense_account, self.mapping.payable_account
        if delta == 0:
            grows = shrinks = self.mapping.receivable_account
        debit, credit = (grows, shrinks) if delta >= 0 else (shrinks, grows)
        amount = abs(delta) or _CENT
        return JournalEntryInput(
            company_code=self._company(p, payload),
            document_date=date.fromisoformat(str(payload["tranDate"])),
            posting_date=_booking_day(payload),
            currency=currency,
            header_text=f"psa:{p.lane_source} c{seq}"[:25],
            items=(
                JournalEntryItemInput(gl_account=debit, amount=amount, debit_credit="S", text=text),
                JournalEntryItemInput(gl_account=credit, amount=amount, debit_credit="H", text=text),
            ),
        )

    def validate(self, postings: Sequence[Posting]) -> dict[str, Errors]:
        """Refuse what SAP cannot take before any call: unmapped company codes, payloads its
        models refuse, and an expense adjustment that cannot mirror the version it replaces in one
        document (none carried, or another currency or company code: ``SAP_EXPENSE_ADJUST_UNSUPPORTED``)."""
        refused: dict[str, Errors] = {}
        for p in postings:
            payload = p.payload.get("reverses") if p.deletes else p.payload
            try:
                if _journal_route(p):
                    self._entry_of(p, mirrored=p.deletes)
                elif not p.deletes:
                    self._timesheet(p, payload or {})
                elif self.mapping.company_code(p.legal_entity) is None:
                    raise KeyError("subsidiary")
            except _Unsupported as exc:
                refused[p.external_id] = [(exc.code, exc.field)]
            except KeyError as exc:
                code = "COMPANY_CODE_UNMAPPED" if exc.args == ("subsidiary",) else "SAP_PAYLOAD_INVALID"
                refused[p.external_id] = [(code, str(exc.args[0]) if exc.args else None)]
            except (ValidationError, ValueError, ArithmeticError) as exc:
                path = (
                    exc.errors()[0]["loc"][0] if isinstance(exc, ValidationError) and exc.errors() else None
                )
                refused[p.external_id] = [("SAP_PAYLOAD_INVALID", str(path) if path is not None else None)]
        return refused

    # -- reads
    def _live(self, postings: Sequence[Posting]) -> _Live:
        live = _Live()
        for p in postings:
            payload = p.payload.get("reverses") if p.action == "reverse" else p.payload
            agreement = (_ref(payload or {}, "employee"), self._company(p, payload or {}))
            if agreement not in live.by_agreement:
                live.by_agreement[agreement] = self.client.timesheets(*agreement)
        return live

    def _period_of(self, company: str, day: date) -> str | None:
        entity = self.mapping.legal_entity(company)
        return f"{entity}-{day.year:04d}-{day.month:02d}" if entity else None

    def read_back(self, postings: Sequence[Posting]) -> dict[str, Held]:
        """Timesheets: the live record whose note names the posting's source id, with the key of
        its tag (one read per work agreement). Journal entries: the document of the posting's
        reference; for a reversal, the original is held until its mirrored entry exists."""
        held: dict[str, Held] = {}
        with self._translated():
            time = [p for p in postings if not _journal_route(p)]
            live = self._live(time) if time else _Live()
            for p in time:
                payload = p.payload.get("reverses") if p.action == "reverse" else p.payload
                pwa, company = _ref(payload or {}, "employee"), self._company(p, payload or {})
                entry = live.of_source(pwa, company, p.lane_source)
                if entry is not None:
                    tag = _TAG.match(entry.TimeSheetDataFields.TimeSheetNoteText)
                    held[p.idempotency_key] = Held(
                        entry.TimeSheetRecord,
                        self._period_of(company, entry.TimeSheetDate),
                        (tag.group(1),) if tag else (),
                        hours=entry.TimeSheetDataFields.RecordedHours,
                    )
            for p in postings:
                if _journal_route(p):
                    found = self._journal_held(p)
                    if found is not None:
                        held[p.idempotency_key] = found
        return held

    def _journal_held(self, p: Posting) -> Held | None:
        """The document of the posting's key (its ``DocumentReferenceID``). A correcting journal or an
        adjusted expense is held when it exists (the adjustment's one document holds the mirror of
        the replaced version and the new one); a correcting journal that carries nothing is held
        by definition (nothing was sent)."""
        payload = p.payload.get("reverses") if p.deletes else p.payload
        company = self._company(p, payload or {})
        if p.corrects and self._correcting_journal(p) is None:
            return Held(None, p.period, (p.idempotency_key,), amount=Decimal(0))
        docs: list[JournalEntry] = self.client.find_journal_entries(company, p.idempotency_key)
        if p.deletes:  # reversed once the mirrored entry exists; held until then
            return None if docs else Held(None, None, (), amount=_decimal((payload or {}).get("amount")))
        if not docs:
            return None
        doc = docs[0]
        # What the document holds of the record: its debits of the expense account (an adjustment
        # credits the replaced amount there and debits the new one); a correcting journal: its amount.
        account = None if p.corrects else self.mapping.expense_account
        debits = [
            i.AmountInTransactionCurrency
            for i in (doc.to_Item.results if doc.to_Item else ())
            if i.DebitCreditCode == "S" and account in (None, i.GLAccount)
        ]
        return Held(
            doc.AccountingDocument,
            self._period_of(company, doc.PostingDate),
            (p.idempotency_key,),
            amount=sum(debits, Decimal(0)) if debits else None,
        )

    def read_periods(self) -> list[dict[str, Any]]:
        years = self.mapping.fiscal_years or tuple(date.today().year + d for d in (-1, 0, 1))
        rows = []
        with self._translated():
            for entity, company in sorted(self.mapping.company_codes.items()):
                for year in years:
                    for p in self.client.posting_periods(company, year):
                        start = p.FiscalPeriodStartDate
                        rows.append(
                            {
                                "externalid": f"{entity}-{start.year:04d}-{start.month:02d}",
                                "subsidiary": entity,
                                "startdate": start,
                                "enddate": p.FiscalPeriodEndDate,
                                "closed": not p.PostingPeriodIsOpen,
                            }
                        )
        return rows

    def read_master_data(self, kind: MasterData) -> set[str] | None:
        if kind == "legal_entity":
            return {row["subsidiary"] for row in self.read_periods()}
        return None  # work agreements and WBS elements are not readable through these services

    # -- writes
    def post_batch(self, erp_type: str, postings: Sequence[Posting], batch_key: str) -> BatchOutcome:
        if erp_type in ("expensereport", CORRECTION_TYPE):
            return self._post_journals(postings)
        with self._translated():
            live = self._live([p for p in postings if p.action == "adjust"])
            changesets = [[self._timesheet_request(p, live)] for p in postings]
            results = self.client.batch(changesets)
        return BatchOutcome([self._answer(p, r) for p, r in zip(postings, results, strict=True)])

    def _timesheet_request(self, p: Posting, live: _Live) -> sap.BatchRequest:
        entry = self._timesheet(p, p.payload)
        note = f"{sap.timesheet_tag(p.idempotency_key)} {entry.note}"[: sap.NOTE_MAX]
        current = (
            live.of_source(entry.person_work_agreement_external_id, entry.company_code, p.lane_source)
            if p.action == "adjust"
            else None
        )
        if current is None:  # a post, or an adjust of a record SAP no longer holds live
            return sap.BatchRequest("POST", sap.TIMESHEETS, entry.payload(operation="C", note=note))
        body = entry.payload(operation="U", note=note, record=current.TimeSheetRecord)
        return sap.BatchRequest("POST", sap.TIMESHEETS, body)

    def _answer(self, p: Posting, result: sap.ChangesetResult) -> RecordOutcome:
        if result.error is None:
            try:
                entry = TimeSheetEntry.model_validate(Single.model_validate(result.answers[0].body).d)
            except (ValidationError, IndexError):  # committed, answer unreadable: read it back
                return RecordOutcome(p.external_id, "ambiguous")
            return RecordOutcome(
                p.external_id,
                "confirmed",
                entry.TimeSheetRecord,
                self._period_of(entry.CompanyCode, entry.TimeSheetDate),
            )
        if result.error.status >= 500 or result.error.status in (401, 403, 429):
            # The changeset was rolled back (SAP's changesets are atomic) or never ran: read back
            # before anything is sent again, as after any ambiguous answer.
            return RecordOutcome(p.external_id, "ambiguous")
        return RecordOutcome(p.external_id, "rejected", errors=[(_code(result.error), None)])

    def _post_journals(self, postings: Sequence[Posting]) -> BatchOutcome:
        """One journal entry per posting, in order. SAP takes a second document with the same
        reference, so a batch is never resent once one entry landed: after a failure of the whole
        request, the rest of the batch is answered ``ambiguous`` and the engine reads it back."""
        return one_by_one(postings, lambda p: self._post_journal(p, mirrored=False))

    def _post_journal(self, p: Posting, *, mirrored: bool) -> RecordOutcome:
        try:
            entry = self._entry_of(p, mirrored=mirrored)
        except _Unsupported as exc:
            return RecordOutcome(p.external_id, "rejected", errors=[(exc.code, exc.field)])
        if entry is None:  # a correcting record with nothing to carry: SAP is already right
            return RecordOutcome(p.external_id, "confirmed", None, p.period)
        return self.send_journal(p, entry)

    def send_journal(
        self,
        p: Posting,
        entry: JournalEntryInput,
        *,
        erp_id: Callable[[Any], str] = lambda doc: str(doc.AccountingDocument),
    ) -> RecordOutcome:
        """Send one journal entry for ``p``: confirmed with ``erp_id`` of the document SAP answers
        and the period it booked in, or rejected with SAP's codes (a 5xx raises: ambiguous)."""
        try:
            with self._translated():
                doc = self.client.post_journal_entry(entry, idempotency_key=p.idempotency_key)
        except ns.ErpRejected as exc:
            if exc.status >= 500:
                raise
            return RecordOutcome(p.external_id, "rejected", errors=[(d.code, None) for d in exc.details])
        return RecordOutcome(
            p.external_id, "confirmed", erp_id(doc), self._period_of(entry.company_code, doc.PostingDate)
        )

    def reverse(self, posting: Posting) -> bool:
        if posting.record_type == "expensereport":
            outcome = self._post_journal(posting, mirrored=True)
            if outcome.status == "rejected":
                code, _ = outcome.errors[0]
                raise ns.ErpRejected(400, [ErrorDetail.model_validate({"o:errorCode": code})])
            return True
        payload = posting.payload.get("reverses") or {}
        with self._translated():
            company = self._company(posting, payload)
            live = self._live([posting])
            current = live.of_source(_ref(payload, "employee"), company, posting.lane_source)
            if current is None:
                return False  # nothing live: already cancelled
            self.client.delete_timesheet(current)
        return True


class _Unsupported(Exception):
    """A posting SAP cannot take as planned: refused before any call, with a code."""

    def __init__(self, code: str, field: str | None = None) -> None:
        super().__init__(code)
        self.code, self.field = code, field


def _code(error: sap.SapRejected) -> str:
    """SAP's message class/number, ``F5/201`` (posting period not open) as ``PERIOD_CLOSED``: the
    engine then re-reads the periods and applies the entity's policy, as for NetSuite."""
    if error.period_closed:
        return PERIOD_CLOSED
    return error.code or f"SAP_HTTP_{error.status}"


def adapter_for(erp: str, client: Any, *, sap_mapping: SapMapping | None = None) -> ErpAdapter:
    """The adapter of the ERP named ``erp`` (``netsuite`` or ``sap``) over ``client``."""
    name = erp.strip().lower()
    if name == "netsuite":
        return NetSuiteAdapter(client)
    if name == "sap":
        if sap_mapping is None:
            raise ValueError("an SAP adapter needs a mapping of legal entities to company codes")
        return SapAdapter(client, sap_mapping)
    raise ValueError(f"no ERP adapter for {erp!r} (known: netsuite, sap)")


def as_adapter(client_or_adapter: Any) -> ErpAdapter:
    """An adapter as given, or a bare NetSuite client wrapped (callers from before adapters)."""
    if hasattr(client_or_adapter, "post_batch") and hasattr(client_or_adapter, "read_back"):
        adapter: ErpAdapter = client_or_adapter
        return adapter
    return NetSuiteAdapter(client_or_adapter)
