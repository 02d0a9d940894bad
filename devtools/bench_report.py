"""What ``make bench`` leaves behind: a table people can read, the run's JSON by date, a chart,
and the table in docs/performance.md.

- ``text_table(doc)``: every target of ``devtools/bench_targets.py`` with measured, ceiling or
  peer, ratio, target and met, printed after the JSON;
- ``save(doc, out_dir)``: ``docs/bench/YYYY-MM-DD.json`` (the date the run started, UTC; a later
  run the same day replaces it) and ``YYYY-MM-DD.png``: each stage's rows/s against the
  ceilings and peers measured in the same run (matplotlib, as ``psa_erp_sync.forecast.chart``);
- ``python -m devtools.bench_report`` (``make bench-doc``): renders the newest run's table, and
  the machine and load of every run, between the markers of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

from devtools.bench_targets import evaluate, lookup

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "docs" / "bench"
DOC = ROOT / "docs" / "performance.md"
BEGIN = "<!-- bench-table:begin (make bench-doc renders this from docs/bench/*.json; do not edit) -->"
END = "<!-- bench-table:end -->"

# Chart: per stage, (label, dotted path of rows/s, kind); kind "ours", "ceiling" or "peer".
CHART_STAGES: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "staging",
        (
            ("staging (COPY + hash + dedupe)", "posting.stage_copy.rows_per_s", "ours"),
            ("bare COPY, temp jsonb", "posting.bare_copy_same_rows.rows_per_s", "ceiling"),
            ("bare COPY, temp text", "posting.copy_ceilings_same_rows.temp_text.rows_per_s", "ceiling"),
            (
                "bare COPY, durable keyed",
                "posting.copy_ceilings_same_rows.durable_text_keyed.rows_per_s",
                "ceiling",
            ),
            ("pandas to_sql", "posting.pandas_to_sql_same_rows.rows_per_s", "peer"),
            ("dlt merge", "posting.dlt_merge_same_rows.rows_per_s", "peer"),
        ),
    ),
    (
        "validation",
        (
            ("validation", "posting.validate.rows_per_s", "ours"),
            ("bare pydantic-core", "posting.validate.bare_pydantic_same_payloads.rows_per_s", "ceiling"),
        ),
    ),
    (
        "post, local ERP",
        (
            ("post (periods + planner + engine)", "posting.post.rows_per_s", "ours"),
            ("engine alone", "posting.post.engine_rows_per_s", "ours"),
            ("bare client", "posting.erp_raw_capacity.rows_per_s", "ceiling"),
            ("bare client + results", "posting.erp_raw_capacity_reading_results.rows_per_s", "ceiling"),
            ("same records, bare", "posting.erp_capacity_same_records.rows_per_s", "ceiling"),
        ),
    ),
    (
        "billing: invoices to the local ERP (invoices/s)",
        (
            ("post (the billing pass)", "posting.billing.post.documents_per_s", "ours"),
            ("engine alone", "posting.billing.post.engine_documents_per_s", "ours"),
            ("same invoices, bare", "posting.billing.bare_invoice_capacity.documents_per_s", "ceiling"),
        ),
    ),
    (
        "post, ERP 250 ms/request",
        (
            ("post (periods + planner + engine)", "posting_remote.post.rows_per_s", "ours"),
            ("bare client", "posting_remote.erp_raw_capacity.rows_per_s", "ceiling"),
            ("same records, bare", "posting_remote.erp_capacity_same_records.rows_per_s", "ceiling"),
        ),
    ),
)
# The month-end peak's stages (make bench-peak / PEAK=1), and each stage of the scaling check at
# its largest size (rows/s at 1x and 2x are in the JSON with the exponents).
CHART_STAGES += (
    (
        "month-end peak, 12,500 consultants (ours, no same-run ceiling)",
        (
            ("extract (PSA HTTP -> staged)", "peak.stages.extract.rows_per_s", "ours"),
            ("validate", "peak.stages.validate.rows_per_s", "ours"),
            ("post (periods + planner + engine)", "peak.stages.post.rows_per_s", "ours"),
        ),
    ),
    (
        "scaling check: rows/s at 1x, 2x, 4x (flat = linear)",
        tuple(
            (f"{stage} {n}x", f"scaling.by_stage.{stage}.rows_per_s.{i}", "ours")
            for stage in ("extract", "stage", "validate", "post")
            for i, n in enumerate((1, 2, 4))
        ),
    ),
)
COLOURS = {"ours": "#1f77b4", "ceiling": "#7f7f7f", "peer": "#ff7f0e"}


def machine() -> dict[str, Any]:
    """The machine a run is measured on (the load averages are added at start and end)."""
    cpu = ""
    memory_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu_model": cpu or platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "rows/s" or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _cells(row: dict[str, Any]) -> list[str]:
    unit = row["unit"]
    measured = "not measured" if row["measured"] is None else f"{_fmt(row['measured'], unit)} {unit}"
    if not row["against_label"]:
        against = "-"
    elif row["against"] is None:
        against = f"{row['against_label']}: not measured"
    else:
        against = f"{row['against_label']} {_fmt(row['against'], unit)}"
    ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
    target = f"{row['comparison']} {row['target']:g}{'x' if row['against_label'] else ' ' + unit}"
    met = {True: "yes", False: "no", None: "not measured"}[row["met"]]
    return [row["name"], measured, against, ratio, target, met]


HEADER = ["target", "measured", "ceiling or peer (same run)", "ratio", "target", "met"]


def text_table(doc: dict[str, Any]) -> str:
    """The targets as a fixed-width text table."""
    rows = [HEADER] + [_cells(r) for r in evaluate(doc)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"


def markdown_table(doc: dict[str, Any]) -> str:
    rows = [_cells(r) for r in evaluate(doc)]
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _minutes(seconds: Any) -> str:
    return f"{seconds / 60:.0f} min" if isinstance(seconds, (int, float)) else "?"


def run_line(name: str, doc: dict[str, Any]) -> str:
    """Where and under what load a run was measured, in one line."""
    m = doc.get("machine", {})
    before = m.get("load_average_at_start")
    after = m.get("load_average_at_end")
    load = f"load average {'/'.join(map(str, before or []))} at the start, {'/'.join(map(str, after or []))} at the end"
    mem = f", {m['memory_gib']} GiB" if m.get("memory_gib") else ""
    return (
        f"`docs/bench/{name}.json`: started {doc.get('started_at', '?')}, as of {doc.get('as_of', '?')}; "
        f"host {m.get('host', '?')} ({m.get('cpu_model', '?')}, {m.get('cpus', '?')} cores{mem}), "
        f"Python {m.get('python', '?')}; {load}; wall time {_minutes(doc.get('wall_s'))}"
    )


def chart(doc: dict[str, Any], path: Path) -> Path:
    """One PNG: a panel per stage, bars of rows/s (linear, from 0) for ours, its same-run
    ceilings and its peers. Stages the run did not measure are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[tuple[str, float, str]]]] = []
    for stage, items in CHART_STAGES:
        found = [(label, lookup(doc, p), kind) for label, p, kind in items]
        bars = [(label, float(v), kind) for label, v, kind in found if isinstance(v, (int, float)) and v > 0]
        if bars:
            panels.append((stage, bars))
    heights = [len(bars) + 1.2 for _, bars in panels] or [1.0]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(9, 0.32 * sum(heights) + 1.2),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (stage, bars) in zip(axes[:, 0], panels, strict=False):
        ys = list(range(len(bars)))[::-1]
        ax.barh(ys, [b[1] for b in bars], color=[COLOURS[b[2]] for b in bars])
        ax.set_yticks(ys, [b[0] for b in bars], fontsize=8)
        ax.set_title(stage, fontsize=9, loc="left")
        ax.set_xlim(0, max(b[1] for b in bars) * 1.18)
        ax.tick_params(axis="x", labelsize=7)
        for y, (_, value, _) in zip(ys, bars, strict=True):
            ax.text(value, y, f" {value:,.0f}" if value >= 100 else f" {value:.1f}", va="center", fontsize=7)
    axes[-1, 0].set_xlabel("rows/s (same run; the billing panel: invoices/s)")
    m = doc.get("machine", {})
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    fig.legend(handles, ["ours", "same-run ceiling", "peer"], fontsize=7, loc="upper right", ncol=3)
    fig.suptitle(
        f"make bench {str(doc.get('started_at', ''))[:16]} UTC - {m.get('cpus')} cores, load "
        f"{(m.get('load_average_at_start') or ['?'])[0]} -> {(m.get('load_average_at_end') or ['?'])[0]}",
        fontsize=9,
        x=0.02,
        ha="left",
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def save(doc: dict[str, Any], out_dir: Path, *, suffix: str = "") -> tuple[Path, Path]:
    """The run's JSON and chart, named by the date the run started (``YYYY-MM-DD-<suffix>`` with a
    suffix: ``make bench-peak``'s run beside the day's full run; ``runs`` lists only full runs).
    A day's second full run is named by its start too (``YYYY-MM-DDTHHMM``), not written over the first."""
    started = str(doc["started_at"])
    name = started[:10] + (f"-{suffix}" if suffix else "")
    if not suffix and (out_dir / f"{name}.json").exists():
        name = f"{started[:10]}T{started[11:13]}{started[14:16]}"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return json_path, chart(doc, out_dir / f"{name}.png")


def runs(bench_dir: Path = BENCH_DIR) -> list[tuple[str, dict[str, Any]]]:
    """The saved runs, oldest first."""
    found = sorted(p for p in bench_dir.glob("*.json") if re.fullmatch(r"\d{4}-\d{2}-\d{2}(T\d{4})?", p.stem))
    return [(p.stem, json.loads(p.read_text())) for p in found]


def doc_block(bench_dir: Path = BENCH_DIR) -> str:
    """What stands between the markers: the newest run's targets, its chart, and every run's
    machine and load."""
    saved = runs(bench_dir)
    if not saved:
        raise FileNotFoundError(f"no run saved in {bench_dir}; run make bench")
    name, doc = saved[-1]
    lines = [
        f"Newest run: {run_line(name, doc)}.",
        "",
        markdown_table(doc).rstrip("\n"),
        "",
        f"![rows/s of each stage against its same-run ceilings and peers](bench/{name}.png)",
        "",
        "Every saved run (machine and load):",
        "",
        *(f"- {run_line(n, d)}" for n, d in reversed(saved)),
    ]
    return "\n".join(lines) + "\n"


def render(text: str, block: str) -> str:
    """``text`` with the block between the markers replaced."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"docs/performance.md lacks the markers {BEGIN!r} ... {END!r}")
    return text[: start + len(BEGIN)] + "\n" + block + text[end:]


def current_block(text: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError("markers missing")
    return text[start + len(BEGIN) + 1 : end]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--bench-dir", type=Path, default=BENCH_DIR)
    parser.add_argument("--chart", help="redraw the chart of this saved run (YYYY-MM-DD) and exit")
    args = parser.parse_args(argv)
    if args.chart:
        doc = json.loads((args.bench_dir / f"{args.chart}.json").read_text())
        sys.stdout.write(f"{chart(doc, args.bench_dir / f'{args.chart}.png')}\n")
        return 0
    args.doc.write_text(render(args.doc.read_text(), doc_block(args.bench_dir)))
    sys.stdout.write(f"{args.doc}: table of {runs(args.bench_dir)[-1][0]}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
