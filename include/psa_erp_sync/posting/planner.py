"""Plan the ERP postings that make the ERP equal the currently approved PSA set.

Compares, per source record, what should be in the ERP (approved, not deleted canonical rows)
with what the ledger knows the ERP holds (its last confirmed action), and plans ``post``,
``adjust`` (a new approved version of a posted record: upsert by the same external id, audited)
or ``reverse`` (unapproved or deleted after posting). Records with unfinished postings are left
to the engine; rejected or parked ones wait for replay. Set-based SQL, then a streamed pass.

Every posting is stamped with its route (:mod:`psa_erp_sync.routing`): the ERP and account of its
legal entity on its posting date (the entry's date, or the first day of the period the closed-period
policy moves it to), never the processing time. A correction of a record the ERP holds goes where
the record is held, unless a cutover lies between (:meth:`~psa_erp_sync.routing.route.Router.routes_for_correction`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, fields, replace
from datetime import date
from decimal import Decimal
from functools import partial
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import set_json_loads

from psa_erp_sync import money
from psa_erp_sync.config import Config, id_format
from psa_erp_sync.contracts import kinds, records
from psa_erp_sync.ods import audit, connections
from psa_erp_sync.ods import exceptions as exception_queue
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.periods import PeriodBook, PeriodDecision
from psa_erp_sync.routing.route import Route, RouteNotFound, Router
from psa_erp_sync.routing.route import router as default_router

log = logging.getLogger(__name__)

SOURCES = {kind.record_type: kind.canonical_table for kind in kinds.KINDS.values()}
KINDS = {kind.record_type: kind.name for kind in kinds.KINDS.values()}
#: Candidates read from the server cursor at a time (at most a chunk's worth). Every row of a fetch
#: is decoded at once (its canonical row as a dict, then its contract record) and held until the
#: fetch's last row is planned: ~6 KB a row when measured (rows read as JSON), so 20,000 rows held
#: ~125 MB at the month-end peak; 2,000 hold ~12 MB, for 300 round trips a 600k-record month.
FETCH_ROWS = 2_000


@dataclass
class Plan:
    record_type: str
    planned: dict[str, int] = field(default_factory=lambda: {"post": 0, "adjust": 0, "reverse": 0})
    moved_period: int = 0
    corrected: int = 0  # corrections planned as correcting journals in the first open period
    parked: int = 0
    superseded: int = 0
    #: What the plan looked at (:class:`Records`): ``full`` (every record), ``changed`` (the queued
    #: records, migration 0047) or ``records`` (the ``source_ids`` it was given).
    scope: str = "full"
    #: The shadow postings of parallel runs (:func:`plan_shadows`), planned after the record's own.
    parallel_run: Plan | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "record_type": self.record_type,
            "planned": dict(self.planned),
            "moved_to_open_period": self.moved_period,
            "corrected_in_open_period": self.corrected,
            "parked": self.parked,
            "superseded": self.superseded,
            "scope": self.scope,
        }
        if self.parallel_run is not None:
            shadow = self.parallel_run.as_dict()
            shadow.pop("record_type")
            out["parallel_run"] = shadow
        return out


@dataclass(frozen=True)
class ShadowScope:
    """The parallel-run windows a shadow plan covers: per legal entity, the window's days and the
    secondary ERP's route (:meth:`~psa_erp_sync.routing.route.Router.parallel_windows`)."""

    windows: tuple[tuple[str, date, date, Route], ...]

    @property
    def secondary(self) -> dict[str, Route]:
        return {entity: route for entity, _, _, route in self.windows}

    def params(self) -> dict[str, Any]:
        return {
            "entities": [w[0] for w in self.windows],
            "firsts": [w[1] for w in self.windows],
            "lasts": [w[2] for w in self.windows],
        }


#: The queued records of a record type (migration 0047): what changed since the planner last looked.
QUEUED = "SELECT source_system, source_id FROM ledger.plan_queue WHERE record_type = %(rt)s"


@dataclass(frozen=True)
class Records:
    """The records a plan looks at: every one (``full``), the queued ones (``changed``: their
    canonical row or a replay changed them since the planner last looked, :data:`QUEUED`), or the
    given ``source_ids`` of ``source_system`` (``records``). Restricted, a plan decides for each of
    its records exactly what a full plan would; the other records are not looked at."""

    scope: str = "full"
    source_system: str | None = None
    source_ids: tuple[str, ...] = ()

    def where(self, alias: str = "") -> str:
        """The condition (``AND ...``) on rows of ``alias`` (a canonical or ledger table)."""
        col = f"{alias}." if alias else ""
        if self.scope == "changed":
            return f" AND ({col}source_system, {col}source_id) IN ({QUEUED})"
        if self.scope == "records":
            return f" AND {col}source_system = %(only_system)s AND {col}source_id = ANY(%(only_ids)s)"
        return ""

    def params(self) -> dict[str, Any]:
        if self.scope == "records":
            return {"only_system": self.source_system, "only_ids": list(self.source_ids)}
        return {}


EVERY = Records()


def _candidates(
    conn: psycopg.Connection,
    record_type: str,
    scope: ShadowScope | None = None,
    only: Records = EVERY,
    *,
    fetch: int = FETCH_ROWS,
) -> Iterator[dict[str, Any]]:
    """Records whose ERP state differs from the approved set, with what the ledger says about them.
    ``scope``: a parallel run's shadow lane instead of the record's own: the approved records of
    the windows' entities dated in their windows against the shadow rows (held by the secondary).
    ``only``: these records (the same rows a full read returns for them). ``fetch``: rows read
    from the server cursor at a time, all decoded and held until the last is planned."""
    source = SOURCES[record_type]
    where = only.where()
    lane = "NOT shadow" + where
    desired, params = f"SELECT * FROM {source} WHERE approved AND NOT is_deleted{where}", only.params()
    if scope is not None:
        lane = "shadow AND legal_entity = ANY(%(entities)s)" + where
        desired = (
            f"SELECT d.* FROM {source} d JOIN unnest(%(entities)s::text[], %(firsts)s::date[], %(lasts)s::date[])"
            " AS w(legal_entity, first_day, last_day) ON d.legal_entity = w.legal_entity"
            f" AND d.spent_date BETWEEN w.first_day AND w.last_day WHERE d.approved AND NOT d.is_deleted{only.where('d')}"
        )
        params = {**params, **scope.params()}
    columns = _desired_columns(record_type)
    with conn.cursor(name=f"plan_{record_type}", row_factory=_candidate_row(columns)) as cur:
        cur.execute(
            f"""
            WITH led AS (
                SELECT source_system, source_id, count(*) AS n,
                       (array_agg(state ORDER BY seq DESC))[1] AS last_state,
                       (array_agg(source_version ORDER BY seq DESC))[1] AS last_version,
                       (array_agg(action ORDER BY seq DESC))[1] AS last_action,
                       (array_agg(source_version ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_version,
                       (array_agg(action ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_action,
                       (array_agg(idempotency_key ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_key,
                       {ledger.HELD_COLUMNS}
                FROM ledger.posting WHERE record_type = %(rt)s AND {lane} GROUP BY 1, 2
            ), desired AS ({desired})
            SELECT coalesce(d.source_system, led.source_system) AS source_system,
                   coalesce(d.source_id, led.source_id) AS source_id,
                   coalesce(led.n, 0) AS n, led.last_state, led.last_version, led.last_action,
                   led.done_version, led.done_action,
                   -- the payloads by key, for the candidates only (migration 0042): the aggregate over
                   -- the ledger reads none
                   (SELECT pp.payload FROM ledger.posting_payload pp WHERE pp.idempotency_key = led.done_key) AS done_payload,
                   led.base_action, (SELECT pp.payload FROM ledger.posting_payload pp WHERE pp.idempotency_key = led.base_key)
                   AS base_payload, led.base_external_id, led.base_amount,
                   led.corrections, led.corrected_amount, led.corrected_hours,
                   led.base_target_erp, led.base_erp_account, led.base_route_version,
                   led.correction_erps, led.correction_amounts, led.correction_hours,
                   -- the desired row last, column by column (no JSON: built and decoded per row it
                   -- was most of the read's time), behind whether there is one (_candidate_row)
                   d.source_id IS NOT NULL, {", ".join(f"d.{c}" for c in columns)}
            FROM desired d FULL JOIN led USING (source_system, source_id)
            WHERE (led.last_state IS NULL OR led.last_state NOT IN ('pending', 'sent', 'ambiguous'))
              AND (
                    (d.source_id IS NOT NULL AND (led.done_action IS NULL OR led.done_action = 'reverse'))
                 OR (d.source_id IS NOT NULL AND led.done_action IN ('post', 'adjust') AND led.done_version <> d.version_hash)
                 OR (d.source_id IS NULL AND led.done_action IN ('post', 'adjust'))
              )
            ORDER BY 1, 2
            """,
            {"rt": record_type, **params},
        )
        kind = KINDS[record_type]
        for size in _fetch_sizes(fetch):
            rows = cur.fetchmany(size)
            for cand in rows:
                if cand["desired"] is not None:
                    _through_contract(kind, cand)
                yield cand
            if len(rows) < size:
                return


#: The candidates' fetches: a small first one (the first chunk is planned, written and sent while
#: the rest is read), then the last size; none larger than the ``fetch`` a read is given
#: (:data:`FETCH_ROWS`, what the process holds decoded at once).
FETCH_SIZES = (500, 2_000)


def _fetch_sizes(limit: int) -> Iterator[int]:
    """:data:`FETCH_SIZES`, none above ``limit`` (held in memory at once: :data:`FETCH_ROWS`)."""
    sizes = [min(size, limit) for size in FETCH_SIZES]
    yield from sizes
    while True:
        yield sizes[-1]


#: The canonical row's columns beside its contract that the plan reads (functional_of, foreign_rate).
FX_COLUMNS = ("functional_amount_minor", "functional_currency", "fx_rate")


def _desired_columns(record_type: str) -> tuple[str, ...]:
    """The columns of the desired canonical row a candidate carries: its contract's and the FX ones."""
    return (*records.FIELDS[KINDS[record_type]], *FX_COLUMNS)


def _candidate_row(columns: tuple[str, ...]) -> Callable[[Any], Callable[[Sequence[Any]], dict[str, Any]]]:
    """Row factory of :func:`_candidates`: the ledger's columns by name, and ``desired``, the desired
    row's ``columns`` as Python values (dates, ``Decimal`` hours and rates, aware timestamps), or
    None when the record is not approved (any more). The last ``len(columns) + 1`` columns of the
    query are the flag and the desired row."""

    def factory(cursor: Any) -> Callable[[Sequence[Any]], dict[str, Any]]:
        names = [c.name for c in cursor.description][: -len(columns) - 1]
        split = len(names)
        # A record the ledger has no row of (``n`` 0: a first post, most of a month) has every
        # ledger column NULL: its dict is a copy of this one with its key (when the columns after
        # the key and ``n`` are all None indeed; any other row is built column by column).
        blank = dict.fromkeys(names)
        blank["n"] = 0
        keyed = names[:3] == ["source_system", "source_id", "n"]
        nulls = split - 3

        def make(values: Sequence[Any]) -> dict[str, Any]:
            if keyed and values[2] == 0 and values[3:split].count(None) == nulls:
                cand = blank.copy()
                cand["source_system"], cand["source_id"] = values[0], values[1]
            else:
                cand = dict(zip(names, values[:split], strict=True))
            cand["desired"] = dict(zip(columns, values[split + 1 :], strict=True)) if values[split] else None
            return cand

        return make

    return factory


def _through_contract(kind: str, cand: dict[str, Any]) -> None:
    """Decode the desired canonical row of ``cand`` through its v1 contract (the msgspec twin):
    ``cand["record"]`` is the typed record the plan reads; ``cand["desired"]`` stays the row, for
    its FX columns (beside the contract). A row the contract does not describe fails here."""
    cand["record"] = records.from_row(kind, cand["desired"])


def supersede_stale(
    conn: psycopg.Connection, record_type: str, scope: ShadowScope | None = None, records: Records = EVERY
) -> int:
    """Pending (never sent) postings whose version is no longer what should be in the ERP: in the
    record's own lane, or (``scope``) in a parallel run's shadow lane, where what should be in the
    secondary ERP is the approved records dated in the windows. ``records``: of these records only
    (a pending posting goes stale only when its canonical row changes, which queues the record)."""
    source = SOURCES[record_type]
    lane, wanted, params = "NOT p.shadow" + records.where("p"), "", {"rt": record_type, **records.params()}
    if scope is not None:
        lane = "p.shadow AND p.legal_entity = ANY(%(entities)s)" + records.where("p")
        wanted = (
            " AND EXISTS (SELECT 1 FROM unnest(%(entities)s::text[], %(firsts)s::date[], %(lasts)s::date[])"
            " AS w(le, first_day, last_day) WHERE d.legal_entity = w.le"
            " AND d.spent_date BETWEEN w.first_day AND w.last_day)"
        )
        params.update(scope.params())
    cur = conn.execute(
        f"""
        UPDATE ledger.posting p SET state = 'superseded', updated_at = now()
        WHERE p.record_type = %(rt)s AND p.state = 'pending' AND {lane} AND (
              (p.action IN ('post', 'adjust') AND NOT EXISTS (
                  SELECT 1 FROM {source} d WHERE d.source_system = p.source_system AND d.source_id = p.source_id
                    AND d.version_hash = p.source_version AND d.approved AND NOT d.is_deleted{wanted}))
           OR (p.action = 'reverse' AND EXISTS (
                  SELECT 1 FROM {source} d WHERE d.source_system = p.source_system AND d.source_id = p.source_id
                    AND d.approved AND NOT d.is_deleted{wanted})))
        """,
        params,
    )
    return cur.rowcount


def erp_payload(
    record_type: str,
    record: records.Record,
    fx_row: dict[str, Any],
    *,
    external_id: str,
    key: str,
    config: Config,
    period: str | None,
    original_period: str | None,
) -> dict[str, Any]:
    """The ERP record for a canonical record (its v1 contract) and the FX columns of its row
    (:func:`foreign_rate`). The memo carries our key, so a read-back can prove the ERP holds
    exactly this version (no names or notes: memos are visible to many people)."""
    ext = config.mappings.external_ids
    memo = f"psa:{record.source_id} v:{record.version_hash[:12]} key:{key[:16]}"
    if original_period and period and original_period != period:
        memo += f" orig-date:{record.spent_date} orig-period:{original_period}"
    body: dict[str, Any] = {
        "externalId": external_id,
        "tranDate": record.spent_date.isoformat(),
        "employee": {"externalId": id_format(ext["employee"])(record.user_ref)},
        "customer": {"externalId": id_format(ext["job"])(record.project_ref)},
        "subsidiary": {"externalId": record.legal_entity},
        "currency": {"refName": record.currency},
        "isBillable": record.billable,
        "memo": memo,
    }
    if period:
        body["postingPeriod"] = {"externalId": period}
    fx = foreign_rate(fx_row)
    if fx is not None:  # foreign-currency work: the ERP's rate for the date, as validated
        body["exchangeRate"] = format(fx, "f")
    if isinstance(record, records.TimeEntry):
        body["hours"] = f"{record.hours:.2f}"
        body["rate"] = money.format_minor(record.bill_rate_minor, record.currency)
    else:
        body["amount"] = money.format_minor(record.amount_minor, record.currency)
        body["category"] = record.category
    return body


def foreign_rate(row: dict[str, Any]) -> Decimal | None:
    """The exchange rate of a canonical row in a currency other than its functional currency
    (``fx_rate`` as text, see :func:`_candidates`), trailing zeros dropped; None for same-currency
    work and rows validated before migration 0023."""
    functional, rate = row.get("functional_currency"), row.get("fx_rate")
    if not functional or rate is None or functional == row["currency"]:
        return None
    value = Decimal(str(rate)).normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral() else value


def functional_of(row: dict[str, Any]) -> dict[str, Any]:
    """The ledger's functional columns of a posting of canonical ``row`` (the transaction amount at
    rate 1 for rows validated before migration 0023)."""
    if row.get("functional_currency") is None:
        return {
            "functional_amount_minor": int(row["amount_minor"]),
            "functional_currency": row["currency"],
            "fx_rate": Decimal(1),
        }
    return {
        "functional_amount_minor": int(row["functional_amount_minor"]),
        "functional_currency": row["functional_currency"],
        "fx_rate": Decimal(str(row["fx_rate"])),
    }


def held_period(payload: dict[str, Any] | None) -> str | None:
    """The posting period of a payload the ERP confirmed (where the ERP holds the record)."""
    if not payload:
        return None
    ref = payload.get("postingPeriod") or {}
    value = ref.get("externalId") if isinstance(ref, dict) else ref
    return str(value) if value else None


def correction_decision(
    periods: PeriodBook, held: ledger.Held, record_type: str, policy: str
) -> PeriodDecision | None:
    """How a change of an entry the ERP holds must reach it (:meth:`PeriodBook.decide_correction`
    for the period the record itself is held in); None when nothing of it is in the ERP."""
    if not held.base_present:
        return None
    return periods.decide_correction(
        held_period(held.base_payload), record_type, policy, corrected=held.corrections > 0
    )


# The accounts a correcting journal moves the difference between (external ids in the ERP's chart
# of accounts): services revenue against unbilled receivables, as the original time or expense
# posting did when it was recognised.
CORRECTION_ACCOUNTS = {"revenue": "psa-services-revenue", "receivable": "psa-unbilled-receivable"}


def correction_lines(delta_minor: int, currency: str) -> list[dict[str, Any]]:
    """The balanced lines of a correcting journal for a signed difference: more revenue debits
    the receivable and credits revenue; less revenue the other way round (never a negative line)."""
    amount = money.format_minor(abs(delta_minor), currency)
    debit, credit = ("receivable", "revenue") if delta_minor >= 0 else ("revenue", "receivable")
    return [
        {"account": {"externalId": CORRECTION_ACCOUNTS[debit]}, "debit": amount},
        {"account": {"externalId": CORRECTION_ACCOUNTS[credit]}, "credit": amount},
    ]


def correcting_posting(
    *,
    record_type: str,
    source_system: str,
    source_id: str,
    version: str,
    action: ledger.Action,
    seq: int,
    held: ledger.Held,
    want_hours: Decimal,
    want_amount_minor: int,
    currency: str,
    decision: PeriodDecision,
    periods: PeriodBook,
) -> ledger.Posting:
    """The correcting record of an entry the ERP holds in a closed period: a journal entry
    (:data:`ledger.CORRECTION_TYPE`) in ``decision.period`` carrying the difference between what
    should be held (``want_*``; 0 for a reversal) and what the ERP holds for the entry (the record
    plus its earlier corrections). Its external id is the record's plus ``-c<seq>`` (deterministic:
    a retry or a read-back finds the same one); the original date, period and external id are in
    its memo and custom fields."""
    base_ext = held.base_external_id or ""
    base = held.base_payload or {}
    key = ledger.idempotency_key(record_type, source_system, source_id, version, action, seq)
    orig_date = str(base.get("tranDate") or "")
    orig_period = decision.original_period or ""
    target = periods.get(decision.period or "")
    delta_amount = want_amount_minor - held.amount_minor
    entity = (base.get("subsidiary") or {}).get("externalId")
    payload: dict[str, Any] = {
        "externalId": f"{base_ext}-c{seq}",
        "tranDate": str(target.start_date) if target is not None else orig_date,
        "subsidiary": {"externalId": entity},
        "currency": {"refName": currency},
        "postingPeriod": {"externalId": decision.period},
        "amount": money.format_minor(delta_amount, currency),
        "line": {"items": correction_lines(delta_amount, currency)},
        "memo": f"psa:{source_id} v:{version[:12]} key:{key[:16]} corrects:{base_ext}"
        f" orig-date:{orig_date} orig-period:{orig_period}",
        "custbody_psa_corrects": base_ext,
        "custbody_psa_action": action,
        "custbody_psa_orig_date": orig_date,
        "custbody_psa_orig_period": orig_period,
    }
    if record_type == "timebill":
        payload["custbody_psa_hours"] = f"{want_hours - held.hours:.2f}"
    return ledger.Posting(
        key,
        record_type,
        source_system,
        source_id,
        version,
        payload["externalId"],
        action,
        "pending",
        payload,
        entity,
        decision.period,
        delta_amount,
        currency,
        corrects=base_ext,
    )


def correction_parked(
    config: Config,
    record_type: str,
    source_system: str,
    source_id: str,
    version: str,
    entity: str | None,
    action: str,
    period: str | None,
    policy: str,
) -> exception_queue.Item:
    """The exception item of a correction parked because the ERP holds the record in a closed period."""
    return exception_queue.Item(
        kind="parked",
        domain="time_expense",
        source_system=source_system,
        record_type=KINDS[record_type],
        source_id=source_id,
        source_version=version,
        reason_code="PERIOD_CLOSED",
        detail={"period": period, "policy": policy, "action": action, "correction": True},
        legal_entity=entity,
        owner=config.ownership.owner_for("time_expense", entity),
    )


def _replan_correction(
    posting: ledger.Posting,
    *,
    periods: PeriodBook,
    held: str | None,
    entry: ledger.Held | None,
    policy: str,
    seq: int,
) -> tuple[PeriodDecision | None, ledger.Posting | None]:
    """For :func:`replan_closed`: the decision on a refused correction (an adjustment or reversal)
    of a record the ERP holds, and the correcting posting when the policy corrects; (None, None)
    for a post."""
    rt = posting.record_type
    decision = None
    if posting.action in ("adjust", "reverse") and entry is not None and entry.base_present:
        if posting.corrects:  # the correcting record's own period closed: the same difference, later
            decision = periods.decide_correction(
                held_period(entry.base_payload) or held, rt, policy, corrected=True
            )
        else:
            decision = periods.decide_correction(held, rt, policy, corrected=entry.corrections > 0)
        refused_again = decision is not None and decision.period == posting.period and bool(posting.corrects)
        if decision is not None and decision.outcome == "correct" and refused_again:
            # The periods just read still show the refused period open: the ERP and its periods
            # disagree, finance decides.
            decision = PeriodDecision("park", None, decision.original_period, "PERIOD_CLOSED")
        if decision is not None and decision.outcome == "correct":
            if posting.corrects:
                want_hours = entry.hours + Decimal(str(posting.payload.get("custbody_psa_hours") or 0))
                want_amount = entry.amount_minor + int(posting.amount_minor or 0)
            elif posting.action == "reverse":
                want_hours, want_amount = Decimal(0), 0
            else:
                want_hours = Decimal(str(posting.payload.get("hours") or 0))
                want_amount = int(posting.amount_minor or 0)
            currency = posting.currency or str(
                ((entry.base_payload or {}).get("currency") or {}).get("refName")
            )
            fix = correcting_posting(
                record_type=rt,
                source_system=posting.source_system,
                source_id=posting.source_id,
                version=posting.source_version,
                action=posting.action,
                seq=seq,
                held=entry,
                want_hours=want_hours,
                want_amount_minor=want_amount,
                currency=currency,
                decision=decision,
                periods=periods,
            )
            return decision, fix
    elif posting.action in ("adjust", "reverse"):
        decision = periods.decide_correction(held, rt, policy)
        if decision is not None and decision.outcome == "correct":  # nothing of the entry is held
            decision = None
    return decision, None


def _replan_parked(
    posting: ledger.Posting, config: Config, decision: PeriodDecision, policy: str
) -> exception_queue.Item:
    """For :func:`replan_closed`: the exception item of a posting it parks."""
    entity = posting.legal_entity
    if posting.action == "post":
        return exception_queue.Item(
            kind="parked",
            domain="time_expense",
            source_system=posting.source_system,
            record_type=KINDS.get(posting.record_type, posting.record_type),  # invoices: their own
            source_id=posting.source_id,
            source_version=posting.source_version,
            reason_code=decision.reason or "PERIOD_CLOSED",
            detail={
                "period": decision.original_period,
                "spent_date": posting.payload.get("tranDate"),
                "policy": policy,
                "action": posting.action,
                "closed_during_pass": True,
            },
            legal_entity=entity,
            owner=config.ownership.owner_for("time_expense", entity),
        )
    return correction_parked(
        config,
        posting.record_type,
        posting.source_system,
        posting.source_id,
        posting.source_version,
        entity,
        posting.action,
        decision.original_period,
        policy,
    )


def replan_closed(
    posting: ledger.Posting,
    *,
    periods: PeriodBook,
    config: Config,
    seq: int,
    held: str | None,
    entry: ledger.Held | None = None,
) -> tuple[ledger.Posting, exception_queue.Item | None, PeriodDecision]:
    """The next posting of a record after the ERP answered ``PERIOD_CLOSED`` to ``posting``
    (a period closed during the pass): the entity's policy applied again on freshly read
    ``periods``. A new ledger row (sequence ``seq``, so a new idempotency key): ``pending`` in the
    period the policy chooses, or ``parked`` with its exception item. ``held`` is the period the
    ERP holds the record in; ``entry`` what the ERP holds for the PSA entry per the ledger (record
    and corrections). A correction of a record in a closed period becomes a correcting record in
    the first open period (``post_to_first_open``) or is parked; a refused correcting record moves
    on to the next open period, with the same difference.
    """
    rt = posting.record_type
    entity = posting.legal_entity
    entities = config.legal_entities.legal_entities
    policy = entities[entity].closed_period_policy if entity in entities else "park"
    decision, fix = _replan_correction(
        posting, periods=periods, held=held, entry=entry, policy=policy, seq=seq
    )
    if fix is not None:
        assert decision is not None  # the correcting posting's decision
        return _same_route(fix, posting), None, decision
    payload = dict(posting.payload)
    if decision is None and posting.action == "reverse":
        decision = PeriodDecision("post", held, held)
    elif decision is None:
        decision = periods.decide(entity or "", date.fromisoformat(str(payload["tranDate"])), rt, policy)
    key = ledger.idempotency_key(
        rt, posting.source_system, posting.source_id, posting.source_version, posting.action, seq
    )
    if posting.action != "reverse":
        memo = f"psa:{posting.source_id} v:{posting.source_version[:12]} key:{key[:16]}"
        if decision.period and decision.original_period and decision.period != decision.original_period:
            memo += f" orig-date:{payload['tranDate']} orig-period:{decision.original_period}"
        payload["memo"] = memo
        if decision.period:
            payload["postingPeriod"] = {"externalId": decision.period}
        else:
            payload.pop("postingPeriod", None)
    refused = held if posting.action == "reverse" else held_period(posting.payload)
    if decision.outcome != "park" and decision.period == refused:
        # The periods just read still show the refused period open: sending the same action again
        # would only be refused again. Finance decides (the ERP and its periods disagree).
        decision = PeriodDecision("park", None, refused, "PERIOD_CLOSED")
        if posting.action != "reverse":
            payload.pop("postingPeriod", None)
    state = "parked" if decision.outcome == "park" else "pending"
    fresh = ledger.Posting(
        key,
        rt,
        posting.source_system,
        posting.source_id,
        posting.source_version,
        posting.external_id,
        posting.action,
        state,
        payload,
        entity,
        decision.period or decision.original_period,
        posting.amount_minor,
        posting.currency,
        corrects=posting.corrects,
        functional_amount_minor=posting.functional_amount_minor,
        functional_currency=posting.functional_currency,
        fx_rate=posting.fx_rate,
    )
    item = _replan_parked(posting, config, decision, policy) if state == "parked" else None
    return _same_route(fresh, posting), item, decision


def _same_route(posting: ledger.Posting, refused: ledger.Posting) -> ledger.Posting:
    """A re-planned posting goes where the refused one went (a period closed during the pass), in
    the same lane (a shadow's next posting is keyed as a shadow)."""
    posting = replace(
        posting,
        target_erp=refused.target_erp,
        erp_account=refused.erp_account,
        route_version=refused.route_version,
    )
    return as_shadow(posting) if refused.shadow and not posting.shadow else posting


def _rekeyed(payload: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """``payload`` whose memo names ``new`` instead of ``old`` (the memo proves the key on read-back)."""
    memo = payload.get("memo")
    if not isinstance(memo, str):
        return payload
    return {**payload, "memo": memo.replace(f"key:{old[:16]}", f"key:{new[:16]}")}


def _shadow_payload(payload: dict[str, Any], source_id: str) -> dict[str, Any]:
    """A payload as the shadow lane writes it: its external id and the source id of its memo
    suffixed (:data:`ledger.SHADOW_SUFFIX`), so the secondary ERP tells it from a posting of the
    record's own lane (a record moved past the cutover is posted there too)."""
    out = dict(payload)
    suffix = ledger.SHADOW_SUFFIX
    ext = out.get("externalId")
    if isinstance(ext, str) and suffix not in ext:
        out["externalId"] = ext + suffix
    memo = out.get("memo")
    if isinstance(memo, str) and f"psa:{source_id}{suffix} " not in memo + " ":
        out["memo"] = memo.replace(f"psa:{source_id} ", f"psa:{source_id}{suffix} ", 1)
    return out


def as_shadow(posting: ledger.Posting) -> ledger.Posting:
    """A posting planned in a parallel run's shadow lane (routed to the secondary ERP): keyed apart
    from the record's own posting of the same action (its own key per target ERP, named in its
    memo) and named apart in the ERP (:func:`_shadow_payload`)."""
    key = ledger.shadow_key(posting.idempotency_key, posting.target_erp)
    payload = _shadow_payload(_rekeyed(posting.payload, posting.idempotency_key, key), posting.source_id)
    if isinstance(payload.get("reverses"), dict):
        payload["reverses"] = _shadow_payload(payload["reverses"], posting.source_id)
    ext = posting.external_id
    return replace(
        posting,
        idempotency_key=key,
        external_id=ext if ledger.SHADOW_SUFFIX in ext else ext + ledger.SHADOW_SUFFIX,
        payload=payload,
        shadow=True,
    )


@dataclass
class _Planning:
    """One plan's settings and what it gathered for the chunk being planned."""

    record_type: str
    config: Config
    periods: PeriodBook
    result: Plan
    router: Router
    #: Each ERP's own periods (``read_periods`` of its adapter); ``periods`` for an ERP not in it.
    books: dict[str, PeriodBook] = field(default_factory=dict)
    routes: dict[tuple[str, date], Route] = field(default_factory=dict)
    #: A parallel run's shadow lane: every record goes to its entity's secondary ERP (this route).
    secondary: dict[str, Route] | None = None
    batch: list[ledger.Posting] = field(default_factory=list)
    parked: list[exception_queue.Item] = field(default_factory=list)
    # Every planned change to a record the ERP already holds: (action, external id, before, after).
    changes: list[tuple[str, str, Any, Any]] = field(default_factory=list)
    #: :meth:`PeriodBook.decide` per book, entity, day and policy: the periods of a pass do not
    #: change while it plans (a refusal during the pass is re-planned by the engine, not here).
    decisions: dict[tuple[PeriodBook, str, date, str], PeriodDecision] = field(default_factory=dict)

    def book(self, erp: str | None) -> PeriodBook:
        """The periods of ``erp`` (the pass's own periods when they were not read for it)."""
        return self.books.get(erp or "", self.periods)

    def book_on(self, entity: str, day: date) -> PeriodBook:
        """The periods of the ERP ``entity`` routes a record dated ``day`` to: a closed-period
        decision is the book of record's, not the ERP of the pass's."""
        try:
            return self.book(self.route(entity, day).erp)
        except RouteNotFound:
            return self.periods  # parked NO_ERP_ROUTE by decide_route anyway

    def policy(self, entity: str | None) -> str:
        entities = self.config.legal_entities.legal_entities
        return entities[entity].closed_period_policy if entity in entities else "park"

    def external_id(self, source_id: str) -> str:
        kind = "timebill" if self.record_type == "timebill" else "expensereport"
        return self.config.mappings.external_id(kind, source_id)

    def decide(self, book: PeriodBook, entity: str, day: date, policy: str) -> PeriodDecision:
        """``book.decide`` for this plan's record type, remembered (:attr:`decisions`)."""
        key = (book, entity, day, policy)
        found = self.decisions.get(key)
        if found is None:
            found = self.decisions[key] = book.decide(entity, day, self.record_type, policy)
        return found

    def correct(self, cand: dict[str, Any], fix: ledger.Posting) -> None:
        """Add a correcting journal (the record's period is closed, the policy corrects), routed
        by the first day of the period it is booked in."""
        fix = self.routed(cand, fix, date.fromisoformat(str(fix.payload["tranDate"])))
        self.batch.append(fix)
        self.result.planned[fix.action] += 1
        self.result.corrected += 1
        if fix.state != "parked":
            self.changes.append(("erp_correct", fix.external_id, cand["done_payload"], fix.payload))

    def posting_day(self, decision: PeriodDecision, entry_date: date, book: PeriodBook | None = None) -> date:
        """The posting date a route is decided by: the entry's date, or the first day of the
        period the closed-period policy moved it to."""
        if decision.outcome == "moved" and decision.period:
            target = (book or self.periods).get(decision.period)
            if target is not None:
                return target.start_date
        return entry_date

    def route(self, entity: str, day: date) -> Route:
        """:meth:`Router.route`, remembered per entity and day for this plan (in a shadow lane: the
        entity's secondary ERP, whatever the day)."""
        if self.secondary is not None:
            if entity not in self.secondary:
                raise RouteNotFound(f"{entity} has no parallel run in erp_routing.yaml")
            return self.secondary[entity]
        key = (entity, day)
        found = self.routes.get(key)
        if found is None:
            found = self.routes[key] = self.router.route(entity, day)
        return found

    def decide_route(
        self, cand: dict[str, Any], posting: ledger.Posting | _Draft, day: date
    ) -> tuple[Route | None, str | None, dict[str, Any]]:
        """Where ``posting`` goes, by ``day``: (route, None, {}); or a reason to park it:
        ``NO_ERP_ROUTE`` (no range covers the day), ``ROUTE_CUTOVER_CORRECTION`` (a correction
        across a cutover whose policy is ``reverse_and_repost``: :func:`_plan_change` turns it into a
        reversal in the old ERP and a post in the new one; a correcting journal across the cutover,
        the record's period being closed, stays parked with it)."""
        entity = posting.legal_entity or ""
        try:
            if self.secondary is not None or (posting.action == "post" and not posting.corrects):
                return self.route(entity, day), None, {}
            held = _held_route(self.router, cand, entity)
            if held is None:
                return self.route(entity, day), None, {}
            if posting.action == "reverse":
                return held, None, {}  # a deleted or unapproved record is reversed where it is held
            actions = self.router.routes_for_correction(held, day)
            if self.route(entity, day).same_target(held):
                return actions[0][1], None, {}
            detail = {"held": held.as_dict(), "actions": [[a, r.as_dict()] for a, r in actions]}
            self.changes.append(("erp_route", posting.external_id, held.as_dict(), detail))  # the audit
            return actions[0][1], ("ROUTE_CUTOVER_CORRECTION" if len(actions) > 1 else None), detail
        except RouteNotFound as exc:
            return None, "NO_ERP_ROUTE", {"posting_date": day.isoformat(), "error": str(exc)}

    def routed(self, cand: dict[str, Any], posting: ledger.Posting, day: date) -> ledger.Posting:
        """``posting`` stamped with its route (:meth:`decide_route`); parked, with its exception
        item, when it has none of its own."""
        route, reason, detail = self.decide_route(cand, posting, day)
        if route is not None:
            posting = replace(posting, **_route_fields(route))
        if reason is None or posting.state == "parked":  # parked already: its item is written
            return posting
        self.park_unrouted(posting, reason, detail)
        return replace(posting, state="parked")

    def park_unrouted(self, posting: ledger.Posting, reason: str, detail: dict[str, Any]) -> None:
        self.parked.append(_route_parked(self, posting, reason, detail))
        self.result.parked += 1


def _route_fields(route: Route | None) -> dict[str, Any]:
    """A posting's route columns (an unrouted posting keeps the defaults: it is parked)."""
    if route is None:
        return {}
    return {"target_erp": route.erp, "erp_account": route.account, "route_version": route.version}


@dataclass(frozen=True)
class _Draft:
    """What :meth:`_Planning.decide_route` needs of a posting not built yet (the hot path builds
    the posting once, with its route)."""

    action: ledger.Action
    legal_entity: str | None
    external_id: str
    corrects: str | None = None


def _held_route(router: Router, cand: dict[str, Any], entity: str) -> Route | None:
    """Where the ERP holds the record (its last confirmed posting), per the ledger."""
    erp = cand.get("base_target_erp")
    if erp is None:
        return None
    known = router.routing.erps
    return Route(
        entity,
        erp,
        cand.get("base_erp_account"),
        int(cand.get("base_route_version") or 0),
        known[erp].connection if erp in known else "",
    )


def _route_parked(
    pl: _Planning, posting: ledger.Posting, reason: str, detail: dict[str, Any]
) -> exception_queue.Item:
    """The ``parked`` item of a posting routing could not send anywhere by itself."""
    return exception_queue.Item(
        kind="parked",
        domain="time_expense",
        source_system=posting.source_system,
        record_type=KINDS[pl.record_type],
        source_id=posting.source_id,
        source_version=posting.source_version,
        reason_code=reason,
        detail={"action": posting.action, **detail},
        legal_entity=posting.legal_entity,
        owner=pl.config.ownership.owner_for("time_expense", posting.legal_entity),
    )


def _plan_reverse(pl: _Planning, cand: dict[str, Any]) -> bool:
    """Plan the reversal of a record unapproved or deleted after posting (a correcting journal
    when its period is closed and the policy corrects). False when nothing is planned, or a
    correcting posting was (the chunk check then waits for the next record)."""
    record_type, source_id, seq = pl.record_type, cand["source_id"], int(cand["n"])
    external_id = pl.external_id(source_id)
    held_entry = ledger.Held.from_row(cand)
    if cand["last_state"] in ("rejected", "parked") and cand["last_action"] == "reverse":
        return False  # a reversal that was refused or parked: waits for replay
    key = ledger.idempotency_key(
        record_type, cand["source_system"], source_id, cand["done_version"], "reverse", seq
    )
    entity = cand["done_payload"].get("subsidiary", {}).get("externalId")
    policy = pl.policy(entity)
    held = held_period(held_entry.base_payload or cand["done_payload"])
    held_book = pl.book(cand.get("base_target_erp"))  # the periods of the ERP holding the record
    blocked = correction_decision(held_book, held_entry, record_type, policy)
    if blocked is not None and blocked.outcome == "correct":
        fix = correcting_posting(
            record_type=record_type,
            source_system=cand["source_system"],
            source_id=source_id,
            version=cand["done_version"],
            action="reverse",
            seq=seq,
            held=held_entry,
            want_hours=Decimal(0),
            want_amount_minor=0,
            currency=str((cand["done_payload"].get("currency") or {}).get("refName")),
            decision=blocked,
            periods=held_book,
        )
        pl.correct(cand, fix)
        return False
    reversal = ledger.Posting(
        key,
        record_type,
        cand["source_system"],
        source_id,
        cand["done_version"],
        external_id,
        "reverse",
        "parked" if blocked else "pending",
        {"externalId": external_id, "reverses": cand["done_payload"]},
        entity,
        held,
    )
    held_date = str(cand["done_payload"].get("tranDate") or "")
    pl.batch.append(pl.routed(cand, reversal, date.fromisoformat(held_date) if held_date else date.min))
    pl.result.planned["reverse"] += 1
    if blocked:
        pl.result.parked += 1
        pl.parked.append(
            correction_parked(
                pl.config,
                record_type,
                cand["source_system"],
                source_id,
                cand["done_version"],
                entity,
                "reverse",
                held,
                policy,
            )
        )
    else:
        pl.changes.append(("erp_reverse", external_id, cand["done_payload"], None))
    return True


#: What the ERP holds, per the ledger, for a record the ledger has no row of: nothing.
NOTHING_HELD = ledger.Held(None, None, False, 0, Decimal(0), 0)


def _held(cand: dict[str, Any]) -> ledger.Held:
    """:meth:`ledger.Held.from_row` of a candidate. A record without a ledger row (``n`` 0: a first
    post, most of a month) holds nothing: :data:`NOTHING_HELD`, without reading its ledger columns
    (all NULL)."""
    return NOTHING_HELD if not cand["n"] else ledger.Held.from_row(cand)


def _plan_change(pl: _Planning, cand: dict[str, Any]) -> bool:
    """Plan the post or adjustment of an approved record version (a correcting journal, a moved
    period or a parked item when its period is closed). False when nothing is planned, or a
    correcting posting was (the chunk check then waits for the next record)."""
    desired, record = cand["desired"], cand["record"]
    record_type, source_id, seq = pl.record_type, cand["source_id"], int(cand["n"])
    external_id = pl.external_id(source_id)
    held_entry = _held(cand)
    if cand["last_state"] in ("rejected", "parked") and cand["last_version"] == record.version_hash:
        return False  # a dead letter or parked record: waits for replay
    action: ledger.Action = "adjust" if cand["done_action"] in ("post", "adjust") else "post"
    entity = record.legal_entity
    policy = pl.policy(entity)
    # The ERP holds the record: can it still be changed there? (Also a "post" after a
    # correcting reversal: the record itself is still held, so it is corrected again.)
    held_book = pl.book(cand.get("base_target_erp"))  # the periods of the ERP holding the record
    decision = correction_decision(held_book, held_entry, record_type, policy)
    if decision is not None and decision.outcome == "correct":
        _plan_correction(pl, cand, held_entry, decision, held_book)
        return False
    if decision is not None and action == "post":
        action = "adjust"  # parked: the record is held, it is a correction
    spent = record.spent_date
    book = pl.book_on(entity, spent)  # the periods of the ERP the entry's date routes to
    if decision is None:
        decision = pl.decide(book, entity, spent, policy)
    key, payload = _keyed_payload(pl, cand, decision, action, seq, external_id)
    day = pl.posting_day(decision, spent, book)
    route, unrouted, route_detail = pl.decide_route(cand, _Draft(action, entity, external_id), day)
    if unrouted == "ROUTE_CUTOVER_CORRECTION" and decision.outcome != "park":
        # reverse_and_repost: reverse where the record is held, post the new version where it now goes.
        route, seq = _plan_cutover_reversal(pl, cand, entity, day), seq + 1
        action, unrouted = "post", None
        key, payload = _keyed_payload(pl, cand, decision, action, seq, external_id)
    functional = functional_of(desired)
    planned = _new_posting(
        {  # every field of ledger.Posting, in its order (_new_posting)
            "idempotency_key": key,
            "record_type": record_type,
            "source_system": cand["source_system"],
            "source_id": source_id,
            "source_version": record.version_hash,
            "external_id": external_id,
            "action": action,
            "state": "parked" if decision.outcome == "park" or unrouted else "pending",
            "payload": payload,
            "legal_entity": entity,
            "period": decision.period or decision.original_period,
            "amount_minor": record.amount_minor,
            "currency": record.currency,
            "attempts": 0,
            "corrects": None,
            "functional_amount_minor": functional["functional_amount_minor"],
            "functional_currency": functional["functional_currency"],
            "fx_rate": functional["fx_rate"],
            "target_erp": _UNROUTED["target_erp"] if route is None else route.erp,
            "erp_account": _UNROUTED["erp_account"] if route is None else route.account,
            "route_version": _UNROUTED["route_version"] if route is None else route.version,
            "shadow": False,
        }
    )
    pl.batch.append(_with_replaced(planned, held_entry))
    if unrouted and decision.outcome != "park":  # a period-parked posting has its item already
        pl.park_unrouted(planned, unrouted, route_detail)
    pl.result.planned[action] += 1
    if action == "adjust":
        pl.changes.append(("erp_adjust", external_id, cand["done_payload"], payload))
    if decision.outcome == "moved":
        pl.result.moved_period += 1
    if decision.outcome == "park":
        pl.result.parked += 1
        pl.parked.append(_period_parked(pl, cand, decision, policy, action))
    return True


#: The route columns of a posting :meth:`_Planning.decide_route` found no route for: the defaults.
_UNROUTED = {
    f.name: f.default
    for f in fields(ledger.Posting)
    if f.name in ("target_erp", "erp_account", "route_version")
}


def _new_posting(values: dict[str, Any]) -> ledger.Posting:
    """``ledger.Posting(**values)`` without the frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field, 20 of them: the costliest call of the planner's common path):
    the instance's ``__dict__`` is ``values``, which must hold every field in field order
    (tests/posting/test_planner_fast_paths.py holds the common path to it). Equal to the dataclass
    built the usual way: ``__eq__``, ``__hash__``, ``repr`` and ``replace`` read the fields, and
    Posting has no ``__post_init__``."""
    posting = object.__new__(ledger.Posting)
    object.__setattr__(posting, "__dict__", values)
    return posting


#: ERPs that change a record in place by its external id (an adjustment replaces it). Elsewhere
#: (SAP's journal entries) an adjusted expense needs the version it replaces, to mirror it.
UPSERTS_BY_EXTERNAL_ID = frozenset({"netsuite"})


def _with_replaced(posting: ledger.Posting, held: ledger.Held) -> ledger.Posting:
    """An expense adjustment to an ERP that cannot change a journal in place carries the version
    the ERP holds (``payload["replaces"]``: the last confirmed payload of the record itself, its own
    ``replaces`` left out), so the adapter mirrors it in the same document and the ERP never counts
    the expense twice (docs/multi-erp.md, "Corrections on SAP")."""
    if (
        posting.action != "adjust"
        or posting.record_type != "expensereport"
        or posting.target_erp in UPSERTS_BY_EXTERNAL_ID
        or not held.base_present
        or not held.base_payload
    ):
        return posting
    replaced = {k: v for k, v in held.base_payload.items() if k != "replaces"}
    return replace(posting, payload={**posting.payload, "replaces": replaced})


def _keyed_payload(
    pl: _Planning,
    cand: dict[str, Any],
    decision: PeriodDecision,
    action: ledger.Action,
    seq: int,
    external_id: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The idempotency key and ERP payload of ``action`` on the approved version of ``cand``
    (``external_id``: the record's, when the caller has it already)."""
    record: records.Record = cand["record"]
    key = ledger.idempotency_key(
        pl.record_type, cand["source_system"], cand["source_id"], record.version_hash, action, seq
    )
    payload = erp_payload(
        pl.record_type,
        record,
        cand["desired"],
        external_id=pl.external_id(cand["source_id"]) if external_id is None else external_id,
        key=key,
        config=pl.config,
        period=decision.period,
        original_period=decision.original_period,
    )
    return key, payload


def _plan_correction(
    pl: _Planning, cand: dict[str, Any], held: ledger.Held, decision: PeriodDecision, held_book: PeriodBook
) -> None:
    """The correcting journal of an approved version whose record is held in a closed period (the
    policy corrects). Across a cutover whose policy is ``reverse_and_repost`` (the journal's day
    routes to another ERP): a correcting journal reversing what the old ERP holds, and the new
    version posted in the new ERP."""
    record: records.Record = cand["record"]
    fix = correcting_posting(
        record_type=pl.record_type,
        source_system=cand["source_system"],
        source_id=cand["source_id"],
        version=record.version_hash,
        action="adjust",
        seq=int(cand["n"]),
        held=held,
        want_hours=record.hours if isinstance(record, records.TimeEntry) else Decimal(0),
        want_amount_minor=record.amount_minor,
        currency=record.currency,
        decision=decision,
        periods=held_book,
    )
    day = date.fromisoformat(str(fix.payload["tranDate"]))
    repost = _cutover_repost(pl, cand, record.legal_entity, day)
    if repost is None:
        pl.correct(cand, fix)
        return
    pl.correct(cand, _reversing_journal(pl, cand, fix, held, decision, held_book))
    _plan_repost(pl, cand, repost, day, int(cand["n"]) + 1)


def _cutover_repost(pl: _Planning, cand: dict[str, Any], entity: str, day: date) -> Route | None:
    """The new ERP's route when a correcting journal booked on ``day`` would cross a cutover whose
    policy is ``reverse_and_repost`` (the record then leaves the ERP holding it); else None. Writes
    the ``erp_route`` audit row of the crossing (as :meth:`_Planning.decide_route` does)."""
    if pl.secondary is not None:
        return None  # a shadow lane goes to its secondary, whatever the day
    held = _held_route(pl.router, cand, entity)
    if held is None:
        return None
    try:
        if pl.route(entity, day).same_target(held):
            return None
        actions = pl.router.routes_for_correction(held, day)
    except RouteNotFound:
        return None  # decide_route parks it NO_ERP_ROUTE
    if len(actions) < 2:
        return None  # adjust_in_old: the old ERP is corrected
    detail = {"held": held.as_dict(), "actions": [[a, r.as_dict()] for a, r in actions]}
    pl.changes.append(("erp_route", pl.external_id(cand["source_id"]), held.as_dict(), detail))
    return dict(actions)["post"]


def _reversing_journal(
    pl: _Planning,
    cand: dict[str, Any],
    fix: ledger.Posting,
    held: ledger.Held,
    decision: PeriodDecision,
    held_book: PeriodBook,
) -> ledger.Posting:
    """The correcting journal that reverses, in the ERP holding the record (its first open period),
    everything it holds of the entry: the first half of a ``reverse_and_repost`` across a cutover
    whose record's period is closed. Keyed as a reversal of the held version."""
    return correcting_posting(
        record_type=pl.record_type,
        source_system=cand["source_system"],
        source_id=cand["source_id"],
        version=cand["done_version"],
        action="reverse",
        seq=int(cand["n"]),
        held=held,
        want_hours=Decimal(0),
        want_amount_minor=0,
        currency=str((cand["done_payload"].get("currency") or {}).get("refName") or fix.currency),
        decision=decision,
        periods=held_book,
    )


def _plan_repost(pl: _Planning, cand: dict[str, Any], route: Route, correction_day: date, seq: int) -> None:
    """The second half of a ``reverse_and_repost`` whose first half is a correcting journal: the
    approved version posted in the new ERP (``route``), by that ERP's periods, on the entry's date
    when that date routes there, else on the correction's day (the first day of the open period
    the old ERP books the reversal in, which routes to the new ERP)."""
    record: records.Record = cand["record"]
    entity, spent = record.legal_entity, record.spent_date
    policy, book = pl.policy(entity), pl.book(route.erp)
    try:
        own = pl.route(entity, spent).same_target(route)
    except RouteNotFound:
        own = False
    decision = book.decide(entity, spent if own else correction_day, pl.record_type, policy)
    if not own and decision.outcome == "post":
        spent_period = book.containing(entity, spent)
        original = spent_period.external_id if spent_period is not None else decision.period
        decision = PeriodDecision("moved", decision.period, original)
    key, payload = _keyed_payload(pl, cand, decision, "post", seq)
    planned = ledger.Posting(
        key,
        pl.record_type,
        cand["source_system"],
        cand["source_id"],
        record.version_hash,
        pl.external_id(cand["source_id"]),
        "post",
        "parked" if decision.outcome == "park" else "pending",
        payload,
        entity,
        decision.period or decision.original_period,
        record.amount_minor,
        record.currency,
        **functional_of(cand["desired"]),
        **_route_fields(route),
    )
    pl.batch.append(planned)
    pl.result.planned["post"] += 1
    if decision.outcome == "moved":
        pl.result.moved_period += 1
    if decision.outcome == "park":
        pl.result.parked += 1
        pl.parked.append(_period_parked(pl, cand, decision, policy, "post"))


def _plan_cutover_reversal(pl: _Planning, cand: dict[str, Any], entity: str, day: date) -> Route:
    """The first half of a ``reverse_and_repost`` correction across a cutover: the reversal of the
    record where the ledger says it is held (the old ERP), planned before the post in the new ERP
    (its ledger ``seq`` is the lower). Returns the new ERP's route for the post."""
    held = _held_route(pl.router, cand, entity)
    assert held is not None  # decide_route found the record held across the cutover
    actions = dict(pl.router.routes_for_correction(held, day))
    record_type, source_id = pl.record_type, cand["source_id"]
    external_id = pl.external_id(source_id)
    key = ledger.idempotency_key(
        record_type, cand["source_system"], source_id, cand["done_version"], "reverse", int(cand["n"])
    )
    reversal = ledger.Posting(
        key,
        record_type,
        cand["source_system"],
        source_id,
        cand["done_version"],
        external_id,
        "reverse",
        "pending",
        {"externalId": external_id, "reverses": cand["done_payload"]},
        entity,
        held_period(cand.get("base_payload") or cand["done_payload"]),
        **_route_fields(actions["reverse"]),
    )
    pl.batch.append(reversal)
    pl.result.planned["reverse"] += 1
    pl.changes.append(("erp_reverse", external_id, cand["done_payload"], None))
    return actions["post"]


def _period_parked(
    pl: _Planning, cand: dict[str, Any], decision: PeriodDecision, policy: str, action: ledger.Action
) -> exception_queue.Item:
    """The ``parked`` item of an approved version whose period is closed (the policy parks)."""
    record: records.Record = cand["record"]
    entity = record.legal_entity
    return exception_queue.Item(
        kind="parked",
        domain="time_expense",
        source_system=cand["source_system"],
        record_type=KINDS[pl.record_type],
        source_id=cand["source_id"],
        source_version=record.version_hash,
        reason_code=decision.reason or "PERIOD_CLOSED",
        detail={
            "period": decision.original_period,
            "spent_date": record.spent_date.isoformat(),
            "policy": policy,
            "action": action,
        },
        legal_entity=entity,
        owner=pl.config.ownership.owner_for("time_expense", entity),
    )


#: Above this share of the record type's canonical rows queued, a full plan is the cheaper read
#: (one pass over both tables instead of an index probe per record).
FULL_ABOVE_SHARE = 0.25
#: After deleting this many queue entries, the plan vacuums the queue (when it can: not inside the
#: caller's transaction).
VACUUM_AFTER = 10_000
#: A full plan at least this often (belt and braces: a change written with the triggers off, say by
#: a restore, is planned within a day at the latest).
FULL_EVERY = "24 hours"
#: The triggers that fill ``ledger.plan_queue`` (migration 0047): with one disabled, the queue
#: misses changes, so the plan is full and the queue not trusted until a full plan with all enabled.
QUEUE_TRIGGERS = (
    "time_entry_plan_insert",
    "time_entry_plan_update",
    "time_entry_plan_delete",
    "expense_entry_plan_insert",
    "expense_entry_plan_update",
    "expense_entry_plan_delete",
    "posting_plan_released",
)


def plan(
    conn: psycopg.Connection,
    *,
    record_type: str,
    config: Config,
    periods: PeriodBook,
    dag_run_id: str,
    chunk: int = 5000,
    on_chunk: Callable[[list[ledger.Posting]], None] | None = None,
    router: Router | None = None,
    periods_by_erp: dict[str, PeriodBook] | None = None,
    source_ids: Collection[str] | None = None,
    source_system: str = "psa",
    full: bool = False,
    reading: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> Plan:
    """Insert pending ledger rows for every record whose ERP state differs from the approved set.

    Works ``chunk`` records at a time: each chunk's ledger rows, parked items and audit rows are
    written in one transaction (a savepoint when the caller holds a transaction, which then decides
    for all of them). When ``conn`` is not in a transaction, each chunk commits on its own and
    ``on_chunk`` receives the pending postings it inserted, so the engine can send them while the
    next chunk is planned. A plan interrupted between chunks is safe: what committed is pending in
    the ledger (the next plan leaves those records to the engine), the rest is planned again.

    Which records it looks at (:class:`Records`, ``Plan.scope``): with ``source_ids``, those records
    of ``source_system`` only (a stream burst's), with the decisions a full plan makes for them.
    Otherwise the records queued since the planner last looked (``ledger.plan_queue``, migration
    0047), or every record when ``full``, when the queue is not trusted yet (no full plan since the
    migration, or a queue trigger is disabled) or when so many are queued that a full read is
    cheaper (:data:`FULL_ABOVE_SHARE`). Either of the last two empties the queue of what it saw,
    except records with a posting in flight: those are looked at again once it settles.
    """
    if on_chunk is not None and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        # Postings handed on before their transaction commits could be sent without a ledger row.
        raise ValueError("plan(on_chunk=...) commits each chunk: call it outside a transaction")
    records, trusted = _records_to_plan(conn, record_type, source_ids, source_system, full=full)
    result = Plan(record_type, scope=records.scope)
    with conn.transaction():
        result.superseded = supersede_stale(conn, record_type, records=records)
    routes = router or default_router()
    books = dict(periods_by_erp or {})
    pl = _Planning(record_type, config, periods, result, routes, books)
    lane = partial(_plan_lane, conn, chunk=chunk, dag_run_id=dag_run_id, on_chunk=on_chunk, reading=reading)
    seen = lane(pl, None, records)
    # Parallel runs: the windows' records again, to each secondary ERP whose periods this pass read.
    scope = ShadowScope(
        tuple(
            (w.legal_entity, w.first_day, w.last_day, w.secondary)
            for w in routes.parallel_windows()
            if w.secondary.erp in books
        )
    )
    if scope.windows:
        # The windows come from the routing file, not from the rows: its shadow lane is read whole
        # unless the plan is of given records.
        shadow_records = records if records.scope == "records" else EVERY
        shadow = Plan(record_type, scope=shadow_records.scope)
        with conn.transaction():
            shadow.superseded = supersede_stale(conn, record_type, scope, shadow_records)
        shadow_lane = _Planning(
            record_type, config, periods, shadow, routes, books, secondary=scope.secondary
        )
        lane(shadow_lane, scope, shadow_records)
        result.parallel_run = shadow
    dequeued = 0
    with conn.transaction():
        if seen is not None:
            dequeued = _dequeue(conn, record_type, seen, trusted=trusted and records.scope == "full")
        audit.record(
            conn,
            audit.Change("posting.planner", "plan", "ledger.posting", record_type, after=result.as_dict()),
            run_id=dag_run_id,
        )
    if dequeued >= VACUUM_AFTER and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        # A month's validation queues every record: left to autovacuum (which lags on a busy
        # server), the next passes would read every dead entry of the queue's index.
        with connections.connect_like(conn, autocommit=True) as maintenance:
            maintenance.execute("VACUUM (ANALYZE) ledger.plan_queue")
    return result


def _records_to_plan(
    conn: psycopg.Connection,
    record_type: str,
    source_ids: Collection[str] | None,
    source_system: str,
    *,
    full: bool,
) -> tuple[Records, bool]:
    """Which records a pass looks at (see :func:`plan`), and whether the queue is trusted."""
    if source_ids is not None:
        return Records("records", source_system, tuple(sorted(set(source_ids)))), False
    # In transaction blocks: on a connection that is not in autocommit, a bare read would open
    # a transaction that the chunks' commits below would then only be savepoints of.
    with conn.transaction():
        trusted = _triggers_enabled(conn)
        if not trusted:  # changes are being missed: no queue is trusted until a full plan after
            conn.execute("DELETE FROM ledger.plan_mark")
        return (EVERY if full or not trusted else _queue_scope(conn, record_type)), trusted


def _triggers_enabled(conn: psycopg.Connection) -> bool:
    """Whether every queue trigger fires (a disabled one, e.g. for a restore, misses changes)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname = ANY(%s) AND tgenabled IN ('O', 'A')",
        (list(QUEUE_TRIGGERS),),
    ).fetchone()
    return row is not None and int(row[0]) == len(QUEUE_TRIGGERS)


def _queue_scope(conn: psycopg.Connection, record_type: str) -> Records:
    """``changed`` when the queue of ``record_type`` is trusted (a full plan in the last
    :data:`FULL_EVERY`) and small enough, else full."""
    row = conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM ledger.plan_mark WHERE record_type = %(rt)s
                         AND full_planned_at > now() - %(every)s::interval),
               (SELECT count(*) FROM ledger.plan_queue WHERE record_type = %(rt)s),
               (SELECT reltuples FROM pg_class WHERE oid = %(table)s::regclass)
        """,
        {"rt": record_type, "table": SOURCES[record_type], "every": FULL_EVERY},
    ).fetchone()
    assert row is not None
    marked, queued, rows = bool(row[0]), int(row[1]), max(float(row[2] or 0), 0.0)
    if not marked or (queued > 1000 and queued > FULL_ABOVE_SHARE * rows):
        return EVERY
    return Records("changed")


@dataclass(frozen=True)
class _Seen:
    """What a plan read of the queue: its snapshot (the queue entries visible in it were planned)
    and the records it must keep queued (a posting of theirs was in flight: not planned)."""

    snapshot: str
    in_flight: tuple[list[str], list[str]]


#: The queued (``changed``) or all (``full``) records of a type whose latest posting in the
#: record's own lane is in flight: the plan skips them, so they stay queued.
_IN_FLIGHT = {
    "changed": """
        SELECT q.source_system, q.source_id FROM (SELECT DISTINCT source_system, source_id FROM ledger.plan_queue
                                                 WHERE record_type = %(rt)s) q
        WHERE (SELECT p.state FROM ledger.posting p WHERE p.record_type = %(rt)s AND p.source_system = q.source_system
               AND p.source_id = q.source_id AND NOT p.shadow ORDER BY p.seq DESC LIMIT 1) = ANY(%(unfinished)s)
        """,
    # A superset (any unfinished row): one pass over the ledger, as the full plan's own read.
    "full": """
        SELECT DISTINCT source_system, source_id FROM ledger.posting
        WHERE record_type = %(rt)s AND NOT shadow AND state = ANY(%(unfinished)s)
        """,
}


def _read_queue(reader: psycopg.Connection, record_type: str, records: Records) -> _Seen | None:
    """In the reader's snapshot, before its candidates: the snapshot, and the records in flight."""
    if records.scope not in _IN_FLIGHT:
        return None
    snap = reader.execute("SELECT pg_current_snapshot()::text").fetchone()
    assert snap is not None
    rows = reader.execute(
        _IN_FLIGHT[records.scope], {"rt": record_type, "unfinished": list(ledger.UNFINISHED)}
    ).fetchall()
    return _Seen(str(snap[0]), ([r[0] for r in rows], [r[1] for r in rows]))


def _dequeue(conn: psycopg.Connection, record_type: str, seen: _Seen, *, trusted: bool) -> int:
    """Delete the queue entries the plan saw (visible in its snapshot) but those of records in
    flight; after a full plan with every trigger enabled, the queue is trusted from now on.
    Returns how many entries it deleted."""
    deleted = conn.execute(
        """
        DELETE FROM ledger.plan_queue q WHERE q.record_type = %(rt)s
          AND pg_visible_in_snapshot(q.xid, %(snap)s::pg_snapshot)
          AND NOT EXISTS (SELECT 1 FROM unnest(%(ss)s::text[], %(ids)s::text[]) AS f(ss, sid)
                          WHERE f.ss = q.source_system AND f.sid = q.source_id)
        """,
        {"rt": record_type, "snap": seen.snapshot, "ss": seen.in_flight[0], "ids": seen.in_flight[1]},
    )
    if trusted:
        conn.execute(
            "INSERT INTO ledger.plan_mark (record_type, full_planned_at) VALUES (%s, now())"
            " ON CONFLICT (record_type) DO UPDATE SET full_planned_at = now(),"
            " full_plans = ledger.plan_mark.full_plans + 1",
            (record_type,),
        )
    return deleted.rowcount


def _plan_lane(
    conn: psycopg.Connection,
    pl: _Planning,
    scope: ShadowScope | None,
    records: Records,
    *,
    chunk: int,
    dag_run_id: str,
    on_chunk: Callable[[list[ledger.Posting]], None] | None,
    reading: Callable[[], AbstractContextManager[None]] = nullcontext,
) -> _Seen | None:
    """Plan every candidate of one lane (the records' own, or ``scope``'s shadow lane), a chunk at
    a time; a shadow posting is keyed as such (:func:`as_shadow`) before it is written. Returns
    what the own lane read of the queue (:func:`_read_queue`), for :func:`_dequeue`.

    Handed on as they commit (``on_chunk``), the chunks are written by a :class:`_ChunkWriter`:
    the next chunk is planned while the server inserts the last one. ``reading`` is entered
    around the lane's snapshot (a long pass hands no lock over then: ``service._PlanGate.reading``)."""
    batch, parked, changes = pl.batch, pl.parked, pl.changes  # emptied in place by each flush
    # Handed on as they commit, the first chunks are smaller (a tenth, then doubling up to
    # ``chunk``): the engine waits for the first chunk with every ERP slot idle.
    size = max(chunk // 10, min(chunk, 500)) if on_chunk is not None else chunk
    write = partial(_write_chunk, conn, pl.record_type, dag_run_id=dag_run_id, on_chunk=on_chunk)
    writer = _ChunkWriter(write) if on_chunk is not None else None

    def flush() -> None:
        nonlocal size
        if scope is not None:
            batch[:] = [p if p.shadow else as_shadow(p) for p in batch]
        taken = (list(batch), list(parked), list(changes))
        batch.clear()
        parked.clear()
        changes.clear()
        if writer is None:
            write(taken)
        else:
            writer.put(taken)
        size = min(chunk, 2 * size)

    seen = None
    try:
        with connections.connect_like(
            conn, application_name=f"psa_erp_sync planner reader {pl.record_type}"
        ) as reader:
            set_json_loads(msgspec.json.decode, reader)  # several times faster than json.loads
            # One snapshot for the queue, the postings in flight and the candidates.
            reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with reading():  # the snapshot, never taken while the posting lock is handed over
                reader.execute("SELECT 1")
            if scope is None:
                seen = _read_queue(reader, pl.record_type, records)
            for cand in _candidates(reader, pl.record_type, scope, records, fetch=min(chunk, FETCH_ROWS)):
                if len(batch) >= size:  # a chunk a correcting record filled (it skips the check below)
                    flush()
                planned = _plan_reverse(pl, cand) if cand["desired"] is None else _plan_change(pl, cand)
                if planned and len(batch) >= size:
                    flush()
        flush()
    finally:
        if writer is not None:
            writer.close()  # every chunk handed to it is written (or it failed) before this returns
    if writer is not None:
        writer.check()
    return seen


_Chunk = tuple[list[ledger.Posting], list[exception_queue.Item], list[tuple[str, str, Any, Any]]]


class _ChunkWriter:
    """Writes a plan's chunks in a thread of its own, one at a time and in the order given
    (:func:`_write_chunk`: each in one transaction, then handed on), while the planner plans the
    next: the server's insert of a chunk (the ledger rows, their payloads, triggers, audit rows)
    was as long as planning it, and the planner waited for it with the GIL free.

    At most one chunk waits for the writer (:meth:`put` blocks behind it). After a failed write
    the chunks given later are dropped, never written (a chunk is written only after every chunk
    before it committed and was handed on), and :meth:`put` or :meth:`check` raise the failure in
    the planner's thread."""

    def __init__(self, write: Callable[[_Chunk], None]) -> None:
        self._write = write
        self._queue: queue.Queue[_Chunk | None] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="plan-writer", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self._write(item)
                except BaseException as exc:  # raised in the planner's thread (check, put)
                    self.error = exc

    def put(self, item: _Chunk) -> None:
        self.check()
        self._queue.put(item)

    def close(self) -> None:
        """Wait until every chunk given is written (or dropped after a failure)."""
        self._queue.put(None)
        self._thread.join()

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _write_chunk(
    conn: psycopg.Connection,
    record_type: str,
    chunk: _Chunk,
    *,
    dag_run_id: str,
    on_chunk: Callable[[list[ledger.Posting]], None] | None,
) -> None:
    batch, parked, changes = chunk
    _flush(conn, record_type, batch, parked, changes, dag_run_id=dag_run_id, on_chunk=on_chunk)


def _flush(
    conn: psycopg.Connection,
    record_type: str,
    batch: list[ledger.Posting],
    parked: list[exception_queue.Item],
    changes: list[tuple[str, str, Any, Any]],
    *,
    dag_run_id: str,
    on_chunk: Callable[[list[ledger.Posting]], None] | None,
) -> None:
    """Write one chunk of the plan in one transaction, then hand its pending postings on."""
    with conn.transaction():
        inserted = ledger.insert_planned(conn, batch)
        exception_queue.quarantine_many(conn, parked, run_id=dag_run_id)
        audit.record_many(
            conn,
            (
                audit.Change(
                    "posting.planner", action, f"erp.{record_type}", external_id, before, after or None
                )
                for action, external_id, before, after in changes
            ),
            run_id=dag_run_id,
        )
    if on_chunk is not None:
        # Only what this plan inserted, as committed: a key that already existed is not ours to send.
        fresh = [p for p in batch if p.state == "pending" and p.idempotency_key in inserted]
        if fresh:
            on_chunk(fresh)
    # The chunk's lists are the planner's copies (or its own lists when called directly); emptied
    # here, a written chunk is freed while the writer thread waits for the next (it holds the last
    # item it took): tests/posting/test_plan_memory.py fails without this.
    batch.clear()
    parked.clear()
    changes.clear()
