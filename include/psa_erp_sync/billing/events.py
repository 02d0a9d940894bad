"""Billing events from the ODS: the billable source lines per version, each billed at most once.

:func:`build_billing_events` makes ``billing.event`` (migration 0021) agree with the sources, set
based (one ``INSERT ... SELECT`` per kind into a temporary table, then three statements), so
600k time entries cost seconds, not a round trip each:

- **time** (time and materials projects): canonical time entries approved, billable, not deleted,
  whose current version the ERP holds (a confirmed ``timebill`` posting of that version in
  ``ledger.posting``); hours x bill rate is the entry's ``amount_minor``.
- **expense** (any contract type): billable approved expenses whose ``expensereport`` is confirmed.
- **milestone** (fixed fee and milestone projects): milestones signed off in the PSA, on the
  sign-off day, from the later of the forecast's full extract and the stream's re-read
  (``billing.milestone_read``, migration 0028).
- **retainer**: one event per project and month from ``config/billing.yaml``, on the period's
  first day, for periods started by ``as_of`` (a partial first or last month is prorated by days).

Versions: a source whose billed content changed (amount, hours, rate, date, project, legal entity,
currency, customer) or that stopped being billable has its ``ready`` event **withdrawn**, or, if
the event was already **invoiced**, gets one **credit line** (negative, ``credits_ref``); the new
version, if billable, gets a new event. A time entry or expense whose new version the ERP does not
hold yet is *held*: nothing of it moves until its posting is confirmed (then credit and new event
arrive together), except that a stale ready event is withdrawn at once. A source whose project has
no customer in master data, or that the PSA project list does not know, is held the same way.

Concurrent builders serialize on an advisory transaction lock; the invoicing step only ever moves
``ready`` events (``UPDATE ... WHERE state = 'ready'``), so a withdrawal and an invoicing of the
same event cannot both win. Rerunning changes nothing.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from psa_erp_sync.billing.settings import BillingSettings, Retainer
from psa_erp_sync.contracts import records
from psa_erp_sync.masterdata.precheck import JOB_EXTERNAL_ID

if TYPE_CHECKING:
    import psycopg

KINDS = ("time", "expense", "milestone", "retainer")
SOURCE_SYSTEM = "psa"
RETAINER_SOURCE = "config"  # retainers come from config/billing.yaml, not from a source system
_LOCK = "psa_erp_sync.billing.event"

log = logging.getLogger(__name__)

_COMMON_READS: tuple[str, ...] = (
    *("source_system", "source_id", "version_hash", "spent_date", "project_ref", "legal_entity"),
    *("billable", "amount_minor", "currency", "approved", "is_deleted"),
)
#: The canonical v1 fields the billing sources read (set-based SQL, :data:`_ENTRY_SOURCES`), checked
#: against the contract's twin on import (:func:`~psa_erp_sync.contracts.records.reads`).
CANONICAL_READS = {
    "time_entry": records.reads("time_entry", *_COMMON_READS, "hours", "bill_rate_minor"),
    "expense_entry": records.reads("expense_entry", *_COMMON_READS),
}

# The event's billed content: a difference is a new version to withdraw or credit.
_SAME_CONTENT = """
    s.project_ref = e.project_ref AND s.legal_entity = e.legal_entity AND s.currency = e.currency
    AND s.event_date = e.event_date AND s.amount_minor = e.amount_minor
    AND s.quantity IS NOT DISTINCT FROM e.quantity AND s.rate_minor IS NOT DISTINCT FROM e.rate_minor
    AND (s.status = 'hold' OR s.customer_ref = e.customer_ref)"""
_SAME_SOURCE = "s.kind = e.kind AND s.source_system = e.source_system AND s.source_id = e.source_id"
# Positive events still standing: ready, or invoiced and not credited.
_OUTSTANDING = """e.credits_ref IS NULL AND e.state IN ('ready', 'invoiced')
    AND NOT EXISTS (SELECT 1 FROM billing.event c WHERE c.credits_ref = e.event_ref)"""
# Events the run may judge: its kinds; a retainer period after as_of is not due yet, so untouched.
_IN_SCOPE = "e.kind = ANY(%(kinds)s) AND NOT (e.kind = 'retainer' AND e.event_date > %(as_of)s)"
# Cycle key and grouping key of a row with customer_ref, legal_entity, project_ref, currency and a
# date ``d``; the cycle kind comes from the per-customer / per-legal-entity overrides table.
_CYCLE_KIND = """coalesce(
    (SELECT o.cycle FROM billing_cycle o WHERE o.scope = 'customer' AND o.key = {row}.customer_ref),
    (SELECT o.cycle FROM billing_cycle o WHERE o.scope = 'legal_entity' AND o.key = {row}.legal_entity),
    %(default_cycle)s)"""
_CYCLE_KEY = """CASE {kind}
    WHEN 'weekly' THEN 'weekly:' || to_char({d}, 'IYYY-"W"IW')
    WHEN 'semi_monthly' THEN 'semi_monthly:' || to_char({d}, 'YYYY-MM')
                             || CASE WHEN extract(day FROM {d}) <= 15 THEN '-1' ELSE '-2' END
    ELSE 'monthly:' || to_char({d}, 'YYYY-MM') END"""
_GROUP_KEY = """concat_ws('|',
    CASE WHEN 'customer' = ANY(%(grouping)s) THEN 'customer=' || {row}.customer_ref END,
    CASE WHEN 'project' = ANY(%(grouping)s) THEN 'project=' || {row}.project_ref END,
    CASE WHEN 'legal_entity' = ANY(%(grouping)s) THEN 'legal_entity=' || {row}.legal_entity END,
    CASE WHEN 'currency' = ANY(%(grouping)s) THEN 'currency=' || {row}.currency END,
    CASE WHEN 'cycle' = ANY(%(grouping)s) THEN 'cycle=' || {cycle} END)"""


@dataclass
class EventsOutcome:
    """What one build did, per kind: events created, ready events withdrawn, credit lines created
    for invoiced events, billable sources whose event stands unchanged, and sources held (new
    version not in the ERP yet, or no customer / unknown project)."""

    created: dict[str, int] = field(default_factory=dict)
    withdrawn: dict[str, int] = field(default_factory=dict)
    credited: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per state, per kind (every kind present, zeros included): the XCom of a billing task."""
        return {
            state: {kind: int(getattr(self, state).get(kind, 0)) for kind in KINDS}
            for state in ("created", "withdrawn", "credited", "unchanged", "held")
        }

    def total(self, state: str) -> int:
        return sum(getattr(self, state).values())


def build_billing_events(
    conn: psycopg.Connection,
    *,
    config: BillingSettings,
    as_of: date,
    run_id: str,
    kinds: Collection[str] = KINDS,
) -> EventsOutcome:
    """Bring ``billing.event`` in line with the ODS as of ``as_of`` in one transaction (see the
    module docstring); ``kinds`` limits the build (the milestone stream passes ``("milestone",)``)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown billing event kinds: {sorted(unknown)}")
    params = _params(config, as_of, run_id, kinds)
    outcome = EventsOutcome()
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
        _prepare(conn, config)
        _load_sources(conn, config, as_of, params)
        outcome.withdrawn = _tally(conn.execute(_WITHDRAW, params).fetchall())
        outcome.credited = _tally(conn.execute(_credit_sql(), params).fetchall())
        # The sources with an outstanding event and the versions billed before, as tables of the
        # run: billing.event's statistics may lag a bulk insert, and a plan that scans it per row
        # while the insert grows it is quadratic (600k entries never finished).
        conn.execute(
            f"CREATE TEMP TABLE billing_outstanding ON COMMIT DROP AS"
            f" SELECT DISTINCT e.kind, e.source_system, e.source_id FROM billing.event e"
            f" WHERE e.kind = ANY(%(kinds)s) AND {_OUTSTANDING}",
            params,
        )
        conn.execute(
            "CREATE TEMP TABLE billing_prior ON COMMIT DROP AS"
            " SELECT kind, source_system, source_id, source_version, count(*) AS prior FROM billing.event"
            " WHERE kind = ANY(%(kinds)s) AND credits_ref IS NULL GROUP BY 1, 2, 3, 4",
            params,
        )
        for table in ("billing_outstanding", "billing_prior"):
            conn.execute(f"CREATE INDEX ON {table} (kind, source_system, source_id)")
            conn.execute(f"ANALYZE {table}")
        outcome.created = _tally(conn.execute(_create_sql(), params).fetchall())
        for kind, status, n in conn.execute("SELECT kind, status, count(*) FROM billing_src GROUP BY 1, 2"):
            if status == "hold":
                outcome.held[kind] = int(n)
            else:
                outcome.unchanged[kind] = int(n) - outcome.created.get(kind, 0)
    return outcome


def build_events_step(conn: psycopg.Connection, *, as_of: datetime, run_id: str) -> dict[str, dict[str, int]]:
    """The billing DAG's first step: :func:`build_billing_events` with ``config/billing.yaml`` as of
    the run's day; returns the counts per state and kind (the task's XCom)."""
    from psa_erp_sync.billing.settings import load_billing_settings

    outcome = build_billing_events(conn, config=load_billing_settings(), as_of=as_of.date(), run_id=run_id)
    counts = outcome.counts()
    log.info("billing events as of %s: %s", as_of.date().isoformat(), counts)
    return counts


def _params(config: BillingSettings, as_of: date, run_id: str, kinds: Collection[str]) -> dict[str, Any]:
    prefix, _, suffix = JOB_EXTERNAL_ID.partition("{id}")
    return {
        "kinds": [k for k in KINDS if k in kinds],
        "as_of": as_of,
        "run_id": run_id,
        "job_prefix": prefix,
        "job_suffix": suffix,
        "default_cycle": config.cycles.default,
        "grouping": config.group_fields(),
        "system": SOURCE_SYSTEM,
    }


def _tally(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (kind,) in rows:
        out[str(kind)] = out.get(str(kind), 0) + 1
    return out


def _prepare(conn: psycopg.Connection, config: BillingSettings) -> None:
    """Temporary tables of the run (dropped at commit): the cycle overrides, the projects with
    their customer, and the sources."""
    conn.execute(
        "DROP TABLE IF EXISTS pg_temp.billing_cycle, pg_temp.billing_project, pg_temp.billing_src,"
        " pg_temp.billing_outstanding, pg_temp.billing_prior"
    )
    conn.execute("CREATE TEMP TABLE billing_cycle (scope text, key text, cycle text) ON COMMIT DROP")
    overrides = [("legal_entity", k, v) for k, v in config.cycles.legal_entities.items()]
    overrides += [("customer", k, v) for k, v in config.cycles.customers.items()]
    if overrides:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO billing_cycle VALUES (%s, %s, %s)", overrides)
    conn.execute(
        """
        CREATE TEMP TABLE billing_src (
            kind text NOT NULL, source_system text NOT NULL, source_id text NOT NULL,
            source_version text NOT NULL, status text NOT NULL, billing_type text,
            customer_ref text, project_ref text, legal_entity text, currency char(3),
            event_date date, quantity numeric(12, 2), rate_minor bigint, amount_minor bigint
        ) ON COMMIT DROP
        """
    )


_PROJECTS = """
    CREATE TEMP TABLE billing_project ON COMMIT DROP AS
    SELECT p.project_ref, p.billing_type, p.legal_entity, p.currency,
           coalesce(c.merged_into, j.parent) AS customer_ref
    FROM forecast.src_project p
    LEFT JOIN master.erp_record j
           ON j.record_type = 'job' AND j.external_id = %(job_prefix)s || p.project_ref || %(job_suffix)s
    LEFT JOIN master.erp_record c ON c.record_type = 'customer' AND c.external_id = j.parent
"""

# Time and expenses: approved, billable, live; billable now when the ERP holds this version and the
# project and its customer are known, else held. A project of another contract type bills no time.
_ENTRY_SOURCES = """
    INSERT INTO billing_src
    SELECT %(kind)s, t.source_system, t.source_id, t.version_hash,
           CASE WHEN p.customer_ref IS NOT NULL AND EXISTS (
                    SELECT 1 FROM ledger.posting l
                    WHERE l.record_type = %(record_type)s AND l.source_system = t.source_system
                      AND l.source_id = t.source_id AND l.source_version = t.version_hash
                      AND l.action IN ('post', 'adjust') AND l.state IN ('confirmed', 'resolved')
                      AND NOT l.shadow)
                THEN 'billable' ELSE 'hold' END,
           p.billing_type, p.customer_ref, t.project_ref, t.legal_entity, t.currency, t.spent_date,
           {quantity}, {rate}, t.amount_minor
    FROM {table} t LEFT JOIN billing_project p ON p.project_ref = t.project_ref
    WHERE t.approved AND t.billable AND NOT t.is_deleted AND t.amount_minor > 0
      AND t.source_system = %(system)s AND {contract}
"""

# Milestones signed off, from the later read: the stream's re-read when it is newer than the last
# full extract, else the extract's row (a milestone the extract no longer lists is gone).
_MILESTONE_SOURCES = """
    WITH extracted AS (
        SELECT coalesce(max(extracted_at), '-infinity'::timestamptz) AS at
        FROM forecast.extract WHERE source = 'psa.milestones'
    ), latest AS (
        SELECT r.milestone_id, r.project_ref, r.amount_minor, r.status, r.completed_on, r.exists_at_source
        FROM billing.milestone_read r, extracted x WHERE r.read_at > x.at
        UNION ALL
        SELECT s.milestone_id, s.project_ref, s.amount_minor, s.status, s.completed_on, true
        FROM forecast.src_milestone s
        WHERE NOT EXISTS (SELECT 1 FROM billing.milestone_read r, extracted x
                          WHERE r.milestone_id = s.milestone_id AND r.read_at > x.at)
    )
    INSERT INTO billing_src
    SELECT 'milestone', %(system)s, m.milestone_id,
           left(md5(concat_ws('|', m.project_ref, m.amount_minor, m.completed_on)), 16),
           CASE WHEN p.customer_ref IS NOT NULL AND m.completed_on IS NOT NULL THEN 'billable' ELSE 'hold' END,
           coalesce(p.billing_type, 'milestone'), p.customer_ref, m.project_ref, p.legal_entity, p.currency,
           m.completed_on, NULL, NULL, m.amount_minor
    FROM latest m LEFT JOIN billing_project p ON p.project_ref = m.project_ref
    WHERE m.exists_at_source AND m.status = 'signed_off' AND m.amount_minor > 0
      AND m.completed_on <= %(as_of)s
      AND (p.project_ref IS NULL OR p.billing_type IN ('fixed_fee', 'milestone'))
"""

_RETAINER_SOURCES = """
    INSERT INTO billing_src
    SELECT 'retainer', %(retainer_source)s, r.project_ref || ':' || r.period, r.version,
           CASE WHEN p.customer_ref IS NOT NULL THEN 'billable' ELSE 'hold' END,
           'retainer', p.customer_ref, r.project_ref, p.legal_entity, r.currency, r.event_date,
           NULL, NULL, r.amount_minor
    FROM unnest(%(r_project)s::text[], %(r_period)s::text[], %(r_version)s::text[], %(r_currency)s::text[],
                %(r_date)s::date[], %(r_amount)s::bigint[])
         AS r(project_ref, period, version, currency, event_date, amount_minor)
    LEFT JOIN billing_project p ON p.project_ref = r.project_ref
"""


def _load_sources(
    conn: psycopg.Connection, config: BillingSettings, as_of: date, params: dict[str, Any]
) -> None:
    """Fill ``billing_src`` with the current version of every source of the run's kinds."""
    conn.execute(_PROJECTS, params)
    conn.execute("CREATE UNIQUE INDEX ON billing_project (project_ref)")
    conn.execute("ANALYZE billing_project")  # a temporary table has no statistics until analyzed
    kinds = params["kinds"]
    if "time" in kinds:
        sql = _ENTRY_SOURCES.format(
            table="canonical.time_entry",
            quantity="t.hours",
            rate="t.bill_rate_minor",
            contract="(p.project_ref IS NULL OR p.billing_type = 'time_and_materials')",
        )
        conn.execute(sql, params | {"kind": "time", "record_type": "timebill"})
    if "expense" in kinds:
        sql = _ENTRY_SOURCES.format(
            table="canonical.expense_entry", quantity="NULL", rate="NULL", contract="true"
        )
        conn.execute(sql, params | {"kind": "expense", "record_type": "expensereport"})
    if "milestone" in kinds:
        conn.execute(_MILESTONE_SOURCES, params)
    if "retainer" in kinds:
        periods = [p for ref, r in sorted(config.retainers.items()) for p in retainer_periods(ref, r, as_of)]
        conn.execute(
            _RETAINER_SOURCES,
            params
            | {
                "retainer_source": RETAINER_SOURCE,
                "r_project": [p.project_ref for p in periods],
                "r_period": [p.period for p in periods],
                "r_version": [p.version for p in periods],
                "r_currency": [p.currency for p in periods],
                "r_date": [p.event_date for p in periods],
                "r_amount": [p.amount_minor for p in periods],
            },
        )
    conn.execute("CREATE INDEX ON billing_src (kind, source_system, source_id)")
    conn.execute("ANALYZE billing_src")


@dataclass(frozen=True)
class RetainerPeriod:
    project_ref: str
    period: str  # YYYY-MM
    event_date: date  # the period's first day (the retainer's start in a partial first month)
    amount_minor: int
    currency: str
    version: str


def retainer_periods(project_ref: str, retainer: Retainer, as_of: date) -> list[RetainerPeriod]:
    """The monthly periods of a retainer started by ``as_of``. A month the retainer covers only in
    part bills ``amount x covered days / days in the month``, rounded half-even."""
    if retainer.period != "month":  # the only period the settings allow today
        raise ValueError(f"retainer of project {project_ref}: unsupported period {retainer.period!r}")
    out: list[RetainerPeriod] = []
    month = date(retainer.starts_on.year, retainer.starts_on.month, 1)
    while month <= as_of and (retainer.ends_on is None or month <= retainer.ends_on):
        days = calendar.monthrange(month.year, month.month)[1]
        first = max(month, retainer.starts_on)
        last = date(month.year, month.month, days)
        if retainer.ends_on is not None:
            last = min(last, retainer.ends_on)
        if first > as_of:
            break
        covered = (last - first).days + 1
        amount = retainer.amount_minor
        if covered < days:
            exact = Decimal(retainer.amount_minor) * covered / days
            amount = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        version = hashlib.sha256(f"{amount}|{retainer.currency}|{first}|{last}".encode()).hexdigest()[:16]
        period = f"{month:%Y-%m}"
        out.append(RetainerPeriod(project_ref, period, first, amount, retainer.currency, version))
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return out


# A ready event whose source changed or is gone is withdrawn (before the credits: an event the
# invoicing step takes meanwhile is invoiced, and the next statement credits it).
_WITHDRAW = f"""
    UPDATE billing.event e SET state = 'withdrawn', updated_at = now(), run_id = %(run_id)s
    WHERE e.state = 'ready' AND e.credits_ref IS NULL AND {_IN_SCOPE}
      AND NOT EXISTS (SELECT 1 FROM billing_src s WHERE {_SAME_SOURCE} AND {_SAME_CONTENT})
    RETURNING e.kind
"""


def _credit_sql() -> str:
    """One credit line per invoiced event whose source changed (and whose new version, if any, the
    ERP holds) or is gone: the negative of the invoiced line, dated as of the run."""
    d = "greatest(%(as_of)s::date, e.event_date)"
    cycle = _CYCLE_KEY.format(kind=_CYCLE_KIND.format(row="e"), d=d)
    return f"""
    INSERT INTO billing.event (event_ref, kind, source_system, source_id, source_version, billing_type,
        customer_ref, project_ref, legal_entity, currency, cycle, event_date, quantity, rate_minor,
        amount_minor, credits_ref, state, group_key, run_id)
    SELECT e.event_ref || ':credit', e.kind, e.source_system, e.source_id, e.source_version, e.billing_type,
           e.customer_ref, e.project_ref, e.legal_entity, e.currency, {cycle}, {d}, -e.quantity,
           e.rate_minor, -e.amount_minor, e.event_ref, 'ready', {_GROUP_KEY.format(row="e", cycle=cycle)},
           %(run_id)s
    FROM billing.event e
    WHERE e.state = 'invoiced' AND {_OUTSTANDING} AND {_IN_SCOPE}
      AND NOT EXISTS (SELECT 1 FROM billing_src s WHERE {_SAME_SOURCE}
                      AND (s.status = 'hold' OR ({_SAME_CONTENT})))
    ON CONFLICT DO NOTHING
    RETURNING kind
    """


def _create_sql() -> str:
    """An event for every billable source with no outstanding event. The reference is kind, source
    system, source id and version; a version billed before (and withdrawn or credited since) gets
    ``:r<n>``, so a reference is never reused."""
    cycle = _CYCLE_KEY.format(kind=_CYCLE_KIND.format(row="s"), d="s.event_date")
    base = "s.kind || ':' || s.source_system || ':' || s.source_id || ':' || s.source_version"
    return f"""
    INSERT INTO billing.event (event_ref, kind, source_system, source_id, source_version, billing_type,
        customer_ref, project_ref, legal_entity, currency, cycle, event_date, quantity, rate_minor,
        amount_minor, state, group_key, run_id)
    SELECT {base} || CASE WHEN n.prior IS NULL THEN '' ELSE ':r' || n.prior END,
           s.kind, s.source_system, s.source_id, s.source_version, s.billing_type, s.customer_ref,
           s.project_ref, s.legal_entity, s.currency, {cycle}, s.event_date, s.quantity, s.rate_minor,
           s.amount_minor, 'ready', {_GROUP_KEY.format(row="s", cycle=cycle)}, %(run_id)s
    FROM billing_src s
    LEFT JOIN billing_prior n
           ON n.kind = s.kind AND n.source_system = s.source_system AND n.source_id = s.source_id
          AND n.source_version = s.source_version
    WHERE s.status = 'billable'
      AND NOT EXISTS (SELECT 1 FROM billing_outstanding e WHERE {_SAME_SOURCE})
    ON CONFLICT (event_ref) DO NOTHING
    RETURNING kind
    """
