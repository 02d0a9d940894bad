"""Corrections of records held in a CLOSED period, for `post_to_first_open` entities: a correcting
journal entry in the first open period (docs/posting.md "Closed periods").

Real path: canonical rows in the ODS (what validation leaves), the planner and the engine
(``post_record_type``, the path every posting caller takes) against the ERP simulator over
loopback. Each test ends with the ERP's total per PSA entry (the record plus its correcting
journals) equal to the approved value to the cent, by the product's own reconciliation
(``reconcile/erp_readback.py``), with nothing held twice.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.posting.test_stateful import ERP_SEED, UK, US

pytestmark = pytest.mark.integration

PREFIX = {"timebill": "psa-te-", "expensereport": "psa-ex-"}
TABLE = {"timebill": "canonical.time_entry", "expensereport": "canonical.expense_entry"}
RATE_MINOR = {US: 15000, UK: 12000}  # 150.00 USD, 120.00 GBP an hour
ADJUSTED, REVERSED, PARKED = "101", "102", "103"  # US, US, UK: all dated in October


class Firm:
    """The ODS's canonical rows, the posting pass and the ERP simulator of one test."""

    def __init__(self, dsn: str, erp: RunningSimulator, record_type: str) -> None:
        from psa_erp_sync.config import load_config

        self.dsn, self.erp, self.record_type = dsn, erp, record_type
        self.config = load_config()
        self.versions: dict[str, int] = {}
        self.runs = 0
        erp.admin("POST", "/seed", json=copy.deepcopy(ERP_SEED))

    def put(
        self, source_id: str, value: str, *, entity: str = US, approved: bool = True, day: str = "2026-10-05"
    ) -> None:
        """A new approved (or unapproved) version of an entry: ``value`` is hours for time, the
        amount for an expense."""
        from psa_erp_sync import money

        version = self.versions.get(source_id, 0) + 1
        self.versions[source_id] = version
        currency = "USD" if entity == US else "GBP"
        user, project = ("1", "10") if entity == US else ("2", "20")
        common = {
            "source_system": "psa",
            "source_id": source_id,
            "version_hash": f"{source_id}v{version}".ljust(16, "0"),
            "spent_date": day,
            "user_ref": user,
            "project_ref": project,
            "legal_entity": entity,
            "billable": True,
            "currency": currency,
            "approved": approved,
            "fingerprint": source_id,
            "source_updated_at": datetime(2026, 11, 9, 12, version, tzinfo=UTC),
            "record": "{}",
        }
        if self.record_type == "timebill":
            hours = Decimal(value)
            rate = RATE_MINOR[entity]
            amount = money.line_amount_minor(hours, money.from_minor(rate, currency), currency)
            row = {**common, "task_ref": "1", "hours": hours, "bill_rate_minor": rate, "amount_minor": amount}
        else:
            row = {**common, "category": "Travel", "amount_minor": money.to_minor(Decimal(value), currency)}
        columns = ", ".join(row)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in row if c not in ("source_system", "source_id"))
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                f"INSERT INTO {TABLE[self.record_type]} ({columns}) VALUES ({', '.join(['%s'] * len(row))})"
                f" ON CONFLICT (source_system, source_id) DO UPDATE SET {updates}",
                list(row.values()),
            )

    def unapprove(self, source_id: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                f"UPDATE {TABLE[self.record_type]} SET approved = false WHERE source_id = %s", (source_id,)
            )

    def close(self, entity: str, month: str, closed: bool = True) -> None:
        flags = {"closed": closed, "allLocked": closed}
        self.erp.admin("POST", f"/periods/{entity}-{month}", json=flags)

    def post(self, client: Any | None = None) -> Any:
        from psa_erp_sync.clients.erp import NetSuiteClient
        from psa_erp_sync.posting.engine import EngineSettings
        from psa_erp_sync.posting.service import post_record_type

        self.runs += 1
        with NetSuiteClient(base_url=self.erp.base_url, account_id="A", token="t", timeout=5) as erp:
            return post_record_type(
                dsn=self.dsn,
                client=client(erp) if client else erp,
                record_type=self.record_type,
                config=self.config,
                settings=EngineSettings(batch_size=10, max_concurrency=2, progress_every_s=3600),
                run_id=f"corr-{self.runs}",
            )

    def records(self, erp_type: str) -> dict[str, dict[str, Any]]:
        items = self.erp.admin("GET", f"/records/{erp_type}", params={"limit": 1000})["items"]
        return {str(i["externalId"]): i for i in items}

    def latest(self, source_id: str) -> tuple[str, str, str | None]:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT action, state, corrects FROM ledger.posting WHERE record_type = %s AND source_id = %s"
                " ORDER BY seq DESC LIMIT 1",
                (self.record_type, source_id),
            ).fetchone()
        assert row is not None
        return row[0], row[1], row[2]

    def reconciles(self) -> dict[str, tuple[Decimal, int, str]]:
        """The product's reconciliation: ERP (record + corrections per entry) = expected = ledger,
        to the cent, no differences by entry. Returns the ERP's view per PSA id."""
        from psa_erp_sync.clients.erp import NetSuiteClient
        from psa_erp_sync.reconcile import control_totals as ct
        from psa_erp_sync.reconcile import erp_readback

        with psycopg.connect(self.dsn) as conn:
            want, want_rows = erp_readback.expected(conn, self.record_type)
            ledger_view = erp_readback.posted_per_ledger(conn, self.record_type)
        with NetSuiteClient(base_url=self.erp.base_url, account_id="A", token="t") as client:
            have, have_rows = erp_readback.actual(client, self.record_type, PREFIX[self.record_type])
        diff = erp_readback.differences(want_rows, have_rows)
        assert diff["missing_in_erp"] == diff["unexpected_in_erp"] == diff["different_in_erp"] == 0, diff
        ct.assert_equal("expected", want, "erp", have)
        ct.assert_equal("posted per ledger", ledger_view, "erp", have)
        return have_rows

    def approved(self) -> dict[str, tuple[Decimal, int]]:
        """The approved PSA value per entry (hours, amount in minor units), from canonical."""
        hours = "hours" if self.record_type == "timebill" else "0::numeric"
        with psycopg.connect(self.dsn) as conn:
            rows = conn.execute(
                f"SELECT source_id, {hours}, amount_minor FROM {TABLE[self.record_type]}"
                " WHERE approved AND NOT is_deleted"
            ).fetchall()
        return {str(s): (Decimal(h), int(a)) for s, h, a in rows}

    def assert_erp_equals_psa(self, *, except_parked: tuple[str, ...] = ()) -> None:
        have = self.reconciles()
        want = {k: v for k, v in self.approved().items() if k not in except_parked}
        got = {k: (v[0], v[1]) for k, v in have.items() if k not in except_parked}
        assert got == want


def _values(record_type: str) -> tuple[str, str, str]:
    """(first value, adjusted value, second adjustment) of an entry: hours or an expense amount."""
    return ("1.00", "2.75", "0.50") if record_type == "timebill" else ("80.00", "112.35", "19.99")


@pytest.mark.parametrize("record_type", ["timebill", "expensereport"])
def test_reverse_and_adjust_in_a_closed_period_become_correcting_journals_in_the_first_open_one(
    clean_ods: str, erp_sim: RunningSimulator, record_type: str
) -> None:
    firm = Firm(clean_ods, erp_sim, record_type)
    first, adjusted, _ = _values(record_type)
    prefix = PREFIX[record_type]
    firm.put(ADJUSTED, first)
    firm.put(REVERSED, first)
    firm.put(PARKED, first, entity=UK)
    firm.post()
    firm.assert_erp_equals_psa()
    before = firm.records(record_type)

    firm.close(US, "2026-10")
    firm.close(UK, "2026-10")
    firm.put(ADJUSTED, adjusted)
    firm.unapprove(REVERSED)
    firm.put(PARKED, adjusted, entity=UK)
    result = firm.post()
    assert result.plan["corrected_in_open_period"] == 2
    assert result.outcome["rejected"] == 0 and result.outcome["still_pending"] == 0

    # The records themselves are untouched in closed October ...
    after = firm.records(record_type)
    for sid in (ADJUSTED, REVERSED, PARKED):
        assert after[f"{prefix}{sid}"] == before[f"{prefix}{sid}"]
    # ... and each correction is a journal in November carrying the difference.
    journals = firm.records("journalentry")
    assert firm.latest(ADJUSTED) == ("adjust", "confirmed", f"{prefix}{ADJUSTED}")
    assert firm.latest(REVERSED) == ("reverse", "confirmed", f"{prefix}{REVERSED}")
    fix = next(j for ext, j in journals.items() if ext.startswith(f"{prefix}{ADJUSTED}-c"))
    assert fix["postingPeriod"]["externalId"] == "LE-US1-2026-11"
    assert fix["tranDate"] == "2026-11-01"
    assert fix["custbody_psa_corrects"] == f"{prefix}{ADJUSTED}"
    assert fix["custbody_psa_orig_date"] == "2026-10-05"
    assert fix["custbody_psa_orig_period"] == "LE-US1-2026-10"
    assert "orig-date:2026-10-05 orig-period:LE-US1-2026-10" in fix["memo"]
    if record_type == "timebill":
        assert (fix["custbody_psa_hours"], fix["amount"]) == ("1.75", "262.50")  # 2.75 h - 1.00 h at 150.00
    else:
        assert fix["amount"] == "32.35"
    gone = next(j for ext, j in journals.items() if ext.startswith(f"{prefix}{REVERSED}-c"))
    assert gone["amount"] == ("-150.00" if record_type == "timebill" else "-80.00")
    assert len(journals) == 2

    # The park policy is unchanged: LE-UK1's correction waits for finance, the ERP was not asked.
    assert firm.latest(PARKED) == ("adjust", "parked", None)
    firm.assert_erp_equals_psa(except_parked=(PARKED,))
    have = firm.reconciles()
    assert REVERSED not in have  # base + its reversing journal = nothing held
    assert have[PARKED][1] == before_amount(firm, PARKED)  # keeps what the ERP confirmed


def before_amount(firm: Firm, source_id: str) -> int:
    """What the ledger last confirmed for an entry (a parked one keeps it)."""
    with psycopg.connect(firm.dsn) as conn:
        row = conn.execute(
            "SELECT amount_minor FROM ledger.posting WHERE source_id = %s AND state = 'confirmed'"
            " ORDER BY seq DESC LIMIT 1",
            (source_id,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("record_type", ["timebill", "expensereport"])
def test_later_corrections_stack_and_never_double_count(
    clean_ods: str, erp_sim: RunningSimulator, record_type: str
) -> None:
    firm = Firm(clean_ods, erp_sim, record_type)
    first, adjusted, again = _values(record_type)
    firm.put(ADJUSTED, first)
    firm.post()
    firm.close(US, "2026-10")
    steps = [
        lambda: firm.put(ADJUSTED, adjusted),  # first correction
        lambda: firm.put(ADJUSTED, again),  # a second adjust: the difference to base + first
        lambda: firm.unapprove(ADJUSTED),  # reverse after the adjusts: minus the net
        lambda: firm.put(ADJUSTED, adjusted),  # approved again: the whole value, one more journal
    ]
    periods = []
    for n, step in enumerate(steps, start=1):
        if n == 3:  # the first open period that took the earlier journals closes too: December next
            firm.close(US, "2026-11")
        step()
        firm.post()
        firm.assert_erp_equals_psa()
        journals = {
            e: j
            for e, j in firm.records("journalentry").items()
            if e.startswith(f"{PREFIX[record_type]}{ADJUSTED}-c")
        }
        assert len(journals) == n
        periods.append(journals[max(journals, key=lambda e: int(e.rsplit("-c", 1)[1]))]["postingPeriod"])
    assert [p["externalId"] for p in periods] == ["LE-US1-2026-11"] * 2 + ["LE-US1-2026-12"] * 2
    assert firm.records(record_type)[f"{PREFIX[record_type]}{ADJUSTED}"]["postingPeriod"] == {
        "externalId": "LE-US1-2026-10"
    }
    # October reopens: the entry has corrections, so a change stays a correction (an upsert of the
    # record itself would count the journals twice); it may now go into October itself.
    firm.close(US, "2026-10", closed=False)
    firm.put(ADJUSTED, first)
    firm.post()
    firm.assert_erp_equals_psa()
    assert firm.latest(ADJUSTED)[2] == f"{PREFIX[record_type]}{ADJUSTED}"
    # The trace shows the record in closed October and each correcting journal, with the total.
    from psa_erp_sync.trace import format_text, trace

    kind = "time_entry" if record_type == "timebill" else "expense_entry"
    with psycopg.connect(clean_ods) as conn:
        (found,) = [t for t in trace(conn, "psa", ADJUSTED) if t["kind"] == kind]
    erp = found["erp"]
    assert erp["period"] == "LE-US1-2026-10" and erp["in_erp"]
    assert [c["external_id"] for c in erp["corrections"]] == sorted(
        (e for e in firm.records("journalentry") if e.startswith(f"{PREFIX[record_type]}{ADJUSTED}-c")),
        key=lambda e: int(e.rsplit("-c", 1)[1]),
    )
    assert erp["amount_minor"] == firm.approved()[ADJUSTED][1]
    text = format_text([found])
    assert f"correcting journal {PREFIX[record_type]}{ADJUSTED}-c" in text
    assert f"ERP total of the entry (record + corrections): {firm.approved()[ADJUSTED][1]}" in text
    # Nothing posts twice when the pass runs again.
    result = firm.post()
    assert sum(result.plan["planned"].values()) == 0
    firm.assert_erp_equals_psa()


class StalePeriodsOnce:
    """The real ERP client, except that its first period read answers ``rows`` (read before a
    period closed): as if the period closed between the planner's read and the sends."""

    def __init__(self, inner: Any, rows: list[dict[str, Any]]) -> None:
        self.inner = inner
        self.rows: list[dict[str, Any]] | None = rows

    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        from psa_erp_sync.posting.periods import PERIOD_QUERY

        if query == PERIOD_QUERY and self.rows is not None:
            rows, self.rows = self.rows, None
            return iter(rows)
        result: Iterator[dict[str, Any]] = self.inner.suiteql(query, page_size=page_size)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _periods(erp: RunningSimulator) -> list[dict[str, Any]]:
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.posting.periods import PERIOD_QUERY

    with NetSuiteClient(base_url=erp.base_url, account_id="A", token="t") as client:
        return list(client.suiteql(PERIOD_QUERY))


@pytest.mark.parametrize("record_type", ["timebill", "expensereport"])
def test_the_first_open_period_closing_mid_pass_moves_the_correction_on(
    clean_ods: str, erp_sim: RunningSimulator, record_type: str
) -> None:
    """The correction is planned into November; November closes before it is sent (the ERP
    answers PERIOD_CLOSED): the periods are read again and the same difference goes to December
    under a new key and external id, once."""
    firm = Firm(clean_ods, erp_sim, record_type)
    first, adjusted, _ = _values(record_type)
    firm.put(ADJUSTED, first)
    firm.post()
    firm.close(US, "2026-10")
    firm.put(ADJUSTED, adjusted)
    november_open = _periods(erp_sim)
    firm.close(US, "2026-11")
    result = firm.post(lambda erp: StalePeriodsOnce(erp, november_open))
    assert result.outcome["period_closed_replanned"] == 1
    journals = [j for e, j in firm.records("journalentry").items()]
    assert [j["postingPeriod"]["externalId"] for j in journals] == ["LE-US1-2026-12"]
    with psycopg.connect(clean_ods) as conn:
        states = conn.execute(
            "SELECT state, period FROM ledger.posting WHERE corrects IS NOT NULL ORDER BY seq"
        ).fetchall()
    assert states == [("rejected", "LE-US1-2026-11"), ("confirmed", "LE-US1-2026-12")]
    firm.assert_erp_equals_psa()


@pytest.mark.parametrize("record_type", ["timebill", "expensereport"])
def test_the_held_period_closing_mid_pass_turns_an_adjust_into_a_correction(
    clean_ods: str, erp_sim: RunningSimulator, record_type: str
) -> None:
    """An ordinary adjust was planned while October was open; October closes before it is sent:
    the ERP refuses to change the record there, and the adjust becomes a correcting journal."""
    firm = Firm(clean_ods, erp_sim, record_type)
    first, adjusted, _ = _values(record_type)
    firm.put(ADJUSTED, first)
    firm.put(REVERSED, first)
    firm.post()
    firm.put(ADJUSTED, adjusted)
    firm.unapprove(REVERSED)
    october_open = _periods(erp_sim)
    firm.close(US, "2026-10")
    result = firm.post(lambda erp: StalePeriodsOnce(erp, october_open))
    assert result.outcome["period_closed_replanned"] == 2
    assert firm.latest(ADJUSTED) == ("adjust", "confirmed", f"{PREFIX[record_type]}{ADJUSTED}")
    assert firm.latest(REVERSED) == ("reverse", "confirmed", f"{PREFIX[record_type]}{REVERSED}")
    firm.assert_erp_equals_psa()


@pytest.mark.parametrize(
    ("action", "record_type"),
    [
        ("status_after_commit", "timebill"),
        ("drop_after_commit", "timebill"),
        ("status_after_commit", "expensereport"),
        ("drop_after_commit", "expensereport"),
    ],
)
def test_a_correcting_journal_lost_after_commit_is_read_back_never_duplicated(
    clean_ods: str, erp_sim: RunningSimulator, action: str, record_type: str
) -> None:
    firm = Firm(clean_ods, erp_sim, record_type)
    first, adjusted, _ = _values(record_type)
    firm.put(ADJUSTED, first)
    firm.put(REVERSED, first)
    firm.post()
    firm.close(US, "2026-10")
    firm.put(ADJUSTED, adjusted)
    firm.unapprove(REVERSED)
    rule = {
        "id": "lost",
        "action": action,
        "method": "POST",
        "path_regex": r"/record/v1/journalentry/batch$",
        "max_hits": 1,
    }
    if action == "status_after_commit":
        rule["status"] = 503
    erp_sim.admin("PUT", "/faults", json=[rule])
    result = firm.post()
    fired = {r["id"]: r["hits"] for r in erp_sim.admin("GET", "/faults")["rules"]}
    erp_sim.admin("DELETE", "/faults")
    assert fired == {"lost": 1}
    assert result.outcome["ambiguous_resolved"] == 2  # both journals had landed: read back, not resent
    journals = list(firm.records("journalentry"))
    assert len(journals) == 2 == len(set(journals))
    with psycopg.connect(clean_ods) as conn:
        sent = conn.execute(
            "SELECT count(*) FROM ledger.attempt a JOIN ledger.posting p USING (idempotency_key)"
            " WHERE p.corrects IS NOT NULL"
        ).fetchone()
    assert sent == (2,)  # one attempt each: resolved by read-back, never re-POSTed
    firm.assert_erp_equals_psa()
    assert sum(firm.post().plan["planned"].values()) == 0
