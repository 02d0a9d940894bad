"""The planner restricted to some records plans for them exactly what a full plan does.

Two databases, the same steps in both (canonical rows written, postings confirmed, sent,
rejected, released for replay, periods closed and reopened): one plans in full every time, the
other plans the records queued since it last looked (migration 0047) or given ``source_ids``.
After every step both ledgers (keys, actions, states, periods, routes, payloads) and exception
queues must be equal. Real PostgreSQL; the ERP's answers are written into the ledger directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import psycopg
import pytest

from psa_erp_sync.config import Config, load_config
from psa_erp_sync.posting import planner
from psa_erp_sync.posting.periods import PeriodBook
from psa_erp_sync.routing.route import Router
from tests.routing.conftest import router_of

pytestmark = pytest.mark.integration

MONTHS = [(date(2026, 10, 1), date(2026, 10, 31)), (date(2026, 11, 1), date(2026, 11, 30))]
OCT, NOV = date(2026, 10, 15), date(2026, 11, 10)
UK, US = "LE-UK1", "LE-US1"  # closed-period policy park / post_to_first_open


def _periods(closed: frozenset[str] = frozenset()) -> PeriodBook:
    return PeriodBook.from_rows(
        {
            "externalid": f"{e}-{start:%Y-%m}",
            "subsidiary": e,
            "startdate": start,
            "enddate": end,
            "closed": "T" if f"{e}-{start:%Y-%m}" in closed else "F",
        }
        for e in (UK, US)
        for start, end in MONTHS
    )


@pytest.fixture(scope="module")
def template(pg_dsn: str) -> Iterator[str]:
    """A migrated, empty database to copy (``CREATE DATABASE ... TEMPLATE``): nobody connects to it."""
    from psa_erp_sync.ods import migrate

    name = f"pes_test_plan_tpl_{os.getpid()}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname=name)
    migrate.apply(dsn)
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Ods:
    """One of the twin databases, with the steps of a month written the same way into both."""

    def __init__(self, dsn: str, router: Router, config: Config) -> None:
        self.dsn, self.router, self.config = dsn, router, config
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.runs = 0

    def entry(self, sid: int, entity: str, day: date, version: str, cents: int, **flags: bool) -> None:
        approved, deleted = flags.get("approved", True), flags.get("deleted", False)
        self.conn.execute(
            """
            INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,
                project_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved,
                is_deleted, fingerprint, source_updated_at, record)
            VALUES ('psa', %s, %s, %s, '7', '42', %s, 1.00, true, %s, %s, %s, %s, %s, %s, now(), '{}'::jsonb)
            ON CONFLICT (source_system, source_id) DO UPDATE SET version_hash = EXCLUDED.version_hash,
                amount_minor = EXCLUDED.amount_minor, bill_rate_minor = EXCLUDED.bill_rate_minor,
                approved = EXCLUDED.approved, is_deleted = EXCLUDED.is_deleted
            """,
            (
                str(sid),
                version,
                day,
                entity,
                cents,
                cents,
                "GBP" if entity == UK else "USD",
                approved,
                deleted,
                version,
            ),
        )

    def plan(self, periods: PeriodBook, **kwargs: Any) -> dict[str, Any]:
        self.runs += 1
        # A connection of its own, not in autocommit, as the posting service's planner has.
        with psycopg.connect(self.dsn) as conn:
            return planner.plan(
                conn,
                record_type="timebill",
                config=self.config,
                periods=periods,
                dag_run_id=f"r{self.runs}",
                router=self.router,
                **kwargs,
            ).as_dict()

    def settle(
        self, state: str = "confirmed", source_id: int | None = None, *, from_: str = "pending"
    ) -> None:
        """The ERP's answer to postings in ``from_`` (all, or ``source_id``'s)."""
        which = "" if source_id is None else " AND source_id = %s"
        self.conn.execute(
            f"UPDATE ledger.posting SET state = %s WHERE state = %s{which}",
            (state, from_) if source_id is None else (state, from_, str(source_id)),
        )

    def release(self) -> None:
        """A replay: every rejected or parked posting released (the record is planned again)."""
        self.conn.execute(
            "UPDATE ledger.posting SET state = 'superseded' WHERE state IN ('rejected', 'parked')"
        )

    def ledger(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            """
            SELECT p.source_id, p.idempotency_key, p.action, p.state, p.period, p.target_erp, p.erp_account,
                   p.corrects, p.amount_minor, p.external_id, pp.payload
            FROM ledger.posting p LEFT JOIN ledger.posting_payload pp USING (idempotency_key)
            ORDER BY p.source_id, p.seq
            """
        ).fetchall()

    def items(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT source_id, source_version, kind, reason_code, status, detail FROM exceptions.item"
            " ORDER BY source_id, id"
        ).fetchall()

    def queued(self) -> list[str]:
        rows = self.conn.execute("SELECT DISTINCT source_id FROM ledger.plan_queue ORDER BY 1").fetchall()
        return [r[0] for r in rows]


@pytest.fixture
def twins(pg_dsn: str, template: str) -> Iterator[tuple[Ods, Ods]]:
    """(full, incremental): two fresh copies of the migrated template."""
    names = [f"pes_test_plan_{os.getpid()}_{side}" for side in ("full", "inc")]
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    router, config = router_of(), load_config()
    pair = tuple(Ods(psycopg.conninfo.make_conninfo(pg_dsn, dbname=n), router, config) for n in names)
    yield pair  # type: ignore[misc]
    for ods in pair:
        ods.conn.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _both(twins: tuple[Ods, Ods], step: Callable[[Ods], Any]) -> None:
    for ods in twins:
        step(ods)


def _assert_same(full: Ods, inc: Ods) -> None:
    assert inc.ledger() == full.ledger()
    assert inc.items() == full.items()


def _month(ods: Ods) -> None:
    for sid, entity, day in [
        (1, US, OCT),
        (2, US, OCT),
        (3, UK, OCT),
        (4, UK, OCT),
        (5, US, NOV),
        (6, UK, NOV),
    ]:
        ods.entry(sid, entity, day, f"v1-{sid}", 1_000 * sid)
    ods.entry(7, US, NOV, "v1-7", 7_000, approved=False)  # not approved yet: nothing to post


def test_an_incremental_plan_decides_as_the_full_plan_through_a_month(twins: tuple[Ods, Ods]) -> None:
    full, inc = twins
    _both(twins, _month)
    first = inc.plan(_periods())
    full.plan(_periods(), full=True)
    assert first["scope"] == "full"  # no full plan yet since migration 0047: the queue is not trusted
    assert first["planned"]["post"] == 6
    _assert_same(full, inc)
    assert inc.queued() == []
    _both(twins, lambda o: o.settle())

    # Inserts, corrections, reversals; October closes first (corrections of what it holds).
    def changes(ods: Ods) -> None:
        ods.entry(7, US, NOV, "v1-7", 7_000)  # approved: post
        ods.entry(8, UK, NOV, "v1-8", 8_000)  # new: post
        ods.entry(1, US, OCT, "v2-1", 1_500)  # US, October closed: correcting journal in November
        ods.entry(3, UK, OCT, "v2-3", 3_500)  # UK, October closed: parked
        ods.entry(5, US, NOV, "v2-5", 5_500)  # open period: adjust
        ods.entry(2, US, OCT, "v1-2", 2_000, approved=False)  # unapproved: reversal by correcting journal
        ods.entry(6, UK, NOV, "v1-6", 6_000, deleted=True)  # deleted: reverse

    _both(twins, changes)
    closed = _periods(frozenset({f"{US}-2026-10", f"{UK}-2026-10"}))
    second = inc.plan(closed)
    full.plan(closed, full=True)
    assert second["scope"] == "changed"
    assert second["planned"] == {"post": 2, "adjust": 3, "reverse": 2}, second
    _assert_same(full, inc)

    # The ERP answers: one rejected, the rest confirmed; then a replay with October reopened.
    _both(twins, lambda o: o.settle("rejected", 7))
    _both(twins, lambda o: o.settle())
    assert inc.plan(closed)["planned"] == {"post": 0, "adjust": 0, "reverse": 0}  # nothing changed
    full.plan(closed, full=True)
    _both(twins, lambda o: o.release())
    third = inc.plan(_periods())
    full.plan(_periods(), full=True)
    assert third["scope"] == "changed" and third["planned"]["post"] + third["planned"]["adjust"] == 2, third
    _assert_same(full, inc)
    assert inc.queued() == []


def test_a_record_changed_while_its_posting_is_in_flight_is_planned_once_it_settles(
    twins: tuple[Ods, Ods],
) -> None:
    full, inc = twins
    _both(twins, _month)
    _both(twins, lambda o: o.plan(_periods(), full=o is full))
    _both(twins, lambda o: o.settle("sent", 5))  # 5 is being sent
    _both(twins, lambda o: o.entry(5, US, NOV, "v2-5", 5_500))
    skipped = inc.plan(_periods())
    full.plan(_periods(), full=True)
    assert skipped["scope"] == "changed" and skipped["planned"]["adjust"] == 0
    assert inc.queued() == ["5"]  # kept: looked at again once its posting settles
    _both(twins, lambda o: o.settle("confirmed", from_="sent"))
    _both(twins, lambda o: o.settle())
    after = inc.plan(_periods())
    full.plan(_periods(), full=True)
    assert after["planned"]["adjust"] == 1
    _assert_same(full, inc)
    assert inc.queued() == []


def test_a_plan_interrupted_after_the_change_was_queued_plans_it_on_the_next_pass(
    twins: tuple[Ods, Ods],
) -> None:
    full, inc = twins
    _both(twins, _month)
    _both(twins, lambda o: o.plan(_periods(), full=o is full))
    _both(twins, lambda o: o.settle())
    _both(twins, lambda o: [o.entry(sid, US, NOV, f"v2-{sid}", 100 * sid) for sid in (1, 2, 5)])

    def crash(postings: list[Any]) -> None:
        raise RuntimeError("the worker died after the first chunk committed")

    before = len(inc.ledger())
    with pytest.raises(RuntimeError):
        inc.plan(_periods(), chunk=1, on_chunk=crash)
    assert len(inc.ledger()) == before + 1  # the first chunk committed before it was handed on
    assert inc.queued() == ["1", "2", "5"]  # nothing dequeued: the plan did not finish
    again = inc.plan(_periods())
    full.plan(_periods(), full=True)
    assert again["scope"] == "changed"
    _assert_same(full, inc)
    assert inc.queued() == ["1"]  # its posting of the crashed pass is pending (in flight)
    _both(twins, lambda o: o.settle())
    assert inc.plan(_periods())["planned"] == {"post": 0, "adjust": 0, "reverse": 0}
    assert inc.queued() == []


def test_a_plan_of_given_records_decides_for_them_as_the_full_plan(twins: tuple[Ods, Ods]) -> None:
    full, inc = twins
    _both(twins, _month)
    _both(twins, lambda o: o.plan(_periods(), full=True))
    _both(twins, lambda o: o.settle())
    closed = _periods(frozenset({f"{US}-2026-10", f"{UK}-2026-10"}))

    def changes(ods: Ods) -> None:
        ods.entry(1, US, OCT, "v2-1", 1_500)  # a correcting journal
        ods.entry(3, UK, OCT, "v2-3", 3_500)  # parked
        ods.entry(5, US, NOV, "v2-5", 5_500)  # adjust
        ods.entry(6, UK, NOV, "v1-6", 6_000, deleted=True)  # reverse
        ods.entry(9, US, NOV, "v1-9", 9_000)  # post

    _both(twins, changes)
    some = inc.plan(closed, source_ids=["1", "3", "6", "9", "404"])
    full.plan(closed, full=True)
    assert some["scope"] == "records"
    assert some["planned"] == {"post": 1, "adjust": 2, "reverse": 1}, some
    mine = {"1", "3", "6", "9"}
    assert [r for r in inc.ledger() if r[0] in mine] == [r for r in full.ledger() if r[0] in mine]
    assert [r for r in inc.items() if r[0] in mine] == [r for r in full.items() if r[0] in mine]
    assert all(r[2] != "adjust" for r in inc.ledger() if r[0] == "5")  # not given: not planned
    rest = inc.plan(closed)  # the queue still holds every change: 5 now, the others agree
    assert rest["scope"] == "changed" and rest["planned"] == {"post": 0, "adjust": 1, "reverse": 0}
    _assert_same(full, inc)


def test_a_disabled_queue_trigger_makes_the_plan_full_until_a_full_plan_with_it_enabled(
    twins: tuple[Ods, Ods],
) -> None:
    _, inc = twins
    _month(inc)
    assert inc.plan(_periods())["scope"] == "full"
    assert inc.plan(_periods())["scope"] == "changed"
    inc.settle()
    inc.conn.execute("ALTER TABLE canonical.time_entry DISABLE TRIGGER time_entry_plan_update")
    inc.entry(1, US, OCT, "v2-1", 1_500)  # not queued
    assert inc.queued() == []
    missed = inc.plan(_periods())
    assert missed["scope"] == "full" and missed["planned"]["adjust"] == 1
    inc.conn.execute("ALTER TABLE canonical.time_entry ENABLE TRIGGER time_entry_plan_update")
    assert inc.plan(_periods())["scope"] == "full"  # what happened while it was off is unknown
    assert inc.plan(_periods())["scope"] == "changed"
