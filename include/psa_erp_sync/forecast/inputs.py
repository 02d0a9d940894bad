"""Forecast inputs: extract PSA/CRM planning data into ``forecast.src_*`` and read the model's
inputs (plus their data versions) from the ODS.

Extracts are full reads, validated with pydantic at the boundary and replaced atomically per
source; each records a content hash in ``forecast.extract``: the data version a snapshot cites.
Actuals come from what the posting flow wrote: posted, approved time and expenses (the last
confirmed ``post``/``adjust`` in ``ledger.posting``) joined with their canonical records, kept per
source record and summed per project and month by :mod:`psa_erp_sync.forecast.actuals`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from psa_erp_sync import money
from psa_erp_sync.clients import psa_models
from psa_erp_sync.clients.crm_models import ForecastChangeOrder, ForecastOpportunity
from psa_erp_sync.contracts import records
from psa_erp_sync.forecast import actuals as forecast_actuals
from psa_erp_sync.forecast import billing_kpis, model, pgbinary
from psa_erp_sync.revenue import source as revenue_source

if TYPE_CHECKING:
    from concurrent.futures import Future

    import pandas as pd
    import psycopg

    from psa_erp_sync.config import Config
    from psa_erp_sync.forecast.settings import ForecastSettings

_T = TypeVar("_T")

log = logging.getLogger(__name__)

_COMMON_READS = (
    "source_system",
    "source_id",
    "spent_date",
    "project_ref",
    "billable",
    "approved",
    "is_deleted",
)
#: The canonical v1 fields the forecast's actuals and cost read (set-based SQL over ``canonical.*``),
#: checked against the contract's twin on import (:func:`~psa_erp_sync.contracts.records.reads`).
CANONICAL_READS = {
    "time_entry": records.reads("time_entry", *_COMMON_READS, "hours", "user_ref"),
    "expense_entry": records.reads("expense_entry", *_COMMON_READS),
}

BILLING_TYPES = ("time_and_materials", "fixed_fee", "milestone", "retainer")


class InputError(ValueError):
    """An extracted record failed validation; names the source and record id, never values."""


def _validated(source: str, cls: type[Any], items: Iterable[dict[str, Any]]) -> Iterator[Any]:
    for item in items:
        try:
            yield cls.model_validate(item)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
            raise InputError(f"{source} record {item.get('id')!r}: invalid fields {fields}") from None


def _replace(
    conn: psycopg.Connection,
    source: str,
    table: str,
    columns: tuple[str, ...],
    rows: list[tuple[Any, ...]],
    run_id: str,
) -> dict[str, Any]:
    """Swap the table's rows for ``rows`` and record the content hash, in one transaction."""
    rows.sort(key=lambda r: str(r[0]))
    digest = hashlib.sha256(json.dumps(rows, default=str, separators=(",", ":")).encode()).hexdigest()
    with conn.transaction():
        conn.execute(f"DELETE FROM forecast.{table}")
        with conn.cursor().copy(f"COPY forecast.{table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        conn.execute(
            "INSERT INTO forecast.extract (source, content_hash, row_count, run_id) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (source) DO UPDATE SET content_hash = EXCLUDED.content_hash, "
            "row_count = EXCLUDED.row_count, run_id = EXCLUDED.run_id, extracted_at = now()",
            (source, digest, len(rows), run_id),
        )
    return {"rows": len(rows), "content_hash": digest}


def _extract_psa_projects(
    conn: psycopg.Connection, client: Any, *, run_id: str
) -> tuple[dict[str, Any], dict[int, str]]:
    """The PSA's forecastable projects into ``forecast.src_project``; the summary and each
    project's currency."""
    projects: list[tuple[Any, ...]] = []
    currency_of: dict[int, str] = {}
    skipped = 0
    for p in _validated("psa.projects", psa_models.Project, client.iter_projects()):
        currency = p.currency or (p.client.currency if p.client else None)
        if not (p.legal_entity and currency and p.billing_type and p.practice):
            skipped += 1  # not forecastable without these; the master-data flow reports them
            continue
        currency_of[p.id] = currency
        rate = money.to_minor(p.hourly_rate or Decimal(0), currency)
        budget = money.to_minor(p.budget * (p.hourly_rate or Decimal(0)), currency) if p.budget else None
        fee = money.to_minor(p.fee, currency) if p.fee is not None else None
        projects.append(
            (
                str(p.id),
                p.practice,
                p.legal_entity,
                currency,
                p.billing_type,
                p.is_active,
                p.starts_on,
                p.ends_on,
                rate,
                fee,
                budget,
            )
        )
    summary = _replace(
        conn,
        "psa.projects",
        "src_project",
        (
            "project_ref",
            "practice",
            "legal_entity",
            "currency",
            "billing_type",
            "is_active",
            "starts_on",
            "ends_on",
            "hourly_rate_minor",
            "fee_minor",
            "budget_minor",
        ),
        projects,
        run_id,
    ) | {"skipped": skipped}
    return summary, currency_of


def _extract_psa_people(
    conn: psycopg.Connection, client: Any, *, run_id: str, config: Config
) -> dict[str, Any]:
    """The PSA's users (capacity, cost rate) into ``forecast.src_person``."""
    entities = config.legal_entities.legal_entities
    people = []
    for u in _validated("psa.users", psa_models.User, client.iter_users()):
        le = u.legal_entity
        currency = entities[le].currency if le in entities else config.legal_entities.reporting_currency
        people.append(
            (
                str(u.id),
                le or "",
                currency,
                u.is_active,
                u.weekly_capacity or 0,
                money.to_minor(u.cost_rate or Decimal(0), currency),
            )
        )
    return _replace(
        conn,
        "psa.users",
        "src_person",
        ("user_ref", "legal_entity", "currency", "is_active", "weekly_capacity_seconds", "cost_rate_minor"),
        people,
        run_id,
    )


def extract_psa(conn: psycopg.Connection, client: Any, *, run_id: str, config: Config) -> dict[str, Any]:
    """Projects, people (capacity, cost rate), the resource schedule and milestones from the PSA."""
    summary: dict[str, Any] = {}
    summary["psa.projects"], currency_of = _extract_psa_projects(conn, client, run_id=run_id)
    summary["psa.users"] = _extract_psa_people(conn, client, run_id=run_id, config=config)

    schedule = [
        (str(s.id), str(s.user.id), str(s.project.id), s.week_start, s.hours)
        for s in _validated("psa.schedule", psa_models.ScheduleEntry, client.iter_schedule())
    ]
    summary["psa.schedule"] = _replace(
        conn,
        "psa.schedule",
        "src_schedule",
        ("schedule_id", "user_ref", "project_ref", "week_start", "hours"),
        schedule,
        run_id,
    )

    milestones = []
    for m in _validated("psa.milestones", psa_models.Milestone, client.iter_milestones()):
        currency = m.currency or currency_of.get(m.project.id)
        if currency is None or m.amount is None:
            continue
        done = m.completed_at.date() if m.completed_at else None
        milestones.append(
            (str(m.id), str(m.project.id), m.due_date, money.to_minor(m.amount, currency), m.status, done)
        )
    summary["psa.milestones"] = _replace(
        conn,
        "psa.milestones",
        "src_milestone",
        ("milestone_id", "project_ref", "due_date", "amount_minor", "status", "completed_on"),
        milestones,
        run_id,
    )
    return summary


def extract_crm(conn: psycopg.Connection, client: Any, *, run_id: str) -> dict[str, Any]:
    """Opportunities (open pipeline and won contracts) and change orders from the CRM."""
    opportunities = [
        (
            str(o.id),
            o.stage,
            money.to_minor(o.amount, o.currency),
            o.currency,
            o.expected_start,
            o.duration_months,
            o.legal_entity,
            o.practice,
            o.billing_type,
            str(o.psa_project_id) if o.psa_project_id is not None else None,
            o.is_closed,
            o.is_won,
        )
        for o in _validated("crm.opportunities", ForecastOpportunity, client.iter_opportunities())
    ]
    summary = {
        "crm.opportunities": _replace(
            conn,
            "crm.opportunities",
            "src_opportunity",
            (
                "opportunity_id",
                "stage",
                "amount_minor",
                "currency",
                "expected_start",
                "duration_months",
                "legal_entity",
                "practice",
                "billing_type",
                "project_ref",
                "is_closed",
                "is_won",
            ),
            opportunities,
            run_id,
        )
    }
    change_orders = [
        (
            str(c.id),
            str(c.opportunity_id),
            money.to_minor(c.amount_delta, c.currency),
            c.currency,
            c.status,
            c.effective_date,
        )
        for c in _validated("crm.change_orders", ForecastChangeOrder, client.iter_change_orders())
    ]
    summary["crm.change_orders"] = _replace(
        conn,
        "crm.change_orders",
        "src_change_order",
        ("change_order_id", "opportunity_id", "amount_delta_minor", "currency", "status", "effective_date"),
        change_orders,
        run_id,
    )
    return summary


# --- reading the model's inputs -----------------------------------------------------------------

ODS_INPUTS = (
    ("canonical", "time_entry"),
    ("canonical", "expense_entry"),
    ("ledger", "posting"),
    ("forecast", "src_project"),
    ("forecast", "src_person"),
    ("forecast", "src_schedule"),
    ("forecast", "src_milestone"),
    ("forecast", "src_opportunity"),
    ("forecast", "src_change_order"),
    ("hr", "worker"),
    ("hr", "cost_rate"),
    ("revenue", "recognition"),
    ("revenue", "journal"),
    ("revenue", "journal_line"),
    ("billing", "erp_invoice"),
    ("billing", "erp_invoice_line"),
    ("billing", "erp_payment"),
    ("master", "erp_record"),
)
"""Every ODS table a refresh reads (its OpenLineage inputs)."""


def data_versions(conn: psycopg.Connection, settings: ForecastSettings) -> dict[str, str]:
    """What a refresh would read, as versions: extract hashes, ODS watermarks, the config digest."""
    versions: dict[str, str] = {}
    for source, digest, count in conn.execute(
        "SELECT source, content_hash, row_count FROM forecast.extract ORDER BY source"
    ):
        versions[str(source)] = f"{count}:{str(digest)[:16]}"
    for table in ("time_entry", "expense_entry"):
        count, last = conn.execute(
            f"SELECT count(*), max(validated_at) FROM canonical.{table}"
        ).fetchone() or (0, None)
        versions[f"canonical.{table}"] = f"{count}:{last.isoformat() if last else '-'}"
    count, seq, last = conn.execute(
        "SELECT count(*), max(seq), max(updated_at) FROM ledger.posting"
    ).fetchone() or (0, None, None)
    versions["ledger.posting"] = f"{count}:{seq or 0}:{last.isoformat() if last else '-'}"
    # Cost rates come from HR where it has them (hr.psa_user_cost_rate_on): a new rate or mapping is new input.
    count, last, mapped = conn.execute(
        "SELECT (SELECT count(*) FROM hr.cost_rate), (SELECT max(read_at) FROM hr.cost_rate),"
        " (SELECT count(psa_user_id) FROM hr.worker)"
    ).fetchone() or (0, None, 0)
    versions["hr.cost_rate"] = f"{count}:{mapped}:{last.isoformat() if last else '-'}"
    count, seq = conn.execute("SELECT count(*), max(seq) FROM revenue.recognition").fetchone() or (0, None)
    versions["revenue.recognition"] = f"{count}:{seq or 0}"
    (journals,) = conn.execute("SELECT count(*) FROM revenue.journal").fetchone() or (0,)
    versions["revenue.journal"] = str(journals)
    versions["billing.erp"] = billing_kpis.data_version(conn)
    versions["config.forecast"] = settings.digest[:16]
    return versions


_HR_RATES = forecast_actuals.HR_RATES
_HR_RATE_ON = forecast_actuals.HR_RATE_ON
_M_YEAR = forecast_actuals.M_YEAR


# Each person's cost rate as intervals covering all time: the PSA rate until HR's first rate (or
# forever), then HR's; the same rate and currency as ``coalesce(HR rate on the day, PSA rate)``.
# Kept in an analyzed temporary table so the planner knows it is ~1.3 rows per person and hashes
# it: joined as a subquery (or the HR rates with a LEFT JOIN) it hashed the 1.8 M schedule rows
# instead, in 16 batches on disk (docs/performance.md, "perf-forecast2").
_PERSON_RATES = f"""
    SELECT p.user_ref, p.cost_rate_minor AS rate_minor, p.currency::text AS currency,
           '-infinity'::date AS valid_from, min(h.effective_from) AS valid_to
    FROM forecast.src_person p LEFT JOIN ({_HR_RATES}) h ON h.user_ref = p.user_ref
    GROUP BY p.user_ref, p.cost_rate_minor, p.currency
    UNION ALL
    SELECT p.user_ref, h.rate_minor, h.currency, h.effective_from, h.next_from
    FROM forecast.src_person p JOIN ({_HR_RATES}) h ON h.user_ref = p.user_ref
"""
# The person rates numbered (``rate_id``), so a schedule row names its rate interval (person,
# rate, currency) by one integer (``_schedule``).
_PERSON_RATE_IDS = f"SELECT q.*, (row_number() OVER () - 1)::bigint AS rate_id FROM ({_PERSON_RATES}) q"
# The planned work after the as-of date, priced at the rate on each week start, packed into two
# bigints per row (the server's cost of sending an array is per element, ~150 ns):
# ``who`` = (project code + 1) x 2^32 + rate_id, with the code in tmp_forecast_project_code (-1
# for a project the forecast does not know, whose ref then comes in ``unknown_ref``);
# ``what`` = centi-hours x 2^32 + days since 1970-01-01 of the week start + 2^31 (centi-hours of a
# numeric(9,2) >= 0: < 2^30; ``hours * 100`` of a numeric(9,2) is a whole number, so its cast to
# bigint is exact: no ``round`` of 1.8 M numerics, ~0.15-0.25 s of the server's CPU at 50k x 12,
# docs/performance.md "perf-forecast10"); the month index is taken from the day by numpy
# (:func:`_month_of_days`): the server's ``extract`` computes in numeric, ~0.2 us per row and per field.
# Only the rate intervals that end after the as-of date can hold a week read (``week_start >=
# as_of``), so the others are left out of the hash table: with a year of HR history (50k x 12) a
# person had ~2.3 intervals and each row was compared with all of them (2.4 M rows filtered out),
# now ~1; the rate ids stay those of the whole table (docs/performance.md, "perf-forecast14").
_SCHEDULE = """
    SELECT (coalesce(pc.code, -1) + 1) * 4294967296 + r.rate_id AS who,
           (s.hours * 100)::bigint * 4294967296 + ((s.week_start - DATE '1970-01-01') + 2147483648) AS what,
           CASE WHEN pc.code IS NULL THEN s.project_ref END AS unknown_ref
    FROM forecast.src_schedule s JOIN tmp_forecast_person_rate r ON r.user_ref = s.user_ref
         AND s.week_start >= r.valid_from AND (r.valid_to IS NULL OR s.week_start < r.valid_to)
         AND (r.valid_to IS NULL OR r.valid_to > %(as_of)s)
         LEFT JOIN tmp_forecast_project_code pc ON pc.project_ref = s.project_ref
    WHERE s.week_start >= %(as_of)s
"""
_SCHEDULE_KINDS = {"who": "int8", "what": "int8", "unknown_ref": "text"}
_LOW32 = 0xFFFFFFFF


def _decoded(codes: Any, values: list[str]) -> Any:
    """``values[code]`` per code, as an object array of the same str objects (no string built)."""
    import numpy as np

    table = np.empty(len(values), dtype=object)
    table[:] = values
    return table[codes]


def _objects(values: list[str]) -> Any:
    """``values`` as an object array of the same str objects."""
    import numpy as np

    return _decoded(np.arange(len(values)), values)


def _month_of_days(days: Any) -> Any:
    """The month index (``model.month_index``: year x 12 + month - 1) of days since 1970-01-01."""
    import numpy as np

    months_since_1970 = np.asarray(days, dtype=np.int64).astype("datetime64[D]").astype("datetime64[M]")
    return months_since_1970.astype(np.int64) + 1970 * 12


def _schedule(conn: psycopg.Connection, as_of: date) -> pd.DataFrame:
    """The resource plan after ``as_of`` with each row's cost rate and currency (see above)."""
    return _schedule_read(conn, as_of).frame


def _schedule_read(conn: psycopg.Connection, as_of: date) -> model.ScheduleCodes:
    """The resource plan after ``as_of`` (see above) and its text columns' codes. The rows cross
    as packed integer arrays (:func:`pgbinary.read_arrays`): 1.8 M rows at 50k x 12 as CSV cost
    ~1-2 s of client CPU (docs/performance.md, "perf-forecast3"); the text columns are decoded
    from their codes, so the frame is the same as the rows themselves, and the codes go to the
    model with it (it need not hash 1.8 M strings again)."""
    import numpy as np
    import pandas as pd

    conn.execute("DROP TABLE IF EXISTS tmp_forecast_person_rate")
    conn.execute(f"CREATE TEMP TABLE tmp_forecast_person_rate AS {_PERSON_RATE_IDS}")
    conn.execute("ANALYZE tmp_forecast_person_rate")
    refs = _project_codes(conn)
    rows = pgbinary.read_arrays(
        conn, _SCHEDULE, {"as_of": as_of}, _SCHEDULE_KINDS, filters={"unknown_ref": "unknown_ref IS NOT NULL"}
    )
    rates = conn.execute(
        "SELECT rate_id, user_ref, rate_minor, currency FROM tmp_forecast_person_rate"
    ).fetchall()
    conn.execute("DROP TABLE tmp_forecast_person_rate")
    conn.execute("DROP TABLE tmp_forecast_project_code")
    by_id = sorted(rates, key=lambda r: int(r[0]))
    if [int(r[0]) for r in by_id] != list(range(len(by_id))):
        raise RuntimeError("schedule read: rate ids are not dense")
    who, what = rows["who"], rows["what"]
    project_code, rate_id = (who >> 32) - 1, who & _LOW32
    unknown = project_code < 0
    if int(unknown.sum()) != len(rows["unknown_ref"]):
        raise RuntimeError("schedule read: unknown project refs do not match their rows")
    # An unknown project's rows get codes after the known ones, one per row (few; their refs as read).
    project_code[unknown] = len(refs) + np.arange(int(unknown.sum()))
    columns = {
        "project_ref": (
            project_code,
            _objects([*refs, *rows["unknown_ref"]]),
        ),
        "user_ref": (rate_id, _objects([str(r[1]) for r in by_id])),
        "cost_currency": (rate_id, _objects([str(r[3]) for r in by_id])),
    }
    frame = pd.DataFrame(
        {
            "project_ref": columns["project_ref"][1][project_code],
            "user_ref": columns["user_ref"][1][rate_id],
            "month": _month_of_days((what & _LOW32) - 2**31),
            "hours_centi": what >> 32,
            "cost_rate_minor": np.array([int(r[2]) for r in by_id], dtype=np.int64)[rate_id],
            "cost_currency": columns["cost_currency"][1][rate_id],
        }
    ).astype(model.SCHEDULE_COLUMNS)
    return model.ScheduleCodes(frame, columns)


def _code_table(conn: psycopg.Connection, sql: str) -> list[str]:
    """(code, value) rows with dense codes 0..n-1 as the list of values by code."""
    pairs = conn.execute(sql).fetchall()
    values = [""] * len(pairs)
    for code, value in pairs:
        values[int(code)] = str(value)
    return values


def _frame(conn: psycopg.Connection, sql: str, params: Any, columns: dict[str, str]) -> pd.DataFrame:
    """The rows of ``sql`` as a frame of ``columns`` (name -> dtype), read column-wise: ``COPY (sql)
    TO STDOUT`` in CSV parsed by pandas' C reader, instead of a Python tuple and object per value
    (measured at 50k projects x 12 months: 1.8 M schedule rows, docs/performance.md "Forecast
    refresh"). Every column the reads select is NOT NULL or coalesced: nothing is read as missing
    (``na_filter=False``), text stays text and an integer column that got no value fails loudly."""
    import io

    import pandas as pd

    data = bytearray()
    with conn.cursor().copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy:
        for block in copy:
            data += block
    if not data:
        return model.empty_frame(columns)
    return pd.read_csv(
        io.BytesIO(data), header=None, names=list(columns), dtype=columns, na_filter=False, engine="c"
    )


def _projects(conn: psycopg.Connection, m0: int) -> pd.DataFrame:
    """Every project with its contract value. Contract value from the CRM (its system of authority)
    when the project came from a won opportunity: amount + approved change orders; else the PSA's
    fee (or T&M budget)."""
    m_year = _M_YEAR
    projects = _frame(
        conn,
        f"""
        WITH won AS (
            SELECT o.project_ref, o.amount_minor + coalesce(sum(c.amount_delta_minor)
                   FILTER (WHERE c.status = 'approved'), 0) AS value
            FROM forecast.src_opportunity o
            LEFT JOIN forecast.src_change_order c ON c.opportunity_id = o.opportunity_id
            WHERE o.is_won AND o.project_ref IS NOT NULL
            GROUP BY o.opportunity_id, o.project_ref, o.amount_minor
        )
        SELECT p.project_ref, p.practice, p.legal_entity, p.currency, p.billing_type,
               coalesce(w.value, p.fee_minor, p.budget_minor, 0),
               p.hourly_rate_minor,
               coalesce({m_year.format(d="p.starts_on")}, %(m0)s),
               coalesce({m_year.format(d="p.ends_on")}, %(m0)s),
               0
        FROM forecast.src_project p LEFT JOIN won w ON w.project_ref = p.project_ref
        ORDER BY p.project_ref
        """,
        {"m0": m0},
        model.PROJECT_COLUMNS,
    )
    return projects


_PROJECT_CODES = (
    "CREATE TEMP TABLE tmp_forecast_project_code AS SELECT project_ref,"
    " (row_number() OVER (ORDER BY project_ref) - 1)::int AS code FROM forecast.src_project"
)


def _project_codes(conn: psycopg.Connection) -> list[str]:
    """(Re)create tmp_forecast_project_code (each forecast project's integer code, analyzed) and
    return the refs by code. The caller drops it when its read is done."""
    conn.execute("DROP TABLE IF EXISTS tmp_forecast_project_code")
    conn.execute(_PROJECT_CODES)
    conn.execute("ANALYZE tmp_forecast_project_code")
    return _code_table(conn, "SELECT code, project_ref FROM tmp_forecast_project_code")


# The actuals' cells (``forecast_actuals.read_sql``) packed into integers: ``key`` = ((project key
# of forecast.actual_project_key) x 256 + currency code) x 2^32 + month + 2^31 (currency code 0
# for '', revenue; its position in the configured currencies; 255 when not there, its code then in
# ``odd_currency``), ``amount`` (the cell's revenue_minor for revenue, cost_centi for cost): two
# array elements per cell (the server's cost of sending is per element). The cells join nothing:
# the client maps the project keys to its codes (:func:`_project_key_codes`).
_ACTUAL_CELLS = """
    SELECT (c.project_key::bigint * 256 + {currency_code}) * 4294967296
           + (c.month::bigint + 2147483648) AS key,
           (CASE WHEN c.currency = '' THEN c.revenue_minor ELSE c.cost_centi END)::bigint AS amount,
           CASE WHEN {currency_code} = 255 THEN c.currency::text END AS odd_currency
    FROM ({cells}) c
"""
_ACTUAL_KINDS = {"key": "int8", "amount": "int8", "odd_currency": "text"}
# The project keys of the forecast's projects with their codes in tmp_forecast_project_code; the
# keys of the projects it does not know, with their refs.
_KEY_CODES = """
    SELECT k.project_key, pc.code
    FROM forecast.actual_project_key k JOIN tmp_forecast_project_code pc ON pc.project_ref = k.project_ref
"""
_KEYS_UNKNOWN = """
    SELECT k.project_key, k.project_ref FROM forecast.actual_project_key k
    WHERE NOT EXISTS (SELECT 1 FROM tmp_forecast_project_code pc WHERE pc.project_ref = k.project_ref)
"""


def _project_key_codes(conn: psycopg.Connection, keys: Any) -> tuple[Any, list[str]]:
    """The project code (tmp_forecast_project_code) of each of the cells' project ``keys``, -1 for
    a project the forecast does not know, and those cells' refs in order."""
    import numpy as np

    if len(keys) and int(keys.min()) < 1:
        raise RuntimeError("actuals read: a cell's project has no key in forecast.actual_project_key")
    known = pgbinary.read_arrays(conn, _KEY_CODES, None, {"project_key": "int4", "code": "int4"})
    unknown: dict[int, str] = dict(conn.execute(_KEYS_UNKNOWN).fetchall())
    size = max([int(keys.max()) if len(keys) else 0, *unknown]) + 1
    lookup = np.full(size, -1, dtype=np.int64)
    inside = known["project_key"] < size
    lookup[known["project_key"][inside]] = known["code"][inside]
    codes = lookup[keys]
    return codes, [unknown[int(k)] for k in keys[codes < 0]]


def _actual_cells(conn: psycopg.Connection, as_of: date, currencies: list[str]) -> dict[str, Any]:
    """The actuals' cells up to ``as_of`` as integer arrays (:func:`pgbinary.read_arrays`):
    ``project_code`` (unknown projects get codes after the known ones), ``currency_code`` (odd
    ones after ``currencies``), ``month``, ``amount``; with ``refs`` (the refs by project code)
    and ``currencies`` (by currency code)."""
    if len(currencies) > 255:
        raise ValueError("more than 254 configured currencies")
    refs = _project_codes(conn)
    sql, params = forecast_actuals.read_sql(as_of)
    names = {f"currency_{i}": c for i, c in enumerate(currencies)}
    code = " ".join(f"WHEN %({n})s THEN {i}" for i, n in enumerate(names))
    cells = pgbinary.read_arrays(
        conn,
        _ACTUAL_CELLS.format(cells=sql, currency_code=f"(CASE c.currency::text {code} ELSE 255 END)"),
        {**params, **names},
        _ACTUAL_KINDS,
        filters={"odd_currency": "odd_currency IS NOT NULL"},
    )
    cells["month"] = (cells["key"] & _LOW32) - 2**31
    key = cells["key"] >> 32
    cells["project_code"], cells["unknown_ref"] = _project_key_codes(conn, key >> 8)
    conn.execute("DROP TABLE tmp_forecast_project_code")
    cells["currency_code"] = key & 255
    cells["currency_code"][cells["currency_code"] == 255] = -1
    return _code_odd_values(cells, refs, currencies)


def _code_odd_values(cells: dict[str, Any], refs: list[str], currencies: list[str]) -> dict[str, Any]:
    """Codes for the cells' projects and currencies outside the forecast's (after its own; the same
    value, the same code); ``refs`` and ``currencies`` by code added to ``cells``."""
    import numpy as np

    for code_of, extra, values, name in (
        ("project_code", "unknown_ref", refs, "refs"),
        ("currency_code", "odd_currency", list(currencies), "currencies"),
    ):
        odd = cells[code_of] < 0
        if int(odd.sum()) != len(cells[extra]):
            raise RuntimeError(f"actuals read: {extra} does not match its rows")
        if odd.any():
            uniques, inverse = np.unique(np.array(cells[extra], dtype=object), return_inverse=True)
            cells[code_of][odd] = len(values) + inverse
            values.extend(str(u) for u in uniques)
        cells[name] = values
    return cells


def _sum_cells(key: Any, values: Any) -> tuple[Any, Any]:
    """Exact int64 sums of ``values`` per distinct ``key`` (sorted keys, their sums). The sort
    need not be stable (integer sums do not depend on the order of their terms): numpy's default
    sort of int64 is ~4x faster than its stable one on the actuals' ~600k keys."""
    import numpy as np

    order = np.argsort(key)
    key, values = key[order], values[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, dtype=np.int64)
    sums = np.add.reduceat(values, starts) if len(key) else values
    return key[starts], np.asarray(sums, dtype=np.int64)


def _actuals(
    conn: psycopg.Connection, as_of: date, projects: pd.DataFrame, settings: ForecastSettings
) -> pd.DataFrame:
    """Posted revenue and cost to date per project and month, sorted by both: the incrementally
    kept sums (:mod:`psa_erp_sync.forecast.actuals`), brought up to date first. Cost is converted
    per cell (project, month, cost currency; half-even) into the project's currency, for the
    projects known; revenue is kept for every project. The cells cross as integer codes."""
    return _actuals_frame(_caught_up_cells(conn, as_of, settings), projects, settings)


def _caught_up_cells(conn: psycopg.Connection, as_of: date, settings: ForecastSettings) -> dict[str, Any]:
    """The actuals brought up to date (in ``conn``'s transaction), then their cells read."""
    forecast_actuals.catch_up(conn)
    return _actual_cells(conn, as_of, ["", *settings.fx_rates])


def _actuals_frame(cells: dict[str, Any], projects: pd.DataFrame, settings: ForecastSettings) -> pd.DataFrame:
    """The actuals' frame (see :func:`_actuals`) from their cells and the projects."""
    import numpy as np
    import pandas as pd

    rate = {c: model.fx_factor(c, settings)[0] for c in settings.fx_rates}
    refs, currencies = cells["refs"], cells["currencies"]
    pcode, ccode = cells["project_code"], cells["currency_code"]
    month = cells["month"] + 2**31  # >= 0: the low 32 bits of a cell's key
    is_revenue = ccode == 0
    # Each project code's position in ``projects`` (-1: not a forecast project: no cost).
    position = pd.Index(projects["project_ref"]).get_indexer(pd.Index(refs, dtype=object))
    cost = ~is_revenue & (position[pcode] >= 0)
    if cost.any():
        odd = ccode[cost] > len(rate)
        if odd.any():
            raise ValueError(f"no FX rate configured for {currencies[int(ccode[cost][odd][0])]}")
        src = np.array([0, *rate.values()], dtype=np.int64)[ccode[cost]]
        # The project's currency's rate; -1 (no rate) fails below only for a project with cost.
        p_codes, p_currencies = pd.factorize(projects["currency"].to_numpy(dtype=object))
        p_rate = np.array([rate.get(str(c), -1) for c in p_currencies], dtype=np.int64)[p_codes]
        to = p_rate[position[pcode[cost]]]
        if (to < 0).any():
            raise ValueError("no FX rate configured for a project's currency")
        cost_minor = model.muldiv(cells["amount"][cost], src, to * 100)
    else:
        cost_minor = np.zeros(0, dtype=np.int64)
    width = np.int64(1 << 32)
    ref_of = np.empty(len(refs), dtype=object)
    ref_of[:] = refs
    # The known refs come sorted by the database (their codes): checking that costs less than sorting.
    in_order = len(refs) < 2 or bool((ref_of[:-1] < ref_of[1:]).all())
    by_rank = np.arange(len(refs)) if in_order else np.argsort(ref_of, kind="stable")
    rank = np.empty(len(refs), dtype=np.int64)
    rank[by_rank] = np.arange(len(refs))
    # Keyed by the ref's rank (as text) instead of its code, the sums come out ordered as pandas'
    # groupby orders its keys (by ref, then month): no sort of the joined keys.
    rev_key, rev = _sum_cells(
        rank[pcode[is_revenue]] * width + month[is_revenue], cells["amount"][is_revenue]
    )
    cost_key, costs = _sum_cells(rank[pcode[cost]] * width + month[cost], cost_minor)
    key, revenue_minor, cost_out = _joined_sums(rev_key, rev, cost_key, costs)
    frame = pd.DataFrame(
        {
            # The refs' dtype as pandas infers it (as the group keys were): ``str`` in pandas 3.
            "project_ref": pd.Index(ref_of[by_rank[key // width]] if len(key) else np.zeros(0, dtype=object)),
            "month": (key % width - 2**31).astype(np.int64),
            "revenue_minor": revenue_minor,
            "cost_minor": cost_out,
        }
    )
    return frame


def _joined_sums(rev_key: Any, rev: Any, cost_key: Any, costs: Any) -> tuple[Any, Any, Any]:
    """Two sums by sorted distinct keys joined as an outer ``pd.concat`` of them did: the revenue
    keys, then the keys with cost only; (keys, revenue, cost), 0 where a side has no cell."""
    import numpy as np

    at = np.searchsorted(rev_key, cost_key)
    shared = np.zeros(len(cost_key), dtype=bool)
    inside = at < len(rev_key)
    shared[inside] = rev_key[at[inside]] == cost_key[inside]
    cost_of_rev = np.zeros(len(rev_key), dtype=np.int64)
    cost_of_rev[at[shared]] = costs[shared]
    only = ~shared
    key = np.concatenate([rev_key, cost_key[only]])
    revenue = np.concatenate([rev, np.zeros(int(only.sum()), dtype=np.int64)])
    return key, revenue, np.concatenate([cost_of_rev, costs[only]])


def load_inputs(
    conn: psycopg.Connection, *, as_of: date, settings: ForecastSettings, prior_snapshot_id: str | None
) -> model.ForecastInputs:
    """The model's inputs as known at ``as_of``: actuals up to it, plans and pipeline after it.

    The schedule, and the projects with the small reads, are read on two more connections (each
    in a thread) while ``conn`` catches up and reads the actuals, so the server works on the
    three at once (when they see what ``conn`` sees: :func:`_reads_aside`); else in turn."""
    aside = _reads_aside(conn)
    pending_schedule = aside(lambda c: _schedule_read(c, as_of)) if aside else None
    pending_side = aside(lambda c: _side_reads(c, as_of, settings, prior_snapshot_id)) if aside else None
    if pending_side is None:
        side = _side_reads(conn, as_of, settings, prior_snapshot_id)
    cells = _caught_up_cells(conn, as_of, settings)
    if pending_side is not None:
        side = pending_side.result()
    actuals = _actuals_frame(cells, side.projects, settings)
    schedule = pending_schedule.result() if pending_schedule is not None else _schedule_read(conn, as_of)
    # Recognition as the revenue journals do it: past periods with the estimate they were
    # recognized with, change orders from their effective month, retainers over their dates.
    return model.ForecastInputs(
        as_of,
        side.projects,
        actuals,
        schedule.frame,
        side.capacity,
        side.milestones,
        side.opportunities,
        side.prior,
        estimates=side.estimates,
        contract_terms=side.contract_terms,
        journaled=side.journaled,
        billed_from_erp=side.billed_from_erp,
        schedule_codes=schedule,
    )


@dataclass(frozen=True)
class _SideReads:
    """The inputs that neither the actuals' catch-up writes nor the schedule gives."""

    projects: pd.DataFrame
    capacity: pd.DataFrame
    milestones: pd.DataFrame
    opportunities: pd.DataFrame
    prior: pd.DataFrame | None
    estimates: Any
    contract_terms: Any
    journaled: Any
    billed_from_erp: bool


def _side_reads(
    conn: psycopg.Connection, as_of: date, settings: ForecastSettings, prior_snapshot_id: str | None
) -> _SideReads:
    """The projects (with billed to date), capacity, milestones, open pipeline, the prior
    snapshot's balances and the revenue journals' history: tables the catch-up does not write."""
    m0 = model.month_index(as_of)
    m_year = _M_YEAR
    projects = _projects(conn, m0)
    # Billed to date from the ERP's invoices and credit memos once they are read back; before
    # that billing is unknown and the model keeps its schedule-based assumptions.
    billed_from_erp = billing_kpis.has_readback(conn)
    if billed_from_erp:
        projects["billed_minor"] = billing_kpis.billed_per_project(conn, as_of, projects, settings).to_numpy()
    milestones = _frame(
        conn,
        f"""
        SELECT project_ref, amount_minor, status, coalesce({m_year.format(d="due_date")}, %(m0)s),
               coalesce({m_year.format(d="completed_on")}, -1)
        FROM forecast.src_milestone
        """,
        {"m0": m0},
        model.MILESTONE_COLUMNS,
    )
    opportunities = _frame(
        conn,
        f"""
        SELECT 'opp-' || opportunity_id, practice, legal_entity, currency, stage, amount_minor,
               greatest(coalesce({m_year.format(d="expected_start")}, %(m0)s), %(m0)s), duration_months
        FROM forecast.src_opportunity WHERE NOT is_closed
        """,
        {"m0": m0},
        model.OPPORTUNITY_COLUMNS,
    )
    prior = None
    if prior_snapshot_id is not None:
        prior = _frame(
            conn,
            "SELECT project_ref, cum_revenue_minor FROM forecast.contract_balance WHERE snapshot_id = %(id)s",
            {"id": prior_snapshot_id},
            {"project_ref": "object", "cum_revenue_minor": "int64"},
        )
    return _SideReads(
        projects,
        _capacity(conn, as_of, settings.horizon_months),
        milestones,
        opportunities,
        prior,
        estimates=revenue_source.estimate_history(conn, m0),
        contract_terms=revenue_source.contract_terms(conn),
        journaled=revenue_source.journaled_revenue(conn, m0),
        billed_from_erp=billed_from_erp,
    )


def _reads_aside(conn: psycopg.Connection) -> Callable[[Callable[[Any], _T]], Future[_T]] | None:
    """A way to run a read on a connection of its own (a thread each), or None (read on ``conn``
    in turn) unless another connection sees exactly what ``conn`` would: ``conn``'s transaction
    has written nothing yet (no transaction id) and is READ COMMITTED, where each statement reads
    what is committed when it starts either way; and it holds no table lock stronger than a
    read's (a ``LOCK TABLE`` takes no transaction id, and the other connection would wait for it
    while this one waits for the other: a deadlock PostgreSQL cannot see). The reads aside read
    no table ``conn`` writes afterwards (the catch-up writes only the actuals' own tables)."""
    from concurrent.futures import ThreadPoolExecutor

    from psa_erp_sync.ods import connections

    row = conn.execute(
        "SELECT pg_current_xact_id_if_assigned() IS NULL AND current_setting('transaction_isolation')"
        " = 'read committed' AND NOT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid()"
        " AND locktype = 'relation' AND mode <> 'AccessShareLock')"
    ).fetchone()
    if not (row and row[0]):
        return None

    def submit(read: Callable[[Any], _T]) -> Future[_T]:
        def run() -> _T:
            with connections.connect_like(conn) as aside:
                return read(aside)

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forecast-read")
        try:
            return pool.submit(run)
        finally:
            pool.shutdown(wait=False)

    return submit


def _capacity(conn: psycopg.Connection, as_of: date, horizon: int) -> pd.DataFrame:
    """Available centi-hours per active person and month: weekly capacity x the plan's weeks
    (Mondays on or after ``as_of``) starting in that month, the same bucketing as the schedule."""
    import pandas as pd

    first = as_of + timedelta(days=(7 - as_of.weekday()) % 7)
    end = model.month_start(model.month_index(as_of) + horizon)
    weeks: dict[int, int] = {}
    day = first
    while day < end:
        weeks[model.month_index(day)] = weeks.get(model.month_index(day), 0) + 1
        day += timedelta(days=7)
    people = _frame(
        conn,
        "SELECT user_ref, weekly_capacity_seconds FROM forecast.src_person WHERE is_active",
        None,
        {"user_ref": "object", "seconds": "int64"},
    )
    if not len(people) or not weeks:
        return model.empty_frame(model.CAPACITY_COLUMNS)
    months = pd.DataFrame({"month": list(weeks), "weeks": list(weeks.values())})
    grid = people.merge(months, how="cross")
    # seconds / 3600 h x 100 = centi-hours: seconds / 36 (weekly capacities are whole minutes).
    grid["available_centi"] = grid["seconds"] * grid["weeks"] // 36
    return grid[list(model.CAPACITY_COLUMNS)].astype(model.CAPACITY_COLUMNS)


def previous_snapshot(conn: psycopg.Connection, scenario: str, exclude: str) -> str | None:
    """The latest snapshot of ``scenario`` other than ``exclude`` (for the catch-up and the chart)."""
    row = conn.execute(
        "SELECT snapshot_id FROM forecast.snapshot WHERE scenario = %s AND snapshot_id <> %s "
        "ORDER BY as_of DESC, created_at DESC, snapshot_id DESC LIMIT 1",
        (scenario, exclude),
    ).fetchone()
    return str(row[0]) if row else None


def as_date(value: datetime | date) -> date:
    return value.date() if isinstance(value, datetime) else value
