"""Workday seed data derived from PSA user rows, so the two simulators describe the same people.

Each PSA user becomes a worker whose Employee_ID is the user's ``employee_id`` (``E{id}`` when it
has none; the firm generator sets ``E{id}``), company = the user's legal entity, and two
effective-dated cost rates: 90 % of the PSA cost rate from the hire date, the PSA cost rate from
``raise_on``. An inactive PSA user is a worker terminated the day before ``raise_on``.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

CURRENCY = {"LE-US1": "USD", "LE-US2": "USD", "LE-UK1": "GBP"}


def employee_id_of(user: dict[str, Any]) -> str:
    return str(user.get("employee_id") or f"E{user['id']}")


def from_psa_users(
    users: list[dict[str, Any]], *, hire_date: date = date(2024, 1, 8), raise_on: date = date(2026, 1, 1)
) -> dict[str, list[dict[str, Any]]]:
    """``{"workers": [...], "cost_rates": [...]}`` for the Workday ``POST /admin/seed``."""
    workers, rates = [], []
    for user in users:
        emp = employee_id_of(user)
        le = user.get("legal_entity") or "LE-US1"
        workers.append(
            {
                "employee_id": emp,
                "first_name": user["first_name"],
                "last_name": user["last_name"],
                "email": user.get("email"),
                "company": le,
                "cost_center": f"CC-{le[3:]}-{(user.get('practice') or 'GEN')[:3].upper()}",
                "hire_date": hire_date.isoformat(),
                "termination_date": None
                if user.get("is_active", True)
                else (raise_on - timedelta(days=1)).isoformat(),
            }
        )
        if user.get("cost_rate") is not None:
            cost = Decimal(str(user["cost_rate"]))
            currency = CURRENCY.get(le, "USD")
            rates.append(
                {
                    "employee_id": emp,
                    "effective_date": hire_date.isoformat(),
                    "cost_rate": str((cost * Decimal("0.9")).quantize(Decimal("0.01"))),
                    "currency": currency,
                }
            )
            rates.append(
                {
                    "employee_id": emp,
                    "effective_date": raise_on.isoformat(),
                    "cost_rate": str(cost),
                    "currency": currency,
                }
            )
    return {"workers": workers, "cost_rates": rates}
