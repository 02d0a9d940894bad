"""Billing at the month-end scale (issue 14, deliverable 10): a stage of the posting benchmark.

After ``devtools/bench.py`` has posted its month (time entries and expenses, through the posting
ledger and engine, and measured its own baselines), this stage bills the month's posted time
entries on the same database and ERP simulator, each step timed on its own:

1. **events**: ``billing.event`` (migration ``0021_billing_events.sql``) from the posted time
   entries. The event builder (the ``billing-events`` branch) is not on main yet, so the
   benchmark seeds the events itself with **one set-based ``INSERT ... SELECT``**
   (``SEED_TIME_EVENTS``) that keeps the builder's rule for time: approved, billable, live
   entries with an amount, on a time and materials project, whose current version the ERP holds
   (a confirmed ``timebill`` posting of that version); the customer is the PSA project's client
   (the staged ``/v2/projects`` row), the cycle monthly, the grouping key customer, project, legal
   entity, currency and cycle (the builder's default grouping; its cycle overrides per customer
   or legal entity are not applied). Expenses, milestones and retainers are not billed here.
2. **plan**: the ERP's accounting periods read once, then
   :func:`psa_erp_sync.billing.invoices.plan_documents`: ready events grouped into invoice
   documents (at most ``MAX_LINES`` lines each), each document, its lines, its ledger row and its
   events' move to ``invoiced`` one transaction, before any ERP call.
3. **post**: :func:`psa_erp_sync.billing.invoice_pass.invoice_ready_events`, the pass the
   ``billing`` DAG runs (posting locks, the account's shared budget, periods, an empty planning
   step since everything is planned, the posting engine per document type, the documents' states
   mirrored from the ledger), at the posting benchmark's concurrency and batch size.
4. **the same-run ceiling**: the engine's own invoice batches, read back from the ledger, POSTed
   again by a bare client to the ERP simulator's async batch endpoint under new external ids, each
   job's result read (the engine's protocol: one POST and one result read per batch), at the same
   concurrency: ``devtools.bench.same_records_capacity`` for ``invoice``. The target
   (``billing_post_vs_bare_invoices`` in ``devtools/bench_targets.py``) is the post step's
   invoices/s over this ceiling's.

Before planning and before posting, the tables the previous step wrote are vacuumed and analysed
(timed, reported, part of no figure), as the posting benchmark settles its database before posting.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from devtools.bench import CpuMeter, same_records_capacity

log = logging.getLogger("bench.billing")

RUN_ID = "bench-billing"

# The event builder's rule for time entries (psa_erp_sync.billing.events), set based, without the
# master data and forecast project tables the builder reads (the benchmark does not fill them); the
# event_ref has the builder's shape (kind:system:id:version), customer_ref the ERP customer's external id.
SEED_TIME_EVENTS = """
WITH project AS (
    SELECT DISTINCT ON (source_id) source_id AS project_ref,
           'psa-client-' || (payload -> 'client' ->> 'id') AS customer_ref,  -- the ERP customer's external id
           coalesce(payload ->> 'billing_type',
                    CASE WHEN (payload ->> 'is_fixed_fee')::boolean THEN 'fixed_fee'
                         ELSE 'time_and_materials' END) AS billing_type
    FROM (SELECT source_id, fetched_at, staging.try_jsonb(payload) AS payload FROM staging.raw_record
          WHERE source_system = 'psa' AND endpoint = '/v2/projects') r
    ORDER BY source_id, fetched_at DESC
), billable AS (
    SELECT t.source_system, t.source_id, t.version_hash, p.customer_ref, t.project_ref, t.legal_entity,
           t.currency, 'monthly:' || to_char(t.spent_date, 'YYYY-MM') AS cycle, t.spent_date, t.hours,
           t.bill_rate_minor, t.amount_minor
    FROM canonical.time_entry t
    JOIN project p ON p.project_ref = t.project_ref
    WHERE t.approved AND t.billable AND NOT t.is_deleted AND t.amount_minor > 0
      AND p.billing_type = 'time_and_materials' AND p.customer_ref IS NOT NULL
      AND EXISTS (SELECT 1 FROM ledger.posting l
                  WHERE l.record_type = 'timebill' AND l.source_system = t.source_system
                    AND l.source_id = t.source_id AND l.source_version = t.version_hash
                    AND l.action IN ('post', 'adjust') AND l.state IN ('confirmed', 'resolved'))
)
INSERT INTO billing.event (event_ref, kind, source_system, source_id, source_version, billing_type,
    customer_ref, project_ref, legal_entity, currency, cycle, event_date, quantity, rate_minor,
    amount_minor, state, group_key, run_id)
SELECT 'time:' || source_system || ':' || source_id || ':' || version_hash, 'time', source_system,
       source_id, version_hash, 'time_and_materials', customer_ref, project_ref, legal_entity, currency,
       cycle, spent_date, hours, bill_rate_minor, amount_minor, 'ready',
       concat_ws('|', 'customer=' || customer_ref, 'project=' || project_ref,
                 'legal_entity=' || legal_entity, 'currency=' || currency, 'cycle=' || cycle),
       %(run_id)s
FROM billable
ON CONFLICT (event_ref) DO NOTHING
"""

_SETTLE = (
    "VACUUM (ANALYZE) billing.event, billing.document, billing.document_line, ledger.posting, ledger.attempt"
)


def _settle(dsn: str) -> float:
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(_SETTLE)
    return round(time.monotonic() - started, 2)


def _rate(n: int, seconds: float) -> int:
    return round(n / max(seconds, 1e-9))


def seed_events(dsn: str) -> dict[str, Any]:
    """Step 1: the month's posted time entries -> ready billing events, one statement."""
    with psycopg.connect(dsn) as conn:
        candidates = conn.execute(
            "SELECT count(*) FROM canonical.time_entry"
            " WHERE approved AND billable AND NOT is_deleted AND amount_minor > 0"
        ).fetchone()
        conn.commit()
        # The tables the posting pass just filled have no statistics yet (autovacuum has not come
        # round): planned on them, the statement below joined each billable entry to every project
        # (a nested loop, 6.4M rows filtered at 54k records: 22 s, 2.1 s after ANALYZE, measured
        # by the scaling check). Not timed, as the posting benchmark's settling VACUUM.
        analysed = time.monotonic()
        conn.execute("ANALYZE canonical.time_entry, ledger.posting, staging.raw_record")
        conn.commit()
        analyse_seconds = time.monotonic() - analysed
        started = time.monotonic()
        created = conn.execute(SEED_TIME_EVENTS, {"run_id": RUN_ID}).rowcount
        conn.commit()
        seconds = time.monotonic() - started
    return {
        "events": created,
        "billable_time_entries": int(candidates[0]) if candidates else 0,
        "seconds": round(seconds, 2),
        "rows_per_s": _rate(created, seconds),
        "analyze_seconds": round(analyse_seconds, 2),
        "note": "one set-based INSERT ... SELECT from the posted time entries (the event builder is not on main)",
    }


def plan(dsn: str, client: Any, config: Any) -> dict[str, Any]:
    """Step 2: periods read once, ready events -> invoice documents in the ledger."""
    from psa_erp_sync.billing import invoices
    from psa_erp_sync.posting.periods import PERIOD_QUERY, PeriodBook

    before = client.requests_made
    started = time.monotonic()
    periods = PeriodBook.from_rows(client.suiteql(PERIOD_QUERY))
    with psycopg.connect(dsn, autocommit=True) as conn:
        planned = invoices.plan_documents(
            conn, doc_type="invoice", config=config, periods=periods, run_id=RUN_ID
        ).as_dict()
    seconds = time.monotonic() - started
    lines, documents = planned["lines"]["invoice"], planned["documents"]["invoice"]
    return {
        "lines": lines,
        "documents": documents,
        "seconds": round(seconds, 2),
        "rows_per_s": _rate(lines, seconds),
        "documents_per_s": round(documents / max(seconds, 1e-9), 1),
        "lines_per_document": round(lines / max(documents, 1), 1),
        "parked": planned["parked"],
        "moved_to_open_period": planned["moved_to_open_period"],
        "erp_requests": client.requests_made - before,
    }


def post(dsn: str, client: Any, config: Any, settings: Any, lines: int) -> dict[str, Any]:
    """Step 3: the billing DAG's pass over the planned documents."""
    from psa_erp_sync.billing.invoice_pass import invoice_ready_events

    before, waited = client.requests_made, client.request_seconds
    started = time.monotonic()
    result = invoice_ready_events(dsn=dsn, client=client, config=config, settings=settings, run_id=RUN_ID)
    seconds = time.monotonic() - started
    outcome = result.outcome["invoice"]
    sent = int(outcome["posted"]) + int(outcome["rejected"])
    requests = client.requests_made - before
    return {
        "documents_sent": sent,
        "lines": lines,
        "seconds": round(seconds, 2),
        "rows_per_s": _rate(lines, seconds),
        "documents_per_s": round(sent / max(seconds, 1e-9), 1),
        "engine_seconds": round(float(outcome["seconds"]), 2),
        "engine_documents_per_s": round(sent / max(float(outcome["seconds"]), 1e-9), 1),
        "erp_requests": requests,
        "erp_requests_per_invoice": round(requests / max(sent, 1), 3),
        "erp_mean_requests_in_flight": round((client.request_seconds - waited) / max(seconds, 1e-9), 1),
        "outcome": {k: outcome[k] for k in ("posted", "rejected", "parked", "still_pending")},
        "rejected_by_code": outcome.get("rejected_by_code", {}),
        "documents_by_state": result.documents,
    }


def measure_billing(
    *, dsn: str, erp_url: str, erp_pid: int | None, concurrency: int, batch: int, workers_per_slot: int
) -> dict[str, Any]:
    """Events, plan and post of the posted month's time, and the bare client's invoice capacity
    for the same payloads; the figures for ``posting.billing`` of the ``make bench`` document."""
    from psa_erp_sync.clients.erp import NetSuiteClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting.engine import EngineSettings

    config = load_config()
    settings = EngineSettings(
        batch_size=batch, max_concurrency=concurrency, workers_per_slot=workers_per_slot
    )
    out: dict[str, Any] = {"events": seed_events(dsn), "settle_seconds": [_settle(dsn)]}
    log.info("billing: %d events from posted time entries", out["events"]["events"])
    with NetSuiteClient(
        base_url=erp_url, account_id="bench", token="bench", concurrency_limit=concurrency
    ) as erp:
        out["plan"] = plan(dsn, erp, config)
        out["settle_seconds"].append(_settle(dsn))
        log.info("billing: %d invoices planned, posting", out["plan"]["documents"])
        meter = CpuMeter(erp_pid, dsn)
        meter.start()
        out["post"] = post(dsn, erp, config, settings, out["plan"]["lines"])
        out["post"]["cores_busy"] = meter.stop()
    meter.start()
    started = time.monotonic()
    bare = same_records_capacity(dsn, erp_url, "invoice", concurrency)
    seconds = time.monotonic() - started
    bare["cores_busy"] = meter.stop()
    bare["documents_per_s"] = round(bare["records"] / max(seconds, 1e-9), 1)
    bare["erp_requests_per_invoice"] = round(bare["requests"] / max(bare["records"], 1), 3)
    bare["note"] = "the engine's invoice batches re-sent by a bare client (new external ids), results read"
    out["bare_invoice_capacity"] = bare
    capacity = max(bare["documents_per_s"], 1e-9)
    out["post_vs_bare_invoice_capacity"] = round(out["post"]["documents_per_s"] / capacity, 2)
    out["engine_vs_bare_invoice_capacity"] = round(out["post"]["engine_documents_per_s"] / capacity, 2)
    return out
