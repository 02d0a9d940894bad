"""Parallel-run reconciliation per entity x period x project x ERP, to the cent.

The ledger rows (what we posted to each ERP, confirmed) are written here as the two-ERP posting
will write them; the ERPs' read-backs are built here too (the real SAP read-back arrives with the
adapter). Every difference is reported: one cent, a missing line, a line we never posted.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from psa_erp_sync.posting import ledger
from psa_erp_sync.routing.parallel import Amount, Difference, ledger_amounts, reconcile

pytestmark = pytest.mark.integration

UK = "LE-UK1"
NOV, DEC = "LE-UK1-2026-11", "LE-UK1-2026-12"


def _posting(
    n: int,
    erp: str,
    *,
    project: str,
    day: str,
    period: str,
    cents: int,
    action: str = "post",
    seq: int = 0,
    corrects: str | None = None,
) -> ledger.Posting:
    key = ledger.idempotency_key("timebill", "psa", f"{n}", f"v{seq}", f"{action}-{erp}", seq)
    payload: dict[str, Any] = {"externalId": f"psa-te-{n}", "tranDate": day}
    if corrects is None:
        payload["customer"] = {"externalId": project}
    return ledger.Posting(
        key,
        "timebill",
        "psa",
        str(n),
        f"v{seq}",
        f"psa-te-{n}" + (f"-c{seq}" if corrects else ""),
        action,
        "pending",
        payload,
        UK,
        period,
        cents,
        "GBP",
        corrects=corrects,
        target_erp=erp,
        erp_account="UK10" if erp == "sap" else None,
        route_version=3,
    )  # type: ignore[arg-type]


def _ledger(conn: psycopg.Connection) -> None:
    rows = []
    for erp in ("netsuite", "sap"):
        rows += [
            _posting(1, erp, project="psa-project-7", day="2026-11-03", period=NOV, cents=12_345),
            _posting(2, erp, project="psa-project-7", day="2026-11-20", period=NOV, cents=10_000),
            _posting(3, erp, project="psa-project-8", day="2026-12-01", period=DEC, cents=50_001),
        ]
    # Entry 2 was adjusted in both ERPs (the latest confirmed posting of itself counts).
    rows += [
        _posting(
            2, erp, project="psa-project-7", day="2026-11-20", period=NOV, cents=9_950, action="adjust", seq=1
        )
        for erp in ("netsuite", "sap")
    ]
    # Entry 3 has a correcting journal of -1.00 in December, in both.
    rows += [
        _posting(3, erp, project="", day="2026-12-01", period=DEC, cents=-100, seq=2, corrects="psa-te-3")
        for erp in ("netsuite", "sap")
    ]
    # Entry 4 was posted and then reversed: nothing held for it.
    rows += [
        _posting(4, "netsuite", project="psa-project-8", day="2026-12-05", period=DEC, cents=700),
        _posting(
            4,
            "netsuite",
            project="psa-project-8",
            day="2026-12-05",
            period=DEC,
            cents=700,
            action="reverse",
            seq=1,
        ),
    ]
    # Outside the window, and another entity: not part of this reconciliation.
    rows += [
        _posting(5, "netsuite", project="psa-project-7", day="2027-01-02", period="LE-UK1-2027-01", cents=1)
    ]
    ledger.insert_planned(conn, rows)
    conn.execute("UPDATE ledger.posting SET state = 'confirmed'")


def test_the_ledger_says_what_each_erp_holds_per_period_and_project(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _ledger(conn)
        got = ledger_amounts(conn, legal_entity=UK, first_day=date(2026, 11, 1), last_day=date(2026, 12, 31))
    assert sorted((a.period, a.project, a.erp, a.amount_minor) for a in got) == [
        (NOV, "psa-project-7", "netsuite", 12_345 + 9_950),
        (NOV, "psa-project-7", "sap", 12_345 + 9_950),
        (DEC, "psa-project-8", "netsuite", 50_001 - 100),
        (DEC, "psa-project-8", "sap", 50_001 - 100),
    ]
    assert {a.currency for a in got} == {"GBP"}


def test_every_difference_is_reported_to_the_cent(clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as conn:
        _ledger(conn)
        expected = ledger_amounts(
            conn, legal_entity=UK, first_day=date(2026, 11, 1), last_day=date(2026, 12, 31)
        )
    netsuite = [
        Amount(UK, NOV, "psa-project-7", "netsuite", "GBP", 22_295),
        Amount(UK, DEC, "psa-project-8", "netsuite", "GBP", 49_901),
    ]
    same_in_sap = [
        Amount(UK, NOV, "psa-project-7", "sap", "GBP", 22_295),
        Amount(UK, DEC, "psa-project-8", "sap", "GBP", 49_901),
    ]
    exact = reconcile(expected, [*netsuite, *same_in_sap], primary="netsuite", secondary="sap")
    assert exact.reconciled and exact.compared == 4

    sap = [
        Amount(UK, NOV, "psa-project-7", "sap", "GBP", 22_294),  # one cent short
        Amount(UK, DEC, "psa-project-9", "sap", "GBP", 500),  # a project we never posted for
    ]  # and DEC project 8 is missing in SAP
    report = reconcile(expected, [*netsuite, *sap], primary="netsuite", secondary="sap")
    diffs = {
        (d.kind, d.period, d.project, d.erp): (d.expected_minor, d.held_minor) for d in report.differences
    }
    assert diffs == {
        ("ledger_vs_erp", NOV, "psa-project-7", "sap"): (22_295, 22_294),
        ("ledger_vs_erp", DEC, "psa-project-8", "sap"): (49_901, None),
        ("ledger_vs_erp", DEC, "psa-project-9", "sap"): (None, 500),
        ("primary_vs_secondary", NOV, "psa-project-7", "sap"): (22_295, 22_294),
        ("primary_vs_secondary", DEC, "psa-project-8", "sap"): (49_901, None),
        ("primary_vs_secondary", DEC, "psa-project-9", "sap"): (None, 500),
    }
    one_cent = next(d for d in report.differences if d.project == "psa-project-7")
    assert one_cent.difference_minor == -1
    assert not report.reconciled and report.as_dict()["differences"][0]["difference_minor"] == -1


def test_amounts_must_be_integer_minor_units() -> None:
    with pytest.raises(TypeError, match="integer minor units"):
        reconcile([Amount(UK, NOV, "p", "sap", "GBP", 1.5)], [], primary="netsuite", secondary="sap")  # type: ignore[arg-type]
    assert isinstance(Difference("ledger_vs_erp", UK, NOV, "p", "sap", "GBP", 1, None).as_dict(), dict)
