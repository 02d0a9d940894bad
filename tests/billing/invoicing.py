"""Shared pieces of the invoicing tests: an ERP firm, billing.event rows, a pass, the exactly-once check.

Events are inserted into ``billing.event`` directly (what the event builder leaves: ``ready`` rows
and credit lines), so these tests exercise invoicing only. The ERP is the simulator over loopback.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import date, timedelta
from typing import Any

import psycopg

from tests.conftest import RunningSimulator

# (legal entity, currency): several entities and currencies, one UK entity billing in EUR too.
BOOKS = [("LE-US1", "USD"), ("LE-US2", "USD"), ("LE-UK1", "GBP"), ("LE-UK1", "EUR")]
MONTHS = ("2026-09", "2026-10", "2026-11", "2026-12")
COUNTRY = {"LE-US1": "US", "LE-US2": "US", "LE-UK1": "GB"}
HOME = {"LE-US1": "USD", "LE-US2": "USD", "LE-UK1": "GBP"}
# The ERP's rate for the UK entity's EUR customer (1 EUR = 0.865 GBP from 2026-08-01): in the
# simulator's rate table and in master.currency_rate, as master_data_sync leaves it.
EUR_GBP = ("EUR", "GBP", date(2026, 8, 1), "0.865")


def add_rate(erp: RunningSimulator, dsn: str | None, rate: tuple[str, str, date, str] = EUR_GBP) -> None:
    """One ERP currency rate, in the simulator and (``dsn``) in ``master.currency_rate``."""
    from psa_erp_sync.clients.erp import NetSuiteClient

    currency, base, day, value = rate
    body = {
        "baseCurrency": {"refName": base},
        "transactionCurrency": {"refName": currency},
        "exchangeRate": value,
        "effectiveDate": day.isoformat(),
    }
    with NetSuiteClient(base_url=erp.base_url, account_id="A", token="t", timeout=10) as client:
        client.upsert("currencyrate", f"{currency}-{base}-{day}", body)
    if dsn is not None:
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "INSERT INTO master.currency_rate (base_currency, transaction_currency, effective_date, exchange_rate)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (base, currency, day, value),
            )


def _period(entity: str, month: str, closed: bool = False) -> dict[str, Any]:
    start = date.fromisoformat(f"{month}-01")
    end = (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    return {
        "external_id": f"{entity}-{month}",
        "subsidiary": entity,
        "period_name": f"{start:%b %Y}",
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "closed": closed,
        "all_locked": closed,
        "ar_locked": closed,
        "ap_locked": closed,
    }


class Firm:
    """Customers and projects over the books above, seeded into the ERP simulator."""

    def __init__(self, customers: int = 6, projects: int = 12) -> None:
        self.projects: dict[str, tuple[str, str, str]] = {}  # project -> (customer, entity, currency)
        for p in range(1, projects + 1):
            customer = 1 + (p - 1) % customers
            entity, currency = BOOKS[(customer - 1) % len(BOOKS)]
            self.projects[str(100 + p)] = (str(customer), entity, currency)

    def seed_erp(self, erp: RunningSimulator) -> None:
        customers = {c: (e, cur) for c, e, cur in self.projects.values()}
        erp.admin(
            "POST",
            "/seed",
            json={
                "subsidiaries": [
                    {
                        "external_id": e,
                        "name": e,
                        "country": COUNTRY[e],
                        "currency": HOME[e],
                        "is_inactive": False,
                    }
                    for e in COUNTRY
                ],
                "currencies": [{"symbol": s, "name": s} for s in ("USD", "GBP", "EUR")],
                "customers": [
                    {
                        "external_id": f"psa-client-{c}",
                        "company_name": f"Customer {c}",
                        "subsidiary": e,
                        "currency": cur,
                        "is_inactive": False,
                    }
                    for c, (e, cur) in sorted(customers.items())
                ],
                "jobs": [
                    {
                        "external_id": f"psa-project-{p}",
                        "name": f"Project {p}",
                        "customer": f"psa-client-{c}",
                        "subsidiary": e,
                        "currency": cur,
                        "billing_type": "time_and_materials",
                        "is_inactive": False,
                    }
                    for p, (c, e, cur) in sorted(self.projects.items())
                ],
                "accounting_periods": [_period(e, m) for e in COUNTRY for m in MONTHS],
            },
        )
        if any(cur != HOME[e] for _c, e, cur in self.projects.values()):
            add_rate(erp, None)

    def events(
        self, lines: int, *, seed: int = 7, months: tuple[str, ...] = ("2026-10", "2026-11")
    ) -> list[dict[str, Any]]:
        """``lines`` ready billable events: mostly time, some expenses and milestones."""
        rng = random.Random(seed)
        projects = sorted(self.projects)
        out = []
        for n in range(1, lines + 1):
            project = projects[n % len(projects)]
            month = months[n % len(months)]
            day = date.fromisoformat(f"{month}-01") + timedelta(days=rng.randrange(28))
            kind = "time" if n % 10 < 8 else ("expense" if n % 10 == 8 else "milestone")
            if kind == "time":
                quantity = rng.choice([1, 2, 4, 7.5, 8])
                rate = rng.choice([12000, 15000, 17550])
                amount = round(quantity * rate)
            else:
                quantity, rate, amount = None, None, rng.randrange(1000, 500000)
            out.append(
                self.event(f"{n}", project, day, kind=kind, amount=amount, quantity=quantity, rate=rate)
            )
        return out

    def event(
        self,
        source_id: str,
        project: str,
        day: date,
        *,
        kind: str = "time",
        amount: int,
        quantity: float | None = None,
        rate: int | None = None,
        version: str = "v1",
    ) -> dict[str, Any]:
        customer, entity, currency = self.projects[project]
        cycle = f"monthly:{day:%Y-%m}"
        return {
            "event_ref": f"{kind}:psa:{source_id}:{version}",
            "kind": kind,
            "source_system": "psa",
            "source_id": source_id,
            "source_version": version,
            "billing_type": "time_and_materials" if kind in ("time", "expense") else "milestone",
            "customer_ref": f"psa-client-{customer}",
            "project_ref": project,
            "legal_entity": entity,
            "currency": currency,
            "cycle": cycle,
            "event_date": day,
            "quantity": quantity,
            "rate_minor": rate,
            "amount_minor": amount,
            "credits_ref": None,
            "group_key": f"{customer}|{project}|{entity}|{currency}|{cycle}",
        }


def insert_events(dsn: str, events: list[dict[str, Any]]) -> None:
    if not events:
        return
    columns = list(events[0])
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            f"INSERT INTO billing.event ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
            [[e[c] for c in columns] for e in events],
        )


def correct(dsn: str, event_ref: str, new_amount: int | None) -> None:
    """What the event builder does when an invoiced line changes (``new_amount``) or is unapproved
    (None): a credit line reversing it, plus the new version's ready event."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            """
            INSERT INTO billing.event (event_ref, kind, source_system, source_id, source_version, billing_type,
                customer_ref, project_ref, legal_entity, currency, cycle, event_date, quantity, rate_minor,
                amount_minor, credits_ref, group_key)
            SELECT event_ref || ':credit', kind, source_system, source_id, source_version, billing_type, customer_ref,
                   project_ref, legal_entity, currency, cycle, event_date, quantity, rate_minor, -amount_minor,
                   event_ref, group_key
            FROM billing.event WHERE event_ref = %s AND state = 'invoiced'
            """,
            (event_ref,),
        )
        if new_amount is not None:
            conn.execute(
                """
                INSERT INTO billing.event (event_ref, kind, source_system, source_id, source_version, billing_type,
                    customer_ref, project_ref, legal_entity, currency, cycle, event_date, quantity, rate_minor,
                    amount_minor, group_key)
                SELECT regexp_replace(event_ref, ':[^:]+$', '') || ':' || source_version || 'c', kind, source_system,
                       source_id, source_version || 'c', billing_type, customer_ref, project_ref, legal_entity,
                       currency, cycle, event_date, NULL, NULL, %s, group_key
                FROM billing.event WHERE event_ref = %s
                """,
                (new_amount, event_ref),
            )


def clean_billing(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE billing.document_line, billing.document, billing.event CASCADE")
        conn.execute("TRUNCATE master.currency_rate")
        currency, base, day, value = EUR_GBP
        conn.execute(
            "INSERT INTO master.currency_rate (base_currency, transaction_currency, effective_date, exchange_rate)"
            " VALUES (%s, %s, %s, %s)",
            (base, currency, day, value),
        )


def run_pass(
    dsn: str, erp: RunningSimulator, run_id: str, *, batch_size: int = 10, max_lines: int = 50
) -> Any:
    """One invoicing pass in this process (what one try of the ``invoice`` task does)."""
    from psa_erp_sync.billing.invoice_pass import invoice_ready_events
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.clients.http import RetryPolicy
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings

    retry = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
    with NetSuiteClient(base_url=erp.base_url, account_id="A", token="t", timeout=10, retry=retry) as client:
        return invoice_ready_events(
            dsn=dsn,
            client=client,
            config=load_config(),
            run_id=run_id,
            max_lines=max_lines,
            settings=EngineSettings(batch_size=batch_size, max_concurrency=3, progress_every_s=3600),
        )


def erp_documents(dsn: str, doc_type: str) -> list[dict[str, Any]]:
    """The simulator's stored bodies (its own schema in the test database)."""
    with psycopg.connect(dsn) as conn:
        return [
            b | {"externalId": x}
            for b, x in conn.execute(
                "SELECT body, external_id FROM sim_erp.record WHERE type = %s", (doc_type,)
            )
        ]


def assert_billed_exactly_once(dsn: str) -> dict[str, int]:
    """0 double-billed, 0 unbilled, ERP billed total per project = Σ events to the cent; the figures."""
    invoices, memos = erp_documents(dsn, "invoice"), erp_documents(dsn, "creditmemo")
    billed = Counter(line["custcol_psa_event"] for d in invoices for line in d["item"]["items"])
    credited = Counter(line["custcol_psa_event"] for d in memos for line in d["item"]["items"])
    with psycopg.connect(dsn) as conn:
        events = conn.execute(
            "SELECT event_ref, kind, source_system, source_id, project_ref, currency, amount_minor, credits_ref,"
            " state FROM billing.event"
        ).fetchall()
        unfinished = conn.execute(
            "SELECT count(*) FROM ledger.posting WHERE state IN ('pending', 'sent', 'ambiguous', 'rejected', 'parked')"
        ).fetchone()
    assert unfinished == (0,), unfinished
    double = [ref for ref, n in (billed + credited).items() if n > 1]
    assert double == [], double[:10]  # no event on two documents
    unbilled = [
        e[0] for e in events if e[8] != "withdrawn" and (billed if e[7] is None else credited)[e[0]] != 1
    ]
    assert unbilled == [], unbilled[:10]
    # A source line is billed at most once net: its invoiced versions minus its credits.
    net: Counter[tuple[str, str, str]] = Counter()
    for ref, kind, system, source, *_rest in events:
        net[(kind, system, source)] += 1 if ref in billed else 0
        net[(kind, system, source)] -= 1 if ref in credited else 0
    assert [k for k, n in net.items() if n > 1] == []
    # The ERP's billed total per project = Σ events (credits negative), in minor units.
    want: dict[tuple[str, str], int] = defaultdict(int)
    for _ref, _k, _s, _src, project, currency, amount, _c, state in events:
        want[(project, currency)] += int(amount) if state != "withdrawn" else 0
    have: dict[tuple[str, str], int] = defaultdict(int)
    for sign, docs in ((1, invoices), (-1, memos)):
        for d in docs:
            key = (d["job"]["externalId"].removeprefix("psa-project-"), d["currency"]["refName"])
            have[key] += sign * int(_cents(d["total"]))
    assert dict(have) == dict(want)
    ext = [d["externalId"] for d in invoices + memos]
    assert len(ext) == len(set(ext))
    return {
        "events": len(events),
        "invoices": len(invoices),
        "credit_memos": len(memos),
        "lines": sum(billed.values()),
    }


def _cents(value: Any) -> int:
    from decimal import Decimal

    return int(Decimal(str(value)) * 100)
