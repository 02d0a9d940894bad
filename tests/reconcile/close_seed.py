"""A hand-built closed month in the ODS (November 2026, legal entity LE-EU1, functional EUR), and
the ERP's records of it, for the close report tests.

What the month holds (minor units):

- time: psa-te-201, 1.25 h x 100.00 USD = 12500 USD at 0.9234 = 11542 EUR (half-even of 11542.5);
  psa-te-202, 1.00 h x 100.00 EUR = 10000 EUR; psa-te-203 parked (closed period, never confirmed);
  psa-te-204 approved, never planned;
- expenses: psa-ex-301, 45.50 EUR;
- invoices: inv-1 (time 12500 + milestone 50000 = 62500 USD) and cm-1 (crediting the time line,
  12500 USD), both posted and read back; ready events ev-late (7000 USD, dated Oct 1: leakage) and
  ev-new (3000 USD, Nov 20);
- revenue: project P1 (USD) October contract asset 20000, November revenue 30000 and contract
  liability 5000; project P2 (EUR) November revenue 15000, contract asset 15000; the P1 journal of
  November (30000) planned, confirmed in the ledger and read back;
- exceptions: two open for finance-integration, one for billing, one resolved, one of another entity.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

ENTITY = "LE-EU1"
FUNCTIONAL = "EUR"
PERIOD = "2026-11"
JOURNAL = "rev-P1-LE-EU1-202611-USD-1"

TIME = [  # source id, hours, currency, amount, functional amount, rate, latest ledger state (None: no row)
    ("201", "1.25", "USD", 12500, 11542, "0.9234", "confirmed"),
    ("202", "1.00", "EUR", 10000, 10000, "1", "confirmed"),
    ("203", "2.00", "EUR", 20000, 20000, "1", "parked"),
    ("204", "0.50", "EUR", 5000, 5000, "1", None),
]


def erp_rows(entity: str = ENTITY, fcur: str = FUNCTIONAL) -> dict[str, list[dict[str, Any]]]:
    """The ERP's records as SuiteQL returns them, per record type."""
    return {
        "timebill": [
            {
                "externalid": "psa-te-201",
                "trandate": "2026-11-05",
                "subsidiary": entity,
                "currency": "USD",
                "exchangerate": "0.9234",
                "hours": "1.25",
                "rate": "100.00",
            },
            {
                "externalid": "psa-te-202",
                "trandate": "2026-11-06",
                "subsidiary": entity,
                "currency": fcur,
                "exchangerate": "1",
                "hours": "1.00",
                "rate": "100.00",
            },
        ],
        "expensereport": [
            {
                "externalid": "psa-ex-301",
                "trandate": "2026-11-07",
                "subsidiary": entity,
                "currency": fcur,
                "exchangerate": "1",
                "amount": "45.50",
            },
        ],
        "journalentry": [],
    }


class FakeErp:
    """A SuiteQL client over fixed rows (a pure stand-in: the close report only reads)."""

    def __init__(self, rows: dict[str, list[dict[str, Any]]]) -> None:
        self.rows = rows

    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        record_type = query.split(" FROM ")[1].split()[0]
        yield from self.rows.get(record_type, [])


def _ledger(
    conn: psycopg.Connection,
    key: str,
    record_type: str,
    source_id: str,
    external_id: str,
    state: str,
    amount: int,
    currency: str,
    tran_date: str,
    entity: str,
) -> None:
    conn.execute(
        "WITH p AS (INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id,"
        " source_version, external_id, action, state, legal_entity, amount_minor, currency) VALUES"
        " (%s, %s, 'psa', %s, 'v1', %s, 'post', %s, %s, %s, %s) RETURNING idempotency_key)"
        " INSERT INTO ledger.posting_payload (idempotency_key, payload) SELECT idempotency_key, %s::jsonb FROM p",
        (
            key,
            record_type,
            source_id,
            external_id,
            state,
            entity,
            amount,
            currency,
            f'{{"tranDate": "{tran_date}"}}',
        ),
    )


def _work(conn: psycopg.Connection, e: str, f: str) -> None:
    for sid, hours, cur, amount, famount, rate, state in TIME:
        conn.execute(
            "INSERT INTO canonical.time_entry (source_system, source_id, version_hash, spent_date, user_ref,"
            " project_ref, task_ref, legal_entity, hours, billable, bill_rate_minor, amount_minor, currency,"
            " approved, fingerprint, source_updated_at, record, functional_amount_minor, functional_currency,"
            " fx_rate) VALUES ('psa', %s, 'v1', '2026-11-05', '7', 'P1', '3', %s, %s, true, 10000, %s, %s,"
            " true, %s, '2026-11-06T10:00:00Z', '{}'::jsonb, %s, %s, %s)",
            (sid, e, hours, amount, f if cur == "EUR" else cur, f"fp{sid}", famount, f, rate),
        )
        if state is not None:
            _ledger(
                conn,
                f"k{sid}",
                "timebill",
                sid,
                f"psa-te-{sid}",
                state,
                amount,
                f if cur == "EUR" else cur,
                "2026-11-05",
                e,
            )
    conn.execute(
        "INSERT INTO canonical.expense_entry (source_system, source_id, version_hash, spent_date, user_ref,"
        " project_ref, legal_entity, category, billable, amount_minor, currency, approved, fingerprint,"
        " source_updated_at, record) VALUES ('psa', '301', 'v1', '2026-11-07', '7', 'P2', %s, 'travel',"
        " true, 4550, %s, true, 'fp301', '2026-11-08T10:00:00Z', '{}'::jsonb)",
        (e, f),
    )
    _ledger(conn, "k301", "expensereport", "301", "psa-ex-301", "confirmed", 4550, f, "2026-11-07", e)


def _billing(conn: psycopg.Connection, e: str, f: str) -> None:
    _ledger(conn, "kinv1", "invoice", "inv-1", "inv-1", "confirmed", 62500, "USD", "2026-11-30", e)
    _ledger(conn, "kcm1", "creditmemo", "cm-1", "cm-1", "confirmed", 12500, "USD", "2026-11-30", e)
    for ref, doc_type, credits, total, key in (
        ("inv-1", "invoice", None, 62500, "kinv1"),
        ("cm-1", "creditmemo", "inv-1", 12500, "kcm1"),
    ):
        conn.execute(
            "INSERT INTO billing.document (document_ref, doc_type, group_key, customer_ref, project_ref,"
            " legal_entity, currency, cycle, credits_document, doc_date, total_minor, line_count, members_hash,"
            " idempotency_key, state) VALUES (%s, %s, 'g', 'C1', 'P1', %s, 'USD', 'monthly:2026-11', %s,"
            " '2026-11-30', %s, 1, 'h', %s, 'posted')",
            (ref, doc_type, e, credits, total, key),
        )
    for ref, kind, amount, credits, state, doc, day in (
        ("ev-201", "time", 12500, None, "invoiced", "inv-1", "2026-11-05"),
        ("ev-ms", "milestone", 50000, None, "invoiced", "inv-1", "2026-11-20"),
        ("ev-201c", "time", -12500, "ev-201", "invoiced", "cm-1", "2026-11-25"),
        ("ev-late", "time", 7000, None, "ready", None, "2026-10-01"),
        ("ev-new", "time", 3000, None, "ready", None, "2026-11-20"),
    ):
        conn.execute(
            "INSERT INTO billing.event (event_ref, kind, source_system, source_id, source_version, billing_type,"
            " customer_ref, project_ref, legal_entity, currency, cycle, event_date, amount_minor, credits_ref,"
            " state, group_key, document_ref) VALUES (%s, %s, 'psa', %s, 'v1', 'time_and_materials', 'C1',"
            " 'P1', %s, 'USD', 'monthly:2026-11', %s, %s, %s, %s, 'g', %s)",
            (ref, kind, ref, e, day, amount, credits, state, doc),
        )
    for record_type, internal, ext, total in (
        ("invoice", "901", "inv-1", 62500),
        ("creditmemo", "902", "cm-1", 12500),
    ):
        conn.execute(
            "INSERT INTO billing.erp_invoice (record_type, internal_id, external_id, tran_date, legal_entity,"
            " currency, total_minor, last_modified, version_hash, body, read_run_id) VALUES"
            " (%s, %s, %s, '2026-11-30', %s, 'USD', %s, now(), 'v', '{}'::jsonb, 'r')",
            (record_type, internal, ext, e, total),
        )


def _revenue(conn: psycopg.Connection, e: str, f: str) -> None:
    for project, month, cur, revenue, asset, liability in (
        ("P1", "2026-10-01", "USD", 20000, 20000, 0),
        ("P1", "2026-11-01", "USD", 30000, 0, 5000),
        ("P2", "2026-11-01", f, 15000, 15000, 0),
    ):
        conn.execute(
            "INSERT INTO revenue.recognition (project_ref, legal_entity, period_month, currency, inputs_hash,"
            " billing_type, cost_to_date_minor, estimated_total_cost_minor, cum_revenue_minor,"
            " period_revenue_minor, cum_billed_minor, contract_asset_minor, contract_liability_minor,"
            " expected_loss_minor, loss_provision_minor, run_id) VALUES (%s, %s, %s, %s, 'h',"
            " 'time_and_materials', 0, 0, 0, %s, 0, %s, %s, 0, 0, 'r')",
            (project, e, month, cur, revenue, asset, liability),
        )
    with conn.transaction():
        conn.execute(
            "INSERT INTO revenue.journal (idempotency_key, external_id, project_ref, legal_entity, period_month,"
            " currency, seq, inputs_hash, state, posting_period, posting_month, debit_minor, credit_minor, run_id)"
            " VALUES ('kj1', %s, 'P1', %s, '2026-11-01', 'USD', 1, 'h', 'planned', 'NOV-2026', '2026-11-01',"
            " 30000, 30000, 'r')",
            (JOURNAL, e),
        )
        conn.execute(
            "INSERT INTO revenue.journal_line VALUES ('kj1', 1, '2400', 'contract_liability', 30000, 0),"
            " ('kj1', 2, '4000', 'revenue', 0, 30000)"
        )
    _ledger(conn, "kj1", "journalentry", JOURNAL, JOURNAL, "confirmed", 30000, "USD", "2026-11-30", e)
    conn.execute(
        "INSERT INTO billing.erp_journal (internal_id, external_id, tran_date, legal_entity, currency,"
        " last_modified, version_hash, body, read_run_id) VALUES ('701', %s, '2026-11-30', %s, 'USD', now(),"
        " 'v', '{}'::jsonb, 'r')",
        (JOURNAL, e),
    )
    conn.execute(
        "INSERT INTO billing.erp_journal_line VALUES ('701', 1, '2400', 30000, NULL, 'USD', NULL),"
        " ('701', 2, '4000', NULL, 30000, 'USD', NULL)"
    )


def _exceptions(conn: psycopg.Connection, e: str) -> None:
    for n, owner, status, entity in (
        (1, "finance-integration", "open", e),
        (2, "finance-integration", "open", e),
        (3, "billing", "open", e),
        (4, "billing", "resolved", e),
        (5, "billing", "open", "LE-US1"),
    ):
        conn.execute(
            "INSERT INTO exceptions.item (kind, domain, source_system, record_type, source_id, reason_code,"
            " legal_entity, owner, status) VALUES ('parked', 'time_expense', 'psa', 'timebill', %s,"
            " 'PERIOD_CLOSED', %s, %s, %s)",
            (str(n), entity, owner, status),
        )


def seed_month(dsn: str, entity: str = ENTITY, functional: str = FUNCTIONAL) -> None:
    """The whole month (see the module docstring; EUR stands for ``functional``), in one transaction."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        _work(conn, entity, functional)
        _billing(conn, entity, functional)
        _revenue(conn, entity, functional)
        _exceptions(conn, entity)
