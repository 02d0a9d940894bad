"""A small firm written straight into the ODS (what the extracts and the posting flow would have
left there), with hand-computable figures:

- ``FF1`` fixed fee 1,000,000 USD; u1 costs 100.00/h. Sep: 20 h = 200,000 of cost; Oct: 20 h.
  Schedule: 20 h in each of the weeks of Oct 5, Nov 2 and Nov 9. Sep: EAC = 200,000 + 600,000 =
  800,000 -> 25 % -> 250,000. Oct: EAC = 400,000 + 400,000 -> 50 % -> 500,000 (Oct earns 250,000).
- ``TM1`` time and materials, budget 2,000,000: posted billable time 50,000 in Sep, 70,000 in Oct.
- ``MS1`` milestones of 300,000: 100,000 signed off on Oct 12; 100,000 completed, not signed off.
- ``RET1`` retainer 1,200,000 from 2026-01-16 to 2027-01-15: 100,000 a month (Sep, Oct).
- Accounting periods of LE-US1 (post to the first open period) for Sep, Oct and Nov 2026, open.
"""

from __future__ import annotations

import json
from datetime import date

import psycopg

PROJECTS = [
    ("FF1", "fixed_fee", 1_000_000, None, None, None),
    ("TM1", "time_and_materials", None, 2_000_000, None, None),
    ("MS1", "milestone", 300_000, None, None, None),
    ("RET1", "retainer", 1_200_000, None, date(2026, 1, 16), date(2027, 1, 15)),
]


def time_entry(
    conn: psycopg.Connection, sid: str, project: str, day: date, hours: int, amount: int = 0
) -> None:
    """An approved time entry of u1; with ``amount``, billable and confirmed posted in the ERP."""
    conn.execute(
        "INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,"
        " project_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency, approved,"
        " fingerprint, source_updated_at, record) VALUES ('psa', %s, 'v1', %s, 'u1', %s, 'LE-US1', %s, %s,"
        " 0, %s, 'USD', true, %s, now(), '{}'::jsonb)",
        (sid, day, project, hours, amount > 0, amount, f"fp{sid}"),
    )
    if amount:
        conn.execute(
            "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
            " external_id, action, state, legal_entity, amount_minor, currency)"
            " VALUES (%s, 'timebill', 'psa', %s, 'v1', %s, 'post', 'confirmed', 'LE-US1', %s, 'USD')",
            (f"k{sid}", sid, f"psa-te-{sid}", amount),
        )


def period_row(conn: psycopg.Connection, month: int, *, closed: bool) -> None:
    body = {
        "externalid": f"US1-2026-{month:02d}",
        "subsidiary": "LE-US1",
        "startdate": date(2026, month, 1).isoformat(),
        "enddate": (date(2026, month + 1, 1).toordinal() - 1),
        "closed": "T" if closed else "F",
        "isquarter": "F",
        "isyear": "F",
    }
    body["enddate"] = date.fromordinal(int(body["enddate"])).isoformat()
    conn.execute(
        "INSERT INTO master.erp_record (record_type, external_id, internal_id, version_hash, subsidiary,"
        " is_inactive, body) VALUES ('accountingperiod', %s, %s, 'v', 'LE-US1', false, %s)"
        " ON CONFLICT (erp, record_type, company_code, external_id) DO UPDATE SET body = EXCLUDED.body",
        (body["externalid"], str(month), json.dumps(body)),
    )


def seed_firm(dsn: str) -> None:
    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("DELETE FROM master.erp_record WHERE record_type = 'accountingperiod'")
        for ref, kind, fee, budget, starts, ends in PROJECTS:
            conn.execute(
                "INSERT INTO forecast.src_project (project_ref, practice, legal_entity, currency, billing_type,"
                " is_active, starts_on, ends_on, hourly_rate_minor, fee_minor, budget_minor)"
                " VALUES (%s, 'Technology', 'LE-US1', 'USD', %s, true, %s, %s, 0, %s, %s)",
                (ref, kind, starts or date(2026, 9, 1), ends or date(2026, 12, 31), fee, budget),
            )
        conn.execute("INSERT INTO forecast.src_person VALUES ('u1', 'LE-US1', 'USD', true, 144000, 10000)")
        for i, week in enumerate((date(2026, 10, 5), date(2026, 11, 2), date(2026, 11, 9))):
            conn.execute(
                "INSERT INTO forecast.src_schedule VALUES (%s, 'u1', 'FF1', %s, 20)", (f"s{i}", week)
            )
        conn.execute(
            "INSERT INTO forecast.src_milestone VALUES ('m1', 'MS1', '2026-10-10', 100000, 'signed_off', '2026-10-12'),"
            " ('m2', 'MS1', '2026-10-20', 100000, 'completed', '2026-10-21'),"
            " ('m3', 'MS1', '2026-12-01', 100000, 'planned', NULL)"
        )
        time_entry(conn, "1", "FF1", date(2026, 9, 15), 20)
        time_entry(conn, "2", "FF1", date(2026, 10, 15), 20)
        time_entry(conn, "3", "TM1", date(2026, 9, 10), 5, amount=50_000)
        time_entry(conn, "4", "TM1", date(2026, 10, 10), 7, amount=70_000)
        for month in (9, 10, 11):
            period_row(conn, month, closed=False)
