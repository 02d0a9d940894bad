"""Approved time and expenses: PSA -> staging -> canonical (or quarantine) -> control totals.

Task graph (built by :func:`build`)::

    cadence_gate -> (each extract)
    extract_reference ─┐
    extract_time ──────┼─> validate_time ────┐
    extract_expenses ──┴─> validate_expenses ┴─> reconcile -> precheck_projects -> post_timebills
        -> post_expense_reports -> reconcile_erp

Run keys are derived from (dag_id, run_id, endpoint), so a retried or cleared task works on the
same staged set; every step is idempotent.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, get_current_context, task

from psa_erp_sync.flows.context import ids, run_as_of

log = logging.getLogger(__name__)

PSA = "psa"
REFERENCE_ENDPOINTS = ("/v2/projects", "/v2/users", "/v2/task_assignments", "/v2/expense_categories")
PARAMS = {
    "mode": Param(
        "auto",
        enum=["auto", "incremental", "sweep"],
        values_display={
            "auto": "Auto (incremental; sweep when the last sweep is over a day old)",
            "incremental": "Incremental (updated_since with overlap)",
            "sweep": "Sweep (re-read spent dates, catches deletions)",
        },
        description="How to read the PSA.",
    ),
}


def _progress(endpoint: str) -> Any:
    state = {"next": 0}

    def report(done: int, seconds: float) -> None:
        if done >= state["next"]:
            rate = done / seconds if seconds > 0 else 0.0
            log.info("extracting %s: %d rows so far (%.0f rows/s)", endpoint, done, rate)
            state["next"] = done + 50_000

    return report


def _extract(
    endpoints: tuple[str, ...],
    mode_param: str,
    *,
    psa_conn_id: str = "psa_default",
    ods_conn_id: str = "ods_default",
) -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.hooks.psa import PsaHook
    from psa_erp_sync.ods import staging

    context = get_current_context()
    dag_id, run_id = ids(context)
    settings = load_config().mappings.extract
    client = PsaHook(psa_conn_id).get_client()
    summary: dict[str, Any] = {}
    with OdsHook(ods_conn_id).get_conn() as conn:
        for endpoint in endpoints:
            watermark = staging.get_watermark(conn, PSA, endpoint)
            mode = mode_param
            if mode == "auto":
                last_sweep = conn.execute(
                    "SELECT last_sweep_at FROM staging.watermark WHERE source_system = %s AND endpoint = %s",
                    (PSA, endpoint),
                ).fetchone()
                as_of = run_as_of(context)
                stale = (
                    last_sweep is None or last_sweep[0] is None or as_of - last_sweep[0] > timedelta(days=1)
                )
                mode = "sweep" if stale else "incremental"
            window = psa_extract.plan_window(
                watermark,
                mode=mode,  # type: ignore[arg-type]
                as_of=run_as_of(context),
                overlap=timedelta(minutes=settings.overlap_minutes),
                sweep_days=settings.sweep_days_back,
            )
            result = psa_extract.extract_endpoint(
                conn,
                client,
                endpoint=endpoint,
                run_key=psa_extract.run_key_for(dag_id, run_id, endpoint),
                window=window,
                per_page=settings.per_page,
                progress=_progress(endpoint),
            )
            summary[endpoint] = {
                "mode": window.mode,
                "extracted": result.extracted,
                "staged": result.staged,
                "new_versions": result.new_versions,
                "known_versions": result.known_versions,
                "duplicates_in_extract": result.duplicates_in_extract,
                "rows_per_second": round(result.rows_per_second),
            }
    return summary


def _validate(kind: str, *, ods_conn_id: str = "ods_default") -> dict[str, Any]:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.extract.psa import run_key_for
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.validation import time_expense as validation

    context = get_current_context()
    dag_id, run_id = ids(context)
    config = load_config()
    with OdsHook(ods_conn_id).get_conn() as conn:
        ref = validation.PsaReference.from_staging(
            conn, {endpoint: run_key_for(dag_id, run_id, endpoint) for endpoint in REFERENCE_ENDPOINTS}
        )
        with conn.transaction():
            result = validation.validate_run(
                conn,
                kind=kind,  # type: ignore[arg-type]
                run_key=run_key_for(dag_id, run_id, validation.ENDPOINTS[kind]),  # type: ignore[index]
                ref=ref,
                config=config,
                as_of=run_as_of(context),
                dag_run_id=run_id,
            )
            result.check()
    log.info(
        "validated %s: %d staged versions -> %d valid (%d unchanged), %d quarantined %s",
        kind,
        result.staged_versions,
        result.valid,
        result.unchanged,
        result.quarantined,
        dict(result.by_reason),
    )
    return result.as_dict()


def _reconcile(
    extracted: dict[str, Any], validated: list[dict[str, Any]], *, ods_conn_id: str = "ods_default"
) -> dict[str, Any]:
    """Assert extracted = staged = valid + quarantined per record type; record control totals."""
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.reconcile import control_totals as ct

    context = get_current_context()
    dag_id, run_id = ids(context)
    by_kind = {v["kind"]: v for v in validated}
    report: dict[str, Any] = {}
    problems = []
    with OdsHook(ods_conn_id).get_conn() as conn, conn.transaction():
        for kind, endpoint in (("time_entry", "/v2/time_entries"), ("expense_entry", "/v2/expenses")):
            ext = extracted[endpoint]
            val = by_kind[kind]
            identity = {
                "extracted": ext["extracted"],
                "staged": ext["staged"],
                "distinct_versions": val["staged_versions"],
                "duplicates_in_extract": ext["duplicates_in_extract"],
                "valid": val["valid"],
                "quarantined": val["quarantined"],
            }
            if not (
                ext["extracted"] == ext["staged"] == val["staged_versions"] + ext["duplicates_in_extract"]
                and val["staged_versions"] == val["valid"] + val["quarantined"]
            ):
                problems.append(f"{kind}: {identity}")
            for stage, value in (("extracted", ext["extracted"]), ("staged", ext["staged"]),
                                 ("valid", val["valid"]), ("quarantined", val["quarantined"])):  # fmt: skip
                ct.record(
                    conn, dag_id=dag_id, run_id=run_id, record_type=kind, stage=stage,
                    totals=ct.Totals(value, ct.Decimal(0)),
                )  # fmt: skip
            current = ct.canonical(conn, kind, approved_only=True)
            ct.record(
                conn,
                dag_id=dag_id,
                run_id=run_id,
                record_type=kind,
                stage="canonical_approved",
                totals=current,
            )
            report[kind] = {
                **identity,
                "canonical_approved": current.as_dict(),
                "by_reason": val["by_reason"],
            }
        if problems:
            conn.execute(
                "INSERT INTO audit.change (actor, action, entity, entity_key, after, run_id)"
                " VALUES (%s, 'control_total_mismatch', 'run', %s, %s::jsonb, %s)",
                (f"{dag_id}.reconcile", run_id, ct.Jsonb(report), run_id),
            )
    if problems:
        raise ct.ControlTotalMismatch(
            "extracted = staged = valid + quarantined does not hold: " + "; ".join(problems)
        )
    return report


# A posting try lost with its worker (heartbeat timeout) resumes soon: the ledger makes a retry
# safe, and month-end close runs every 15 minutes. Backoff still doubles from here.
POSTING_RETRY_DELAY = timedelta(seconds=10)

EXTERNAL_ID_PREFIX = {"timebill": "psa-te-", "expensereport": "psa-ex-"}


def _reconcile_erp(
    record_types: tuple[str, ...] = ("timebill", "expensereport"),
    *,
    erp_conn_id: str = "erp_default",
    ods_conn_id: str = "ods_default",
) -> dict[str, Any]:
    """PSA approved vs ODS vs ERP read-back, to the cent; a mismatch fails the run (and is audited)."""
    from psa_erp_sync.hooks.erp import ErpHook
    from psa_erp_sync.hooks.ods import OdsHook
    from psa_erp_sync.reconcile import control_totals as ct
    from psa_erp_sync.reconcile import erp_readback

    context = get_current_context()
    dag_id, run_id = ids(context)
    report: dict[str, Any] = {}
    problems = []
    with (
        ErpHook(erp_conn_id).get_client() as client,
        OdsHook(ods_conn_id).get_conn() as conn,
        conn.transaction(),
    ):
        for record_type in record_types:
            prefix = EXTERNAL_ID_PREFIX[record_type]
            want, want_rows = erp_readback.expected(conn, record_type)
            have, have_rows = erp_readback.actual(client, record_type, prefix)
            ct.record(
                conn,
                dag_id=dag_id,
                run_id=run_id,
                record_type=record_type,
                stage="expected_in_erp",
                totals=want,
            )
            ct.record(
                conn, dag_id=dag_id, run_id=run_id, record_type=record_type, stage="erp_readback", totals=have
            )
            # The ledger's own view of the ERP (last confirmed post/adjust per record) must agree too.
            ledger_view = erp_readback.posted_per_ledger(conn, record_type)
            ct.record(
                conn,
                dag_id=dag_id,
                run_id=run_id,
                record_type=record_type,
                stage="posted",
                totals=ledger_view,
            )
            diff = erp_readback.differences(want_rows, have_rows)
            report[record_type] = {
                "expected": want.as_dict(), "posted_per_ledger": ledger_view.as_dict(), "erp": have.as_dict(), **diff,
            }  # fmt: skip
            try:
                ct.assert_equal("expected", want, "erp", have)
                ct.assert_equal("posted per ledger", ledger_view, "erp", have)
            except ct.ControlTotalMismatch as exc:
                problems.append(f"{record_type}: {exc}; {diff}")
        if problems:
            conn.execute(
                "INSERT INTO audit.change (actor, action, entity, entity_key, after, run_id)"
                " VALUES (%s, 'control_total_mismatch', 'erp', %s, %s::jsonb, %s)",
                (f"{dag_id}.reconcile_erp", run_id, ct.Jsonb(report), run_id),
            )
    if problems:
        raise ct.ControlTotalMismatch("ERP does not equal the approved PSA set: " + " | ".join(problems))
    log.info("ERP reconciles with the approved PSA set: %s", {k: v["erp"] for k, v in report.items()})
    return report


def _cadence_gate() -> bool:
    """Post on this run? The DAG is scheduled every 15 minutes; outside a month-end close window
    (business days -2 .. +3 of any legal entity's calendar) only the run at the top of the hour
    proceeds, so the cadence is hourly normally and every 15 minutes during close (the environment's
    ``posting.cadence_minutes``). Manual and
    asset-triggered runs always proceed."""
    from psa_erp_sync.calendar import close
    from psa_erp_sync.config import load_config, posting_cadence

    context = get_current_context()
    run_type = str(getattr(context["dag_run"], "run_type", "")).lower()
    if "scheduled" not in run_type:
        return True
    moment = run_as_of(context)
    config = load_config()
    cadence = posting_cadence()  # per environment (config/environments/*.yaml)
    for code, entity in config.legal_entities.legal_entities.items():
        calendar = config.close_calendars.calendars[entity.close_calendar]
        interval = close.posting_interval_minutes(moment, calendar, entity.timezone, cadence)
        if (moment.hour * 60 + moment.minute) % interval == 0:
            log.info("posting now: %s runs every %d minutes at %s", code, interval, moment.isoformat())
            return True
    log.info("no posting at %s: outside the close windows only the hourly run posts", moment.isoformat())
    return False


def build() -> None:
    """Declare the tasks of the time & expense DAG (call inside a DAG context)."""

    @task.short_circuit(task_id="cadence_gate")
    def cadence_gate() -> bool:
        return _cadence_gate()

    from psa_erp_sync import assets
    from psa_erp_sync.hooks.erp import account_pool
    from psa_erp_sync.operators.erp_validation import ProjectPrecheckOperator
    from psa_erp_sync.operators.posting import IdempotentPostingOperator
    from psa_erp_sync.operators.time_expense import (
        ControlTotalsOperator,
        ErpReconciliationOperator,
        PsaExtractOperator,
        StagedRecordValidationOperator,
    )

    gate = cadence_gate()
    # Projects, users, task assignments, expense categories: the reference a run validates against.
    reference = PsaExtractOperator(
        task_id="extract_reference", endpoints=list(REFERENCE_ENDPOINTS), mode="full"
    )
    # Time entries and expenses changed since the watermark (minus overlap), or a sweep of recent dates.
    time_extract = PsaExtractOperator(
        task_id="extract_time_entries", endpoints=["/v2/time_entries"], mode="{{ params.mode }}"
    )
    expense_extract = PsaExtractOperator(
        task_id="extract_expenses", endpoints=["/v2/expenses"], mode="{{ params.mode }}"
    )
    gate >> [reference, time_extract, expense_extract]
    validated_time = StagedRecordValidationOperator(task_id="validate_time_entries", kind="time_entry")
    validated_expenses = StagedRecordValidationOperator(task_id="validate_expenses", kind="expense_entry")
    [reference, time_extract] >> validated_time
    [reference, expense_extract] >> validated_expenses
    checked = ControlTotalsOperator(
        task_id="reconcile",
        extracted=[time_extract.output, expense_extract.output],
        validated=[validated_time.output, validated_expenses.output],
    )
    [validated_time, validated_expenses] >> checked
    # One after the other: each uses the ERP account's whole concurrency budget, which is shared
    # (with the stream and replays too: the account's pool and request budget, docs/posting.md).
    pool = account_pool()
    post_time = IdempotentPostingOperator(
        task_id="post_timebills", record_type="timebill", pool=pool, retry_delay=POSTING_RETRY_DELAY
    )
    post_expenses = IdempotentPostingOperator(
        task_id="post_expense_reports",
        record_type="expensereport",
        pool=pool,
        retry_delay=POSTING_RETRY_DELAY,
    )
    # Blocked projects (inactive job or customer, wrong subsidiary or currency) are named, with an
    # owner, before the ERP rejects their entries one by one.
    precheck = ProjectPrecheckOperator(task_id="precheck_projects")
    # The posting asset (the forecast refreshes on it) is published once the ERP is proven to equal
    # the approved PSA set.
    reconcile_erp = ErpReconciliationOperator(task_id="reconcile_erp", outlets=[assets.POSTING])
    checked >> precheck >> post_time >> post_expenses >> reconcile_erp
