"""The schedule read (``inputs._schedule``: person rates as intervals in an analyzed temporary
table) returns the rows the per-row ``coalesce(HR rate on the week start, PSA rate)`` join did:
before HR's first rate, inside each HR interval and after the last, for a person HR does not know,
a person the PSA extract does not have (dropped) and a project the forecast does not know (kept).
The rows cross as integer codes (``pgbinary.read_arrays``); the frame equals the text rows."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from psa_erp_sync.forecast import inputs, model

pytestmark = pytest.mark.integration

AS_OF = date(2026, 11, 20)

# The read before: HR's rates joined per row with a LEFT JOIN (frozen: the oracle).
_BEFORE = f"""
    SELECT s.project_ref, s.user_ref, {inputs._M_YEAR.format(d="s.week_start")}, round(s.hours * 100)::bigint,
           coalesce(h.rate_minor, p.cost_rate_minor), coalesce(h.currency, p.currency)
    FROM forecast.src_schedule s JOIN forecast.src_person p ON p.user_ref = s.user_ref
    {inputs._HR_RATE_ON.format(rates=inputs._HR_RATES, u="s.user_ref", d="s.week_start")}
    WHERE s.week_start >= %(as_of)s
"""


def test_schedule_rates_equal_the_per_row_join(clean_ods: str) -> None:
    import pandas.testing as pdt

    with psycopg.connect(clean_ods) as conn:
        conn.execute("TRUNCATE hr.worker_version, hr.worker, hr.cost_rate")
        conn.execute(
            "INSERT INTO forecast.src_person VALUES ('7', 'LE-US1', 'USD', true, 144000, 5000),"
            " ('8', 'LE-UK1', 'GBP', true, 144000, 6000), ('9', 'LE-US1', 'USD', true, 144000, 7000)"
        )
        conn.execute(
            "INSERT INTO hr.worker (employee_id, worker_wid, first_name, last_name, legal_entity, hire_date,"
            " version_hash, psa_user_id) VALUES ('E7', 'w7', 'A', 'B', 'LE-US1', '2026-01-01', 'h', 7),"
            " ('E9', 'w9', 'C', 'D', 'LE-US1', '2026-01-01', 'h', 9), ('E5', 'w5', 'E', 'F', 'LE-US1', '2026-01-01', 'h', 5)"
        )
        conn.execute(
            "INSERT INTO hr.cost_rate (employee_id, effective_from, rate_minor, currency) VALUES"
            " ('E7', '2026-12-01', 8000, 'USD'), ('E7', '2027-02-01', 12000, 'EUR'),"
            " ('E9', '2026-01-01', 7700, 'USD'), ('E5', '2026-01-01', 1, 'USD')"
        )
        weeks = (
            "2026-11-16",
            "2026-11-23",
            "2026-11-30",
            "2026-12-01",
            "2027-01-25",
            "2027-02-01",
            "2027-03-01",
        )
        rows = [
            (f"s{user}-{project}-{week}", user, project, week, 7.5)
            for user in ("7", "8", "9", "5")
            for project in ("p1", "p-unknown")
            for week in weeks
        ]
        # p1 and p0 are forecast projects (their refs cross as codes), p-unknown is not (its ref
        # crosses as text); p0 has no planned work.
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active) VALUES ('p1', 'Strategy', 'LE-US1', 'USD', 'fixed_fee', true),"
            " ('p0', 'Strategy', 'LE-US1', 'USD', 'fixed_fee', true)"
        )
        with conn.cursor().copy("COPY forecast.src_schedule FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        before = inputs._frame(conn, _BEFORE, {"as_of": AS_OF}, model.SCHEDULE_COLUMNS)
        after = inputs._schedule(conn, AS_OF)
        coded = inputs._schedule_read(conn, AS_OF)

    def ordered(frame: object) -> object:
        return frame.sort_values(list(model.SCHEDULE_COLUMNS)).reset_index(drop=True)  # type: ignore[attr-defined]

    assert len(after) == 3 * 2 * 6  # user 5 is not a PSA person; the week before the as-of day is not planned
    assert set(after["cost_currency"]) == {"USD", "GBP", "EUR"}
    assert set(after["project_ref"]) == {"p1", "p-unknown"}
    pdt.assert_frame_equal(ordered(after), ordered(before))
    # The codes handed to the model with the frame describe it (the unknown project's ref included).
    pdt.assert_frame_equal(coded.frame, after)
    assert set(coded.columns) == {"project_ref", "user_ref", "cost_currency"}
    for column, (codes, values) in coded.columns.items():
        assert (values[codes] == after[column].to_numpy(dtype=object)).all(), column


def test_schedule_hours_cross_as_exact_centi_hours(clean_ods: str) -> None:
    """``hours * 100`` cast to bigint (no ``round``) gives the oracle's ``round(hours * 100)`` for
    every numeric(9,2), the smallest, odd hundredths and the largest included."""
    hours = ("0", "0.01", "0.05", "0.49", "0.5", "0.99", "7.25", "12.34", "99.95", "1234567.89", "9999999.99")
    with psycopg.connect(clean_ods) as conn:
        conn.execute("TRUNCATE hr.worker_version, hr.worker, hr.cost_rate")
        conn.execute("INSERT INTO forecast.src_person VALUES ('7', 'LE-US1', 'USD', true, 144000, 5000)")
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active) VALUES ('p1', 'Strategy', 'LE-US1', 'USD', 'fixed_fee', true)"
        )
        with conn.cursor().copy("COPY forecast.src_schedule FROM STDIN") as copy:
            for i, h in enumerate(hours):
                copy.write_row((f"s{i}", "7", "p1", "2026-12-07", h))
        before = inputs._frame(conn, _BEFORE, {"as_of": AS_OF}, model.SCHEDULE_COLUMNS)
        after = inputs._schedule(conn, AS_OF)
    expected = [int(Decimal(h) * 100) for h in hours]
    assert sorted(after["hours_centi"].tolist()) == sorted(expected)
    assert sorted(before["hours_centi"].tolist()) == sorted(expected)


def _scanned_rows(plan: dict[str, Any], relation: str) -> int:
    """The actual rows the plan's scan of ``relation`` returned (EXPLAIN (ANALYZE, FORMAT JSON))."""
    if plan.get("Relation Name") == relation:
        return int(plan["Actual Rows"])
    return sum(_scanned_rows(child, relation) for child in plan.get("Plans", []))


def test_rate_intervals_ending_by_the_as_of_day_are_not_joined(clean_ods: str) -> None:
    """The schedule joins only the rate intervals that end after the as-of day (the weeks read
    start on or after it): the ones ending before or on it are left out of the join, and the
    rows equal the per-row oracle's at each boundary (an interval ending on the as-of day, one
    starting on it, one ending the day after)."""
    import pandas.testing as pdt

    with psycopg.connect(clean_ods) as conn:
        conn.execute("TRUNCATE hr.worker_version, hr.worker, hr.cost_rate")
        conn.execute(
            "INSERT INTO forecast.src_person VALUES ('7', 'LE-US1', 'USD', true, 144000, 5000),"
            " ('8', 'LE-UK1', 'GBP', true, 144000, 6000)"
        )
        conn.execute(
            "INSERT INTO hr.worker (employee_id, worker_wid, first_name, last_name, legal_entity, hire_date,"
            " version_hash, psa_user_id) VALUES ('E7', 'w7', 'A', 'B', 'LE-US1', '2026-01-01', 'h', 7),"
            " ('E8', 'w8', 'C', 'D', 'LE-UK1', '2026-01-01', 'h', 8)"
        )
        # Person 7: the PSA rate until 2026-01-01, then HR's, changing on 06-01, on the as-of day
        # and on 2027-01-01. Person 8: the PSA rate until the day after the as-of day, then HR's.
        conn.execute(
            "INSERT INTO hr.cost_rate (employee_id, effective_from, rate_minor, currency) VALUES"
            " ('E7', '2026-01-01', 7100, 'USD'), ('E7', '2026-06-01', 7200, 'USD'),"
            " ('E7', '2026-11-20', 7300, 'EUR'), ('E7', '2027-01-01', 7400, 'USD'),"
            " ('E8', '2026-11-21', 8100, 'GBP')"
        )
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active) VALUES ('p1', 'Strategy', 'LE-US1', 'USD', 'fixed_fee', true)"
        )
        weeks = ("2026-11-16", "2026-11-20", "2026-11-21", "2026-12-28", "2027-01-04")
        with conn.cursor().copy("COPY forecast.src_schedule FROM STDIN") as copy:
            for user in ("7", "8"):
                for week in weeks:
                    copy.write_row((f"s{user}-{week}", user, "p1", week, "7.5"))
        before = inputs._frame(conn, _BEFORE, {"as_of": AS_OF}, model.SCHEDULE_COLUMNS)
        after = inputs._schedule(conn, AS_OF)
        conn.execute(f"CREATE TEMP TABLE tmp_forecast_person_rate AS {inputs._PERSON_RATE_IDS}")
        conn.execute("ANALYZE tmp_forecast_person_rate")
        inputs._project_codes(conn)
        row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {inputs._SCHEDULE}", {"as_of": AS_OF}).fetchone()
        (intervals,) = conn.execute("SELECT count(*) FROM tmp_forecast_person_rate").fetchone() or (0,)

    def ordered(frame: object) -> object:
        return frame.sort_values(list(model.SCHEDULE_COLUMNS)).reset_index(drop=True)  # type: ignore[attr-defined]

    assert len(after) == 2 * 4
    assert sorted(after["cost_rate_minor"].tolist()) == [6000, 7300, 7300, 7300, 7400, 8100, 8100, 8100]
    pdt.assert_frame_equal(ordered(after), ordered(before))
    assert row is not None
    # Seven intervals; joined: person 7's from the as-of day and from 2027, person 8's two.
    assert intervals == 7
    assert _scanned_rows(row[0][0]["Plan"], "tmp_forecast_person_rate") == 4


def test_the_reads_aside_see_what_the_connection_sees(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``load_inputs`` reads the schedule and the side reads on connections of their own only
    while its own transaction has written nothing (READ COMMITTED): then all see the same
    committed rows; after a write of its own (uncommitted, invisible to another connection) it
    reads them itself."""
    from psa_erp_sync.forecast.settings import load_forecast_settings

    settings = load_forecast_settings()
    aside: list[bool] = []
    real = inputs._reads_aside

    def spy(conn: psycopg.Connection) -> object:
        submit = real(conn)
        aside.append(submit is not None)
        return submit

    monkeypatch.setattr(inputs, "_reads_aside", spy)
    with psycopg.connect(clean_ods) as conn:
        conn.execute("INSERT INTO forecast.src_person VALUES ('7', 'LE-US1', 'USD', true, 144000, 5000)")
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active) VALUES ('p1', 'Strategy', 'LE-US1', 'USD', 'fixed_fee', true)"
        )
        conn.execute("INSERT INTO forecast.src_schedule VALUES ('s1', '7', 'p1', '2026-12-07', 7.5)")
        conn.commit()
        first = inputs.load_inputs(conn, as_of=AS_OF, settings=settings, prior_snapshot_id=None)
        conn.rollback()
        conn.execute("LOCK TABLE forecast.src_schedule IN SHARE ROW EXCLUSIVE MODE")  # no xid: held
        locked = inputs.load_inputs(conn, as_of=AS_OF, settings=settings, prior_snapshot_id=None).schedule
        conn.rollback()
        conn.execute("INSERT INTO forecast.src_schedule VALUES ('s2', '7', 'p1', '2026-12-14', 2.5)")
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active) VALUES ('p2', 'Strategy', 'LE-US1', 'USD', 'fixed_fee', true)"
        )
        second = inputs.load_inputs(conn, as_of=AS_OF, settings=settings, prior_snapshot_id=None)
    assert aside == [True, False, False]
    assert locked["hours_centi"].tolist() == [750]
    assert first.schedule["hours_centi"].tolist() == [750]
    assert first.projects["project_ref"].tolist() == ["p1"]
    assert sorted(second.schedule["hours_centi"].tolist()) == [250, 750]  # its own uncommitted row too
    assert second.projects["project_ref"].tolist() == ["p1", "p2"]


def test_the_side_reads_run_on_their_own_connection_beside_the_catch_up(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing written in ``conn``'s transaction, the projects and the other small reads
    run on a connection of their own while ``conn`` catches up the actuals: the catch-up starts
    before they are done (they wait here until it has started), and every input equals what one
    connection reading in turn gives."""
    import threading

    import pandas.testing as pdt

    from psa_erp_sync.forecast import actuals
    from psa_erp_sync.forecast.settings import load_forecast_settings

    settings = load_forecast_settings()
    with psycopg.connect(clean_ods) as conn:
        conn.execute("INSERT INTO forecast.src_person VALUES ('7', 'LE-US1', 'USD', true, 144000, 5000)")
        conn.execute(
            "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
            " is_active, fee_minor) VALUES ('p1', 'Strategy', 'LE-US1', 'USD', 'fixed_fee', true, 100000),"
            " ('p2', 'Strategy', 'LE-US1', 'USD', 'time_and_materials', true, null)"
        )
        conn.execute("INSERT INTO forecast.src_schedule VALUES ('s1', '7', 'p1', '2026-12-07', 7.5)")
        conn.commit()
        with monkeypatch.context() as one_connection:
            one_connection.setattr(inputs, "_reads_aside", lambda c: None)
            in_turn = inputs.load_inputs(conn, as_of=AS_OF, settings=settings, prior_snapshot_id=None)
        conn.commit()

        caught_up = threading.Event()
        pids: list[int] = []
        real_side, real_catch_up = inputs._side_reads, actuals.catch_up

        def side(c: psycopg.Connection, *args: object) -> object:
            pids.append(c.info.backend_pid)
            assert caught_up.wait(30), "the catch-up did not start while the side reads ran"
            return real_side(c, *args)  # type: ignore[arg-type]

        def catch_up(c: psycopg.Connection) -> object:
            caught_up.set()
            return real_catch_up(c)

        monkeypatch.setattr(inputs, "_side_reads", side)
        monkeypatch.setattr(actuals, "catch_up", catch_up)
        beside = inputs.load_inputs(conn, as_of=AS_OF, settings=settings, prior_snapshot_id=None)
        main_pid = conn.info.backend_pid
    assert pids and pids[0] != main_pid
    for name in ("projects", "actuals", "schedule", "capacity", "milestones", "opportunities"):
        pdt.assert_frame_equal(getattr(beside, name), getattr(in_turn, name))
    assert beside.billed_from_erp == in_turn.billed_from_erp
    assert len(beside.projects) == 2


def test_the_month_of_a_day_number_is_the_model_month_index() -> None:
    """The schedule's week start crosses as days since 1970-01-01 (no numeric ``extract`` per row
    on the server); its month index is taken by numpy: the same as ``model.month_index`` on every
    day from 1899 to 2101 (month ends, leap days, before 1970)."""
    from datetime import timedelta

    import numpy as np

    first, epoch = date(1899, 12, 25), date(1970, 1, 1)
    days = [first + timedelta(days=i) for i in range((date(2101, 1, 8) - first).days)]
    numbers = np.array([(d - epoch).days for d in days], dtype=np.int64)
    assert inputs._month_of_days(numbers).tolist() == [model.month_index(d) for d in days]
    far = [date(1, 1, 1), date(1970, 1, 1), date(9999, 12, 31)]  # the ends of the calendar
    far_numbers = np.array([(d - epoch).days for d in far], dtype=np.int64)
    assert inputs._month_of_days(far_numbers).tolist() == [model.month_index(d) for d in far]
    assert inputs._month_of_days(np.zeros(0, dtype=np.int64)).tolist() == []
