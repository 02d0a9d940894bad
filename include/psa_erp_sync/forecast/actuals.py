"""The forecast's actuals per project and month, kept incrementally: each source record's
contribution (posted revenue, cost at its person's rate) and their sums per project and month.

A refresh used to derive a year of actuals from the whole ledger and every canonical entry. Now
:func:`catch_up` re-derives only the source records changed since the last refresh (queued in
``forecast.actual_change`` by the triggers of migration 0043, plus the time of every person whose
cost rates changed), with the same SQL the full derivation uses, and :func:`read` returns the sums
up to an as-of date. The queue rows it consumes, the contributions, the sums and the rate
fingerprints change in one transaction: a crash leaves them as they were and the queue full.

What counts, exactly as the full derivation (``tests/forecast/test_actuals_incremental.py``):

- revenue: approved, undeleted time entries (billable ones with their amount, others 0) and
  approved, billable, undeleted expenses whose latest confirmed or resolved, non-shadow posting of
  their record type is a ``post`` or ``adjust``, with that posting's amount;
- cost: approved, undeleted time entries of a person in ``forecast.src_person``: centi-hours x the
  HR rate effective on the entry's day (``hr.cost_rate`` via ``hr.worker.psa_user_id``), else the
  PSA person's rate, in that rate's currency.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

# The month index (year * 12 + month - 1) of a date column, as SQL: M_YEAR.format(d="column").
M_YEAR = "(extract(year FROM {d})::int * 12 + extract(month FROM {d})::int - 1)"

# HR cost rates as intervals per PSA user: what ``hr.psa_user_cost_rate_on(user_ref, day)`` returns
# for a day in [effective_from, next_from), set-based. Joined by user_ref (a hash join), the day
# picks the one interval holding it (an employee's effective dates are unique, one worker per PSA
# user). Calling the function per row instead scanned hr.worker for each row (its
# ``psa_user_id::text`` cannot use the index): 10.8 ms a row with 16,666 workers, 217 s for
# 20,000 schedule rows.
HR_RATES = """
    SELECT w.psa_user_id::text AS user_ref, r.effective_from, r.rate_minor, r.currency,
           lead(r.effective_from) OVER (PARTITION BY r.employee_id ORDER BY r.effective_from) AS next_from
    FROM hr.worker w JOIN hr.cost_rate r ON r.employee_id = w.employee_id
    WHERE w.psa_user_id IS NOT NULL
"""
# The join of a row (user column ``u``, day column ``d``) to the HR rate effective that day.
HR_RATE_ON = (
    "LEFT JOIN ({rates}) h ON h.user_ref = {u} AND h.effective_from <= {d}"
    " AND (h.next_from IS NULL OR {d} < h.next_from)"
)

# Record types of the ledger per canonical table (the kinds of forecast.actual_source).
RECORD_TYPES = {"time_entry": "timebill", "expense_entry": "expensereport"}

_CHANGED = "tmp_actual_changed"
_DELTA = "tmp_actual_delta"


def _latest_posting(kind: str, only_changed: bool) -> str:
    """The latest confirmed or resolved, non-shadow posting of each source record of ``kind``."""
    changed = (
        f"JOIN {_CHANGED} c ON c.kind = '{kind}' AND c.source_system = p.source_system"
        " AND c.source_id = p.source_id"
        if only_changed
        else ""
    )
    return f"""
        SELECT DISTINCT ON (p.source_system, p.source_id) p.source_system, p.source_id, p.action, p.amount_minor
        FROM ledger.posting p {changed}
        WHERE p.record_type = '{RECORD_TYPES[kind]}' AND p.state IN ('confirmed', 'resolved') AND NOT p.shadow
        ORDER BY p.source_system, p.source_id, p.seq DESC
    """


def _derived(only_changed: bool) -> str:
    """Each approved, undeleted source record's contribution (all records, or the changed ones)."""

    def changed(alias: str, kind: str) -> str:
        if not only_changed:
            return ""
        return (
            f"JOIN {_CHANGED} c ON c.kind = '{kind}' AND c.source_system = {alias}.source_system"
            f" AND c.source_id = {alias}.source_id"
        )

    return f"""
        SELECT 'time_entry', t.source_system, t.source_id, t.project_ref, t.spent_date,
               {M_YEAR.format(d="t.spent_date")}, t.user_ref,
               CASE WHEN lp.action IN ('post', 'adjust')
                    THEN CASE WHEN t.billable THEN coalesce(lp.amount_minor, 0) ELSE 0 END END,
               CASE WHEN pe.user_ref IS NOT NULL THEN coalesce(h.currency, pe.currency) END,
               CASE WHEN pe.user_ref IS NOT NULL
                    THEN round(t.hours * 100)::bigint * coalesce(h.rate_minor, pe.cost_rate_minor) END
        FROM canonical.time_entry t {changed("t", "time_entry")}
        LEFT JOIN ({_latest_posting("time_entry", only_changed)}) lp
               ON lp.source_system = t.source_system AND lp.source_id = t.source_id
        LEFT JOIN forecast.src_person pe ON pe.user_ref = t.user_ref
        {HR_RATE_ON.format(rates=HR_RATES, u="t.user_ref", d="t.spent_date")}
        WHERE t.approved AND NOT t.is_deleted
        UNION ALL
        SELECT 'expense_entry', e.source_system, e.source_id, e.project_ref, e.spent_date,
               {M_YEAR.format(d="e.spent_date")}, NULL, coalesce(lp.amount_minor, 0), NULL, NULL
        FROM canonical.expense_entry e {changed("e", "expense_entry")}
        JOIN ({_latest_posting("expense_entry", only_changed)}) lp
             ON lp.source_system = e.source_system AND lp.source_id = e.source_id
        WHERE lp.action IN ('post', 'adjust') AND e.approved AND e.billable AND NOT e.is_deleted
    """


_SOURCE_COLUMNS = (
    "kind, source_system, source_id, project_ref, spent_date, month, user_ref, revenue_minor,"
    " cost_currency, cost_centi"
)
_CELL_COLUMNS = "project_ref, month, currency, revenue_minor, revenue_n, cost_centi, cost_n"


def _cells(source: str, sign: int) -> str:
    """The contributions of ``source`` (rows shaped like forecast.actual_source) as sum cells:
    revenue under currency '', cost under its currency; ``sign`` -1 takes them away."""
    return f"""
        SELECT project_ref, month, '', {sign} * revenue_minor, {sign}, 0::bigint, 0 FROM {source}
        WHERE revenue_minor IS NOT NULL
        UNION ALL
        SELECT project_ref, month, cost_currency, 0::bigint, 0, {sign} * cost_centi, {sign} FROM {source}
        WHERE cost_currency IS NOT NULL
    """


# Each person's cost rates as a fingerprint: the PSA rate and currency, and HR's dated rates.
_RATE_FINGERPRINTS = """
    WITH hr_rates AS (
        SELECT w.psa_user_id::text AS user_ref,
               string_agg(concat_ws('|', r.effective_from, r.rate_minor, r.currency), ','
                          ORDER BY r.effective_from) AS rates
        FROM hr.worker w JOIN hr.cost_rate r ON r.employee_id = w.employee_id
        WHERE w.psa_user_id IS NOT NULL GROUP BY 1
    )
    SELECT p.user_ref, md5(concat_ws('|', p.currency, p.cost_rate_minor, hr_rates.rates))
    FROM forecast.src_person p LEFT JOIN hr_rates ON hr_rates.user_ref = p.user_ref
"""


def _temp_tables(conn: psycopg.Connection) -> None:
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_CHANGED} (kind text, source_system text, source_id text,"
        " PRIMARY KEY (kind, source_system, source_id))"
    )
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_DELTA} (project_ref text, month integer, currency text,"
        " revenue_minor bigint, revenue_n integer, cost_centi bigint, cost_n integer)"
    )
    conn.execute(f"TRUNCATE {_CHANGED}, {_DELTA}")


def catch_up(conn: psycopg.Connection) -> dict[str, Any]:
    """Bring the actuals up to date with the sources: re-derive the queued source records and the
    time of persons whose rates changed, or everything when they were never built (or a source
    was truncated). One transaction (a savepoint inside the caller's); concurrent catch-ups wait
    for each other. Returns what it did: ``rebuilt``, ``queued`` (records the triggers queued),
    ``rate_sources`` (records re-priced: their person's rates changed), ``rederived`` (records
    derived again: both, once each; every record when rebuilt)."""
    with conn.transaction():
        # Before any query: every statement below then sees what committed before this lock.
        conn.execute("LOCK TABLE forecast.actual_state IN SHARE ROW EXCLUSIVE MODE")
        built = conn.execute("SELECT 1 FROM forecast.actual_state").fetchone() is not None
        _temp_tables(conn)
        # The queue first, then the derivation (a later snapshot): a change that commits in between
        # stays queued and is derived again next time, from the state then (idempotent).
        queued = conn.execute(
            f"""
            WITH taken AS (DELETE FROM forecast.actual_change RETURNING kind, source_system, source_id)
            INSERT INTO {_CHANGED} SELECT DISTINCT kind, source_system, source_id FROM taken
            """
        ).rowcount
        if not built:
            return _rebuild(conn, queued)
        rate_sources = _queue_repriced(conn)
        rederived = _apply_changes(conn)
        conn.execute("UPDATE forecast.actual_state SET caught_up_at = now()")
    outcome = {"rebuilt": False, "queued": queued, "rate_sources": rate_sources, "rederived": rederived}
    log.info("forecast actuals caught up: %s", outcome)
    return outcome


def _queue_repriced(conn: psycopg.Connection) -> int:
    """Inside :func:`catch_up`: queue the time of persons whose cost rates changed since it was
    priced (all of it), and note their rates as now. Returns the records queued."""
    # Persons whose rates changed since their time was priced: all their time again.
    moved = conn.execute(
        f"""
        SELECT coalesce(c.user_ref, s.user_ref), c.fingerprint
        FROM ({_RATE_FINGERPRINTS}) c (user_ref, fingerprint)
        FULL JOIN forecast.actual_cost_rate s ON s.user_ref = c.user_ref
        WHERE c.fingerprint IS DISTINCT FROM s.fingerprint
        """
    ).fetchall()
    rate_sources = 0
    if moved:
        users = [user for user, _ in moved]
        rate_sources = conn.execute(
            f"INSERT INTO {_CHANGED} SELECT kind, source_system, source_id FROM forecast.actual_source"
            " WHERE kind = 'time_entry' AND user_ref = ANY(%s) ON CONFLICT DO NOTHING",
            (users,),
        ).rowcount
        conn.execute("DELETE FROM forecast.actual_cost_rate WHERE user_ref = ANY(%s)", (users,))
        with conn.cursor().copy("COPY forecast.actual_cost_rate (user_ref, fingerprint) FROM STDIN") as copy:
            for row in moved:
                if row[1] is not None:
                    copy.write_row(row)
    return rate_sources


def _key_projects(conn: psycopg.Connection, source: str) -> None:
    """Inside :func:`catch_up` (under its lock): give every project ref of ``source`` that has none
    yet its key in forecast.actual_project_key (migration 0065), before cells are written with it.
    Only the missing refs are inserted, so the identity's keys stay dense."""
    conn.execute(
        f"""
        INSERT INTO forecast.actual_project_key (project_ref)
        SELECT DISTINCT s.project_ref FROM {source} s
        WHERE NOT EXISTS (SELECT 1 FROM forecast.actual_project_key k WHERE k.project_ref = s.project_ref)
        ORDER BY 1
        """
    )


def _apply_changes(conn: psycopg.Connection) -> int:
    """Inside :func:`catch_up`: replace the queued records' contributions with their derivation
    now and move the sums by the difference. Returns the records re-derived."""
    conn.execute(f"ANALYZE {_CHANGED}")
    conn.execute(
        f"""
        WITH old AS (
            DELETE FROM forecast.actual_source a USING {_CHANGED} c
            WHERE a.kind = c.kind AND a.source_system = c.source_system AND a.source_id = c.source_id
            RETURNING a.*
        )
        INSERT INTO {_DELTA} ({_CELL_COLUMNS}) {_cells("old", -1)}
        """
    )
    conn.execute(
        f"""
        WITH new AS (
            INSERT INTO forecast.actual_source ({_SOURCE_COLUMNS}) {_derived(only_changed=True)}
            RETURNING *
        )
        INSERT INTO {_DELTA} ({_CELL_COLUMNS}) {_cells("new", 1)}
        """
    )
    _key_projects(conn, _DELTA)
    conn.execute(
        f"""
        INSERT INTO forecast.actual_month AS a (project_key, {_CELL_COLUMNS})
        SELECT k.project_key, d.* FROM (
            SELECT project_ref, month, currency, sum(revenue_minor), sum(revenue_n), sum(cost_centi), sum(cost_n)
            FROM {_DELTA} GROUP BY 1, 2, 3
        ) d JOIN forecast.actual_project_key k ON k.project_ref = d.project_ref
        ON CONFLICT (project_ref, month, currency) DO UPDATE SET
            revenue_minor = a.revenue_minor + EXCLUDED.revenue_minor,
            revenue_n = a.revenue_n + EXCLUDED.revenue_n,
            cost_centi = a.cost_centi + EXCLUDED.cost_centi,
            cost_n = a.cost_n + EXCLUDED.cost_n
        """
    )
    conn.execute(
        f"""
        DELETE FROM forecast.actual_month a
        USING (SELECT DISTINCT project_ref, month, currency FROM {_DELTA}) d
        WHERE a.project_ref = d.project_ref AND a.month = d.month AND a.currency = d.currency
          AND a.revenue_n = 0 AND a.cost_n = 0
        """
    )
    row = conn.execute(f"SELECT count(*) FROM {_CHANGED}").fetchone()
    return int(row[0]) if row else 0


def _rebuild(conn: psycopg.Connection, queued: int) -> dict[str, Any]:
    """Inside :func:`catch_up`'s transaction: every contribution and sum derived again."""
    conn.execute("DELETE FROM forecast.actual_source")
    conn.execute("DELETE FROM forecast.actual_month")
    conn.execute("DELETE FROM forecast.actual_cost_rate")
    # The rates as read before the derivation reads them: a rate that changes in between makes
    # the next catch-up price that person's time again (never the reverse, which would miss it).
    conn.execute(f"INSERT INTO forecast.actual_cost_rate (user_ref, fingerprint) {_RATE_FINGERPRINTS}")
    rows = conn.execute(
        f"INSERT INTO forecast.actual_source ({_SOURCE_COLUMNS}) {_derived(only_changed=False)}"
    ).rowcount
    _key_projects(conn, "forecast.actual_source")
    conn.execute(
        f"""
        INSERT INTO forecast.actual_month (project_key, {_CELL_COLUMNS})
        SELECT k.project_key, d.* FROM (
            SELECT project_ref, month, currency, sum(revenue_minor), sum(revenue_n), sum(cost_centi), sum(cost_n)
            FROM ({_cells("forecast.actual_source", 1)}) c (project_ref, month, currency, revenue_minor,
                  revenue_n, cost_centi, cost_n)
            GROUP BY 1, 2, 3
        ) d JOIN forecast.actual_project_key k ON k.project_ref = d.project_ref
        """
    )
    conn.execute(
        "INSERT INTO forecast.actual_state (built_at, caught_up_at) VALUES (now(), now())"
        " ON CONFLICT (singleton) DO UPDATE SET built_at = now(), caught_up_at = now()"
    )
    outcome = {"rebuilt": True, "queued": queued, "rate_sources": 0, "rederived": rows}
    log.info("forecast actuals rebuilt: %s", outcome)
    return outcome


def rebuild(conn: psycopg.Connection) -> dict[str, Any]:
    """Derive every contribution again (after a repair of the sources outside the flows)."""
    with conn.transaction():
        conn.execute("LOCK TABLE forecast.actual_state IN SHARE ROW EXCLUSIVE MODE")
        conn.execute("DELETE FROM forecast.actual_state")
    return catch_up(conn)


def read_sql(as_of: date) -> tuple[str, dict[str, Any]]:
    """The sums up to ``as_of`` as (sql, params): whole months from forecast.actual_month, the
    as-of month from the source records dated up to that day. Columns: ``project_key`` (of
    forecast.actual_project_key; the whole months' cells carry it, so the ~1.2 M of them at 50k x 12
    join nothing: the join on the text ref cost ~0.5 s of the server's CPU, docs/performance.md
    "perf-forecast12"), ``month``, ``currency`` ('' is revenue, only cells with a record counted;
    any other is cost), ``revenue_minor``, ``revenue_n``, ``cost_centi``, ``cost_n``. A source
    record whose ref has no key (never: the catch-up keys every ref it sums) gets key -1. The as-of
    month's sums are cast to the table's types (``sum(bigint)`` is numeric, ``count`` bigint): else
    the union's columns are numeric and every one of the whole-month cells is converted to numeric
    and back (~0.2 s of the server's CPU at 50k x 12, docs/performance.md "perf-forecast10")."""
    from psa_erp_sync.forecast.model import month_index

    m = month_index(as_of)
    as_of_month = """
        FROM forecast.actual_source s LEFT JOIN forecast.actual_project_key k ON k.project_ref = s.project_ref
        WHERE s.month = %(m)s AND s.spent_date <= %(as_of)s"""
    sql = f"""
        SELECT project_key, month, currency, revenue_minor, revenue_n, cost_centi, cost_n
        FROM forecast.actual_month WHERE month < %(m)s
        UNION ALL
        SELECT coalesce(k.project_key, -1), s.month, '', sum(s.revenue_minor)::bigint, count(*)::integer,
               0::bigint, 0
        {as_of_month} AND s.revenue_minor IS NOT NULL GROUP BY 1, 2
        UNION ALL
        SELECT coalesce(k.project_key, -1), s.month, s.cost_currency, 0::bigint, 0, sum(s.cost_centi)::bigint,
               count(*)::integer
        {as_of_month} AND s.cost_currency IS NOT NULL GROUP BY 1, 2, 3
    """
    return sql, {"m": m, "as_of": as_of}
