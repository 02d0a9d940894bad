"""The forecast picture: PNG per entity (firm and each legal entity) and one HTML page.

Bars per month in the reporting currency: recognized actuals, contracted backlog and, stacked on
it, the lower-confidence weighted pipeline; a dashed line for the previous snapshot's forecast
and dotted lines for the best and worst scenarios. Amounts become floats only here, for drawing;
the tables in the HTML are formatted from the integer minor units.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from psa_erp_sync import money
from psa_erp_sync.forecast import store

if TYPE_CHECKING:
    import psycopg

FIRM = "firm"


@dataclass(frozen=True)
class ChartFiles:
    html: Path
    pngs: dict[str, Path]


Series = dict[str, dict[date, dict[str, int]]]  # entity -> month -> layer -> reporting minor


def _series(conn: psycopg.Connection, snap_id: str | None) -> Series:
    out: Series = {}
    if snap_id is None:
        return out
    for entity, month, layer, total in store.monthly_totals(conn, snap_id):
        for key in (FIRM, entity):
            bucket = out.setdefault(key, {}).setdefault(month, {})
            bucket[layer] = bucket.get(layer, 0) + total
    return out


def _forecast(bucket: dict[str, int] | None) -> int:
    return 0 if bucket is None else bucket.get("contracted", 0) + bucket.get("pipeline", 0)


def write_charts(
    conn: psycopg.Connection,
    *,
    snapshots: dict[str, str],
    previous: str | None,
    out_dir: Path,
    reporting_currency: str,
) -> ChartFiles:
    """Draw the base scenario (with best/worst and the previous base snapshot) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    base = _series(conn, snapshots["base"])
    others = {name: _series(conn, snapshots.get(name)) for name in ("best", "worst")}
    prev = _series(conn, previous)
    scale = 10 ** money.exponent(reporting_currency) * 1000  # thousands of the reporting currency
    entities = [FIRM, *sorted(e for e in base if e != FIRM)]
    pngs: dict[str, Path] = {}
    sections = []
    for entity in entities:
        months = sorted(set(base.get(entity, {})) | set(prev.get(entity, {})))
        data = base.get(entity, {})
        actual = [data.get(m, {}).get("actual", 0) / scale for m in months]
        contracted = [data.get(m, {}).get("contracted", 0) / scale for m in months]
        pipeline = [data.get(m, {}).get("pipeline", 0) / scale for m in months]
        x = list(range(len(months)))
        fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
        ax.bar(x, actual, color="#2f4b7c", label="actual (recognized)")
        ax.bar(x, contracted, bottom=actual, color="#5fa2dd", label="contracted backlog")
        stacked = [a + c for a, c in zip(actual, contracted, strict=True)]
        ax.bar(
            x,
            pipeline,
            bottom=stacked,
            color="#f3c77a",
            hatch="//",
            edgecolor="#c89a3a",
            label="weighted pipeline",
        )
        if prev:
            prev_data = prev.get(entity, {})
            ax.plot(
                x,
                [_forecast(prev_data.get(m)) / scale for m in months],
                "k--",
                marker="o",
                ms=3,
                label="previous snapshot (forecast)",
            )
        for name, style in (("best", "g:"), ("worst", "r:")):
            other = others[name].get(entity, {})
            if other:
                ax.plot(
                    x,
                    [(_forecast(other.get(m)) + other.get(m, {}).get("actual", 0)) / scale for m in months],
                    style,
                    label=f"{name} scenario (total)",
                )
        ax.set_xticks(x, [m.strftime("%b %y") for m in months], rotation=45, ha="right")
        ax.set_ylabel(f"{reporting_currency} thousands")
        ax.set_title(f"Revenue forecast: {entity} (base scenario)")
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"forecast-{entity}.png"
        fig.savefig(path)
        plt.close(fig)
        pngs[entity] = path
        sections.append(_section(entity, path, months, data, prev.get(entity, {}), reporting_currency))
    page = out_dir / "forecast.html"
    page.write_text(_page(snapshots, previous, sections), encoding="utf-8")
    return ChartFiles(html=page, pngs=pngs)


def _section(
    entity: str,
    png: Path,
    months: list[date],
    data: dict[date, dict[str, int]],
    prev: dict[date, dict[str, int]],
    currency: str,
) -> str:
    image = base64.b64encode(png.read_bytes()).decode()
    rows = []
    for m in months:
        bucket = data.get(m, {})
        cells = [
            bucket.get("actual", 0),
            bucket.get("contracted", 0),
            bucket.get("pipeline", 0),
            _forecast(prev.get(m)),
        ]
        rows.append(
            f"<tr><td>{m:%Y-%m}</td>"
            + "".join(f"<td class=n>{money.format_minor(v, currency)}</td>" for v in cells)
            + "</tr>"
        )
    return (
        f"<h2>{html.escape(entity)}</h2><img alt='forecast {html.escape(entity)}' src='data:image/png;base64,{image}'>"
        f"<table><tr><th>month</th><th>actual</th><th>contracted</th><th>pipeline</th>"
        f"<th>previous forecast</th></tr>{''.join(rows)}</table>"
    )


def _page(snapshots: dict[str, str], previous: str | None, sections: list[str]) -> str:
    ids = ", ".join(f"{html.escape(k)}: <code>{html.escape(v)}</code>" for k, v in sorted(snapshots.items()))
    prev = f"<code>{html.escape(previous)}</code>" if previous else "none"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Revenue forecast</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td.n{text-align:right}"
        "table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #ccc;padding:2px 6px}</style>"
        f"</head><body><h1>Revenue forecast</h1><p>Snapshots {ids}; previous base snapshot {prev}.</p>"
        "<p>Bars: recognized actuals, contracted backlog (resource plans, milestones, retainers) and the "
        "weighted pipeline (lower confidence). Dashed: what the previous snapshot forecast for each month.</p>"
        + "".join(sections)
        + "</body></html>"
    )
