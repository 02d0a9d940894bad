"""Reconcile a parallel run from what both ERPs hold: per legal entity x period x project x ERP, to the cent.

During a parallel-run window (``parallel_run`` of a cutover in ``config/erp_routing.yaml``) each
record of the entity dated in the window is posted to the primary ERP (its own lane) and to the
secondary (its shadow lane, :mod:`psa_erp_sync.posting.planner`). This check reads **both ERPs
back** through their adapters (:meth:`~psa_erp_sync.posting.adapter.ErpAdapter.read_back`, by
idempotency key: NetSuite by external id, SAP by the tag and source id of the live record) and
values what each holds in integer minor units:

- time: the hours the ERP holds x the rate it holds (NetSuite), or x the bill rate we posted (SAP
  timesheets carry hours, no money: an hours difference is a money difference at our rate);
- expenses: the amount the ERP holds (NetSuite's expense report, SAP's journal entry debits);
- a correcting journal: its ledger amount when the ERP proves it holds it (by key), else nothing.

The ledger side is what we posted and the ERP confirmed (:func:`~psa_erp_sync.posting.ledger.window_postings`).
Both are grouped by the ledger's period and project of each record (the ERPs name periods and
projects their own way), and :func:`psa_erp_sync.routing.parallel.reconcile` reports every
difference: ``ledger_vs_erp`` per ERP, and ``primary_vs_secondary``. Each difference names the
records behind it. The result is written to ``routing.parallel_check`` and
``routing.parallel_difference`` (migration 0032).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from psa_erp_sync import money
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.adapter import ErpAdapter, Held
from psa_erp_sync.routing.parallel import Amount, ParallelRunReport, reconcile
from psa_erp_sync.routing.route import ParallelWindow

RECORD_TYPES = ("timebill", "expensereport")
_Line = tuple[str, str, str, str]  # period, project, ERP, currency


class ParallelRunMismatch(RuntimeError):
    """A parallel run's ERPs differ from the ledger or from each other (the message lists them)."""


@dataclass
class WindowCheck:
    """One window's reconciliation: the report and, per difference, the records behind it."""

    window: ParallelWindow
    report: ParallelRunReport
    records: list[list[str]] = field(default_factory=list)
    check_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = self.report.as_dict()
        for diff, records in zip(out["differences"], self.records, strict=True):
            diff["records"] = records
        return {
            "legal_entity": self.window.legal_entity,
            "first_day": self.window.first_day.isoformat(),
            "last_day": self.window.last_day.isoformat(),
            "check_id": self.check_id,
            **out,
        }

    def messages(self) -> list[str]:
        lines = []
        for d, records in zip(self.report.differences, self.records, strict=True):
            what = "ledger" if d.kind == "ledger_vs_erp" else self.report.primary
            lines.append(
                f"{d.legal_entity} {d.period} project {d.project or '-'} {d.erp} {d.currency}:"
                f" {_fmt(d.held_minor, d.currency)} held vs {_fmt(d.expected_minor, d.currency)} in {what}"
                f" ({d.difference_minor:+d} minor units; records {', '.join(records) or '-'})"
            )
        return lines


def _fmt(minor: int | None, currency: str) -> str:
    return "no line" if minor is None else money.format_minor(minor, currency)


def _project(p: ledger.Posting, projects: Mapping[str, str]) -> str:
    payload = p.payload.get("reverses") if p.action == "reverse" and not p.corrects else p.payload
    ref = (payload or {}).get("customer") or {}
    found = ref.get("externalId") if isinstance(ref, dict) else ref
    return str(found or projects.get(p.source_id, ""))


def _currency(p: ledger.Posting) -> str:
    if p.currency:
        return p.currency
    payload = p.payload.get("reverses") or p.payload
    return str(((payload or {}).get("currency") or {}).get("refName") or "")


def erp_value(p: ledger.Posting, held: Held | None) -> int | None:
    """What the ERP holds for posting ``p``'s record, in minor units (None: nothing held)."""
    if held is None:
        return None
    currency = _currency(p)
    if p.corrects:
        return int(p.amount_minor or 0) if held.carries(p.idempotency_key) else None
    payload = (p.payload.get("reverses") if p.action == "reverse" else p.payload) or {}
    if p.record_type == "timebill" and held.hours is not None:
        rate = held.rate if held.rate is not None else Decimal(str(payload.get("rate") or 0))
        return money.line_amount_minor(held.hours, rate, currency)
    if held.amount is not None:
        return money.to_minor(held.amount, currency)
    return int(p.amount_minor or 0) if held.carries(p.idempotency_key) else None


def _read_back(adapter: ErpAdapter, postings: Sequence[ledger.Posting]) -> dict[str, Held]:
    """The adapter's read-back, 100 postings of one ERP record type per call (as the engine does)."""
    found: dict[str, Held] = {}
    for erp_type in sorted({p.erp_type for p in postings}):
        same = [p for p in postings if p.erp_type == erp_type]
        for start in range(0, len(same), 100):
            found.update(adapter.read_back(same[start : start + 100]))
    return found


def check_window(
    conn: psycopg.Connection,
    window: ParallelWindow,
    adapters: Mapping[str, ErpAdapter],
    *,
    record_types: Sequence[str] = RECORD_TYPES,
) -> WindowCheck:
    """Reconcile one window: the ledger against each ERP's read-back, and the secondary against
    the primary, for every record type."""
    entity = window.legal_entity
    expected: list[Amount] = []
    held: list[Amount] = []
    by_record: dict[tuple[str, _Line], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for record_type in record_types:
        postings = ledger.window_postings(
            conn, record_type, legal_entity=entity, first_day=window.first_day, last_day=window.last_day
        )
        projects = {p.source_id: _project(p, {}) for p in postings if not p.corrects}
        for erp in sorted({p.target_erp for p in postings}):
            if erp not in adapters:
                raise ValueError(f"no adapter for {erp}, which the ledger posted {entity}'s window to")
            mine = [p for p in postings if p.target_erp == erp]
            found = _read_back(adapters[erp], mine)
            for p in mine:
                line: _Line = (p.period or "", _project(p, projects), erp, _currency(p))
                want = 0 if p.action == "reverse" and not p.corrects else int(p.amount_minor or 0)
                have = erp_value(p, found.get(p.idempotency_key))
                if want:
                    expected.append(Amount(entity, *line, want))
                if have is not None:
                    held.append(Amount(entity, *line, have))
                by_record[("ledger", line)][p.source_id] += want
                by_record[("erp", line)][p.source_id] += have or 0
    report = reconcile(expected, held, primary=window.primary.erp, secondary=window.secondary.erp)
    check = WindowCheck(window, report)
    for d in report.differences:
        line = (d.period, d.project, d.erp, d.currency)
        if d.kind == "ledger_vs_erp":
            left, right = by_record[("ledger", line)], by_record[("erp", line)]
        else:
            left = by_record[("erp", (d.period, d.project, window.primary.erp, d.currency))]
            right = by_record[("erp", line)]
        check.records.append(sorted(s for s in set(left) | set(right) if left.get(s, 0) != right.get(s, 0)))
    return check


def record(conn: psycopg.Connection, check: WindowCheck, *, run_id: str) -> int:
    """Write the check and one row per difference; returns the check's id."""
    w, report = check.window, check.report
    row = conn.execute(
        "INSERT INTO routing.parallel_check (run_id, legal_entity, first_day, last_day, primary_erp,"
        " secondary_erp, compared, differences) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING check_id",
        (
            run_id,
            w.legal_entity,
            w.first_day,
            w.last_day,
            w.primary.erp,
            w.secondary.erp,
            report.compared,
            len(report.differences),
        ),
    ).fetchone()
    assert row is not None
    check.check_id = int(row[0])
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO routing.parallel_difference (check_id, kind, legal_entity, period, project, erp,"
            " currency, expected_minor, held_minor, difference_minor, records)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    check.check_id,
                    d.kind,
                    d.legal_entity,
                    d.period,
                    d.project,
                    d.erp,
                    d.currency,
                    d.expected_minor,
                    d.held_minor,
                    d.difference_minor,
                    Jsonb(records),
                )
                for d, records in zip(report.differences, check.records, strict=True)
            ],
        )
    return check.check_id


def reconcile_parallel_runs(
    conn: psycopg.Connection,
    windows: Sequence[ParallelWindow],
    adapters: Mapping[str, ErpAdapter],
    *,
    run_id: str,
    record_types: Sequence[str] = RECORD_TYPES,
) -> list[WindowCheck]:
    """Check every window, write each check (committed before any failure), and raise
    :class:`ParallelRunMismatch` naming every difference when there is one."""
    checks = []
    for window in windows:
        check = check_window(conn, window, adapters, record_types=record_types)
        with conn.transaction():
            record(conn, check, run_id=run_id)
        checks.append(check)
    problems = [m for c in checks for m in c.messages()]
    if problems:
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise ParallelRunMismatch(
            f"parallel run: {len(problems)} difference(s) between the ledger and the ERPs' read-backs"
            f" (routing.parallel_difference, check ids {[c.check_id for c in checks]}):\n  {shown}{more}"
        )
    return checks
