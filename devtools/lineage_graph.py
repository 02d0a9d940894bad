"""Read emitted OpenLineage events back: validate them against the official JSON Schemas, build the
job/dataset graph, check it is connected from the PSA to the planning platform, and draw it.

``python -m devtools.lineage_graph EVENTS.jsonl --out DIR`` validates, prints a summary and
writes ``lineage.html``, ``lineage.svg`` and ``lineage.png`` (a picture for people who have no Marquez) and
``lineage.mmd`` (the same graph as Mermaid). The demo runs it on its file transport's events.

Validation: every event against ``OpenLineage.json`` (the spec's ``RunEvent`` / ``DatasetEvent`` /
``JobEvent``), and every facet against the schema its ``_schemaURL`` names: the spec's
``facets/*.json`` for standard facets, ``lineage/schemas/*.json`` for ours. Facets whose schema is
neither (the Airflow provider's own, e.g. ``airflow``, ``airflowState``) are validated against
the spec's base ``RunFacet`` / ``JobFacet`` / ``DatasetFacet``, and counted as such.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psa_erp_sync.lineage.facets import SCHEMA_DIR

OFFICIAL_BASE = "https://openlineage.io/spec/2-0-2/OpenLineage.json"
Node = tuple[str, str, str]  # (kind: "job" | "dataset", namespace, name)


def default_spec_dir() -> Path:
    import os

    here = Path(__file__).resolve()
    candidates = (
        [Path(os.environ["PSA_ERP_SYNC_SHARED_DIR"]) / "openlineage-spec"]
        if os.environ.get("PSA_ERP_SYNC_SHARED_DIR")
        else []
    )
    candidates += [parent / "shared" / "openlineage-spec" for parent in here.parents]
    for candidate in candidates:
        if (candidate / "OpenLineage.json").exists():
            return candidate
    raise FileNotFoundError(
        "the OpenLineage spec (shared/openlineage-spec/OpenLineage.json) was not found beside the checkout;"
        " set PSA_ERP_SYNC_SHARED_DIR to the folder holding openlineage-spec/"
    )


def load_events(path: Path) -> list[dict[str, Any]]:
    """Events of a file transport (one JSON document per line)."""
    events = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
    return events


@dataclass
class ValidationReport:
    events: int = 0
    facets_by_schema: dict[str, int] = field(default_factory=dict)
    facets_base_only: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "facets_validated_against_their_schema": dict(sorted(self.facets_by_schema.items())),
            "facets_validated_against_the_base_facet_only": dict(sorted(self.facets_base_only.items())),
            "errors": self.errors[:50],
            "error_count": len(self.errors),
        }


class SpecValidator:
    """JSON Schema validation of events and facets against the official spec and our facets."""

    def __init__(self, spec_dir: Path | None = None) -> None:
        from referencing import Registry, Resource

        spec_dir = spec_dir or default_spec_dir()
        spec = json.loads((spec_dir / "OpenLineage.json").read_text())
        resources = [(spec["$id"], Resource.from_contents(spec))]
        self.facet_schemas: dict[str, str] = {}  # file stem -> $id
        for path in [*sorted((spec_dir / "facets").glob("*.json")), *sorted(SCHEMA_DIR.glob("*.json"))]:
            doc = json.loads(path.read_text())
            resources.append((doc["$id"], Resource.from_contents(doc)))
            self.facet_schemas[path.stem] = doc["$id"]
        self.spec_id = spec["$id"]
        self.registry = Registry().with_resources(resources)
        self._cache: dict[str, Any] = {}

    def _validator(self, ref: str) -> Any:
        from jsonschema import Draft202012Validator

        if ref not in self._cache:
            self._cache[ref] = Draft202012Validator({"$ref": ref}, registry=self.registry)
        return self._cache[ref]

    def _errors(self, ref: str, doc: Any) -> list[str]:
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '.'}: {e.message}"
            for e in self._validator(ref).iter_errors(doc)
        ][:5]

    def validate(self, events: Iterable[dict[str, Any]]) -> ValidationReport:
        report = ValidationReport()
        for index, event in enumerate(events):
            report.events += 1
            where = f"event {index} ({event.get('eventType', '?')} {event.get('job', {}).get('name', '?')})"
            for problem in self._errors(self.spec_id, event):
                report.errors.append(f"{where}: {problem}")
            for kind, key, facets in _facets_of(event):
                self._facet(report, where, kind, key, facets)
        return report

    def _facet(self, report: ValidationReport, where: str, kind: str, key: str, facet: Any) -> None:
        url = facet.get("_schemaURL", "") if isinstance(facet, dict) else ""
        stem = url.split("#")[0].rsplit("/", 1)[-1].removesuffix(".json")
        if stem in self.facet_schemas:
            ref = f"{self.facet_schemas[stem]}#/$defs/{stem}"
            report.facets_by_schema[key] = report.facets_by_schema.get(key, 0) + 1
        else:
            ref = f"{self.spec_id}#/$defs/{kind}"
            report.facets_base_only[key] = report.facets_base_only.get(key, 0) + 1
        for problem in self._errors(ref, facet):
            report.errors.append(f"{where}: facet {key}: {problem}")


def _facets_of(event: dict[str, Any]) -> Iterable[tuple[str, str, Any]]:
    for key, facet in (event.get("run", {}).get("facets") or {}).items():
        yield "RunFacet", key, facet
    for key, facet in (event.get("job", {}).get("facets") or {}).items():
        yield "JobFacet", key, facet
    for side, extra, extra_kind in (
        ("inputs", "inputFacets", "InputDatasetFacet"),
        ("outputs", "outputFacets", "OutputDatasetFacet"),
    ):
        for dataset in event.get(side) or []:
            for key, facet in (dataset.get("facets") or {}).items():
                yield "DatasetFacet", key, facet
            for key, facet in (dataset.get(extra) or {}).items():
                yield extra_kind, key, facet


@dataclass
class LineageGraph:
    """Jobs and datasets; an edge dataset -> job for each input, job -> dataset for each output."""

    edges: set[tuple[Node, Node]] = field(default_factory=set)
    nodes: set[Node] = field(default_factory=set)

    @classmethod
    def from_events(cls, events: Iterable[dict[str, Any]]) -> LineageGraph:
        graph = cls()
        for event in events:
            job = event.get("job")
            if not job:
                continue
            job_node: Node = ("job", job["namespace"], job["name"])
            graph.nodes.add(job_node)
            for dataset in event.get("inputs") or []:
                node: Node = ("dataset", dataset["namespace"], dataset["name"])
                graph.nodes.add(node)
                graph.edges.add((node, job_node))
            for dataset in event.get("outputs") or []:
                node = ("dataset", dataset["namespace"], dataset["name"])
                graph.nodes.add(node)
                graph.edges.add((job_node, node))
        return graph

    def successors(self) -> dict[Node, list[Node]]:
        out: dict[Node, list[Node]] = {n: [] for n in self.nodes}
        for a, b in sorted(self.edges):
            out[a].append(b)
        return out

    def find(self, predicate: Callable[[Node], bool]) -> list[Node]:
        return sorted(n for n in self.nodes if predicate(n))

    def path(self, start: Callable[[Node], bool], goal: Callable[[Node], bool]) -> list[Node] | None:
        """A shortest directed path from any node matching ``start`` to one matching ``goal``."""
        succ = self.successors()
        starts = self.find(start)
        previous: dict[Node, Node | None] = dict.fromkeys(starts)
        queue = deque(starts)
        while queue:
            node = queue.popleft()
            if goal(node):
                steps = [node]
                while (back := previous[steps[-1]]) is not None:
                    steps.append(back)
                return steps[::-1]
            for nxt in succ[node]:
                if nxt not in previous:
                    previous[nxt] = node
                    queue.append(nxt)
        return None

    def path_through(self, waypoints: list[Callable[[Node], bool]]) -> list[Node] | None:
        """A directed path visiting the waypoints in order (shortest between each pair)."""
        full: list[Node] = []
        start = waypoints[0]
        for goal in waypoints[1:]:
            leg = self.path(start, goal)
            if leg is None:
                return None
            full += leg if not full else leg[1:]
            start = _is(leg[-1])
        return full

    def without_isolated(self) -> LineageGraph:
        """The nodes that have an edge (DAG-level jobs and steps without datasets drop out)."""
        linked = {a for a, _ in self.edges} | {b for _, b in self.edges}
        return LineageGraph(edges=set(self.edges), nodes=linked)

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs": sorted(f"{ns}/{name}" for kind, ns, name in self.nodes if kind == "job"),
            "datasets": sorted(f"{ns}/{name}" for kind, ns, name in self.nodes if kind == "dataset"),
            "edges": len(self.edges),
        }


def dataset_named(suffix: str) -> Callable[[Node], bool]:
    return lambda node: node[0] == "dataset" and node[2].endswith(suffix)


def _is(target: Node) -> Callable[[Node], bool]:
    return lambda node: node == target


#: The chain the lineage must show for time: PSA -> ODS staging -> ODS canonical -> ERP -> forecast -> planning.
PSA_TO_ERP = [
    "/v2/time_entries",
    ".staging.raw_record",
    ".canonical.time_entry",
    "/services/rest/record/v1/timebill",
]
PSA_TO_PLANNING = [*PSA_TO_ERP, ".forecast.snapshot", "/api/v1/snapshots"]
#: The chain for billing: canonical time entry -> billing event -> ERP invoice -> ERP revenue journal
#: (through the read-back and the recognition) -> forecast snapshot (docs/lineage.md).
TIME_TO_FORECAST_VIA_BILLING = [
    ".canonical.time_entry",
    ".billing.event",
    "/services/rest/record/v1/invoice",
    "/services/rest/record/v1/journalentry",
    ".forecast.snapshot",
]


# -- pictures ---------------------------------------------------------------------------------
def _columns(graph: LineageGraph) -> dict[Node, int]:
    """Column of each node: its distance from the graph's sources (nodes nothing points to)."""
    succ = graph.successors()
    pointed = {b for _, b in graph.edges}
    sources = sorted(n for n in graph.nodes if n not in pointed) or sorted(graph.nodes)[:1]
    column = dict.fromkeys(sources, 0)
    queue = deque(sources)
    while queue:
        node = queue.popleft()
        for nxt in succ[node]:
            if nxt not in column:
                column[nxt] = column[node] + 1
                queue.append(nxt)
    for node in sorted(graph.nodes):
        column.setdefault(node, 0)
    return column


def _longest_columns(graph: LineageGraph) -> dict[Node, int]:
    """Column of each node: the longest path to it once the edges that close a cycle (a job reading
    back a table it writes) are set aside, so data flows left to right. For small graphs (a chain):
    on the whole run's graph the chains get too long to read."""
    succ = graph.successors()
    forward: dict[Node, list[Node]] = {n: [] for n in graph.nodes}
    state: dict[Node, int] = {}  # 1: on the DFS stack, 2: done
    order: list[Node] = []
    for root in sorted(graph.nodes):
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[Node, Iterator[Node]]] = [(root, iter(succ[root]))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                order.append(node)
                stack.pop()
            elif state.get(child) != 1:  # not a back edge
                forward[node].append(child)
                if child not in state:
                    state[child] = 1
                    stack.append((child, iter(succ[child])))
    column = dict.fromkeys(graph.nodes, 0)
    for node in reversed(order):  # a topological order of the forward edges
        for child in forward[node]:
            column[child] = max(column[child], column[node] + 1)
    return column


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _label(node: Node) -> tuple[str, str]:
    kind, namespace, name = node
    return (name, "job") if kind == "job" else (name, namespace)


def render_svg(
    graph: LineageGraph,
    *,
    title: str = "PSA -> ODS -> ERP -> forecast -> planning",
    columns: Callable[[LineageGraph], dict[Node, int]] = _columns,
) -> str:
    column = columns(graph)
    by_column: dict[int, list[Node]] = {}
    for node in sorted(graph.nodes, key=lambda n: (column[n], n[0], n[2])):
        by_column.setdefault(column[node], []).append(node)
    width_col, row_h, box_w, box_h, top = 300, 54, 260, 40, 50
    pos: dict[Node, tuple[int, int]] = {}
    for col, nodes in by_column.items():
        for row, node in enumerate(nodes):
            pos[node] = (20 + col * width_col, top + row * row_h)
    width = 40 + (max(by_column, default=0) + 1) * width_col
    height = top + 20 + max((len(v) for v in by_column.values()), default=1) * row_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#888"/></marker></defs>',
        f'<text x="20" y="24" font-size="15" font-weight="bold">{html.escape(title)}</text>',
    ]
    for a, b in sorted(graph.edges):
        (x1, y1), (x2, y2) = pos[a], pos[b]
        sx, sy, ex, ey = x1 + box_w, y1 + box_h // 2, x2, y2 + box_h // 2
        if ex <= sx:  # a back edge (e.g. a job that reads and writes the same table)
            parts.append(
                f'<path d="M {sx} {sy} C {sx + 60} {sy - 40}, {ex - 60} {ey - 40}, {ex} {ey}" fill="none" '
                'stroke="#c9c9c9" stroke-dasharray="4 3" marker-end="url(#arrow)"/>'
            )
        else:
            mid = (sx + ex) // 2
            parts.append(
                f'<path d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}" fill="none" stroke="#888" '
                'marker-end="url(#arrow)"/>'
            )
    for node, (x, y) in sorted(pos.items()):
        name, sub = _label(node)
        fill = "#dbeafe" if node[0] == "job" else "#fef3c7"
        rx = 12 if node[0] == "job" else 3
        parts.append(
            f"<g><title>{html.escape(node[1])} {html.escape(node[2])}</title>"
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="{rx}" fill="{fill}" stroke="#555"/>'
            f'<text x="{x + 8}" y="{y + 16}" font-weight="bold">{html.escape(_short(name, 40))}</text>'
            f'<text x="{x + 8}" y="{y + 31}" fill="#555">{html.escape(_short(sub, 44))}</text></g>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _layout(
    graph: LineageGraph, columns: Callable[[LineageGraph], dict[Node, int]] = _columns
) -> dict[Node, tuple[int, int]]:
    column = columns(graph)
    rows: dict[int, int] = {}
    pos: dict[Node, tuple[int, int]] = {}
    for node in sorted(graph.nodes, key=lambda n: (column[n], n[0], n[2])):
        pos[node] = (column[node], rows.get(column[node], 0))
        rows[column[node]] = rows.get(column[node], 0) + 1
    return pos


def render_png(
    graph: LineageGraph, path: Path, columns: Callable[[LineageGraph], dict[Node, int]] = _columns
) -> None:
    """The same picture as :func:`render_svg`, as a PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    pos = _layout(graph, columns)
    n_columns = max((c for c, _ in pos.values()), default=0) + 1
    rows = max((r for _, r in pos.values()), default=0) + 1
    fig, ax = plt.subplots(figsize=(3.4 * n_columns, 0.62 * rows + 1))
    box_w, box_h = 2.9, 0.44
    centre = {n: (c * 3.4, -r * 0.62) for n, (c, r) in pos.items()}
    for a, b in sorted(graph.edges):
        (x1, y1), (x2, y2) = centre[a], centre[b]
        back = x2 <= x1
        ax.add_patch(
            FancyArrowPatch(
                (x1 + box_w, y1 + box_h / 2),
                (x2, y2 + box_h / 2),
                arrowstyle="-|>",
                mutation_scale=8,
                color="#c9c9c9" if back else "#888",
                linestyle="--" if back else "-",
                connectionstyle="arc3,rad=-0.3" if back else "arc3,rad=0.0",
                linewidth=0.7,
            )
        )
    for node, (x, y) in centre.items():
        name, sub = _label(node)
        job = node[0] == "job"
        ax.add_patch(
            FancyBboxPatch(
                (x, y),
                box_w,
                box_h,
                boxstyle="round,pad=0.02,rounding_size=0.15" if job else "square,pad=0.02",
                facecolor="#dbeafe" if job else "#fef3c7",
                edgecolor="#555",
                linewidth=0.6,
            )
        )
        ax.text(x + 0.06, y + 0.29, _short(name, 42), fontsize=6.5, fontweight="bold", va="center")
        ax.text(x + 0.06, y + 0.11, _short(sub, 48), fontsize=5.5, color="#555", va="center")
    ax.set_xlim(-0.2, n_columns * 3.4)
    ax.set_ylim(-rows * 0.62, 0.8)
    ax.axis("off")
    ax.set_title(
        "Lineage: PSA -> ODS -> ERP -> forecast -> planning (jobs rounded, datasets square)", fontsize=9
    )
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def render_mermaid(graph: LineageGraph) -> str:
    ids = {node: f"n{i}" for i, node in enumerate(sorted(graph.nodes))}
    lines = ["flowchart LR"]
    for node, ident in ids.items():
        name, sub = _label(node)
        text = f"{name}<br/>{sub}".replace('"', "'")
        lines.append(f'  {ident}(["{text}"])' if node[0] == "job" else f'  {ident}[("{text}")]')
    for a, b in sorted(graph.edges):
        lines.append(f"  {ids[a]} --> {ids[b]}")
    return "\n".join(lines) + "\n"


def write_pictures(
    graph: LineageGraph, out: Path, summary: dict[str, Any], chain: list[Node] | None = None
) -> dict[str, Path]:
    """The whole graph (HTML with SVG, SVG, PNG, Mermaid) and, given the PSA -> planning chain, a
    picture of that chain alone (every job and dataset on it and the edges between them)."""
    out.mkdir(parents=True, exist_ok=True)
    graph = graph.without_isolated()
    chain_svg = ""
    if chain:
        paths_extra = {"chain_svg": out / "lineage-chain.svg", "chain_png": out / "lineage-chain.png"}
        members = set(chain)
        sub = LineageGraph(
            edges={(a, b) for a, b in graph.edges if a in members and b in members}, nodes=members
        )
        chain_svg = render_svg(
            sub, title="PSA time entries -> ODS -> ERP -> forecast -> planning", columns=_longest_columns
        )
        (out / "lineage-chain.svg").write_text(chain_svg, encoding="utf-8")
        render_png(sub, out / "lineage-chain.png", _longest_columns)
    svg = render_svg(graph)
    paths = {
        "svg": out / "lineage.svg",
        "html": out / "lineage.html",
        "mermaid": out / "lineage.mmd",
        "png": out / "lineage.png",
    }
    if chain:
        paths.update(paths_extra)
    paths["svg"].write_text(svg, encoding="utf-8")
    render_png(graph, paths["png"])
    paths["mermaid"].write_text(render_mermaid(graph), encoding="utf-8")
    paths["html"].write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>psa-erp-sync lineage</title></head><body>"
        "<h1>Lineage of the demo run</h1><p>Rounded boxes are jobs (<code>{dag_id}.{task_id}</code>), square"
        " boxes datasets (name, then namespace). Dashed edges point back to a dataset a job also reads.</p>"
        f"{'<h2>PSA to planning</h2>' + chain_svg if chain_svg else ''}<h2>Everything the run touched</h2>"
        f"{svg}<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre></body></html>",
        encoding="utf-8",
    )
    return paths


def analyse(events_path: Path, out: Path | None = None, spec_dir: Path | None = None) -> dict[str, Any]:
    """Validate, build the graph, look for the PSA -> planning path; optionally draw it."""
    events = load_events(events_path)
    try:
        validation: dict[str, Any] = SpecValidator(spec_dir).validate(events).as_dict()
    except FileNotFoundError as exc:  # the spec is not beside the checkout: say so, draw anyway
        validation = {"events": len(events), "error_count": None, "not_validated": str(exc)}
    graph = LineageGraph.from_events(events)
    chain = {
        "psa_to_erp": graph.path_through([dataset_named(w) for w in PSA_TO_ERP]),
        "psa_to_planning": graph.path_through([dataset_named(w) for w in PSA_TO_PLANNING]),
        "billing": graph.path_through([dataset_named(w) for w in TIME_TO_FORECAST_VIA_BILLING]),
    }
    summary = {
        "validation": validation,
        "graph": graph.as_dict(),
        "paths": {k: [f"{n[0]}:{n[2]}" for n in v] if v else None for k, v in chain.items()},
    }
    if out is not None:
        pictures = write_pictures(graph, out, summary, chain["psa_to_planning"] or chain["psa_to_erp"])
        summary["pictures"] = {k: str(v) for k, v in pictures.items()}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.lineage_graph", description=__doc__.split("\n")[0]
    )
    parser.add_argument("events", type=Path, help="a file transport's events (JSON lines)")
    parser.add_argument("--out", type=Path, help="directory for lineage.html / .svg / .mmd")
    parser.add_argument("--spec", type=Path, help="directory holding OpenLineage.json and facets/")
    args = parser.parse_args(argv)
    summary = analyse(args.events, args.out, args.spec)
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    ok = summary["validation"]["error_count"] == 0 and summary["paths"]["psa_to_planning"] is not None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
