"""``make demo``: the whole sync, end to end, through real Airflow, on a seeded consulting firm.

Steps: start PostgreSQL (embedded unless ``PSA_ERP_SYNC_DSN`` is set) -> fresh demo database
with the ODS migrations -> start the four simulators -> seed a month of the default firm, after
three settled months of history (``devtools/demo_history.py``) ->
``airflow db migrate`` -> ``airflow dags test`` every DAG in ``dags/`` (``DAG_ORDER``: posting,
master data and the forecast extract, then billing, its read-back and status, revenue recognition,
the journals' read-back, and the month-end close report of the seeded month) -> summary and report
(``.local/demo/report.md`` and ``report.json``: control totals, the close report's headline per
legal entity, the forecast's actuals per closed month, lineage) -> stop what was started.
Exits 1 when a DAG fails, the control totals do not balance, the close report does not reconcile
or the forecast's last closed month is implausible against the months before. Safe to run twice.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from devtools import demo_history
from devtools.airflow_env import airflow_env
from devtools.demo_erps import DEMO_SIMULATORS, run_second_erp
from devtools.demo_erps import lines as erp_lines
from devtools.stack import LOCAL, ROOT, Stack

log = logging.getLogger("demo")


class DemoStopped(RuntimeError):
    """A DAG run of the demo failed; the message holds the failed task's error."""


# Order matters where one DAG consumes another's output; DAGs not listed run after these.
# Billing needs the ERP jobs and customers (master_data_sync) and the projects the forecast extract
# stages (revenue_forecast_refresh: forecast.src_project), and bills posted time; the close report
# (month_end_close) reconciles what billing, its read-back and revenue recognition left;
# billing_readback runs again after revenue_recognition to read the journals back.
DAG_ORDER = (
    "master_data_sync",
    "hr_sync",
    "project_setup",
    "time_expense_posting",
    "time_expense_stream",
    "dead_letter_replay",
    "revenue_forecast_refresh",
    "billing",
    "billing_readback",
    "billing_status",
    "revenue_recognition",
    "month_end_close",
)


def discover_dags() -> list[str]:
    """DAG ids defined in ``dags/``, read from the files without importing Airflow."""
    import ast

    found = []
    for path in sorted((ROOT / "dags").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "dag_id"
                and isinstance(node.value, ast.Constant)
            ):
                found.append(str(node.value.value))
    ordered = [d for d in DAG_ORDER if d in found]
    return ordered + sorted(d for d in found if d not in ordered)


def _airflow(args: list[str], env: dict[str, str], log_path: Path, timeout: float = 600) -> tuple[int, float]:
    started = time.monotonic()
    with log_path.open("wb") as out:
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env={
                **os.environ,
                **env,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )
    return proc.returncode, time.monotonic() - started


@dataclass(frozen=True)
class DagTestResult:
    """One ``airflow dags test`` run: its state, and the first failed task's error, if any."""

    state: str  # success, failed or unknown
    seconds: float
    failed_task: str | None = None
    error: str | None = None


_LOG_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
_TASK_STARTING = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")


def run_dag_test(
    dag_id: str,
    env: dict[str, str],
    log_path: Path,
    *,
    conf: dict[str, Any] | None = None,
    timeout: float = 600,
    mark_success: str | None = None,
) -> DagTestResult:
    """``airflow dags test DAG_ID`` that stops at the first failed task try.

    ``dags test`` honours retries: after a failure it waits out the retry delay, logging "No tasks
    to run" every second. The demo's runs are meant to pass, so the first failure is the answer:
    the process is stopped at once and the task's error (exception and traceback) is returned.
    Everything Airflow printed stays in ``log_path``. ``mark_success``: a regex of task ids marked
    successful instead of run (``--mark-success-pattern``).
    """
    argv = [str(Path(sys.executable).parent / "airflow"), "dags", "test", dag_id]
    if conf:
        argv += ["--conf", json.dumps(conf)]
    if mark_success:
        argv += ["--mark-success-pattern", mark_success]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        env={
            **os.environ,
            **env,
            "PYTHONUNBUFFERED": "1",
            # `dags test` cannot finish a DAG with Deadline Alerts in Airflow 3.3.2
            # (psa_erp_sync.flows.DEADLINE_ALERTS_VAR); a scheduler deployment keeps them.
            "PSA_ERP_SYNC_DEADLINE_ALERTS": "off",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        start_new_session=True,  # so the whole process group can be stopped
    )
    timer = threading.Timer(timeout, _stop, (proc,))
    timer.start()
    task: str | None = None
    error: list[str] | None = None
    failed: tuple[str | None, str] | None = None
    state = "unknown"
    try:
        assert proc.stdout is not None
        with log_path.open("w", encoding="utf-8") as out:
            for raw in proc.stdout:
                line = raw.decode("utf-8", errors="replace")
                out.write(line)
                if match := _TASK_STARTING.search(line):
                    task, error = match.group(1), None
                if error is not None and not _LOG_LINE.match(line):
                    error.append(line)
                elif "Task failed with exception" in line:
                    error = []
                elif error is not None and ("new_state=up_for_retry" in line or "new_state=failed" in line):
                    failed = (task, "".join(error).strip() or line.strip())
                    out.write(f"\n[demo] {task} failed; stopping instead of waiting for its retries\n")
                    _stop(proc)
                    break
                elif "state=success" in line or "state=failed" in line:
                    state = "success" if "state=success" in line else "failed"
    finally:
        timer.cancel()
        code = proc.wait()
    seconds = time.monotonic() - started
    if failed is not None:
        return DagTestResult("failed", seconds, failed[0], failed[1])
    if code != 0:
        return DagTestResult("failed", seconds, None, f"airflow dags test exited {code}; see {log_path}")
    return DagTestResult(state, seconds)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``proc`` and its children (``dags test`` starts task processes of its own)."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def seed(
    stack: Stack,
    *,
    seed_value: int,
    consultants: int,
    today: datetime,
    mutations: bool = True,
    history_months: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """Generate the firm and load it into the simulators; optionally apply the month's later changes.
    ``history_months``: settled months seeded before the data month (``FirmSpec.history_months``)."""
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.generator import summary as firm_summary
    from simulators.firm.load import apply_mutations, load_firm

    firm = generate_firm(
        FirmSpec(
            seed=seed_value,
            consultants=consultants,
            today=today.date(),
            history_months=history_months,
        )
    )
    load_firm(
        firm,
        psa_url=stack.url("psa"),
        erp_url=stack.url("erp"),
        crm_url=stack.url("crm"),
        workday_url=stack.url("workday"),
    )
    if mutations:
        apply_mutations(firm, psa_url=stack.url("psa"))
    return firm, firm_summary(firm)


RECORDS = {
    # kind: (PSA table, staging endpoint, canonical table, ERP record type, hours expression)
    "time_entry": ("sim_psa.time_entries", "/v2/time_entries", "canonical.time_entry", "timebill", "hours"),
    "expense_entry": ("sim_psa.expenses", "/v2/expenses", "canonical.expense_entry", "expensereport", "0"),
}


def reconciliation(conn: psycopg.Connection, kind: str) -> dict[str, Any]:
    """PSA approved -> quarantined -> ODS approved -> parked / rejected -> expected in ERP -> ERP.

    Each line is (count, hours); the two balances must hold exactly.
    """
    psa_table, endpoint, canonical, record_type, hours = RECORDS[kind]

    def figure(sql: str, *args: Any) -> dict[str, Any]:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return {"count": int(row[0]), "hours": str(row[1] if row[1] is not None else 0)}

    latest_state = (
        "(SELECT state FROM ledger.posting l WHERE l.record_type = %s AND l.source_id = c.source_id"
        " ORDER BY seq DESC LIMIT 1)"
    )
    psa = figure(f"SELECT count(*), sum({hours}) FROM {psa_table} WHERE is_closed")
    quarantined = figure(
        f"SELECT count(*), sum(coalesce((r.payload->>'hours')::numeric, 0) * {1 if hours == 'hours' else 0})"
        " FROM exceptions.item e JOIN (SELECT source_id, payload_hash, endpoint, staging.try_jsonb(payload) AS payload"
        " FROM staging.raw_record) r ON r.source_id = e.source_id"
        " AND r.payload_hash = e.source_version AND r.endpoint = %s"
        " WHERE e.kind = 'quarantine' AND e.record_type = %s AND e.status = 'open' AND (r.payload->>'is_closed')::boolean",
        endpoint,
        kind,
    )
    ods = figure(f"SELECT count(*), sum({hours}) FROM {canonical} WHERE approved AND NOT is_deleted")
    parked = figure(
        f"SELECT count(*), sum({hours}) FROM {canonical} c WHERE approved AND NOT is_deleted AND {latest_state} = 'parked'",
        record_type,
    )
    rejected = figure(
        f"SELECT count(*), sum({hours}) FROM {canonical} c WHERE approved AND NOT is_deleted AND {latest_state} = 'rejected'",
        record_type,
    )
    held = figure(
        "SELECT count(*), 0 FROM (SELECT DISTINCT ON (source_id) source_id, state FROM ledger.posting"
        " WHERE record_type = %s ORDER BY source_id, seq DESC) l WHERE l.state IN ('parked', 'rejected')"
        " AND EXISTS (SELECT 1 FROM ledger.posting d WHERE d.record_type = %s AND d.source_id = l.source_id"
        " AND d.state IN ('confirmed', 'resolved') AND d.action IN ('post', 'adjust') AND d.seq = ("
        " SELECT max(seq) FROM ledger.posting m WHERE m.record_type = %s AND m.source_id = l.source_id"
        " AND m.state IN ('confirmed', 'resolved')))",
        record_type,
        record_type,
        record_type,
    )
    totals = {
        stage: {"count": count, "hours": str(h) if h is not None else "0", "amounts": amounts}
        for stage, count, h, amounts in conn.execute(
            "SELECT DISTINCT ON (stage) stage, record_count, hours, amounts FROM audit.control_total"
            " WHERE record_type = %s AND stage IN ('expected_in_erp', 'erp_readback') ORDER BY stage, recorded_at DESC",
            (record_type,),
        )
    }
    amounts = {
        cur: str(total)
        for cur, total in conn.execute(
            f"SELECT currency, sum(amount_minor) / 100.0 FROM {canonical} WHERE approved AND NOT is_deleted GROUP BY 1 ORDER BY 1"
        )
    }
    erp = totals.get("erp_readback", {"count": 0, "hours": "0", "amounts": {}})
    expected = totals.get("expected_in_erp", {"count": 0, "hours": "0", "amounts": {}})
    return {
        "psa_approved": psa,
        "quarantined_approved": quarantined,
        "ods_approved": {**ods, "amounts": amounts},
        "parked_closed_period": parked,
        "rejected_by_erp": rejected,
        "earlier_version_kept_in_erp": held,
        "expected_in_erp": expected,
        "erp_readback": erp,
        "psa_balances": psa["count"] == ods["count"] + quarantined["count"],
        "erp_balances": expected["count"]
        == ods["count"] - parked["count"] - rejected["count"] + held["count"]
        and expected == erp,
    }


def summarize(dsn: str) -> dict[str, Any]:
    """What the runs did, read back from the ODS and from the simulators' own state."""
    with psycopg.connect(dsn) as conn:
        extracted = {
            endpoint: {"extracted": int(e), "new_versions": int(n), "runs": int(r)}
            for endpoint, e, n, r in conn.execute(
                "SELECT endpoint, sum(extracted), sum(staged_new), count(*) FROM staging.extract_run"
                " GROUP BY endpoint ORDER BY endpoint"
            )
        }
        exceptions = [
            {"kind": k, "record_type": rt, "reason_code": rc, "owner": owner, "count": int(n)}
            for k, rt, rc, owner, n in conn.execute(
                "SELECT kind, record_type, reason_code, owner, count(*) FROM exceptions.item WHERE status = 'open'"
                " GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC, 1, 2, 3"
            )
        ]
        ledger: dict[str, dict[str, int]] = {}
        for record_type, action, state, n in conn.execute(
            "SELECT record_type, action, state, count(*) FROM ledger.posting GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ):
            ledger.setdefault(record_type, {})[f"{action}:{state}"] = int(n)
        corrections = {
            action: int(n)
            for action, n in conn.execute(
                "SELECT action, count(*) FROM audit.change WHERE action IN ('update', 'deleted_at_source') GROUP BY 1"
            )
        }
        return {
            "extracted": extracted,
            "reconciliation": {kind: reconciliation(conn, kind) for kind in RECORDS},
            "exceptions_open": exceptions,
            "ledger": ledger,
            "canonical_changes": corrections,
        }


def domains_summary(dsn: str) -> dict[str, Any]:
    """Master data, project setup, change orders and the forecast, as the DAGs left them."""

    def rows(conn: psycopg.Connection, sql: str) -> list[tuple[Any, ...]]:
        try:
            return list(conn.execute(sql).fetchall())
        except psycopg.errors.UndefinedTable:
            conn.rollback()
            return []

    from psa_erp_sync.operators.forecast import default_chart_dir

    with psycopg.connect(dsn) as conn:
        out: dict[str, Any] = {
            "master_records": dict(
                rows(conn, "SELECT record_type, count(*) FROM master.erp_record GROUP BY 1 ORDER BY 1")
            ),
            "propagated_to_psa": dict(
                rows(
                    conn,
                    "SELECT change, count(*) FROM master.propagation WHERE status = 'applied' GROUP BY 1 ORDER BY 1",
                )
            ),
            "project_setup": dict(
                rows(conn, "SELECT state, count(*) FROM master.project_setup GROUP BY 1 ORDER BY 1")
            ),
            "validation_failures": dict(
                rows(
                    conn,
                    "SELECT domain || '/' || reason_code, count(*) FROM exceptions.item WHERE kind = 'validation' AND status = 'open' GROUP BY 1 ORDER BY 2 DESC",
                )
            ),
        }
        leakage = rows(
            conn,
            "SELECT leaked_count, amounts, jobs_missing, psa_leaked_count, psa_amounts FROM master.leakage_run"
            " ORDER BY recorded_at DESC LIMIT 1",
        )
        if leakage:
            out["revenue_leakage"] = {
                "crm_change_orders_missing_in_erp": leakage[0][0],
                "crm_amounts": leakage[0][1],
                "won_without_erp_job": leakage[0][2],
                "psa_budgets_above_erp": leakage[0][3],
                "psa_amounts": leakage[0][4],
            }
        snapshots = rows(
            conn,
            "SELECT s.scenario, s.snapshot_id, s.as_of::text, s.reporting_currency,"
            " sum(l.reporting_amount_minor) FILTER (WHERE l.layer = 'actual'),"
            " sum(l.reporting_amount_minor) FILTER (WHERE l.layer = 'contracted'),"
            " sum(l.reporting_amount_minor) FILTER (WHERE l.layer = 'pipeline')"
            " FROM forecast.snapshot_sequence q JOIN forecast.snapshot s USING (snapshot_id)"
            " JOIN forecast.line l USING (snapshot_id) WHERE q.is_latest GROUP BY 1, 2, 3, 4 ORDER BY 1",
        )
        out["forecast_latest"] = {
            scenario: {
                "snapshot_id": sid,
                "as_of": as_of,
                "currency": cur,
                "actual_minor": int(a or 0),
                "contracted_minor": int(c or 0),
                "pipeline_minor": int(p or 0),
            }
            for scenario, sid, as_of, cur, a, c, p in snapshots
        }
        out["forecast_snapshots"] = (
            int(rows(conn, "SELECT count(*) FROM forecast.snapshot")[0][0]) if snapshots else 0
        )
    charts = sorted(default_chart_dir().glob("*/forecast.html"), key=lambda p: p.stat().st_mtime)
    out["forecast_chart"] = str(charts[-1]) if charts else None
    return out


def close_summary(dsn: str, period: str, directory: Path) -> dict[str, Any]:
    """The close report's headline per legal entity for ``period`` and the HTML files written."""
    from psa_erp_sync.reconcile.close_report import latest_headlines, month_bounds

    start, end = month_bounds(period)
    with psycopg.connect(dsn) as conn:
        try:
            headlines = latest_headlines(conn, period)
            documents: dict[str, dict[str, int]] = {}
            for le, kind, n in conn.execute(
                "SELECT legal_entity, record_type, count(*) FROM billing.erp_invoice"
                " WHERE tran_date >= %s AND tran_date < %s AND NOT voided GROUP BY 1, 2 ORDER BY 1, 2",
                (start, end),
            ):
                documents.setdefault(le, {})[kind] = int(n)
        except psycopg.errors.UndefinedTable:
            headlines, documents = [], {}
    for h in headlines:
        h["documents"] = documents.get(h["legal_entity"], {})
    html = {h["legal_entity"]: directory / f"close_{h['legal_entity']}_{period}.html" for h in headlines}
    return {
        "period": period,
        "headlines": headlines,
        "html": {le: str(path) for le, path in html.items() if path.exists()},
    }


def lineage_summary(events: Path, out: Path) -> dict[str, Any]:
    """Validate the run's OpenLineage events against the spec, check the graph, draw it."""
    from devtools.lineage_graph import analyse

    if not events.exists():
        return {"error": f"no OpenLineage events at {events}"}
    try:
        return analyse(events, out)
    except FileNotFoundError as exc:  # the spec is not beside the checkout
        return {"error": str(exc)}


def trace_examples(dsn: str) -> dict[str, str]:
    """The trace of one posted, one reversed and one quarantined time entry, as text."""
    from psa_erp_sync.trace import format_text, trace

    queries = {
        "posted": "SELECT source_id FROM ledger.posting WHERE record_type = 'timebill' AND action = 'post'"
        " AND state = 'confirmed' ORDER BY seq LIMIT 1",
        "reversed": "SELECT source_id FROM ledger.posting WHERE record_type = 'timebill' AND action = 'reverse'"
        " AND state = 'confirmed' ORDER BY seq LIMIT 1",
        "quarantined": "SELECT source_id FROM exceptions.item WHERE kind = 'quarantine' AND record_type = 'time_entry'"
        " AND status = 'open' ORDER BY id LIMIT 1",
    }
    examples: dict[str, str] = {}
    with psycopg.connect(dsn) as conn:
        for label, sql in queries.items():
            row = conn.execute(sql).fetchone()
            if row:
                found = [t for t in trace(conn, "psa", str(row[0])) if t["kind"] == "time_entry"]
                examples[label] = format_text(found)
    return examples


def write_report(report: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str))
    summary = report["summary"]
    lines = [
        "# psa-erp-sync demo report",
        "",
        f"Generated {report['finished_at']} in {report['seconds']:.0f} s.",
        "",
        "## DAG runs",
        "",
        "| DAG | run | state | seconds | log |",
        "|---|---|---|---|---|",
    ]
    for dag in report["dags"]:
        lines.append(
            f"| {dag['dag_id']} | {dag['run']} | {dag['state']} | {dag['seconds']:.1f} | {dag['log']} |"
        )
    lines += [
        "",
        "## Extracted and staged (all runs, per endpoint)",
        "",
        "| endpoint | extracted | new versions | runs |",
    ]
    lines.append("|---|---|---|---|")
    for endpoint, row in summary["extracted"].items():
        lines.append(f"| {endpoint} | {row['extracted']} | {row['new_versions']} | {row['runs']} |")
    for kind, rec in summary["reconciliation"].items():
        lines += ["", f"## Reconciliation: {kind}", "", "| stage | count | hours |", "|---|---|---|"]
        for stage in (
            "psa_approved",
            "quarantined_approved",
            "ods_approved",
            "parked_closed_period",
            "rejected_by_erp",
            "earlier_version_kept_in_erp",
            "expected_in_erp",
            "erp_readback",
        ):
            lines.append(f"| {stage} | {rec[stage]['count']} | {rec[stage]['hours']} |")
        lines += [
            "",
            f"- PSA approved = ODS approved + quarantined: **{'yes' if rec['psa_balances'] else 'NO'}**",
            f"- ODS approved - parked - rejected + earlier versions kept = ERP (count, hours, amounts per currency, hash total): "
            f"**{'yes' if rec['erp_balances'] else 'NO'}**",
            f"- ERP amounts (minor units): `{json.dumps(rec['erp_readback'].get('amounts', {}))}`",
        ]
    lines += [
        "",
        "## Open exceptions by cause",
        "",
        "| kind | record type | reason | owner | count |",
        "|---|---|---|---|---|",
    ]
    for row in summary["exceptions_open"]:
        lines.append(
            f"| {row['kind']} | {row['record_type']} | {row['reason_code']} | {row['owner']} | {row['count']} |"
        )
    lines += ["", "## Ledger (action:state)", "", "```json", json.dumps(summary["ledger"], indent=2), "```"]
    lines += [
        "",
        "## PSA changes applied between the runs",
        "",
        "```json",
        json.dumps(report.get("mutations", {}), indent=2),
        "```",
    ]
    domains = report.get("domains", {})
    lines += [
        "",
        "## Master data, project setup and change orders",
        "",
        "```json",
        json.dumps({k: v for k, v in domains.items() if not k.startswith("forecast")}, indent=2, default=str),
        "```",
        "",
        "## Revenue forecast",
        "",
    ]
    for scenario, snap in domains.get("forecast_latest", {}).items():
        lines.append(
            f"- {scenario}: snapshot `{snap['snapshot_id']}` as of {snap['as_of']}, {snap['currency']} minor units:"
            f" actual {snap['actual_minor']}, contracted {snap['contracted_minor']}, pipeline {snap['pipeline_minor']}"
        )
    if domains.get("forecast_chart"):
        lines.append(f"- chart (firm and per legal entity): [forecast.html]({domains['forecast_chart']})")
    lines += ["", "## Month-end close and forecast trend", "", "```", *close_lines(report), "```"]
    lines += [
        "",
        "## Per ERP: LE-UK1 cut over to SAP",
        "",
        "```",
        *erp_lines(report.get("second_erp", {})),
        "```",
    ]
    lineage = report.get("lineage", {})
    lines += ["", "## Lineage (OpenLineage events of this run)", ""]
    if "error" in lineage:
        lines.append(f"Not analysed: {lineage['error']}")
    else:
        validation, paths = lineage["validation"], lineage["paths"]
        lines += [
            f"- {validation['events']} events; schema errors against the official spec and our facet schemas: "
            f"**{validation['error_count'] if validation['error_count'] is not None else 'not validated: ' + validation['not_validated']}**",
            f"- graph: {len(lineage['graph']['jobs'])} jobs, {len(lineage['graph']['datasets'])} datasets,"
            f" {lineage['graph']['edges']} edges",
            f"- PSA time entries -> ERP timebill: {' -> '.join(paths['psa_to_erp']) if paths['psa_to_erp'] else 'NOT CONNECTED'}",
            f"- PSA time entries -> planning snapshots: "
            f"{' -> '.join(paths['psa_to_planning']) if paths['psa_to_planning'] else 'NOT CONNECTED'}",
            f"- picture: [lineage.html]({lineage['pictures']['html']}) ([svg]({lineage['pictures']['svg']}),"
            f" [mermaid]({lineage['pictures']['mermaid']}), [png]({lineage['pictures']['png']}));"
            f" the PSA -> planning chain alone: [png]({lineage['pictures'].get('chain_png')})",
        ]
    for label, text in report.get("trace_examples", {}).items():
        lines += [
            "",
            f"### Trace of a {label} time entry (`python -m psa_erp_sync.trace psa <id>`)",
            "",
            "```",
            text,
            "```",
        ]
    lines += [
        "",
        "## Seeded firm",
        "",
        "```json",
        json.dumps(report["firm"], indent=2, default=str),
        "```",
        "",
    ]
    path = directory / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--consultants", type=int, default=200)
    parser.add_argument("--report-dir", type=Path, default=LOCAL / "demo")
    parser.add_argument(
        "--port-offset", type=int, default=0, help="added to the simulators' ports (two demos on one machine)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.monotonic()
    now = datetime.now(UTC)
    report: dict[str, Any] = {"dags": []}
    failed = False
    try:
        with Stack(simulators=DEMO_SIMULATORS, port_offset=args.port_offset) as stack:
            log.info("[1/5] PostgreSQL and ODS")
            dsn = stack.start_postgres()
            log.info("[2/5] simulators")
            stack.start_simulators()
            log.info("[3/5] seeding %d consultants (seed %d)", args.consultants, args.seed)
            firm, report["firm"] = seed(
                stack,
                seed_value=args.seed,
                consultants=args.consultants,
                today=now,
                mutations=False,
                history_months=demo_history.HISTORY_MONTHS,  # settled months before: see demo_history
            )
            lineage_file = args.report_dir / "openlineage-events.jsonl"
            lineage_file.unlink(missing_ok=True)  # the file transport appends; this run's events only
            env = airflow_env(stack, lineage_file=lineage_file)
            close_dir = args.report_dir / "close"
            env["PSA_ERP_SYNC_CLOSE_REPORT_DIR"] = str(close_dir)
            # `dags test` of the inbox consumer runs one lifetime: a few seconds here, not 10 minutes.
            env["AIRFLOW_VAR_PSA_ERP_SYNC_STREAM_CONSUMER_LIFETIME_S"] = "5"
            logs = LOCAL / "logs"
            log.info("[4/5] airflow db migrate")
            code, _ = _airflow(["db", "migrate"], env, logs / "airflow-db-migrate.log")
            if code != 0:
                raise SystemExit(f"airflow db migrate failed; see {logs / 'airflow-db-migrate.log'}")

            def run_dag(
                dag_id: str, label: str, conf: dict[str, Any] | None = None, mark_success: str | None = None
            ) -> None:
                nonlocal failed
                log.info("[5/5] airflow dags test %s (%s)", dag_id, label)
                log_path = logs / f"dag-{dag_id}-{label.replace(' ', '-')}.log"
                result = run_dag_test(
                    dag_id,
                    env,
                    log_path,
                    conf=conf,
                    mark_success=mark_success,
                    timeout=demo_history.dag_timeout(dag_id),
                )
                failed |= result.state != "success"
                report["dags"].append(
                    {
                        "dag_id": dag_id,
                        "run": label,
                        "state": result.state,
                        "seconds": result.seconds,
                        "log": str(log_path),
                    }
                )
                log.info("    %s (%s): %s in %.1f s", dag_id, label, result.state, result.seconds)
                if result.state != "success":
                    # Stop the demo here: later DAGs would only fail for the same reason.
                    raise DemoStopped(
                        f"{dag_id} ({label}): task {result.failed_task or '?'} failed"
                        f"\n{result.error or 'no error text; see the log'}\nfull log: {log_path}"
                    )

            for dag_id in discover_dags():
                if dag_id == "project_setup":
                    # Sales closes a deal: project setup must validate it in the ERP and provision
                    # the ERP job and the PSA project, once.
                    deal = next(
                        (
                            o
                            for o in firm.crm["opportunities"]
                            if o["stage"] not in ("Closed Won", "Closed Lost")
                        ),
                        None,
                    )
                    if deal is not None:
                        httpx.post(
                            f"{stack.url('crm')}/admin/opportunities/{deal['id']}/close_won",
                            json={},
                            timeout=30,
                        )
                        report["closed_won_in_demo"] = deal["id"]
                run_dag(dag_id, "first run", demo_history.first_run_conf(dag_id))
                if dag_id == "time_expense_posting":
                    # The rest of the month happens in the PSA: late approvals, edits after posting,
                    # unapprovals and deletions. The next run (a sweep) must turn them into adjustments
                    # and reversals, so that the ERP again equals the approved PSA set.
                    from simulators.firm.load import apply_mutations

                    report["mutations"] = apply_mutations(firm, psa_url=stack.url("psa"))
                    log.info("    PSA changes after posting: %s", report["mutations"])
                    run_dag(dag_id, "after corrections", {"mode": "sweep"})
                if dag_id == "revenue_recognition":
                    # The close report reconciles the journals recognition just posted with the
                    # ERP's: read them back (the first read-back gave recognition the billed amounts).
                    run_dag("billing_readback", "journals")
            report["summary"] = summarize(dsn)
            report["domains"] = domains_summary(dsn)
            from psa_erp_sync.reconcile.close_report import previous_period

            report["close"] = close_summary(dsn, previous_period(now), close_dir)
            report["forecast_trend"] = demo_history.forecast_trend(dsn, now)
            report["lineage"] = lineage_summary(lineage_file, args.report_dir / "lineage")
            report["trace_examples"] = trace_examples(dsn)
            # A second ERP: LE-UK1 cuts over to SAP after the month (devtools/demo_erps.py).
            report["second_erp"] = run_second_erp(
                stack, firm, env, run_dag, today=now.date(), config_dir=args.report_dir / "config"
            )
    except DemoStopped as exc:
        print(f"\n=== demo stopped: {exc}", file=sys.stderr)
        return 1
    report["seconds"] = time.monotonic() - started
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    path = write_report(report, args.report_dir)
    print_summary(report, path)
    balanced = all(
        r["psa_balances"] and r["erp_balances"] for r in report["summary"]["reconciliation"].values()
    )
    if not balanced:
        print("  CONTROL TOTALS DO NOT BALANCE: see the report")
    closed = report["close"]["headlines"] and all(h["reconciled"] for h in report["close"]["headlines"])
    if not closed:
        print("  THE CLOSE REPORT IS MISSING OR DOES NOT RECONCILE: see the report")
    plausible = report["forecast_trend"]["plausible"]
    if not plausible:
        print(
            "  THE FORECAST'S LAST CLOSED MONTH IS NOT PLAUSIBLE AGAINST THE MONTHS BEFORE:"
            f" {report['forecast_trend'].get('reason')} (see the per-month actuals above)"
        )
    for problem in report["second_erp"]["failures"]:
        print(f"  SECOND ERP: {problem}")
    return (
        1 if failed or not balanced or not closed or not plausible or report["second_erp"]["failures"] else 0
    )


def close_lines(report: dict[str, Any]) -> list[str]:
    """The close report's headline figures per legal entity and the forecast trend, as text lines."""
    close = report.get("close", {})
    lines = [f"close report {close.get('period')} (month_end_close):"]
    if not close.get("headlines"):
        lines.append("  no close report stored")
    for h in close.get("headlines", []):
        lines.append(
            f"  {h['legal_entity']}: reconciled {'yes' if h['reconciled'] else 'NO'}"
            + (f" (differs: {', '.join(h['mismatched_areas'])})" if h["mismatched_areas"] else "")
            + f"; postings {h['postings']}; open exceptions {h['open_exceptions']}"
        )
        for currency, f in h["currencies"].items():
            lines.append(
                f"    {currency}: recognized {f['revenue_recognized']} vs billed {f['billed']}"
                f" (invoiced {f.get('invoiced', '?')}, credited {f.get('credited', '?')});"
                f" WIP {f['wip']} ({f['wip_movement']}); deferred {f['deferred']} ({f['deferred_movement']});"
                f" leakage {f['leakage']}"
            )
        lines.append(
            f"    in the ERP, dated in the period: {h.get('documents') or 'no invoices or credit memos'}"
        )
        if h["legal_entity"] in close.get("html", {}):
            lines.append(f"    report: {close['html'][h['legal_entity']]}")
    return lines + demo_history.trend_lines(report.get("forecast_trend", {}))


def print_close(report: dict[str, Any]) -> None:
    for line in close_lines(report):
        print(f"  {line}")


def print_summary(report: dict[str, Any], path: Path) -> None:
    summary = report["summary"]
    print("\n=== psa-erp-sync demo ===")
    for dag in report["dags"]:
        print(f"  DAG {dag['dag_id']:<24} {dag['run']:<18} {dag['state']:<8} {dag['seconds']:6.1f} s")
    for endpoint, row in summary["extracted"].items():
        print(f"  extracted+staged {endpoint:<24} {row['extracted']:>8} rows in {row['runs']} runs")
    for kind, rec in summary["reconciliation"].items():
        print(f"  {kind} control totals (count / hours):")
        for stage in (
            "psa_approved",
            "quarantined_approved",
            "ods_approved",
            "parked_closed_period",
            "rejected_by_erp",
            "earlier_version_kept_in_erp",
            "erp_readback",
        ):
            print(f"    {stage:<28} {rec[stage]['count']:>7} / {rec[stage]['hours']}")
        print(f"    ERP amounts (minor units) {rec['erp_readback'].get('amounts', {})}")
        print(
            f"    PSA = ODS + quarantined: {'yes' if rec['psa_balances'] else 'NO'};"
            f"  ODS - parked - rejected + kept = ERP: {'yes' if rec['erp_balances'] else 'NO'}"
        )
    by_kind: dict[str, int] = {}
    by_cause: dict[str, int] = {}
    for row in summary["exceptions_open"]:
        by_kind[row["kind"]] = by_kind.get(row["kind"], 0) + row["count"]
        cause = f"{row['kind']}/{row['reason_code']}"
        by_cause[cause] = by_cause.get(cause, 0) + row["count"]
    top = sorted(by_cause.items(), key=lambda kv: -kv[1])[:6]
    print(f"  open exceptions: {by_kind}; top causes: " + ", ".join(f"{c}={n}" for c, n in top))
    print(f"  canonical corrections audited: {summary['canonical_changes']}")
    domains = report.get("domains", {})
    print(f"  master data: {domains.get('master_records')}; project setup: {domains.get('project_setup')}")
    print(f"  revenue leakage: {domains.get('revenue_leakage')}")
    base = domains.get("forecast_latest", {}).get("base")
    if base:
        print(
            f"  forecast (base, {base['currency']} minor units): actual {base['actual_minor']}, contracted"
            f" {base['contracted_minor']}, pipeline {base['pipeline_minor']}; chart: {domains.get('forecast_chart')}"
        )
    print_close(report)
    print("  second ERP, per ERP after the cutover:")
    for line in erp_lines(report.get("second_erp", {})):
        print(f"    {line}")
    lineage = report.get("lineage", {})
    if "error" in lineage:
        print(f"  lineage: not analysed ({lineage['error']})")
    elif lineage:
        paths = lineage["paths"]
        print(
            f"  lineage: {lineage['validation']['events']} OpenLineage events, "
            f"{lineage['validation']['error_count'] if lineage['validation']['error_count'] is not None else 'not validated (spec not found):'}"
            f" schema errors; PSA -> ERP connected: "
            f"{'yes' if paths['psa_to_erp'] else 'NO'}; PSA -> planning connected: "
            f"{'yes' if paths['psa_to_planning'] else 'NO'}; picture: {lineage['pictures']['html']}"
        )
    print(f"  finished in {report['seconds']:.0f} s; report: {path}")


if __name__ == "__main__":
    sys.exit(main())
