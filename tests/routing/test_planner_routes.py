"""The planner stamps every posting with its route, by posting date, and corrections per policy.

Real PostgreSQL: canonical rows and ledger states written here, then the real planner. The routing
file moves LE-UK1 (closed-period policy ``park``) and LE-US1 (``post_to_first_open``) from NetSuite
to SAP on 2027-01-01; the ERP's periods are a PeriodBook built here.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from psa_erp_sync.config import load_config
from psa_erp_sync.posting import planner
from psa_erp_sync.posting.periods import PeriodBook
from psa_erp_sync.routing.route import Router
from tests.routing.conftest import router_of, uk_cutover

pytestmark = pytest.mark.integration

MONTHS = [
    (date(2026, 11, 1), date(2026, 11, 30)),
    (date(2026, 12, 1), date(2026, 12, 31)),
    (date(2027, 1, 1), date(2027, 1, 31)),
    (date(2027, 2, 1), date(2027, 2, 28)),
]


def _periods(closed: set[str] = frozenset()) -> PeriodBook:  # type: ignore[assignment]
    rows = [
        {
            "externalid": f"{e}-{start:%Y-%m}",
            "subsidiary": e,
            "startdate": start,
            "enddate": end,
            "closed": "T" if f"{e}-{start:%Y-%m}" in closed else "F",
        }
        for e in ("LE-UK1", "LE-US1")
        for start, end in MONTHS
    ]
    return PeriodBook.from_rows(rows)


def _entry(
    conn: psycopg.Connection, source_id: int, entity: str, day: date, version: str, cents: int
) -> None:
    conn.execute(
        """
        INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref, project_ref,
            legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved, fingerprint,
            source_updated_at, record)
        VALUES ('psa', %s, %s, %s, '7', '42', %s, 1.00, true, %s, %s, %s, true, %s, now(), '{}'::jsonb)
        ON CONFLICT (source_system, source_id) DO UPDATE SET version_hash = EXCLUDED.version_hash,
            amount_minor = EXCLUDED.amount_minor, bill_rate_minor = EXCLUDED.bill_rate_minor
        """,
        (str(source_id), version, day, entity, cents, cents, "GBP" if entity == "LE-UK1" else "USD", version),
    )


def _plan(conn: psycopg.Connection, router: Router, periods: PeriodBook, run: str) -> dict[str, Any]:
    result = planner.plan(
        conn, record_type="timebill", config=load_config(), periods=periods, dag_run_id=run, router=router
    )
    return result.as_dict()


def _latest(conn: psycopg.Connection) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT DISTINCT ON (source_id) source_id, action, state, target_erp, erp_account, route_version, corrects,"
        " period FROM ledger.posting ORDER BY source_id, seq DESC"
    ).fetchall()
    return {r[0]: r[1:] for r in rows}


def _confirm_all(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE ledger.posting SET state = 'confirmed' WHERE state = 'pending'")


def test_each_posting_goes_where_its_posting_date_routes(clean_ods: str) -> None:
    router = router_of(**{"LE-UK1": uk_cutover()})
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 1, "LE-UK1", date(2026, 12, 31), "a1", 10_000)  # last NetSuite day
        _entry(conn, 2, "LE-UK1", date(2027, 1, 1), "a2", 20_000)  # first SAP day
        _entry(conn, 3, "LE-US1", date(2027, 1, 1), "a3", 30_000)  # US1 stays on NetSuite here
        _plan(conn, router, _periods(), "r1")
        latest = _latest(conn)
    assert latest["1"][:5] == ("post", "pending", "netsuite", None, 2)
    assert latest["2"][:5] == ("post", "pending", "sap", "UK10", 2)
    assert latest["3"][:5] == ("post", "pending", "netsuite", None, 2)


def test_an_entry_moved_to_the_first_open_period_routes_by_that_period(clean_ods: str) -> None:
    """US1 posts to the first open period when its own is closed: December closed, so January,
    which is SAP's (the processing time plays no part)."""
    router = router_of(**{"LE-US1": uk_cutover()})
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 4, "LE-US1", date(2026, 12, 10), "b1", 5_000)
        _plan(conn, router, _periods(closed={"LE-US1-2026-12"}), "r1")
        assert _latest(conn)["4"][:5] == ("post", "pending", "sap", "UK10", 2)


@pytest.mark.parametrize("policy", ["adjust_in_old", "reverse_and_repost"])
def test_a_correction_across_the_cutover_follows_the_policy_and_is_audited(
    clean_ods: str, policy: str
) -> None:
    """A December entry posted to NetSuite is changed after December closed: the correcting journal
    belongs in January, which routes to SAP. adjust_in_old corrects NetSuite; reverse_and_repost
    reverses it in NetSuite by a correcting journal (January, NetSuite's first open period) and
    posts the new version in SAP (on January 1st, the correction's day), nothing parked."""
    router = router_of(**{"LE-US1": uk_cutover(policy)})
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 5, "LE-US1", date(2026, 12, 10), "c1", 5_000)
        _plan(conn, router, _periods(), "r1")
        _confirm_all(conn)
        assert _latest(conn)["5"][2] == "netsuite"
        _entry(conn, 5, "LE-US1", date(2026, 12, 10), "c2", 7_500)
        plan = _plan(conn, router, _periods(closed={"LE-US1-2026-12"}), "r2")
        rows = conn.execute(
            "SELECT action, state, target_erp, erp_account, corrects, period, amount_minor FROM ledger.posting"
            " WHERE source_id = '5' ORDER BY seq"
        ).fetchall()
        audit = conn.execute(
            "SELECT before->>'erp', after FROM audit.change WHERE action = 'erp_route' AND run_id = 'r2'"
        ).fetchall()
        items = conn.execute(
            "SELECT reason_code, detail FROM exceptions.item WHERE status = 'open' AND source_id = '5'"
        ).fetchall()
    assert len(audit) == 1 and audit[0][0] == "netsuite"
    assert items == [] and plan["parked"] == 0
    if policy == "adjust_in_old":  # a correcting journal in January, in NetSuite
        assert rows[1:] == [("adjust", "pending", "netsuite", None, "psa-te-5", "LE-US1-2027-01", 2_500)]
        assert [a for a, _ in audit[0][1]["actions"]] == ["adjust"]
    else:
        steps = [(a, r["erp"]) for a, r in audit[0][1]["actions"]]
        assert steps == [("reverse", "netsuite"), ("post", "sap")]
        assert rows[1:] == [
            ("reverse", "pending", "netsuite", None, "psa-te-5", "LE-US1-2027-01", -5_000),
            ("post", "pending", "sap", "UK10", None, "LE-US1-2027-01", 7_500),
        ]
        assert plan["planned"]["reverse"] == 1 and plan["planned"]["post"] == 1


def test_a_correction_parked_before_the_change_is_replayed_as_journal_and_repost(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``ROUTE_CUTOVER_CORRECTION`` parked by the planner before it automated the case (forced
    here) is released by replay (parked -> superseded) and re-planned: the reversing journal in
    NetSuite and the post in SAP, on fresh keys."""
    router = router_of(**{"LE-US1": uk_cutover("reverse_and_repost")})
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 9, "LE-US1", date(2026, 12, 10), "g1", 5_000)
        _plan(conn, router, _periods(), "r1")
        _confirm_all(conn)
        _entry(conn, 9, "LE-US1", date(2026, 12, 10), "g2", 7_500)
        with monkeypatch.context() as m:  # the planner as it was: no repost, the journal parks
            m.setattr(planner, "_cutover_repost", lambda *_: None)
            _plan(conn, router, _periods(closed={"LE-US1-2026-12"}), "r2")
        parked = conn.execute("SELECT reason_code FROM exceptions.item WHERE status = 'open'").fetchall()
        assert parked == [("ROUTE_CUTOVER_CORRECTION",)]
        conn.execute(
            "UPDATE ledger.posting SET state = 'superseded' WHERE state = 'parked'"
        )  # replay.release
        _plan(conn, router, _periods(closed={"LE-US1-2026-12"}), "r3")
        rows = conn.execute(
            "SELECT action, state, target_erp, corrects IS NOT NULL, amount_minor FROM ledger.posting"
            " WHERE source_id = '9' ORDER BY seq"
        ).fetchall()
    assert rows == [
        ("post", "confirmed", "netsuite", False, 5_000),
        ("adjust", "superseded", "netsuite", True, 2_500),
        ("reverse", "pending", "netsuite", True, -5_000),
        ("post", "pending", "sap", False, 7_500),
    ]


def test_a_deleted_entry_is_reversed_where_it_is_held(clean_ods: str) -> None:
    router = router_of(**{"LE-UK1": uk_cutover()})
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 6, "LE-UK1", date(2027, 1, 15), "d1", 1_000)
        _plan(conn, router, _periods(), "r1")
        _confirm_all(conn)
        conn.execute("UPDATE canonical.time_entry SET is_deleted = true WHERE source_id = '6'")
        # Even under a routing file that no longer sends January to SAP, the record is held there.
        _plan(conn, router_of(), _periods(), "r2")
        assert _latest(conn)["6"][:4] == ("reverse", "pending", "sap", "UK10")


def test_an_entry_on_a_date_no_range_routes_is_parked_not_guessed(clean_ods: str) -> None:
    gap = uk_cutover()
    gap["effective"][1].update(first_day=date(2027, 1, 5), after_gap=True)
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 7, "LE-UK1", date(2027, 1, 3), "e1", 1_000)
        _plan(conn, router_of(**{"LE-UK1": gap}), _periods(), "r1")
        assert _latest(conn)["7"][1] == "parked"
        items = conn.execute("SELECT reason_code, detail->>'posting_date' FROM exceptions.item").fetchall()
    assert items == [("NO_ERP_ROUTE", "2027-01-03")]


def test_rows_planned_before_routing_read_as_netsuite(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
            " external_id, action, state) VALUES ('old', 'timebill', 'psa', '99', 'v', 'psa-te-99', 'post',"
            " 'confirmed')"
        )
        conn.execute(
            "INSERT INTO ledger.posting_payload (idempotency_key, payload) VALUES ('old', %s)",
            (Jsonb({"externalId": "psa-te-99"}),),
        )
        row = conn.execute(
            "SELECT target_erp, erp_account, route_version FROM ledger.posting WHERE idempotency_key = 'old'"
        ).fetchone()
    assert row == ("netsuite", None, None)


def test_a_change_across_the_cutover_reverses_in_the_old_erp_and_posts_in_the_new(clean_ods: str) -> None:
    """reverse_and_repost, the record's own period still open: an entry posted to NetSuite is moved
    to a January date, which routes to SAP. The plan reverses it in NetSuite (where the ledger says
    it is held) and posts the new version in SAP, in that order; nothing is parked."""
    router = router_of(**{"LE-US1": uk_cutover("reverse_and_repost")})
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 8, "LE-US1", date(2026, 12, 20), "e1", 5_000)
        _plan(conn, router, _periods(), "r1")
        _confirm_all(conn)
        _entry(conn, 8, "LE-US1", date(2026, 12, 20), "e2", 6_000)
        conn.execute("UPDATE canonical.time_entry SET spent_date = '2027-01-05' WHERE source_id = '8'")
        plan = _plan(conn, router, _periods(), "r2")
        rows = conn.execute(
            "SELECT seq, action, state, target_erp, erp_account, source_version, amount_minor, period"
            " FROM ledger.posting WHERE source_id = '8' ORDER BY seq"
        ).fetchall()
        items = conn.execute("SELECT reason_code FROM exceptions.item WHERE source_id = '8'").fetchall()
        audit = conn.execute(
            "SELECT after FROM audit.change WHERE action = 'erp_route' AND run_id = 'r2'"
        ).fetchall()
    assert [r[1:] for r in rows] == [
        ("post", "confirmed", "netsuite", None, "e1", 5_000, "LE-US1-2026-12"),
        ("reverse", "pending", "netsuite", None, "e1", None, "LE-US1-2026-12"),
        ("post", "pending", "sap", "UK10", "e2", 6_000, "LE-US1-2027-01"),
    ]
    assert plan["planned"] == {"post": 1, "adjust": 0, "reverse": 1} and plan["parked"] == 0
    assert items == []
    assert [(a, r["erp"]) for a, r in audit[0][0]["actions"]] == [("reverse", "netsuite"), ("post", "sap")]


def test_the_closed_period_decision_reads_the_periods_of_the_routes_erp(clean_ods: str) -> None:
    """NetSuite closed LE-UK1's January (the entity left it); SAP's January is open. A January
    entry routes to SAP and is decided by SAP's periods: posted in January, not moved or parked by
    NetSuite's book. A December entry held in NetSuite is decided by NetSuite's periods."""
    router = router_of(**{"LE-UK1": uk_cutover()})
    netsuite = _periods(closed={"LE-UK1-2027-01"})
    books = {"netsuite": netsuite, "sap": _periods()}
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _entry(conn, 9, "LE-UK1", date(2027, 1, 5), "f1", 4_000)
        _entry(conn, 10, "LE-UK1", date(2026, 12, 5), "f2", 4_000)
        planner.plan(
            conn,
            record_type="timebill",
            config=load_config(),
            periods=netsuite,
            dag_run_id="r1",
            router=router,
            periods_by_erp=books,
        )
        latest = _latest(conn)
        # Without the SAP book, NetSuite's closed January parks the SAP entry (LE-UK1's policy).
        _entry(conn, 11, "LE-UK1", date(2027, 1, 5), "f3", 4_000)
        planner.plan(
            conn,
            record_type="timebill",
            config=load_config(),
            periods=netsuite,
            dag_run_id="r2",
            router=router,
        )
        without = _latest(conn)
    assert latest["9"][:4] == ("post", "pending", "sap", "UK10") and latest["9"][6] == "LE-UK1-2027-01"
    assert latest["10"][:4] == ("post", "pending", "netsuite", None) and latest["10"][6] == "LE-UK1-2026-12"
    assert without["11"][1] == "parked"
