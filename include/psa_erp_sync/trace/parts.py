"""The parts of one record's trace (:func:`psa_erp_sync.trace.trace`): staging, validation, the
posting ledger, the ERP, the forecast and the audit trail, each read from the ODS."""

from __future__ import annotations

from typing import Any

from psa_erp_sync.trace.common import Cursor, lineage, plain, split_run_key, table_exists


def fetch_rows(
    conn: Cursor, source_system: str, source_id: str, kind: str, spec: dict[str, str]
) -> tuple[list[Any], Any, list[Any], list[Any]]:
    """The record's staged payloads, its canonical row, its exception items and its postings."""
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
               created_at, updated_at, corrects, payload->>'custbody_psa_hours' AS hours_delta,
               target_erp, erp_account, route_version, shadow
        FROM ledger.posting_full WHERE record_type = %s AND source_system = %s AND source_id = %s ORDER BY seq
        """,
        (spec["record_type"], source_system, source_id),
    ).fetchall()
    return staging, canonical, exceptions, postings


def staging_part(conn: Cursor, staging: list[Any], spec: dict[str, str]) -> list[dict[str, Any]]:
    """Each staged version, the runs that first staged and last saw it, and their lineage."""
    staging_out = []
    for row in staging:
        first, last = split_run_key(row["first_run_key"]), split_run_key(row["last_run_key"])
        staging_out.append(
            {
                "payload_hash": row["payload_hash"],
                "fetched_at": plain(row["fetched_at"]),
                "first_staged_by": first,
                "last_seen_by": last,
                "lineage": lineage(
                    conn, run_id=first["run_id"], dag_id=first["dag_id"], step=f"extract:{spec['endpoint']}"
                ),
            }
        )
    return staging_out


def validation_part(
    conn: Cursor,
    kind: str,
    spec: dict[str, str],
    canonical: Any,
    exceptions: list[Any],
    staging_out: list[dict[str, Any]],
) -> dict[str, Any]:
    """The validation verdict, the canonical version and the run that validated it, and the
    record's exception items."""
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
        entry = plain(dict(item))
        step = f"validate:{kind}" if item["kind"] == "quarantine" else f"post:{spec['record_type']}"
        entry["lineage"] = lineage(conn, run_id=item["last_run_id"], step=step)
        exceptions_out.append(entry)
    return {
        "verdict": verdict,
        "canonical": plain(dict(canonical)) if canonical else None,
        "validated_by": validated_by,
        "lineage": lineage(
            conn, run_id=validated_by["run_id"], dag_id=validated_by["dag_id"], step=f"validate:{kind}"
        )
        if validated_by
        else [],
        "exceptions": exceptions_out,
    }


def ledger_part(conn: Cursor, postings: list[Any], spec: dict[str, str]) -> list[dict[str, Any]]:
    """Each posting of the record with its attempts and their lineage."""
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
            entry = plain(dict(attempt))
            entry["lineage"] = lineage(
                conn,
                run_id=attempt["dag_run_id"],
                try_number=attempt["task_try"],
                step=f"post:{spec['record_type']}",
            )
            attempts_out.append(entry)
        ledger_out.append({**plain(dict(posting)), "attempts": attempts_out})
    return ledger_out


def erp_part(landed: list[Any], spec: dict[str, str], source_id: str) -> dict[str, Any]:
    """Where the record stands in the ERP, from its landed postings (confirmed or resolved)."""
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
            # The ERP (and account) of the last landed posting: where the record is, or was reversed.
            erp=last["target_erp"],
            erp_account=last["erp_account"],
        )
    else:
        erp.update(internal_id=None, period=None, in_erp=False, erp=None, erp_account=None)
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
    return erp


def audit_part(conn: Cursor, spec: dict[str, str], source_id: str) -> list[dict[str, Any]]:
    """The audit trail entries under the record's ERP external id or its PSA id."""
    audit = conn.execute(
        """
        SELECT occurred_at, actor, action, entity, run_id FROM audit.change
        WHERE entity_key = %s OR entity_key = %s ORDER BY occurred_at, id
        """,
        (f"{spec['prefix']}{source_id}", source_id),
    ).fetchall()
    return [plain(dict(row)) for row in audit]


def forecast(conn: Cursor, canonical: Any, landed: list[Any]) -> list[dict[str, Any]]:
    """Snapshots whose actuals included this record: those built after the record's posting
    was confirmed, with a line for its project in the month it was spent."""
    if canonical is None or not landed or landed[-1]["action"] == "reverse":
        return []
    if not table_exists(conn, "forecast.snapshot"):
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
        entry = plain(dict(row))
        entry["lineage"] = lineage(conn, run_id=row["run_id"], step="forecast")
        out.append(entry)
    return out
