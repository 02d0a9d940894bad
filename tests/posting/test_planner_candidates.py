"""The planner's candidates, streamed, are exactly the rows of the former whole read.

The candidates' query (``planner._candidates_sql``) compares and sorts the records by key with
narrow rows, then reads each canonical row by its ``ctid`` and builds its JSON as it is fetched,
so the first candidates reach the planner at once. A frozen copy of the former query (every row
built as JSON before the sort) is run beside it in the same snapshot, over a ledger holding every
kind of record (new, corrected, parked, rejected, reversed, deleted, in flight, never approved),
for every scope the planner reads (all records, the queued ones, given ones, a parallel run's
shadow lane): the same rows, the same columns, the same order. Real PostgreSQL.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from psa_erp_sync.posting import ledger, planner
from psa_erp_sync.routing.route import Route
from tests.posting.test_incremental_plan import NOV, OCT, UK, US, Ods, _month, _periods, template, twins

pytestmark = pytest.mark.integration

__all__ = ["template", "twins"]  # the fixtures, imported for this module's tests


def _former_sql(record_type: str, scope: planner.ShadowScope | None, only: planner.Records) -> str:
    """The candidates' query before 2026-12-07 (planner.py at 38e3fcc), frozen."""
    source = planner.SOURCES[record_type]
    where = only.where()
    lane = "NOT shadow" + where
    desired = f"SELECT * FROM {source} WHERE approved AND NOT is_deleted{where}"
    if scope is not None:
        lane = "shadow AND legal_entity = ANY(%(entities)s)" + where
        desired = (
            f"SELECT d.* FROM {source} d JOIN unnest(%(entities)s::text[], %(firsts)s::date[], %(lasts)s::date[])"
            " AS w(legal_entity, first_day, last_day) ON d.legal_entity = w.legal_entity"
            f" AND d.spent_date BETWEEN w.first_day AND w.last_day WHERE d.approved AND NOT d.is_deleted{only.where('d')}"
        )
    return f"""
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
               CASE WHEN d.source_id IS NOT NULL
                    THEN (to_jsonb(d.*) - 'record') || jsonb_build_object('fx_rate', d.fx_rate::text, 'hours', d.hours::text)
               END AS desired,
               coalesce(led.n, 0) AS n, led.last_state, led.last_version, led.last_action,
               led.done_version, led.done_action,
               (SELECT pp.payload FROM ledger.posting_payload pp WHERE pp.idempotency_key = led.done_key) AS done_payload,
               led.base_action, (SELECT pp.payload FROM ledger.posting_payload pp WHERE pp.idempotency_key = led.base_key)
               AS base_payload, led.base_external_id, led.base_amount,
               led.corrections, led.corrected_amount, led.corrected_hours,
               led.base_target_erp, led.base_erp_account, led.base_route_version,
               led.correction_erps, led.correction_amounts, led.correction_hours
        FROM desired d FULL JOIN led USING (source_system, source_id)
        WHERE (led.last_state IS NULL OR led.last_state NOT IN ('pending', 'sent', 'ambiguous'))
          AND (
                (d.source_id IS NOT NULL AND (led.done_action IS NULL OR led.done_action = 'reverse'))
             OR (d.source_id IS NOT NULL AND led.done_action IN ('post', 'adjust') AND led.done_version <> d.version_hash)
             OR (d.source_id IS NULL AND led.done_action IN ('post', 'adjust'))
          )
        ORDER BY 1, 2
        """


def _a_month_of_every_kind(ods: Ods) -> None:
    """Postings confirmed, corrected in a closed period, parked, rejected, reversed, in flight;
    then changes not planned yet (the candidates)."""
    _month(ods)
    ods.plan(_periods())
    ods.settle()
    ods.entry(1, US, OCT, "v2-1", 1_500)  # a correcting journal (October closed, US)
    ods.entry(3, UK, OCT, "v2-3", 3_500)  # parked (October closed, UK)
    ods.entry(5, US, NOV, "v2-5", 5_500)  # adjust
    ods.entry(6, UK, NOV, "v1-6", 6_000, deleted=True)  # reverse
    ods.entry(8, UK, NOV, "v1-8", 8_000)  # post
    ods.plan(_periods(frozenset({f"{US}-2026-10", f"{UK}-2026-10"})))
    ods.settle("rejected", 8)
    ods.settle("sent", 5)  # in flight: not a candidate
    ods.settle()
    ods.entry(1, US, OCT, "v3-1", 1_700)  # a further change of a corrected entry
    ods.entry(2, US, OCT, "v1-2", 2_000, approved=False)  # unapproved after posting: reversal
    ods.entry(4, UK, OCT, "v2-4", 4_400)
    ods.entry(5, US, NOV, "v3-5", 5_900)  # changed while in flight
    ods.entry(9, US, NOV, "v1-9", 9_000)  # new
    ods.entry(10, UK, NOV, "v1-10", 1_000, approved=False)  # never approved: nothing
    ods.release()  # 8 rejected: planned again


def _rows(conn: psycopg.Connection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def test_the_streamed_candidates_are_the_former_rows_in_every_scope(twins: tuple[Ods, Ods]) -> None:
    ods, _ = twins
    record_type = "timebill"
    _a_month_of_every_kind(ods)
    route = Route(legal_entity=UK, erp="sap", account=None, version=1, connection="sap_default")
    shadow = planner.ShadowScope(((UK, date(2026, 10, 1), date(2026, 11, 30), route),))
    # a shadow posting held by the secondary, so the shadow lane has ledger rows too
    ods.conn.execute("UPDATE ledger.posting SET shadow = true WHERE source_id = '4' AND state = 'confirmed'")
    scopes: list[tuple[planner.ShadowScope | None, planner.Records]] = [
        (None, planner.EVERY),
        (None, planner.Records("changed")),
        (None, planner.Records("records", "psa", ("1", "2", "5", "6", "9", "404"))),
        (shadow, planner.EVERY),
        (shadow, planner.Records("records", "psa", ("3", "4", "6"))),
    ]
    with psycopg.connect(ods.dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        compared = 0
        for scope, only in scopes:
            sql, params = planner._candidates_sql(record_type, scope, only)
            params = {"rt": record_type, **params}
            former = _former_sql(record_type, scope, only)
            new, old = _rows(conn, sql, params), _rows(conn, former, params)
            assert new == old, (scope, only)
            assert [list(r) for r in new] == [list(r) for r in old]  # the same columns, in order
            compared += len(new)
    assert compared >= 10, compared  # the scenario has candidates of every kind
