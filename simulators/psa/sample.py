"""A small deterministic PSA data set for tests and demos, in the ``POST /admin/seed`` format.

Includes the dirt the pipeline must handle: a time entry with no billable rate and one whose
``task_id`` names no task. Money is a decimal string; timestamps are ISO 8601 UTC.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

UNKNOWN_TASK_ID = 999_999


def build(
    *,
    entries: int = 60,
    expenses: int = 12,
    users: int = 5,
    projects: int = 4,
    start: date = date(2026, 10, 1),
    seed: int = 7,
) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    base_ts = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    clients = [{"id": 100 + i, "name": f"Client {i}", "is_active": True, "currency": "USD"} for i in range(2)]
    people = [
        {
            "id": 200 + i,
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
            "email": f"user{i}@example.com",
            "is_active": True,
            "is_contractor": i == 0,
            "weekly_capacity": 144000,
            "default_hourly_rate": "150.00",
            "cost_rate": "80.00",
            "legal_entity": "LE-US1",
            "practice": "consulting",
            "timezone": "Etc/UTC",
        }
        for i in range(users)
    ]
    tasks = [
        {"id": 300, "name": "Development", "billable_by_default": True, "default_hourly_rate": "150.00"},
        {"id": 301, "name": "Internal", "billable_by_default": False, "default_hourly_rate": None},
    ]
    billing = ["time_and_materials", "fixed_fee", "milestone", "retainer"]
    projs = [
        {
            "id": 400 + i,
            "client_id": clients[i % len(clients)]["id"],
            "name": f"Project {i}",
            "code": f"P-{i:03d}",
            "is_active": True,
            "is_billable": True,
            "is_fixed_fee": billing[i % 4] == "fixed_fee",
            "bill_by": "Project",
            "budget": "1000.0",
            "budget_by": "project",
            "cost_budget": None,
            "fee": "50000.00" if billing[i % 4] == "fixed_fee" else None,
            "hourly_rate": "175.00",
            "starts_on": "2026-01-01",
            "ends_on": "2026-12-31",
            "notes": "",
            "billing_type": billing[i % 4],
            "legal_entity": "LE-US1",
            "currency": "USD",
            "practice": "consulting",
        }
        for i in range(projects)
    ]
    user_assignments = [
        {
            "id": 500 + i * 10 + j,
            "project_id": p["id"],
            "user_id": u["id"],
            "is_active": True,
            "hourly_rate": "175.00",
        }
        for i, p in enumerate(projs)
        for j, u in enumerate(people)
    ]
    task_assignments = [
        {
            "id": 600 + i * 10 + j,
            "project_id": p["id"],
            "task_id": t["id"],
            "billable": j == 0,
            "hourly_rate": "175.00",
        }
        for i, p in enumerate(projs)
        for j, t in enumerate(tasks)
    ]
    categories = [
        {"id": 700, "name": "Travel", "unit_name": None, "unit_price": None, "is_active": True},
        {"id": 701, "name": "Mileage", "unit_name": "mile", "unit_price": "0.67", "is_active": True},
    ]
    time_entries = []
    for k in range(entries):
        created = base_ts + timedelta(hours=k)
        task = tasks[k % 2]
        time_entries.append(
            {
                "id": 10_000 + k,
                "spent_date": (start + timedelta(days=k % 28)).isoformat(),
                "user_id": people[k % users]["id"],
                "project_id": projs[k % projects]["id"],
                "task_id": UNKNOWN_TASK_ID if k == 7 else task["id"],
                "hours": f"{rng.choice([1, 2, 4, 6, 8])}.{rng.choice([0, 25, 5, 75])}",
                "notes": f"work item {k}",
                "billable": task["billable_by_default"],
                "billable_rate": None if k == 5 else "175.00",
                "cost_rate": "80.00",
                "is_closed": k % 3 == 0,
                "is_locked": k % 3 == 0,
                "is_billed": False,
                "external_reference": None,
                "created_at": created.isoformat(),
                "updated_at": (created + timedelta(minutes=30)).isoformat(),
            }
        )
    expense_rows = [
        {
            "id": 20_000 + k,
            "spent_date": (start + timedelta(days=k)).isoformat(),
            "user_id": people[k % users]["id"],
            "project_id": projs[k % projects]["id"],
            "expense_category_id": categories[k % 2]["id"],
            "total_cost": f"{100 + k}.50",
            "units": 10 if k % 2 else None,
            "notes": f"expense {k}",
            "billable": True,
            "is_closed": k % 2 == 0,
            "is_locked": False,
            "is_billed": False,
            "created_at": (base_ts + timedelta(hours=k)).isoformat(),
            "updated_at": (base_ts + timedelta(hours=k, minutes=5)).isoformat(),
        }
        for k in range(expenses)
    ]
    milestones = [
        {
            "id": 800 + i,
            "project_id": p["id"],
            "name": f"Milestone {i}",
            "due_date": "2026-11-30",
            "amount": "25000.00",
            "status": "planned",
            "completed_at": None,
        }
        for i, p in enumerate(projs)
    ]
    monday = start - timedelta(days=start.weekday())
    schedule = [
        {
            "id": 900 + n,
            "user_id": people[n % users]["id"],
            "project_id": projs[n % projects]["id"],
            "week_start": (monday + timedelta(weeks=n // users)).isoformat(),
            "hours": "32.0",
        }
        for n in range(users * 4)
    ]
    return {
        "clients": clients,
        "users": people,
        "tasks": tasks,
        "projects": projs,
        "user_assignments": user_assignments,
        "task_assignments": task_assignments,
        "expense_categories": categories,
        "time_entries": time_entries,
        "expenses": expense_rows,
        "milestones": milestones,
        "schedule": schedule,
    }
