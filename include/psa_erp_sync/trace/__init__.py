"""Per-record trace: the path of one PSA record through staging, validation, the posting ledger,
the ERP, the forecast and billing (events, invoices and credit memos, the PSA invoice, the revenue
journals of its project and period), with the OpenLineage run id of every step.

``python -m psa_erp_sync.trace psa 12345`` (or ``psa psa-te-12345``) prints it; the Airflow plugin
serves the same as JSON at ``/psa-erp-sync/trace/{source_system}/{source_id}``. Everything comes
from the ODS (``staging``, ``canonical``, ``exceptions``, ``ledger``, ``audit``, ``forecast``,
``billing``, ``revenue`` and ``lineage.task_run``); nothing is read from the source systems, so a
trace shows what we did, not what the PSA says now. No personal data is printed: ids, hashes, dates,
amounts, codes and states.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.rows import dict_row

from psa_erp_sync.contracts import kinds
from psa_erp_sync.trace import billing, parts
from psa_erp_sync.trace.common import Cursor

KINDS: dict[str, dict[str, str]] = {
    kind.name: {
        "endpoint": kind.psa_endpoint,
        "table": kind.canonical_table,
        "record_type": kind.record_type,
        "prefix": kind.external_id_prefix,
    }
    for kind in kinds.KINDS.values()
}
_EXTERNAL_ID = re.compile(
    "^(" + "|".join(re.escape(k.external_id_prefix) for k in kinds.KINDS.values()) + r")(\d+)$"
)
_KIND_OF_PREFIX = {k.external_id_prefix: k.name for k in kinds.KINDS.values()}


class RecordNotFound(LookupError):
    """Nothing in the ODS mentions this record."""


def parse_source_id(source_id: str) -> tuple[str, list[str]]:
    """Accept a PSA id (``12345``) or an ERP external id (``psa-te-12345``); return the id and the
    record kinds to look in."""
    match = _EXTERNAL_ID.match(source_id.strip())
    if match:
        return match.group(2), [_KIND_OF_PREFIX[match.group(1)]]
    return source_id.strip(), list(KINDS)


def _trace_kind(conn: Cursor, source_system: str, source_id: str, kind: str) -> dict[str, Any] | None:
    spec = KINDS[kind]
    staging, canonical, exceptions, postings = parts.fetch_rows(conn, source_system, source_id, kind, spec)
    events = billing.fetch_events(conn, kind, source_system, source_id)
    if not (staging or canonical or exceptions or postings or events):
        return None
    staging_out = parts.staging_part(conn, staging, spec)
    # Where the record is: its own lane (a parallel run's shadow rows are listed, marked, not counted).
    landed = [p for p in postings if p["state"] in ("confirmed", "resolved") and not p["shadow"]]
    return {
        "source_system": source_system,
        "source_id": source_id,
        "kind": kind,
        "endpoint": spec["endpoint"],
        "staging": staging_out,
        "validation": parts.validation_part(conn, kind, spec, canonical, exceptions, staging_out),
        "ledger": parts.ledger_part(conn, postings, spec),
        "erp": parts.erp_part(landed, spec, source_id),
        "forecast": parts.forecast(conn, canonical, landed),
        "audit": parts.audit_part(conn, spec, source_id),
        "billing": billing.billing_part(conn, events, canonical, f"{spec['prefix']}{source_id}"),
    }


def trace(conn: psycopg.Connection[Any], source_system: str, source_id: str) -> list[dict[str, Any]]:
    """Every record kind under this id (a PSA time entry and an expense may share a number)."""
    ident, kinds = parse_source_id(source_id)
    with conn.cursor(row_factory=dict_row) as cur:
        found = [t for kind in kinds if (t := _trace_kind(cur, source_system, ident, kind)) is not None]
    if not found:
        raise RecordNotFound(
            f"no {source_system} record {source_id!r} in the ODS (staging, canonical, ledger)"
        )
    return found


def format_text(traces: list[dict[str, Any]]) -> str:
    """A human-readable rendering of :func:`trace`."""
    lines: list[str] = []

    def runs(items: list[dict[str, Any]]) -> str:
        return (
            ", ".join(f"{r['ol_job_name']} try {r['try_number']} -> {r['ol_run_id']}" for r in items) or "-"
        )

    for t in traces:
        lines.append(f"{t['source_system']} {t['kind']} {t['source_id']} ({t['endpoint']})")
        lines.append("  1. staging")
        for s in t["staging"]:
            lines.append(
                f"     version {s['payload_hash'][:12]} fetched {s['fetched_at']} by {s['first_staged_by']['dag_id']}"
                f" / {s['first_staged_by']['run_id']}; lineage: {runs(s['lineage'])}"
            )
        if not t["staging"]:
            lines.append("     (no staged payload)")
        v = t["validation"]
        lines.append(f"  2. validation: {v['verdict']}; lineage: {runs(v['lineage'])}")
        if v["canonical"]:
            c = v["canonical"]
            lines.append(
                f"     canonical version {c['version_hash'][:12]}: {c['spent_date']} {c['legal_entity']}"
                f" {c['amount_minor']} {c['currency']} minor units, approved={c['approved']} deleted={c['is_deleted']}"
            )
        for e in v["exceptions"]:
            lines.append(
                f"     exception #{e['id']} {e['kind']} {e['reason_code']} [{e['status']}] owner {e['owner']},"
                f" seen {e['occurrences']}x, last run {e['last_run_id']}; lineage: {runs(e['lineage'])}"
            )
        lines.append("  3. posting ledger")
        for p in t["ledger"]:
            lines.append(
                f"     {p['action']}{' (correcting ' + p['external_id'] + ')' if p.get('corrects') else ''}"
                f" {p['idempotency_key'][:16]} state={p['state']} period={p['period']}"
                f" amount={p['amount_minor']} {p['currency']} erp={p['target_erp']}"
                f"{'/' + p['erp_account'] if p.get('erp_account') else ''} erp_id={p['erp_internal_id']}"
                f"{' (parallel-run shadow)' if p.get('shadow') else ''}"
            )
            for a in p["attempts"]:
                lines.append(
                    f"       attempt {a['attempt_no']}: {a['outcome']} (HTTP {a['http_status']}) run {a['dag_run_id']}"
                    f" try {a['task_try']} batch {a['batch_key']}; lineage: {runs(a['lineage'])}"
                )
        if not t["ledger"]:
            lines.append("     (never planned for posting)")
        e = t["erp"]
        lines.append(
            f"  4. ERP {e.get('erp') or '-'} {e['record_type']} {e['external_id']}: internal id {e['internal_id']}, period {e['period']},"
            f" {'in the ERP' if e['in_erp'] else 'not in the ERP' + (' (reversed)' if e.get('last_action') == 'reverse' else '')}"
        )
        for c in e.get("corrections", []):
            lines.append(
                f"     correcting journal {c['external_id']} ({c['action']}): internal id {c['internal_id']},"
                f" period {c['period']}, {c['amount_minor']} {c['currency']} minor units"
                + (f", {c['hours']} h" if c["hours"] is not None else "")
            )
        if e.get("corrections") and e["in_erp"]:
            lines.append(
                f"     ERP total of the entry (record + corrections): {e['amount_minor']} minor units"
            )
        lines.append("  5. forecast")
        for f in t["forecast"]:
            lines.append(
                f"     snapshot {f['snapshot_id'][:16]} ({f['scenario']}, as of {f['as_of']}) month {f['month']}"
                f" run {f['run_id']}; lineage: {runs(f['lineage'])}"
            )
        if not t["forecast"]:
            lines.append("     (no forecast snapshot has used it yet)")
        lines.extend(billing.format_billing(t["billing"]))
        lines.append("  audit: " + ", ".join(f"{a['action']} by {a['actor']}" for a in t["audit"]) or "-")
    return "\n".join(lines)
