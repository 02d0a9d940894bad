"""Money in integer minor units of an ISO 4217 currency. Never floats.

Conversions round half-even (banker's rounding), the convention ERPs use for line amounts.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator

#: The largest amount in minor units a ``bigint`` column (canonical, ledger) holds.
MAX_MINOR = 2**63 - 1

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


class AmountOutOfRange(ValueError):
    """An amount that cannot be held in integer minor units (not finite, or beyond ``MAX_MINOR``)."""


def to_minor_checked(amount: Decimal, currency: str) -> int:
    """:func:`to_minor` for amounts from outside: :class:`AmountOutOfRange` instead of a
    ``decimal.InvalidOperation`` or a number no ``bigint`` column can hold."""
    if not isinstance(amount, Decimal):
        raise TypeError(f"money must be Decimal, not {type(amount).__name__}")
    if not amount.is_finite() or abs(amount) > Decimal(MAX_MINOR).scaleb(-exponent(currency)):
        raise AmountOutOfRange(f"{currency} amount beyond {MAX_MINOR} minor units")
    try:
        minor = to_minor(amount, currency)
    except ArithmeticError as exc:  # decimal.InvalidOperation and friends
        raise AmountOutOfRange(f"{currency} amount cannot be converted to minor units") from exc
    if abs(minor) > MAX_MINOR:
        raise AmountOutOfRange(f"{currency} amount beyond {MAX_MINOR} minor units")
    return minor


def from_minor(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def line_amount_minor(quantity: Decimal, unit_price: Decimal, currency: str) -> int:
    """Quantity x unit price, rounded once at the end (never per factor)."""
    return to_minor(quantity * unit_price, currency)


def format_minor(minor: int, currency: str) -> str:
    """``1234, "USD"`` -> ``"12.34"``: the decimal string we put in payloads and reports."""
    return f"{from_minor(minor, currency):.{exponent(currency)}f}"


def convert_minor(amount_minor: int, currency: str, rate: Decimal, to_currency: str) -> int:
    """``amount_minor`` of ``currency`` at ``rate`` (1 ``currency`` = ``rate`` ``to_currency``) in
    minor units of ``to_currency``, rounded half-even once (as an ERP books a foreign-currency
    line in its subsidiary's currency). Minor-unit exponents may differ (JPY 0, USD 2)."""
    if not isinstance(rate, Decimal):
        raise TypeError(f"rate must be Decimal, not {type(rate).__name__}")
    return to_minor(from_minor(amount_minor, currency) * rate, to_currency)


def no_float(value: Any) -> Any:
    """Refuse a float where an external payload should carry money as a decimal string (or an
    integer): a binary float has already lost the cents it was meant to carry."""
    if isinstance(value, float):
        raise ValueError("money must be a decimal string, not a float")
    return value


#: A money amount read from an external payload (pydantic field type): a decimal, never a float.
Money = Annotated[Decimal, BeforeValidator(no_float)]
