"""The close report as files: one self-contained HTML page (inline SVG charts, no external
resources, no personal data: legal entities, currencies, record ids, owners' team names only) and
the JSON of :class:`~psa_erp_sync.reconcile.close_report.CloseReport`, and the DAG step that
computes, stores, writes and checks the reports of every legal entity.

Amounts become floats only for drawing bar lengths; every figure shown is formatted from the
integer minor units.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from psa_erp_sync import money
from psa_erp_sync.reconcile import close_report as cr
from psa_erp_sync.reconcile.erp_readback import SuiteQL

#: Where the files go when the step is given no directory.
OUTPUT_DIR_VAR = "PSA_ERP_SYNC_CLOSE_REPORT_DIR"
DEFAULT_OUTPUT_DIR = ".local/close_reports"
COLORS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")


def bar_chart(title: str, bars: Sequence[tuple[str, int]], currency: str | None = None) -> str:
    """A horizontal bar chart as inline SVG; labels are formatted from the integers."""
    width, row, label_w = 560, 26, 170
    peak = max((abs(v) for _, v in bars), default=0) or 1
    height = row * len(bars) + 34
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        f' aria-label="{html.escape(title)}">',
        f'<text x="4" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(bars):
        y = 26 + i * row
        length = int((width - label_w - 120) * abs(value) / peak)
        shown = money.format_minor(value, currency) if currency else str(value)
        parts += [
            f'<text x="4" y="{y + 15}" font-size="12">{html.escape(label)}</text>',
            f'<rect x="{label_w}" y="{y + 3}" width="{length}" height="{row - 8}"'
            f' fill="{COLORS[i % len(COLORS)]}"/>',
            f'<text x="{label_w + length + 6}" y="{y + 15}" font-size="12">{html.escape(shown)}</text>',
        ]
    return "".join(parts) + "</svg>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _currency_section(c: cr.CurrencyFigures) -> str:
    fmt = lambda v: money.format_minor(v, c.currency)  # noqa: E731
    chart = bar_chart(
        f"{c.currency}: revenue and balances",
        [
            ("revenue recognized", c.revenue_recognized_minor),
            ("invoiced", c.invoiced_minor),
            ("credited", c.credited_minor),
            ("billed (net)", c.billed_minor),
            ("WIP closing", c.wip_closing_minor),
            ("deferred closing", c.deferred_closing_minor),
            ("unbilled", c.unbilled_minor),
            ("leakage", c.leakage_minor),
        ],
        c.currency,
    )
    table = _table(
        ("figure", "opening", "closing", "movement"),
        [
            (
                "WIP (contract assets)",
                fmt(c.wip_opening_minor),
                fmt(c.wip_closing_minor),
                fmt(c.wip_movement_minor),
            ),
            (
                "deferred revenue (contract liabilities)",
                fmt(c.deferred_opening_minor),
                fmt(c.deferred_closing_minor),
                fmt(c.deferred_movement_minor),
            ),
        ],
    )
    summary = _table(
        (
            "revenue recognized",
            "invoiced",
            "credited",
            "billed (net)",
            "unbilled",
            "leakage (entries)",
            "leakage",
        ),
        [
            (
                fmt(c.revenue_recognized_minor),
                fmt(c.invoiced_minor),
                fmt(c.credited_minor),
                fmt(c.billed_minor),
                fmt(c.unbilled_minor),
                c.leakage_count,
                fmt(c.leakage_minor),
            )
        ],
    )
    return f"<h2>{html.escape(c.currency)}</h2>{chart}{summary}{table}"


def _per_erp_cell(r: cr.Reconciliation) -> str:
    """Time and expenses: the records compared with each ERP and its sum; what was skipped."""
    compared = [
        f"{erp}: {n} records, {money.format_minor(r.erp_sums.get(erp, 0), r.currency)}"
        for erp, n in r.erp_records.items()
    ]
    return "; ".join(compared + r.notes)


def _reconciliation_section(report: cr.CloseReport) -> str:
    rows = [
        (
            r.area,
            r.currency,
            ", ".join(f"{side} {money.format_minor(total, r.currency)}" for side, total in r.sides.items()),
            r.records,
            _per_erp_cell(r),
            "matched" if r.matched else f"{r.differing} differing",
            "; ".join(r.first_differences),
        )
        for r in report.reconciliation
    ]
    return "<h2>Reconciliation to the cent</h2>" + _table(
        ("area", "currency", "sums per side", "records", "per ERP", "status", "first differing records"), rows
    )


def render_html(report: cr.CloseReport) -> str:
    """The whole page, self-contained."""
    states: dict[str, int] = {}
    for counts in report.postings.values():
        for state, count in counts.items():
            states[state] = states.get(state, 0) + count
    postings_chart = bar_chart("Postings by latest state", sorted(states.items()))
    postings_table = _table(
        ("record type", *sorted(states)),
        [(rt, *(counts.get(s, 0) for s in sorted(states))) for rt, counts in report.postings.items()],
    )
    owners = _table(("owner", "open exception items"), sorted(report.open_exceptions.items()))
    status = "reconciled" if report.reconciled else "NOT reconciled"
    title = f"Close report {report.legal_entity} {report.period}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Status: <b>{status}</b> · as of "
        f"{html.escape(report.as_of.isoformat())} · run {html.escape(report.run_id)}</p>"
        + "".join(_currency_section(c) for c in report.currencies)
        + "<h2>Postings</h2>"
        + postings_chart
        + postings_table
        + _reconciliation_section(report)
        + "<h2>Open exceptions by owner</h2>"
        + owners
        + "</body></html>"
    )


def write_files(report: cr.CloseReport, output_dir: Path) -> tuple[Path, Path]:
    """``close_<entity>_<YYYY-MM>.html`` and ``.json`` in ``output_dir`` (replaced on rerun; the
    ODS keeps every version)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = f"close_{report.legal_entity}_{report.period}"
    page, data = output_dir / f"{stem}.html", output_dir / f"{stem}.json"
    page.write_text(render_html(report), encoding="utf-8")
    data.write_text(json.dumps(report.model_dump(mode="json"), indent=2, sort_keys=True), encoding="utf-8")
    return page, data


def _sap_journals(conn: psycopg.Connection, adapter: Any | None) -> dict[str, tuple[str, int]] | None:
    """The revenue journals SAP holds (external id -> currency, debits), or None without SAP."""
    if adapter is None:
        return None
    from psa_erp_sync.reconcile import revenue_journals

    _, keys = revenue_journals.ledger_side(conn, "sap")
    companies = adapter.mapping.company_codes.values()
    return revenue_journals.sap_side(adapter.client, companies, keys)


def _route_of() -> Any:
    """``route_of(legal entity, date)``: the ERP ``config/erp_routing.yaml`` routes it to (None:
    no route)."""
    from psa_erp_sync.routing.route import RouteNotFound, router

    routing = router()

    def route_of(legal_entity: str, day: Any) -> str | None:
        try:
            return routing.route(legal_entity, day).erp
        except RouteNotFound:
            return None

    return route_of


def close_report_step(
    conn: psycopg.Connection,
    erp: SuiteQL,
    *,
    config: Any,
    run_id: str,
    as_of: datetime,
    period: str | None = None,
    output_dir: str | None = None,
    legal_entities: Sequence[str] | None = None,
    leakage_days: int = 30,
    erp_adapters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The DAG step: per legal entity of ``config/legal_entities.yaml`` (or ``legal_entities``),
    the report of ``period`` (default: the month before the run's as-of) is computed, stored in
    ``close.report`` and written as HTML and JSON; then a mismatch fails the step naming the first
    differing records. Returns the headlines. ``erp_adapters``: SAP's adapter, when the routing
    sends anything there, reads back the revenue journals, time and expenses SAP holds; each record
    is compared with the ERP its ledger rows target, else the route of its entity and date."""
    month = period or cr.previous_period(as_of)
    elsewhere = _sap_journals(conn, (erp_adapters or {}).get("sap"))
    route_of = _route_of() if erp_adapters else None
    entities: Mapping[str, Any] = config.legal_entities.legal_entities
    target = Path(output_dir or os.environ.get(OUTPUT_DIR_VAR) or DEFAULT_OUTPUT_DIR)
    reports = []
    for code in legal_entities or sorted(entities):
        report = cr.compute(
            conn,
            erp,
            legal_entity=code,
            period=month,
            functional_currency=entities[code].currency,
            run_id=run_id,
            as_of=as_of,
            leakage_days=leakage_days,
            journals_elsewhere=elsewhere,
            erp_adapters=erp_adapters,
            route_of=route_of,
        )
        cr.store(conn, report)
        conn.commit()  # kept even when the check below fails the step
        write_files(report, target)
        reports.append(report)
    cr.check(reports)
    return {"period": month, "output_dir": str(target), "headlines": [cr.headline(r) for r in reports]}
