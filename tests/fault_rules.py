"""Fault schedules for the exactly-once suites that meet every fault kind on every run.

A probabilistic rule (say ``drop-before`` at 4 %) may meet no request in a short run: how many
requests reach the simulator depends on when the workers are killed. Each such rule therefore gets
a companion ``<id>-once`` that fires exactly once on a fixed request number, placed ahead of the
probabilistic rules; :func:`fired` counts a fault kind over both.
"""

from __future__ import annotations

from typing import Any


def with_guaranteed_hits(
    faults: list[dict[str, Any]], *, first: int = 3, spacing: int = 3
) -> list[dict[str, Any]]:
    """``faults`` with a once-only companion for every probabilistic, non-latency rule.

    The companions fire on matching requests ``first``, ``first + spacing``, ... (counted per rule).
    """
    companions: list[dict[str, Any]] = []
    for rule in faults:
        if rule.get("every_nth") is not None or rule["action"] == "latency":
            continue
        once = {k: v for k, v in rule.items() if k not in {"probability", "seed"}}
        once.update(id=f"{rule['id']}-once", every_nth=1, after=first + spacing * len(companions), max_hits=1)
        companions.append(once)
    latency = [r for r in faults if r["action"] == "latency"]
    rest = [r for r in faults if r["action"] != "latency"]
    return [*latency, *companions, *rest]


def fired(rules: list[dict[str, Any]]) -> dict[str, int]:
    """Hits per fault kind (a rule and its ``-once`` companion together) from ``GET /faults``."""
    out: dict[str, int] = {}
    for rule in rules:
        kind = rule["id"].removesuffix("-once")
        out[kind] = out.get(kind, 0) + int(rule["hits"])
    return out
