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


def exactly_once_faults(
    *,
    batch: str = "/batch$",
    api: str = "/services/",
    read: str = "/suiteql$",
    latency_ms: int = 120,
    failure: float,
    drop: float,
    storm: tuple[int, int, int],
    read_failure: float,
    read_seed: int = 8,
    read_method: str | None = None,
    spike: tuple[int, float] | None = None,
) -> list[dict[str, Any]]:
    """The faults an exactly-once suite meets on one ERP (rules in the simulator's match order);
    the paths default to the NetSuite simulator's.

    Every ``batch`` call slowed by ``latency_ms``; a 5xx before and after the commit (each at
    ``failure``); the connection dropped before and after it (each at ``drop``); a 429 storm over
    ``api`` (``storm``: Retry-After seconds, the request it starts after, how many it refuses); an
    optional latency ``spike`` over ``api`` (milliseconds, probability); failed reads of ``read``.
    """
    rules: list[dict[str, Any]] = [
        {
            "id": "latency",
            "action": "latency",
            "path_regex": batch,
            "latency_ms": latency_ms,
            "probability": 1.0,
        },
        {"id": "5xx-before", "action": "status", "status": 503, "path_regex": batch, "probability": failure},
        {
            "id": "5xx-after",
            "action": "status_after_commit",
            "status": 502,
            "path_regex": batch,
            "probability": failure,
        },
        {"id": "drop-before", "action": "drop_before_commit", "path_regex": batch, "probability": drop},
        {"id": "drop-after", "action": "drop_after_commit", "path_regex": batch, "probability": drop},
    ]
    for seed, rule in enumerate(rules, start=1):
        rule["seed"] = seed
    retry_after, after, max_hits = storm
    rules.append(
        {
            "id": "429-storm",
            "action": "throttle",
            "path_regex": api,
            "retry_after": retry_after,
            "every_nth": 1,
            "after": after,
            "max_hits": max_hits,
            "seed": 6,
        }
    )
    if spike is not None:
        spike_ms, spike_probability = spike
        rules.append(
            {
                "id": "spike",
                "action": "latency",
                "path_regex": api,
                "latency_ms": spike_ms,
                "probability": spike_probability,
                "seed": 7,
            }
        )
    method = {} if read_method is None else {"method": read_method}
    rules.append(
        {
            "id": "read-5xx",
            "action": "status",
            "status": 503,
            **method,
            "path_regex": read,
            "probability": read_failure,
            "seed": read_seed,
        }
    )
    return rules
