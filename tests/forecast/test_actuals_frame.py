"""The actuals' frame built from their integer cells (``inputs._actuals_frame``) equals the frame
pandas builds from the same cells as text rows: revenue and converted cost summed per project and
month with ``groupby``, the two sums joined as an outer ``pd.concat`` (the revenue keys, then the
keys with cost only), in groupby's order (ref as text, then month). Cells in any order, repeated
keys, projects the forecast does not know (their refs after the known ones, out of text order),
cost-only and revenue-only keys, and refs already in text order (the read's usual case)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from psa_erp_sync.forecast import inputs, model
from psa_erp_sync.forecast.settings import load_forecast_settings

if TYPE_CHECKING:
    import pandas as pd

_CURRENCIES = ["", "USD", "GBP", "EUR"]  # code 0: revenue; the others: cost in that currency


def _cells(rng: Any, refs: list[str], n: int) -> dict[str, Any]:
    return {
        "project_code": rng.integers(0, len(refs), n),
        "currency_code": rng.integers(0, len(_CURRENCIES), n),
        "month": rng.integers(-2, 3, n) + 2026 * 12,
        "amount": rng.integers(-(10**9), 10**9, n),
        "refs": list(refs),
        "currencies": list(_CURRENCIES),
    }


def _projects(known: list[str]) -> pd.DataFrame:
    import pandas as pd

    currency = ["GBP" if i % 3 == 0 else "USD" for i in range(len(known))]
    return pd.DataFrame({"project_ref": known, "currency": currency})


def _oracle(cells: dict[str, Any], projects: pd.DataFrame, settings: Any) -> pd.DataFrame:
    """The frame from text rows with pandas (the cost converted per cell as the model does)."""
    import pandas as pd

    refs = np.array(cells["refs"], dtype=object)
    rows = pd.DataFrame(
        {
            "project_ref": refs[cells["project_code"]],
            "month": cells["month"],
            "currency": np.array(cells["currencies"], dtype=object)[cells["currency_code"]],
            "amount": cells["amount"],
        }
    )
    revenue = rows[rows["currency"] == ""].groupby(["project_ref", "month"])["amount"].sum()
    cost_rows = rows[(rows["currency"] != "") & rows["project_ref"].isin(projects["project_ref"])]
    to_currency = cost_rows["project_ref"].map(
        dict(zip(projects["project_ref"], projects["currency"], strict=True))
    )
    factor = {c: model.fx_factor(c, settings)[0] for c in settings.fx_rates}
    minor = model.muldiv(
        cost_rows["amount"].to_numpy(),
        cost_rows["currency"].map(factor).to_numpy(dtype=np.int64),
        to_currency.map(factor).to_numpy(dtype=np.int64) * 100,
    )
    cost = (
        pd.Series(minor, index=cost_rows.index).groupby([cost_rows["project_ref"], cost_rows["month"]]).sum()
    )
    joined = pd.concat([revenue.rename("revenue_minor"), cost.rename("cost_minor")], axis=1)
    joined = joined.fillna(0).astype(np.int64).reset_index()
    return pd.DataFrame(
        {
            "project_ref": pd.Index(joined["project_ref"].to_numpy(dtype=object)),
            "month": joined["month"].to_numpy(dtype=np.int64),
            "revenue_minor": joined["revenue_minor"].to_numpy(),
            "cost_minor": joined["cost_minor"].to_numpy(),
        }
    )


@pytest.mark.parametrize(
    ("known", "unknown"),
    [
        ([f"p{i:03d}" for i in range(60)], []),  # the usual read: refs in text order
        ([f"p{i:03d}" for i in range(60)], ["a-gone", "zz-gone", "p030x"]),  # not in order
        (["b", "a", "c"], []),  # codes not in text order
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_actuals_frame_equals_pandas_groupby(known: list[str], unknown: list[str], seed: int) -> None:
    import pandas as pd

    settings = load_forecast_settings()
    rng = np.random.default_rng(seed)
    cells = _cells(rng, known + unknown, 3_000)
    expected = _oracle(cells, _projects(known), settings)
    got = inputs._actuals_frame(cells, _projects(known), settings)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_index_type=False)


def test_actuals_frame_with_cost_only_and_revenue_only_keys() -> None:
    import pandas as pd

    settings = load_forecast_settings()
    cells = {
        "project_code": np.array([1, 0, 1, 0, 2]),
        "currency_code": np.array([1, 0, 0, 2, 1]),
        "month": np.array([5, 5, 7, 6, 5]),
        "amount": np.array([100, 20, 30, 40, 50]),
        "refs": ["b", "a", "zz"],
        "currencies": list(_CURRENCIES),
    }
    projects = _projects(["b", "a"])
    got = inputs._actuals_frame(cells, projects, settings)
    pd.testing.assert_frame_equal(got, _oracle(cells, projects, settings), check_index_type=False)
    # Revenue: a in 7, b in 5; cost only: a in 5, b in 6; zz (not a forecast project): no cost.
    assert list(zip(got["project_ref"], got["month"], strict=True)) == [
        ("a", 7),
        ("b", 5),
        ("a", 5),
        ("b", 6),
    ]
    assert got["cost_minor"].tolist() == [0, 0, 1, 0]  # centi-units: 100 -> 1, 40 -> 0 (half-even)


def test_sum_cells_sums_repeated_keys_exactly() -> None:
    key = np.array([7, 3, 7, 3, 9, 7], dtype=np.int64)
    values = np.array([2**62, 1, 2**62 - 1, -1, 5, -(2**62)], dtype=np.int64)
    keys, sums = inputs._sum_cells(key, values)
    assert keys.tolist() == [3, 7, 9]
    assert sums.tolist() == [0, 2**62 - 1, 5]
