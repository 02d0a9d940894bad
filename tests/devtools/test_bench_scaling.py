"""The scaling check's fit (``devtools.bench_scaling.exponent``), its targets, and the peak's."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.bench_scaling import best_of, exponent, fit, summary
from devtools.bench_targets import SCALING_STAGES, evaluate, lookup, threshold


@pytest.mark.parametrize(
    ("power", "expected"),
    [(1.0, 1.0), (2.0, 2.0), (0.5, 0.5), (1.1, 1.1), (0.0, 0.0)],
)
def test_exponent_recovers_the_power_of_an_exact_power_law(power: float, expected: float) -> None:
    points = [(n, 0.003 * n**power) for n in (13_500, 27_000, 54_000)]
    assert exponent(points) == pytest.approx(expected, abs=1e-9)


def test_exponent_is_the_least_squares_slope_on_log_log_axes() -> None:
    # log2: x = 0, 1, 2; y = 0, 1, 3 -> slope = sum(dx*dy)/sum(dx^2) = ((-1)(-4/3) + (1)(5/3)) / 2 = 1.5
    assert exponent([(1, 1), (2, 2), (4, 8)]) == pytest.approx(1.5)
    # a constant cost on top of a linear one bends the curve below 1; a quadratic part above
    assert exponent([(n, 5 + n / 1000) for n in (1000, 2000, 4000)]) < 1.0
    assert exponent([(n, n / 1000 + (n / 1000) ** 2) for n in (1000, 2000, 4000)]) > 1.1


def test_exponent_needs_two_distinct_positive_sizes() -> None:
    assert exponent([]) is None
    assert exponent([(1000, 1.0)]) is None
    assert exponent([(1000, 1.0), (1000, 2.0)]) is None
    assert exponent([(1000, 0.0), (2000, 1.0)]) is None  # a zero time has no logarithm: one point left
    assert exponent([(1000, 1.0), (2000, 2.0), (0, 3.0)]) == pytest.approx(1.0)


def _size(records: int, seconds: dict[str, float]) -> dict[str, Any]:
    return {
        "stages": {
            stage: {
                "records": records,
                "seconds": s,
                "rows_per_s": round(records / s),
                "cpu_s_pipeline_and_backends": s / 2,
            }
            for stage, s in seconds.items()
        }
    }


def test_fit_gives_each_stage_its_exponents_and_the_targets_read_them() -> None:
    sizes = [
        _size(n, {"extract": n / 10_000, "validate": (n / 10_000) ** 1.5, "post": n / 5_000})
        for n in (10_000, 20_000, 40_000)
    ]
    fitted = fit(sizes)
    assert set(fitted) == {"extract", "validate", "post"}  # stages not measured are left out
    assert fitted["extract"]["exponent"] == 1.0 and fitted["extract"]["cpu_exponent"] == 1.0
    assert fitted["validate"]["exponent"] == 1.5 and fitted["validate"]["cpu_exponent_largest_pair"] == 1.5
    assert fitted["post"]["rows_per_s"] == [5_000, 5_000, 5_000]
    doc = {
        "factors": [1, 2, 4],
        "by_stage": fitted,
        "exponents": {stage: e["exponent"] for stage, e in fitted.items()},
    }
    assert "validate" in summary(doc) and "1.5" in summary(doc)
    rows = {r["key"]: r for r in evaluate({"scaling": doc})}
    assert rows["scaling_exponent_extract"]["met"] is True
    assert rows["scaling_exponent_validate"]["met"] is False
    assert rows["scaling_exponent_stage"]["met"] is None  # not measured, never met
    assert {f"scaling_exponent_{s}" for s in SCALING_STAGES} <= set(rows)


def test_peak_targets_are_the_issues() -> None:
    assert threshold("peak_pipeline_wall_s") == 300
    assert threshold("peak_pipeline_rss_mb") == 512
    assert threshold("peak_rss_mb") == 512
    assert all(threshold(f"scaling_exponent_{s}") == 1.1 for s in SCALING_STAGES)
    rows = {r["key"]: r for r in evaluate({"peak": {"pipeline": {"wall_s": 301.0}, "peak_rss_mb": 400.0}})}
    assert rows["peak_pipeline_wall_s"]["met"] is False and rows["peak_pipeline_rss_mb"]["met"] is True


def test_lookup_indexes_lists_by_number() -> None:
    doc = {"a": {"b": [10, 20]}}
    assert lookup(doc, "a.b.1") == 20
    assert lookup(doc, "a.b.2") is None and lookup(doc, "a.b.x") is None


def test_the_simulators_cpu_is_told_apart_from_the_products() -> None:
    from devtools.bench_pipeline import split_cpu

    cpu = {
        "pipeline": 1.0,
        "postgres_backends": 3.0,  # every backend of the run's database, the simulators' included
        "postgres_backends_psa_simulator": 1.5,
        "postgres_backends_erp_simulator": 0.25,
        "psa": 0.5,
        "erp": 0.125,
        "sampler": 0.4,  # the harness's own sampling: in neither
    }
    ours, sims = split_cpu(cpu, ["psa", "erp"])
    assert ours == 2.25  # the pipeline process and the backends that are not a simulator's
    assert sims == {"psa": 2.0, "erp": 0.38}


def test_fit_gives_the_exponent_of_the_products_own_cpu_when_measured() -> None:
    sizes = [_size(n, {"extract": n / 10_000}) for n in (10_000, 20_000, 40_000)]
    assert fit(sizes)["extract"]["cpu_exponent_ours"] is None  # older figures: not measured
    for size in sizes:
        figures = size["stages"]["extract"]
        figures["cpu_s_ours"] = (figures["records"] / 10_000) ** 1.2
    assert fit(sizes)["extract"]["cpu_exponent_ours"] == 1.2


def test_each_stage_takes_its_fastest_repeat_and_a_burst_at_one_size_no_longer_bends_the_fit() -> None:
    linear = [_size(n, {"stage": n / 20_000, "post": n / 5_000}) for n in (10_000, 20_000, 40_000)]
    # the second round: a neighbour's burst doubles the stage's time at 4x, the post is faster
    burst = [
        _size(n, {"stage": n / 20_000 * (2 if n == 40_000 else 1.05), "post": n / 6_000})
        for n in (10_000, 20_000, 40_000)
    ]
    assert fit(burst)["stage"]["exponent"] > 1.1  # one round alone: the burst reads as superlinear
    sizes = [{"stages": best_of([a["stages"], b["stages"]])} for a, b in zip(linear, burst, strict=True)]
    fitted = fit(sizes)
    assert fitted["stage"]["exponent"] == 1.0
    assert fitted["post"]["seconds"] == pytest.approx([n / 6_000 for n in (10_000, 20_000, 40_000)])
    assert [s["stages"]["stage"]["repeat"] for s in sizes] == [0, 0, 0]
    assert [s["stages"]["post"]["repeat"] for s in sizes] == [1, 1, 1]


def test_a_stage_only_one_repeat_measured_is_kept() -> None:
    one = {"extract": {"records": 10, "seconds": 1.0}}
    two = {"extract": {"records": 10, "seconds": 2.0}, "billing_post": {"records": 3, "seconds": 0.5}}
    best = best_of([one, two])
    assert best["extract"] == {"records": 10, "seconds": 1.0, "repeat": 0}
    assert best["billing_post"]["repeat"] == 1
