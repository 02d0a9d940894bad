"""Money helpers: integer minor units, half-even, never floats."""

from __future__ import annotations

from decimal import Decimal

import pytest

from psa_erp_sync import money


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.345", "USD", 1234),
        ("12.355", "USD", 1236),
        ("0.005", "GBP", 0),
        ("0.015", "GBP", 2),
        ("1500", "JPY", 1500),
    ],
)
def test_to_minor_half_even(amount: str, currency: str, minor: int) -> None:
    assert money.to_minor(Decimal(amount), currency) == minor


def test_floats_are_refused() -> None:
    with pytest.raises(TypeError):
        money.to_minor(0.1, "USD")  # type: ignore[arg-type]


def test_line_amount_rounds_once() -> None:
    # 7.25 h x 133.33 = 966.6425 -> 966.64 (rounding each factor first would differ)
    assert money.line_amount_minor(Decimal("7.25"), Decimal("133.33"), "USD") == 96664
    assert money.format_minor(96664, "USD") == "966.64"
    assert money.format_minor(-5, "USD") == "-0.05"
