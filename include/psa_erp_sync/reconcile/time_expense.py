"""The reconciliation steps of the time & expense run.

- :func:`reconcile_run`: extracted = staged = valid + quarantined per record type, and the control
  totals of each stage recorded in ``audit.control_total``;
- :func:`reconcile_erp`: the approved PSA set (per the ODS) vs the ledger's view vs an ERP
  read-back by external id, to the cent. A mismatch is audited and fails the run with a message
  that names the first differing records.

Arguments are explicit (DAG and run ids, an open connection, an ERP client); the operators read
them from their Airflow context (:mod:`psa_erp_sync.operators.time_expense`).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from psa_erp_sync.contracts import kinds
from psa_erp_sync.ods import audit
from psa_erp_sync.reconcile import control_totals as ct
from psa_erp_sync.reconcile import erp_readback, sap_readback
from psa_erp_sync.reconcile import fx as both_currencies

log = logging.getLogger(__name__)

#: PSA endpoint of each canonical kind, as the extract summaries are keyed.
ENDPOINT_OF_KIND = {name: kind.psa_endpoint for name, kind in kinds.KINDS.items()}
#: Our external-id namespace in the ERP, per record type.
EXTERNAL_ID_PREFIX = {kind.record_type: kind.external_id_prefix for kind in kinds.KINDS.values()}
#: How many differing records a failure message names.
FIRST_DIFFERENCES = 5

Row = tuple[Decimal, int, str]


def _audit_mismatch(
    conn: psycopg.Connection, *, actor: str, entity: str, run_id: str, report: dict[str, Any]
) -> None:
    audit.record(
        conn, audit.Change(actor, "control_total_mismatch", entity, run_id, after=report), run_id=run_id
    )


def reconcile_run(
    conn: psycopg.Connection,
    *,
    dag_id: str,
    run_id: str,
    extracted: dict[str, Any],
    validated: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """Assert extracted = staged = valid + quarantined per record type; record control totals.

    ``extracted``: the extract summaries by endpoint; ``validated``: the validation results."""
    by_kind = {v["kind"]: v for v in validated}
    report: dict[str, Any] = {}
    problems = []
    with conn.transaction():
        for kind, endpoint in ENDPOINT_OF_KIND.items():
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
            for stage, value in (
                ("extracted", ext["extracted"]),
                ("staged", ext["staged"]),
                ("valid", val["valid"]),
                ("quarantined", val["quarantined"]),
            ):
                ct.record(
                    conn,
                    dag_id=dag_id,
                    run_id=run_id,
                    record_type=kind,
                    stage=stage,
                    totals=ct.Totals(value, Decimal(0)),
                )
            current = ct.canonical(conn, kind, approved_only=True)
            ct.record(
                conn,
                dag_id=dag_id,
                run_id=run_id,
                record_type=kind,
                stage="canonical_approved",
                totals=current,
            )
            functional = ct.canonical_functional(conn, kind)
            ct.record(
                conn,
                dag_id=dag_id,
                run_id=run_id,
                record_type=kind,
                stage="canonical_approved_functional",
                totals=functional,
            )
            report[kind] = {
                **identity,
                "canonical_approved": current.as_dict(),
                "canonical_approved_functional": functional.as_dict(),
                "by_reason": val["by_reason"],
            }
        if problems:
            _audit_mismatch(conn, actor=f"{dag_id}.reconcile", entity="run", run_id=run_id, report=report)
    if problems:
        raise ct.ControlTotalMismatch(
            "extracted = staged = valid + quarantined does not hold: " + "; ".join(problems)
        )
    return report


def _describe(row: Row | None, record_type: str) -> str:
    if row is None:
        return "nothing"
    hours, amount_minor, currency = row
    shown = f"{amount_minor} {currency} (minor units)"
    return f"{hours} h, {shown}" if record_type == "timebill" else shown


def first_differences(
    want: dict[str, Row], have: dict[str, Row], *, record_type: str, limit: int = FIRST_DIFFERENCES
) -> list[str]:
    """The first ``limit`` records (by source id) that differ between what the ERP should hold and
    what it holds: missing, unexpected or different, each with both sides."""
    prefix = EXTERNAL_ID_PREFIX.get(record_type, "")
    differing = sorted(
        (k for k in set(want) | set(have) if want.get(k) != have.get(k)), key=lambda k: (len(k), k)
    )
    return [
        f"{prefix}{source_id}: expected {_describe(want.get(source_id), record_type)},"
        f" ERP has {_describe(have.get(source_id), record_type)}"
        for source_id in differing[:limit]
    ]


def _functional_currencies() -> dict[str, str]:
    from psa_erp_sync.config import load_config

    return {name: le.currency for name, le in load_config().legal_entities.legal_entities.items()}


def _check_both_currencies(
    conn: psycopg.Connection,
    client: erp_readback.SuiteQL,
    record_type: str,
    functional_currency: Mapping[str, str],
    *,
    dag_id: str,
    run_id: str,
    source_ids: Collection[str] | None = None,
    lines: Mapping[str, Any] | None = None,
    erp: str | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The both-currency report of ``record_type`` (:mod:`psa_erp_sync.reconcile.fx`), its functional
    control totals recorded (both sides), and the problem it names, if any: the differing groups,
    each with its first differing records. ``source_ids``: the records this ERP should hold (several
    ERPs; None: every approved record). ``lines``: SAP's read-back as fx lines (None: NetSuite's
    SuiteQL read through ``client``). ``erp``: its functional stages are recorded as
    ``<stage>:<erp>`` (several ERPs; their sums are recorded by the caller)."""
    fx = both_currencies.reconcile(
        conn,
        client,
        record_type,
        prefix=EXTERNAL_ID_PREFIX[record_type],
        functional_currency=functional_currency,
        source_ids=source_ids,
        lines=lines,
    )
    for stage, side in (("expected_in_erp_functional", "expected"), ("erp_readback_functional", "erp")):
        ct.record(
            conn,
            dag_id=dag_id,
            run_id=run_id,
            record_type=record_type,
            stage=f"{stage}:{erp}" if erp else stage,
            totals=ct.Totals(fx["counts"][side], Decimal(0), fx["functional"][side]),
        )
    if not fx["differing"]:
        return fx, None
    groups = [
        f"{g['legal_entity']} {g['period']} {g['currency']}: expected {g['expected']}, ERP {g['erp']};"
        f" records: {' | '.join(g['records'])}"
        for g in fx["differing"]
    ]
    return fx, f"{record_type} in both currencies: " + " || ".join(groups)


def _read_back(
    conn: psycopg.Connection, erp: str, adapter: Any, record_type: str
) -> tuple[ct.Totals, dict[str, Row]]:
    """What ``erp`` holds of ``record_type`` per source id: NetSuite by SuiteQL (``adapter`` a
    NetSuite adapter or bare client), SAP by its OData services (an SAP adapter: client and mapping)."""
    if erp == "sap":
        from psa_erp_sync.reconcile import sap_readback

        return sap_readback.actual(conn, adapter.client, adapter.mapping, record_type)
    client = getattr(adapter, "client", adapter)
    return erp_readback.actual(client, record_type, EXTERNAL_ID_PREFIX[record_type])


@dataclass(frozen=True)
class _Scope:
    """One ERP of a reconciliation: its name, adapter (or bare NetSuite client), and whether the
    run reconciles several ERPs (then each compares only what it should hold)."""

    erp: str
    adapter: Any
    per_erp: bool
    route_of: erp_readback.RouteOf | None = None


Sides = tuple[ct.Totals, ct.Totals, ct.Totals]  # expected, ERP read-back, posted per ledger


def _reconcile_one(
    conn: psycopg.Connection, scope: _Scope, record_type: str
) -> tuple[dict[str, Any], str | None, Sides, set[str], dict[str, Row]]:
    """One ERP x record type: expected vs ledger vs read-back. Returns the report part, the
    problem (None: it reconciles), the three totals, the source ids the ERP should hold and what
    it holds per source id."""
    erp = scope.erp if scope.per_erp else None
    want, want_rows = erp_readback.expected(conn, record_type, erp=erp, route_of=scope.route_of)
    have, have_rows = _read_back(conn, scope.erp, scope.adapter, record_type)
    # The ledger's own view of the ERP (last confirmed post/adjust per record) must agree too.
    ledger_view = erp_readback.posted_per_ledger(conn, record_type, erp=erp)
    diff = erp_readback.differences(want_rows, have_rows)
    part: dict[str, Any] = {
        "expected": want.as_dict(),
        "posted_per_ledger": ledger_view.as_dict(),
        "erp": have.as_dict(),
        **diff,
    }
    problem = None
    try:
        ct.assert_equal("expected", want, "erp", have)
        ct.assert_equal("posted per ledger", ledger_view, "erp", have)
    except ct.ControlTotalMismatch as exc:
        first = first_differences(want_rows, have_rows, record_type=record_type)
        named = "; first differing records: " + " | ".join(first) if first else ""
        where = f" in {scope.erp}" if scope.per_erp else ""
        problem = (
            f"{record_type}{where}: {exc} ({diff['missing_in_erp']} missing in the ERP,"
            f" {diff['unexpected_in_erp']} unexpected, {diff['different_in_erp']} different){named}"
        )
    return part, problem, (want, have, ledger_view), set(want_rows), have_rows


STAGES = ("expected_in_erp", "erp_readback", "posted")


def _reconcile_type(
    conn: psycopg.Connection,
    scopes: Sequence[_Scope],
    record_type: str,
    functional: Mapping[str, str],
    *,
    dag_id: str,
    run_id: str,
) -> tuple[dict[str, Any], list[str]]:
    """Every ERP of one record type: per ERP its report part and control totals (stage
    ``<stage>:<erp>`` when several), the sums under the stage names, and the problems."""
    parts: dict[str, dict[str, Any]] = {}
    sides: list[Sides] = []
    problems: list[str] = []
    fx_sides: list[dict[str, Any]] = []
    for scope in scopes:
        part, problem, totals, want_ids, have_rows = _reconcile_one(conn, scope, record_type)
        sides.append(totals)
        if scope.per_erp:
            for stage, t in zip(STAGES, totals, strict=True):
                ct.record(
                    conn,
                    dag_id=dag_id,
                    run_id=run_id,
                    record_type=record_type,
                    stage=f"{stage}:{scope.erp}",
                    totals=t,
                )
        if problem is not None:
            problems.append(problem)
        # SAP holds no functional amount: its transaction amounts at the rates we sent it
        # (sap_readback.functional_lines; docs/multi-erp.md, "Downstream per ERP").
        lines = sap_readback.functional_lines(conn, record_type, have_rows) if scope.erp == "sap" else None
        part["both_currencies"], fx_problem = _check_both_currencies(
            conn,
            getattr(scope.adapter, "client", scope.adapter),
            record_type,
            functional,
            dag_id=dag_id,
            run_id=run_id,
            source_ids=want_ids if scope.per_erp else None,
            lines=lines,
            erp=scope.erp if scope.per_erp else None,
        )
        fx_sides.append(part["both_currencies"])
        # Named when the transaction amounts agree (a functional amount or a rate differs);
        # otherwise the differences above name the records, and the report holds both.
        if fx_problem is not None and problem is None:
            problems.append(fx_problem)
        parts[scope.erp] = part
    summed = [_sum([s[i] for s in sides]) for i in range(3)]
    for stage, t in zip(STAGES, summed, strict=True):
        ct.record(conn, dag_id=dag_id, run_id=run_id, record_type=record_type, stage=stage, totals=t)
    if len(scopes) == 1 and not scopes[0].per_erp:
        return next(iter(parts.values())), problems
    _record_functional_sums(conn, fx_sides, record_type, dag_id=dag_id, run_id=run_id)
    want, have, ledger_view = summed
    report = {"expected": want.as_dict(), "posted_per_ledger": ledger_view.as_dict(), "erp": have.as_dict()}
    return report | {"by_erp": parts}, problems


def _record_functional_sums(
    conn: psycopg.Connection, reports: Sequence[dict[str, Any]], record_type: str, *, dag_id: str, run_id: str
) -> None:
    """The both-currency stages summed over the ERPs, under the usual stage names."""
    for stage, side in (("expected_in_erp_functional", "expected"), ("erp_readback_functional", "erp")):
        amounts: dict[str, int] = {}
        for report in reports:
            for cur, minor in report["functional"][side].items():
                amounts[cur] = amounts.get(cur, 0) + minor
        count = sum(int(r["counts"][side]) for r in reports)
        totals = ct.Totals(count, Decimal(0), dict(sorted(amounts.items())))
        ct.record(conn, dag_id=dag_id, run_id=run_id, record_type=record_type, stage=stage, totals=totals)


def _sum(totals: Sequence[ct.Totals]) -> ct.Totals:
    amounts: dict[str, int] = {}
    for t in totals:
        for cur, minor in t.amounts.items():
            amounts[cur] = amounts.get(cur, 0) + minor
    return ct.Totals(
        sum(t.count for t in totals),
        sum((t.hours for t in totals), Decimal(0)),
        dict(sorted(amounts.items())),
        str(sum(int(t.hash_total) for t in totals)),
    )


def reconcile_erp(
    conn: psycopg.Connection,
    client: erp_readback.SuiteQL | None,
    *,
    dag_id: str,
    run_id: str,
    record_types: Sequence[str] = ("timebill", "expensereport"),
    functional_currency: Mapping[str, str] | None = None,
    erps: Mapping[str, Any] | None = None,
    route_of: erp_readback.RouteOf | None = None,
) -> dict[str, Any]:
    """PSA approved vs ODS vs ERP read-back, to the cent, in the transaction currency and (per
    legal entity, period and currency) in both currencies; a mismatch is audited and raises
    :class:`~psa_erp_sync.reconcile.control_totals.ControlTotalMismatch` naming the first
    differing records. ``functional_currency``: legal entity -> its currency (default: config).

    ``erps`` (several ERPs during a transition): ERP name -> its posting adapter. Each ERP is read
    back and reconciled with what it should hold (the route each record's ledger rows carry, else
    ``route_of(legal entity, date)``), control totals per ERP (stage ``<stage>:<erp>``) and summed
    (the stage names); ``client`` is then unused. Without ``erps``: ``client`` is NetSuite's."""
    functional = functional_currency if functional_currency is not None else _functional_currencies()
    if erps:
        scopes = [_Scope(erp, adapter, len(erps) > 1, route_of) for erp, adapter in erps.items()]
    else:
        scopes = [_Scope("netsuite", client, False)]
    report: dict[str, Any] = {}
    problems = []
    with conn.transaction():
        for record_type in record_types:
            report[record_type], found = _reconcile_type(
                conn, scopes, record_type, functional, dag_id=dag_id, run_id=run_id
            )
            problems.extend(found)
        if problems:
            _audit_mismatch(conn, actor=f"{dag_id}.reconcile_erp", entity="erp", run_id=run_id, report=report)
    if problems:
        raise ct.ControlTotalMismatch("ERP does not equal the approved PSA set: " + " || ".join(problems))
    log.info("ERP reconciles with the approved PSA set: %s", {k: v["erp"] for k, v in report.items()})
    return report
