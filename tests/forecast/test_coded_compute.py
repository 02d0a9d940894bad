"""The model's integer paths (perf-forecast6) give what its pandas paths gave, exactly.

- The schedule's text columns may come with integer codes (``ForecastInputs.schedule_codes``, as
  ``inputs.load_inputs`` reads them): the forecast is the one computed from the strings, and codes
  that no longer describe the schedule (another frame put in its place) are not used.
- The capacity check and the per (project, month) sums on a dense grid equal pandas' groupby and
  outer merge (frozen below as the oracle), including NA people, a person only in the plan or only
  in the capacity, a person's month twice in the capacity, and a grid too sparse to use.
- ``rdiv`` (one ``divmod``) is round-half-even of the exact quotient, negative numbers and ties
  included.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from fractions import Fraction

import numpy as np
import pandas as pd  # noqa: TID253  (tests may import pandas at the top)
import pandas.testing as pdt  # noqa: TID253
import pytest

from psa_erp_sync.forecast import model
from psa_erp_sync.forecast.settings import SCENARIOS, load_forecast_settings

AS_OF = date(2026, 11, 9)


def _oracle_capacity(schedule: pd.DataFrame, capacity: pd.DataFrame) -> pd.DataFrame:
    """``capacity_check`` as it was before the grid (pandas groupby + outer merge)."""
    return model.capacity_by_groupby(schedule, capacity)


def _inputs(seed: int = 7) -> model.ForecastInputs:
    from devtools.bench_forecast import synthetic_inputs

    inputs = synthetic_inputs(300, 12, AS_OF, seed=seed)
    schedule = inputs.schedule.copy()
    schedule.loc[5, "project_ref"] = "not-a-forecast-project"
    schedule.loc[7, "user_ref"] = "u-only-planned"
    capacity = inputs.capacity.copy()
    capacity.loc[3, "user_ref"] = "u-only-capacity"
    prior = pd.DataFrame(
        {"project_ref": inputs.projects["project_ref"][:100], "cum_revenue_minor": np.arange(100) * 1_000}
    )
    return dataclasses.replace(inputs, schedule=schedule, capacity=capacity, prior=prior)


def _with_codes(inputs: model.ForecastInputs) -> model.ForecastInputs:
    """The inputs with the schedule's text columns coded as the read codes them (values may repeat)."""
    columns = {}
    for column in ("project_ref", "user_ref", "cost_currency"):
        codes, uniques = pd.factorize(inputs.schedule[column].to_numpy(dtype=object))
        values = np.concatenate([np.asarray(uniques, dtype=object), np.asarray(uniques, dtype=object)])
        columns[column] = (codes + len(uniques) * (np.arange(len(codes)) % 2), values)  # two codes per value
    return dataclasses.replace(inputs, schedule_codes=model.ScheduleCodes(inputs.schedule, columns))


def _assert_same(a: list[model.ForecastResult], b: list[model.ForecastResult]) -> None:
    for x, y in zip(a, b, strict=True):
        pdt.assert_frame_equal(x.lines, y.lines, check_exact=True)
        pdt.assert_frame_equal(x.balances, y.balances, check_exact=True)
        pdt.assert_frame_equal(x.capacity, y.capacity, check_exact=True)
        assert x.totals == y.totals


def test_schedule_codes_give_the_forecast_of_the_strings() -> None:
    settings = load_forecast_settings()
    inputs = _inputs()
    plain = model.compute_scenarios(inputs, settings, SCENARIOS)
    coded = _with_codes(inputs)
    assert model.schedule_codes(coded)
    _assert_same(model.compute_scenarios(coded, settings, SCENARIOS), plain)
    pdt.assert_frame_equal(plain[0].capacity, _oracle_capacity(inputs.schedule, inputs.capacity))


def test_codes_of_another_schedule_are_not_used() -> None:
    settings = load_forecast_settings()
    coded = _with_codes(_inputs())
    changed = coded.schedule.copy()
    changed["user_ref"] = changed["user_ref"].to_numpy()[::-1]  # same length, other people
    changed["project_ref"] = changed["project_ref"].to_numpy()[::-1]
    stale = dataclasses.replace(coded, schedule=changed)
    assert model.schedule_codes(stale) == {}
    _assert_same(
        model.compute_scenarios(stale, settings, SCENARIOS),
        model.compute_scenarios(dataclasses.replace(stale, schedule_codes=None), settings, SCENARIOS),
    )


@pytest.mark.parametrize(
    "case", ["as_is", "na_person", "na_capacity", "twice_in_capacity", "sparse", "only_capacity_months"]
)
def test_capacity_check_equals_groupby_and_merge(case: str) -> None:
    inputs = _inputs()
    schedule, capacity = inputs.schedule.copy(), inputs.capacity.copy()
    if case == "na_person":
        schedule.loc[11, "user_ref"] = None
    elif case == "na_capacity":
        capacity.loc[2, "user_ref"] = None
    elif case == "twice_in_capacity":
        capacity = pd.concat([capacity, capacity.iloc[[4]]], ignore_index=True)
    elif case == "sparse":
        schedule.loc[0, "month"] = 1_000_000  # a month far away: the grid would be mostly empty
    elif case == "only_capacity_months":
        capacity.loc[0, "month"] = int(capacity["month"].max()) + 5
    got = model.capacity_check(schedule, capacity)
    pdt.assert_frame_equal(got, _oracle_capacity(schedule, capacity), check_exact=True)


def test_sums_on_the_grid_equal_groupby() -> None:
    rng = np.random.default_rng(3)
    pi = rng.integers(0, 500, 20_000)
    month = rng.integers(24_300, 24_320, 20_000)
    values = [
        rng.integers(-(10**12), 10**12, 20_000),
        rng.integers(0, 2**62, 20_000),
    ]  # the 2nd overflows float
    frame = pd.DataFrame({"pi": pi, "month": month, "v0": values[0], "v1": values[1]})
    summed = frame.groupby(["pi", "month"], sort=True).sum()
    got = model._sum_by(pi, month, *values)
    assert (got[0] == summed.index.get_level_values(0)).all()
    assert (got[1] == summed.index.get_level_values(1)).all()
    assert (got[2] == summed["v0"].to_numpy()).all() and (got[3] == summed["v1"].to_numpy()).all()


def test_rdiv_rounds_half_even() -> None:
    rng = np.random.default_rng(5)
    den = rng.integers(1, 1_000, 5_000)
    num = rng.integers(-(10**9), 10**9, 5_000)
    num[:1_000] = den[:1_000] * rng.integers(-50, 50, 1_000) + den[:1_000] // 2 * (
        den[:1_000] % 2 == 0
    )  # ties
    expected = [round(Fraction(int(n), int(d))) for n, d in zip(num, den, strict=True)]  # half-even
    assert model.rdiv(num, den).tolist() == expected
    assert model.rdiv(num.astype(object), den.astype(object)).tolist() == expected
