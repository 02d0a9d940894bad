"""Money in integer minor units of an ISO 4217 currency. Never floats.

Conversions round half-even (banker's rounding), the convention ERPs use for line amounts.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

# Minor-unit exponents for the currencies we meet; ISO 4217 default is 2.
_EXPONENT = {"JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3}


def exponent(currency: str) -> int:
    return _EXPONENT.get(currency, 2)


def to_minor(amount: Decimal, currency: str) -> int:
    """``Decimal("12.345")`` USD -> ``1234`` (half-even)."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be Decimal, not {type(amount).__name__}")
    scaled = (amount * (Decimal(10) ** exponent(currency))).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def line_amount_minor(quantity: Decimal, unit_price: Decimal, currency: str) -> int:
    """Quantity x unit price, rounded once at the end (never per factor)."""
    return to_minor(quantity * unit_price, currency)


def format_minor(minor: int, currency: str) -> str:
    """``1234, "USD"`` -> ``"12.34"``: the decimal string we put in payloads and reports."""
    return f"{from_minor(minor, currency):.{exponent(currency)}f}"
