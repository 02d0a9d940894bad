"""Per-record trace: the path of one PSA record through staging, validation, the posting ledger,
the ERP and the forecast, with the OpenLineage run id of every step.

``python -m psa_erp_sync.trace psa 12345`` (or ``psa psa-te-12345``) prints it; the Airflow plugin
serves the same as JSON at ``/psa-erp-sync/trace/{source_system}/{source_id}``. Everything comes
from the ODS (``staging``, ``canonical``, ``exceptions``, ``ledger``, ``audit``, ``forecast`` and
``lineage.task_run``); nothing is read from the source systems, so a trace shows what we did, not
what the PSA says now. No personal data is printed: ids, hashes, dates, amounts, codes and states.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

Cursor = psycopg.Cursor[dict[str, Any]]

KINDS = {
    "time_entry": {
        "endpoint": "/v2/time_entries",
        "table": "canonical.time_entry",
        "record_type": "timebill",
        "prefix": "psa-te-",
    },
    "expense_entry": {
        "endpoint": "/v2/expenses",
        "table": "canonical.expense_entry",
        "record_type": "expensereport",
        "prefix": "psa-ex-",
    },
}
_EXTERNAL_ID = re.compile(r"^psa-(te|ex)-(\d+)$")


class RecordNotFound(LookupError):
    """Nothing in the ODS mentions this record."""


def parse_source_id(source_id: str) -> tuple[str, list[str]]:
    """Accept a PSA id (``12345``) or an ERP external id (``psa-te-12345``); return the id and the
    record kinds to look in."""
    match = _EXTERNAL_ID.match(source_id.strip())
    if match:
        return match.group(2), ["time_entry" if match.group(1) == "te" else "expense_entry"]
    return source_id.strip(), list(KINDS)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _split_run_key(run_key: str) -> dict[str, str]:
    """``{dag_id}/{run_id}/{endpoint}`` (the endpoint starts with ``/``)."""
    head, _, endpoint = run_key.partition("//")
    dag_id, _, run_id = head.partition("/")
    return {"dag_id": dag_id, "run_id": run_id, "endpoint": "/" + endpoint}


def _lineage(
    conn: Cursor, *, run_id: str | None, step: str, try_number: int | None = None, dag_id: str | None = None
) -> list[dict[str, Any]]:
    if not run_id:
        return []
    clauses = ["run_id = %s", "step = %s"]
    params: list[Any] = [run_id, step]
    if try_number is not None:
        clauses.append("try_number = %s")
        params.append(try_number)
    if dag_id is not None:
        clauses.append("dag_id = %s")
        params.append(dag_id)
    query = (
        "SELECT dag_id, task_id, try_number, ol_run_id, ol_job_namespace, ol_job_name, started_at"
        " FROM lineage.task_run WHERE {} ORDER BY started_at, try_number"
    )
    rows = conn.execute(query.format(" AND ".join(clauses)), params).fetchall()
    if not rows:  # an event-driven run does every step in one task, recorded as step 'stream'
        params[1] = "stream"
        rows = conn.execute(query.format(" AND ".join(clauses)), params).fetchall()
    return [_plain(dict(row)) for row in rows]


def _table_exists(conn: Cursor, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (name,)).fetchone()
    return bool(row and row["present"])


def _trace_kind(conn: Cursor, source_system: str, source_id: str, kind: str) -> dict[str, Any] | None:
    spec = KINDS[kind]
    staging = conn.execute(
        """
        SELECT payload_hash, fetched_at, first_run_key, last_run_key
        FROM staging.raw_record WHERE source_system = %s AND endpoint = %s AND source_id = %s
        ORDER BY fetched_at, payload_hash
        """,
        (source_system, spec["endpoint"], source_id),
    ).fetchall()
    canonical = conn.execute(
        f"""
        SELECT version_hash, spent_date, project_ref, legal_entity, billable, amount_minor, currency, approved,
               is_deleted, source_updated_at, validated_at{", hours" if kind == "time_entry" else ""}
        FROM {spec["table"]} WHERE source_system = %s AND source_id = %s
        """,
        (source_system, source_id),
    ).fetchone()
    exceptions = conn.execute(
        """
        SELECT id, kind, reason_code, status, owner, legal_entity, source_version, occurrences, first_seen,
               last_seen, last_run_id
        FROM exceptions.item WHERE source_system = %s AND record_type = %s AND source_id = %s ORDER BY id
        """,
        (source_system, kind, source_id),
    ).fetchall()
    postings = conn.execute(
        """
        SELECT idempotency_key, seq, action, state, source_version, external_id, legal_entity, period,
               amount_minor, currency, erp_internal_id, attempts, last_error->>'code' AS last_error_code,
               created_at, updated_at, corrects, payload->>'custbody_psa_hours' AS hours_delta
        FROM ledger.posting WHERE record_type = %s AND source_system = %s AND source_id = %s ORDER BY seq
        """,
        (spec["record_type"], source_system, source_id),
    ).fetchall()
    if not (staging or canonical or exceptions or postings):
        return None

    staging_out = []
    for row in staging:
        first, last = _split_run_key(row["first_run_key"]), _split_run_key(row["last_run_key"])
        staging_out.append(
            {
                "payload_hash": row["payload_hash"],
                "fetched_at": _plain(row["fetched_at"]),
                "first_staged_by": first,
                "last_seen_by": last,
                "lineage": _lineage(
                    conn, run_id=first["run_id"], dag_id=first["dag_id"], step=f"extract:{spec['endpoint']}"
                ),
            }
        )

    if canonical is None:
        verdict = "quarantined" if any(e["kind"] == "quarantine" for e in exceptions) else "not validated"
    elif canonical["is_deleted"]:
        verdict = "deleted in the PSA"
    elif not canonical["approved"]:
        verdict = "valid, not approved"
    else:
        verdict = "valid, approved"
    open_quarantine = [e for e in exceptions if e["kind"] == "quarantine" and e["status"] == "open"]
    if open_quarantine and canonical is not None:
        verdict += " (a later version is quarantined)"
    # The version in canonical was validated by the run that first staged it.
    validated_by = next(
        (
            s["first_staged_by"]
            for s in staging_out
            if canonical and s["payload_hash"] == canonical["version_hash"]
        ),
        None,
    )
    exceptions_out = []
    for item in exceptions:
        entry = _plain(dict(item))
        step = f"validate:{kind}" if item["kind"] == "quarantine" else f"post:{spec['record_type']}"
        entry["lineage"] = _lineage(conn, run_id=item["last_run_id"], step=step)
        exceptions_out.append(entry)
    validation = {
        "verdict": verdict,
        "canonical": _plain(dict(canonical)) if canonical else None,
        "validated_by": validated_by,
        "lineage": _lineage(
            conn, run_id=validated_by["run_id"], dag_id=validated_by["dag_id"], step=f"validate:{kind}"
        )
        if validated_by
        else [],
        "exceptions": exceptions_out,
    }

    ledger_out = []
    for posting in postings:
        attempts = conn.execute(
            """
            SELECT attempt_no, batch_key, dag_run_id, task_try, started_at, finished_at, outcome, http_status,
                   detail->>'code' AS code
            FROM ledger.attempt WHERE idempotency_key = %s ORDER BY attempt_no
            """,
            (posting["idempotency_key"],),
        ).fetchall()
        attempts_out = []
        for attempt in attempts:
            entry = _plain(dict(attempt))
            entry["lineage"] = _lineage(
                conn,
                run_id=attempt["dag_run_id"],
                try_number=attempt["task_try"],
                step=f"post:{spec['record_type']}",
            )
            attempts_out.append(entry)
        ledger_out.append({**_plain(dict(posting)), "attempts": attempts_out})

    landed = [p for p in postings if p["state"] in ("confirmed", "resolved")]
    erp: dict[str, Any] = {"external_id": f"{spec['prefix']}{source_id}", "record_type": spec["record_type"]}
    own = [p for p in landed if p["corrects"] is None]  # the record itself
    # Correcting journals (a correction of the record while its period was closed): each carries a
    # difference; the entry's ERP total is the record plus all of them (docs/posting.md).
    fixes = [p for p in landed if p["corrects"] is not None]
    if landed:
        last = landed[-1]
        # A reversal carries no internal id or period of its own: show those of the posting it removed.
        placed = [p for p in own if p["erp_internal_id"] is not None] or own[-1:] or [last]
        base = own[-1] if own else None
        base_amount = base["amount_minor"] if base is not None and base["action"] != "reverse" else 0
        erp.update(
            internal_id=placed[-1]["erp_internal_id"],
            period=placed[-1]["period"],
            in_erp=last["action"] != "reverse",
            amount_minor=None
            if last["action"] == "reverse"
            else (base_amount or 0) + sum(int(f["amount_minor"] or 0) for f in fixes),
            currency=last["currency"],
            last_action=last["action"],
        )
    else:
        erp.update(internal_id=None, period=None, in_erp=False)
    erp["corrections"] = [
        {
            "record_type": "journalentry",
            "external_id": f["external_id"],
            "corrects": f["corrects"],
            "internal_id": f["erp_internal_id"],
            "period": f["period"],
            "action": f["action"],
            "amount_minor": f["amount_minor"],
            "hours": f["hours_delta"],
            "currency": f["currency"],
        }
        for f in fixes
    ]

    audit = conn.execute(
        """
        SELECT occurred_at, actor, action, entity, run_id FROM audit.change
        WHERE entity_key = %s OR entity_key = %s ORDER BY occurred_at, id
        """,
        (f"{spec['prefix']}{source_id}", source_id),
    ).fetchall()

    return {
        "source_system": source_system,
        "source_id": source_id,
        "kind": kind,
        "endpoint": spec["endpoint"],
        "staging": staging_out,
        "validation": validation,
        "ledger": ledger_out,
        "erp": erp,
        "forecast": _forecast(conn, canonical, landed),
        "audit": [_plain(dict(row)) for row in audit],
    }


def _forecast(conn: Cursor, canonical: Any, landed: list[Any]) -> list[dict[str, Any]]:
    """Snapshots whose actuals included this record: those built after the record's posting
    was confirmed, with a line for its project in the month it was spent."""
    if canonical is None or not landed or landed[-1]["action"] == "reverse":
        return []
    if not _table_exists(conn, "forecast.snapshot"):
        return []
    rows = conn.execute(
        """
        SELECT s.snapshot_id, s.scenario, s.as_of, s.run_id, s.created_at, l.layer, l.month, l.currency
        FROM forecast.snapshot s
        JOIN forecast.line l ON l.snapshot_id = s.snapshot_id
        WHERE l.project_ref = %s AND l.layer = 'actual' AND l.month = date_trunc('month', %s::date)::date
          AND s.created_at >= %s
        ORDER BY s.created_at, s.scenario
        """,
        (canonical["project_ref"], canonical["spent_date"], landed[-1]["updated_at"]),
    ).fetchall()
    out = []
    for row in rows:
        entry = _plain(dict(row))
        entry["lineage"] = _lineage(conn, run_id=row["run_id"], step="forecast")
        out.append(entry)
    return out


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
                f" amount={p['amount_minor']} {p['currency']} erp_id={p['erp_internal_id']}"
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
            f"  4. ERP {e['record_type']} {e['external_id']}: internal id {e['internal_id']}, period {e['period']},"
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
        lines.append("  audit: " + ", ".join(f"{a['action']} by {a['actor']}" for a in t["audit"]) or "-")
    return "\n".join(lines)
