"""``make demo``: the whole sync, end to end, through real Airflow, on a seeded consulting firm.

Steps: start PostgreSQL (embedded unless ``PSA_ERP_SYNC_DSN`` is set) -> fresh demo database
with the ODS migrations -> start the four simulators -> seed a month of the default firm ->
``airflow db migrate`` -> ``airflow dags test`` every DAG in ``dags/`` -> summary and report
(``.local/demo/report.md`` and ``report.json``) -> stop what was started. Safe to run twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from psa_erp_sync.devenv.airflow_env import airflow_env
from psa_erp_sync.devenv.stack import LOCAL, ROOT, Stack

log = logging.getLogger("demo")

# Order matters where one DAG consumes another's output; DAGs not listed run after these.
DAG_ORDER = (
    "master_data_sync",
    "project_setup",
    "time_expense_posting",
    "dead_letter_replay",
    "revenue_forecast_refresh",
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


def _dag_state(log_path: Path) -> str:
    text = log_path.read_text(errors="replace")
    for marker in ("state=success", "state=failed"):
        if marker in text:
            return marker.split("=")[1]
    return "unknown"


def seed(stack: Stack, *, seed_value: int, consultants: int, today: datetime) -> dict[str, Any]:
    from simulators.firm.generator import FirmSpec, generate_firm
    from simulators.firm.generator import summary as firm_summary
    from simulators.firm.load import apply_mutations, load_firm

    firm = generate_firm(FirmSpec(seed=seed_value, consultants=consultants, today=today.date()))
    load_firm(firm, psa_url=stack.url("psa"), erp_url=stack.url("erp"), crm_url=stack.url("crm"))
    apply_mutations(firm, psa_url=stack.url("psa"))
    return firm_summary(firm)


def summarize(dsn: str) -> dict[str, Any]:
    """What the run did, read back from the ODS and the simulators' own state."""
    with psycopg.connect(dsn) as conn:

        def one(sql: str, *args: Any) -> Any:
            row = conn.execute(sql, args).fetchone()
            return row[0] if row else None

        extracted = {
            endpoint: {"extracted": int(e), "new_versions": int(n)}
            for endpoint, e, n in conn.execute(
                "SELECT endpoint, sum(extracted), sum(staged_new) FROM staging.extract_run GROUP BY endpoint ORDER BY endpoint"
            )
        }
        control: dict[str, dict[str, Any]] = {}
        for record_type, stage, count, hours, amounts in conn.execute(
            "SELECT DISTINCT ON (record_type, stage) record_type, stage, record_count, hours, amounts"
            " FROM audit.control_total ORDER BY record_type, stage, recorded_at DESC"
        ):
            control.setdefault(record_type, {})[stage] = {
                "count": count, "hours": str(hours) if hours is not None else None, "amounts": amounts,
            }  # fmt: skip
        quarantine = [
            {"record_type": rt, "reason_code": rc, "owner": owner, "count": int(n)}
            for rt, rc, owner, n in conn.execute(
                "SELECT record_type, reason_code, owner, count(*) FROM exceptions.item WHERE status = 'open'"
                " GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2"
            )
        ]
        psa = {
            "time_entries_approved": one("SELECT count(*) FROM sim_psa.time_entries WHERE is_closed"),
            "hours_approved": str(
                one("SELECT coalesce(sum(hours), 0) FROM sim_psa.time_entries WHERE is_closed")
            ),
        }
        canonical_approved = {
            "count": one("SELECT count(*) FROM canonical.time_entry WHERE approved AND NOT is_deleted"),
            "hours": str(
                one(
                    "SELECT coalesce(sum(hours), 0) FROM canonical.time_entry WHERE approved AND NOT is_deleted"
                )
            ),
            "amounts_minor": dict(
                conn.execute(
                    "SELECT currency, sum(amount_minor)::bigint FROM canonical.time_entry"
                    " WHERE approved AND NOT is_deleted GROUP BY 1 ORDER BY 1"
                ).fetchall()
            ),
        }
        ledger: dict[str, int] = {
            state: int(n)
            for state, n in conn.execute("SELECT state, count(*) FROM ledger.posting GROUP BY 1 ORDER BY 1")
        }
    return {
        "extracted": extracted,
        "control_totals": control,
        "quarantine_open": quarantine,
        "psa": psa,
        "canonical_time_approved": canonical_approved,
        "ledger": ledger,
    }


def write_report(report: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str))
    lines = [
        "# psa-erp-sync demo report",
        "",
        f"Generated {report['finished_at']} in {report['seconds']:.0f} s.",
        "",
        "## DAG runs",
        "",
        "| DAG | state | seconds | log |",
        "|---|---|---|---|",
    ]
    for dag in report["dags"]:
        lines.append(f"| {dag['dag_id']} | {dag['state']} | {dag['seconds']:.1f} | {dag['log']} |")
    summary = report["summary"]
    lines += [
        "",
        "## Extracted and staged (per endpoint)",
        "",
        "| endpoint | extracted | new versions |",
        "|---|---|---|",
    ]
    for endpoint, row in summary["extracted"].items():
        lines.append(f"| {endpoint} | {row['extracted']} | {row['new_versions']} |")
    lines += [
        "",
        "## Control totals (latest run)",
        "",
        "```json",
        json.dumps(summary["control_totals"], indent=2),
        "```",
    ]
    lines += [
        "",
        "## Open exceptions by cause",
        "",
        "| record type | reason | owner | count |",
        "|---|---|---|---|",
    ]
    for row in summary["quarantine_open"]:
        lines.append(f"| {row['record_type']} | {row['reason_code']} | {row['owner']} | {row['count']} |")
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    started = time.monotonic()
    now = datetime.now(UTC)
    report: dict[str, Any] = {"dags": []}
    failed = False
    with Stack() as stack:
        log.info("[1/5] PostgreSQL and ODS")
        dsn = stack.start_postgres()
        log.info("[2/5] simulators")
        stack.start_simulators()
        log.info("[3/5] seeding %d consultants (seed %d)", args.consultants, args.seed)
        report["firm"] = seed(stack, seed_value=args.seed, consultants=args.consultants, today=now)
        env = airflow_env(stack)
        logs = LOCAL / "logs"
        log.info("[4/5] airflow db migrate")
        code, _ = _airflow(["db", "migrate"], env, logs / "airflow-db-migrate.log")
        if code != 0:
            raise SystemExit(f"airflow db migrate failed; see {logs / 'airflow-db-migrate.log'}")
        for dag_id in discover_dags():
            log.info("[5/5] airflow dags test %s", dag_id)
            log_path = logs / f"dag-{dag_id}.log"
            code, seconds = _airflow(["dags", "test", dag_id], env, log_path)
            state = _dag_state(log_path) if code == 0 else "failed"
            failed |= state != "success"
            report["dags"].append(
                {"dag_id": dag_id, "state": state, "seconds": seconds, "log": str(log_path)}
            )
            log.info("    %s: %s in %.1f s", dag_id, state, seconds)
        report["summary"] = summarize(dsn)
    report["seconds"] = time.monotonic() - started
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    path = write_report(report, args.report_dir)
    print_summary(report, path)
    return 1 if failed else 0


def print_summary(report: dict[str, Any], path: Path) -> None:
    summary = report["summary"]
    print("\n=== psa-erp-sync demo ===")
    for dag in report["dags"]:
        print(f"  DAG {dag['dag_id']:<28} {dag['state']:<8} {dag['seconds']:6.1f} s")
    for endpoint, row in summary["extracted"].items():
        print(f"  extracted {endpoint:<26} {row['extracted']:>8}   new versions {row['new_versions']:>8}")
    for record_type, stages in summary["control_totals"].items():
        counts = ", ".join(f"{stage}={v['count']}" for stage, v in sorted(stages.items()))
        print(f"  {record_type}: {counts}")
    psa, canon = summary["psa"], summary["canonical_time_approved"]
    print(
        f"  control totals, approved time: PSA {psa['time_entries_approved']} entries / {psa['hours_approved']} h;"
        f" ODS canonical {canon['count']} entries / {canon['hours']} h; amounts {canon['amounts_minor']}"
    )
    quarantined = sum(r["count"] for r in summary["quarantine_open"])
    print(f"  quarantined (open): {quarantined} by reason: " + ", ".join(
        f"{r['reason_code']}={r['count']}" for r in summary["quarantine_open"][:8]))  # fmt: skip
    print(f"  ledger: {summary['ledger'] or 'no postings yet'}")
    print(f"  finished in {report['seconds']:.0f} s; report: {path}")


if __name__ == "__main__":
    sys.exit(main())
