"""Generate a deterministic consulting firm: PSA, ERP and CRM seed rows plus a month of transactions.

Everything derives from ``FirmSpec`` (a seed, sizes, the caller's dates and dirt rates); nothing
reads the clock or the global ``random`` state, so the same spec always yields the same rows.
Master data is built eagerly as lists of seed rows in the formats of ``docs/simulators.md``.
Transactions (time entries, expenses, the resource schedule) are streamed in chunks from
per-consultant random generators, so 10,000 consultants stay fast and memory-bounded.

Money is integer cents formatted as decimal strings and hours are integer quarter hours, so no
float ever reaches a money field. Dirt (bad rows a pipeline must quarantine or survive) is injected
at configurable rates and reported exactly by :func:`dirt_report` and :func:`dirt_ids`.
"""

from __future__ import annotations

import bisect
import calendar
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

Row = dict[str, Any]

BILLING_TYPES = ("time_and_materials", "fixed_fee", "milestone", "retainer")

# Dirt kinds on time entries and expenses. All but ``hostile_text`` must be quarantined by a
# pipeline; hostile text is valid data that must pass through unharmed.
TIME_ENTRY_DIRT = (
    "inactive_project",
    "unknown_task",
    "missing_rate",
    "future_date",
    "closed_period",
    "duplicate",
    "hostile_text",
)
EXPENSE_DIRT = ("inactive_project", "future_date", "closed_period", "duplicate", "hostile_text")
QUARANTINE_KINDS = frozenset(k for k in TIME_ENTRY_DIRT if k != "hostile_text")
MASTER_DIRT = (
    "erp.customer_inactive",
    "erp.customer_unknown",
    "erp.job_inactive",
    "erp.job_missing",
    "psa.duplicate_client_name",
    "crm.change_order_missing_in_erp",
    "schedule.overallocated_users",
)

# Id ranges per PSA entity (Harvest ids are opaque integers; distinct ranges ease debugging).
CLIENT_BASE = 100_000
USER_BASE = 200_000
TASK_BASE = 300_000
UNKNOWN_TASK_BASE = 399_000
PROJECT_BASE = 400_000
USER_ASSIGNMENT_BASE = 500_000
TASK_ASSIGNMENT_BASE = 600_000
EXPENSE_CATEGORY_BASE = 700_000
MILESTONE_BASE = 800_000
SCHEDULE_BASE = 10_000_000
TIME_ENTRY_BASE = 100_000_000
EXPENSE_BASE = 300_000_000
# Settled history (FirmSpec.history_months): ids of their own, so the data month's ids never move.
TIME_ENTRY_HISTORY_BASE = 200_000_000
EXPENSE_HISTORY_BASE = 400_000_000


@dataclass(frozen=True)
class LegalEntity:
    """A legal entity: an ERP subsidiary, carried by PSA users and projects as its code."""

    code: str
    name: str
    country: str
    currency: str


DEFAULT_LEGAL_ENTITIES: tuple[LegalEntity, ...] = (
    LegalEntity("LE-US1", "Northwind Consulting LLC", "US", "USD"),
    LegalEntity("LE-US2", "Northwind Advisory Inc.", "US", "USD"),
    LegalEntity("LE-UK1", "Northwind Consulting Ltd", "GB", "GBP"),
)


@dataclass(frozen=True)
class DirtRates:
    """Probabilities (per row) of each dirt kind, and shares of master data made dirty.

    Transaction rates apply per time entry / expense; the per-row kinds ``inactive_project`` to
    ``closed_period`` are mutually exclusive, ``duplicate`` and ``hostile_text`` are drawn for
    otherwise clean rows. Master-data shares become exact counts (at least one when > 0).
    """

    inactive_project: float = 0.01
    unknown_task: float = 0.005
    missing_rate: float = 0.01
    future_date: float = 0.005
    closed_period: float = 0.01
    duplicate: float = 0.01
    hostile_text: float = 0.02
    erp_customer_inactive: float = 0.02
    erp_customer_unknown: int = 1
    erp_job_inactive: float = 0.02
    duplicate_client_names: int = 2
    change_order_missing_in_erp: float = 0.3
    overallocated_users: float = 0.08


@dataclass(frozen=True)
class WorkflowRates:
    """Approval behaviour: what is still pending at seed time and what changes afterwards."""

    pending: float = 0.04  # weeks before the last one
    pending_last_week: float = 0.25
    rejected: float = 0.01
    late_approve: float = 0.5  # share of pending rows approved by a mutation
    edit_after_approval: float = 0.005
    unapprove: float = 0.005
    delete: float = 0.003
    month_end_wave: float = 0.45  # approvals in the last 2 / first 3 business days


@dataclass(frozen=True)
class FirmSpec:
    """What firm to generate. ``today`` or ``month`` must be given: generation never reads the clock.

    ``month`` (any day of it) is the month of the time entries; by default the calendar month
    before ``today``. ``today`` defaults to the 7th day after the month ends.

    ``history_months`` (opt-in, default 0: nothing changes) seeds that many months before
    ``month`` as settled history, as a firm that has run for a while has it: every consultant's
    time and expenses there, clean and approved in the first days of the next month, on projects
    that had started by then; those months' ERP periods are open, so the sync posts them in their
    own months (the periods before them stay closed, and the closed-period dirt moves there).
    """

    seed: int = 42
    consultants: int = 200
    legal_entities: tuple[LegalEntity, ...] = DEFAULT_LEGAL_ENTITIES
    customers: int = 120
    projects: int = 300
    opportunities: int = 150
    today: date | None = None
    month: date | None = None
    previous_month_open: bool = False
    schedule_weeks: int = 26
    history_months: int = 0
    dirt: DirtRates = field(default_factory=DirtRates)
    workflow: WorkflowRates = field(default_factory=WorkflowRates)


# --- word lists (fake personal and company data; no external faker) --------------------------

FIRST_NAMES = (
    "Ada",
    "Alan",
    "Amara",
    "Ben",
    "Carla",
    "Chen",
    "Dara",
    "Diego",
    "Elena",
    "Emeka",
    "Farah",
    "Felix",
    "Grace",
    "Hana",
    "Ivan",
    "Jonas",
    "Kai",
    "Lena",
    "Liam",
    "Maya",
    "Mei",
    "Nadia",
    "Noah",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Sofia",
    "Tariq",
    "Uma",
    "Victor",
    "Wen",
    "Xena",
    "Yusuf",
    "Zoe",
)
LAST_NAMES = (
    "Abbott",
    "Baker",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Patel",
    "Quinlan",
    "Rossi",
    "Silva",
    "Tanaka",
    "Usman",
    "Varga",
    "Walsh",
    "Xu",
    "Yilmaz",
    "Zimmer",
    "Novak",
    "Murphy",
    "Larsen",
    "Khan",
)
COMPANY_WORDS = (
    "Acme",
    "Blue Harbor",
    "Cedar",
    "Delta",
    "Evergreen",
    "Falcon",
    "Granite",
    "Horizon",
    "Iris",
    "Juniper",
    "Keystone",
    "Lighthouse",
    "Meridian",
    "Northstar",
    "Oakridge",
    "Pinnacle",
    "Quarry",
    "Redwood",
    "Summit",
    "Tidewater",
    "Union",
    "Vanguard",
    "Westfield",
    "Yardley",
    "Zephyr",
    "Atlas",
    "Beacon",
    "Crescent",
    "Driftwood",
    "Ember",
)
COMPANY_KINDS = (
    "Logistics",
    "Health",
    "Energy",
    "Retail",
    "Capital",
    "Foods",
    "Media",
    "Pharma",
    "Insurance",
    "Manufacturing",
    "Telecom",
    "Bank",
)
COMPANY_FORMS = {"US": ("Inc.", "Corp.", "LLC", "Group"), "GB": ("Ltd", "plc", "Holdings", "Group")}
PRACTICES = ("Strategy", "Technology", "Finance Transformation", "Data & Analytics", "Operations")
PROJECT_WORDS = (
    "ERP Rollout",
    "Cloud Migration",
    "Data Platform",
    "Cost Reduction",
    "Target Operating Model",
    "CRM Implementation",
    "Supply Chain Review",
    "Finance Close Acceleration",
    "Analytics Roadmap",
    "Security Assessment",
    "Pricing Strategy",
    "Process Automation",
    "Integration Program",
    "Managed Service",
    "Due Diligence",
)
NOTE_VERBS = ("Workshop on", "Drafted", "Reviewed", "Built", "Tested", "Planned", "Analysed", "Presented")
NOTE_OBJECTS = (
    "requirements",
    "the data model",
    "interface mappings",
    "the steering deck",
    "test cases",
    "the cutover plan",
    "cost baseline",
    "stakeholder feedback",
    "the backlog",
    "report prototypes",
)
GRADES = (  # (name, USD rate, cost share in percent)
    ("Analyst", 15000, 45),
    ("Consultant", 20000, 45),
    ("Senior Consultant", 25000, 48),
    ("Manager", 30000, 50),
    ("Director", 37500, 52),
)
TASKS = (  # (name, billable_by_default, default USD rate cents, is_active)
    ("Consulting", True, 20000, True),
    ("Solution Design", True, 22500, True),
    ("Development", True, 18000, True),
    ("Data Analysis", True, 19000, True),
    ("Project Management", True, 24000, True),
    ("Workshop Facilitation", True, 26000, True),
    ("Testing", True, 16000, True),
    ("Internal Meeting", False, 0, True),
    ("Training", False, 0, True),
    ("Travel", False, 0, True),
    ("Pre-sales", False, 0, True),
    ("Legacy Support", True, 15000, False),
)
EXPENSE_CATEGORIES = (  # (name, unit_name, unit price cents, low cents, high cents, billable)
    ("Airfare", None, None, 25000, 90000, True),
    ("Hotel", None, None, 12000, 35000, True),
    ("Meals", None, None, 1500, 8000, True),
    ("Mileage", "mile", 67, 10, 200, True),
    ("Ground Transport", None, None, 1000, 9000, True),
    ("Software", None, None, 2000, 30000, False),
)
LONG_NOTE = " ".join(["Detailed stakeholder workshop notes and follow-up actions."] * 70)  # ~4 kB
HOSTILE_NOTES = (
    "\u202eReview of the cutover plan\u202c",
    "\u0645\u0631\u0627\u062c\u0639\u0629 \u0627\u0644\u0645\u062a\u0637\u0644\u0628\u0627\u062a \u200f(RTL)",
    "Sprint demo \U0001f680\U0001f525 \u2705 sign-off \U0001f44d\U0001f3fd",
    "'; DROP TABLE time_entries; --",
    "Robert'); DELETE FROM ledger WHERE ('1'='1",
    "<script>alert('x')</script><img src=x onerror=alert(1)>",
    "Tabs\tvertical\x0bform\x0cfeed\x1b[31m escape\x07bell\x7f",
    "Zero\u200bwidth\u200djoiner\ufeffBOM",
    "\u00dcn\u00efc\u00f6d\u00e9 \u00c7a d\u00e9pend \u2014 na\u00efve caf\u00e9, Stra\u00dfe",
    "Combining e\u0301 a\u0300 o\u0308 and \U0001d578\U0001d586\U0001d599\U0001d58d",
    "{{ 7*7 }} ${jndi:ldap://example.invalid/a} %s%n",
    "line one\r\nline two\rline three\nline four",
    "\\N NULL null None undefined",
    LONG_NOTE,
)
STAGES = (  # open pipeline stages and CRM probabilities (optimistic, as CRMs are)
    ("Prospecting", 10),
    ("Qualification", 20),
    ("Proposal", 50),
    ("Negotiation", 75),
)


# --- formatting helpers -----------------------------------------------------------------------


def money(cents: int) -> str:
    """Integer cents as a decimal string with two decimals (``-1234`` -> ``"-12.34"``)."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def hours(quarters: int) -> str:
    """Integer quarter hours as a decimal string (``9`` -> ``"2.25"``)."""
    return money(quarters * 25)


HOURS = [hours(q) for q in range(200)]


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _month_end(first: date) -> date:
    return first.replace(day=calendar.monthrange(first.year, first.month)[1])


def _workdays(first: date, last: date) -> list[date]:
    days = []
    day = first
    while day <= last:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def _round_to(cents: int, step: int) -> int:
    return max(step, (cents + step // 2) // step * step)


def _pick_count(rate: float, n: int) -> int:
    if rate <= 0 or n <= 0:
        return 0
    return min(n, max(1, round(rate * n)))


# --- the firm ---------------------------------------------------------------------------------


@dataclass
class _Option:
    """A project a consultant may book on, with the tasks and rates of its rate card."""

    project_id: int
    billable_tasks: list[tuple[int, int]]  # (task_id, billable rate cents)
    other_tasks: list[int]  # non-billable task ids
    rate_strings: list[tuple[int, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rate_strings = [(task_id, money(rate)) for task_id, rate in self.billable_tasks]


@dataclass
class _Plan:
    """What one active consultant books: projects (primary first) and utilisation."""

    user_id: int
    cost_cents: int
    utilisation: float
    weekly_quarters: int
    options: list[_Option]
    archived: list[_Option]  # inactive projects the user is still assigned to
    overallocated: bool


@dataclass
class Firm:
    """A generated firm: master-data seed rows per system and the plans that drive transactions."""

    spec: FirmSpec
    today: date
    month_start: date
    month_end: date
    psa: dict[str, list[Row]]
    erp: dict[str, list[Row]]
    crm: dict[str, list[Row]]
    master_dirt: dict[str, list[Any]]
    plans: list[_Plan]
    project_currency: dict[int, str]
    workdays: list[date]
    erp_blocked_projects: frozenset[int]  # active in the PSA, unusable in the ERP (job/customer)
    closed_month_start: date  # most recent month closed in the ERP
    history_months: list[date] = field(default_factory=list)  # first days of the settled months
    _scan_cache: _Scan | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return (
            f"Firm(seed={self.spec.seed}, consultants={len(self.psa['users'])}, "
            f"month={self.month_start.isoformat()}, today={self.today.isoformat()})"
        )

    @property
    def future_start(self) -> date:
        """First day that counts as "future" for dated dirt: after the month end and after today."""
        return max(self.month_end, self.today) + timedelta(days=1)


SETTLED_DAYS = 7  # a month's "today" when only the month is given: its end + 7 days (the 7th)


def settled_month(as_of: date) -> date:
    """The month a firm seeded "as of" ``as_of`` holds, so that nothing seeded depends on the day.

    It is the latest month whose settled day (its end + ``SETTLED_DAYS``, the 7th of the next
    month, the ``today`` that :func:`resolve_dates` gives ``FirmSpec(month=...)``) is on or before
    ``as_of``: the previous month from the 7th on, the month before it on the 1st to the 6th.
    Seeded with ``today`` = as_of instead, the approvals stamped after as_of would be left out
    (still pending), so the counts of approved and pending rows moved with the day of the month.
    Now they depend only on the month's calendar, and nothing seeded lies after ``as_of``.
    """
    back = 1 if as_of.day >= SETTLED_DAYS else 2
    return _add_months(as_of.replace(day=1), -back)


def resolve_dates(spec: FirmSpec) -> tuple[date, date, date]:
    """(today, month start, month end) from the spec; raises when neither date is given."""
    if spec.month is None and spec.today is None:
        raise ValueError("FirmSpec needs month or today: generation never reads the clock")
    if spec.month is not None:
        start = spec.month.replace(day=1)
    else:
        assert spec.today is not None
        start = _add_months(spec.today.replace(day=1), -1)
    end = _month_end(start)
    today = spec.today if spec.today is not None else end + timedelta(days=SETTLED_DAYS)
    return today, start, end


def generate_firm(spec: FirmSpec) -> Firm:
    """Build the firm's master data (lists) and transaction plans (streamed later)."""
    if spec.consultants < 1 or spec.customers < 1 or spec.projects < 1 or not spec.legal_entities:
        raise ValueError("a firm needs consultants, customers, projects and legal entities")
    if not 0 <= spec.history_months <= 11:
        raise ValueError("history_months must be 0 to 11 (the ERP keeps 12 periods back)")
    today, month_start, month_end = resolve_dates(spec)
    rng = random.Random(f"firm:{spec.seed}")
    dirt = spec.dirt
    les = {le.code: le for le in spec.legal_entities}
    le_codes = [le.code for le in spec.legal_entities]
    le_weights = [2 if i == 0 else 1 for i in range(len(le_codes))]
    fx = {le.code: (80 if le.currency == "GBP" else 100) for le in spec.legal_entities}  # rate scale %
    master_dirt: dict[str, list[Any]] = {k: [] for k in MASTER_DIRT}

    # Tasks and expense categories (firm-wide, as in Harvest).
    tasks: list[Row] = []
    billable_task_ids: list[int] = []
    other_task_ids: list[int] = []
    task_rate: dict[int, int] = {}
    for i, (name, billable, rate, active) in enumerate(TASKS, start=1):
        tid = TASK_BASE + i
        tasks.append(
            {
                "id": tid,
                "name": name,
                "billable_by_default": billable,
                "default_hourly_rate": money(rate) if rate else None,
                "is_active": active,
            }
        )
        if active:
            (billable_task_ids if billable else other_task_ids).append(tid)
        task_rate[tid] = rate
    expense_categories = [
        {
            "id": EXPENSE_CATEGORY_BASE + i,
            "name": name,
            "unit_name": unit,
            "unit_price": money(price) if price is not None else None,
            "is_active": True,
        }
        for i, (name, unit, price, _lo, _hi, _b) in enumerate(EXPENSE_CATEGORIES, start=1)
    ]

    # Clients: unique names, then a few deliberate duplicates.
    combos = [f"{w} {k}" for w in COMPANY_WORDS for k in COMPANY_KINDS]
    rng.shuffle(combos)
    clients: list[Row] = []
    client_le: dict[int, str] = {}
    for i in range(spec.customers):
        cid = CLIENT_BASE + i + 1
        le = rng.choices(le_codes, weights=le_weights)[0]
        stem = combos[i % len(combos)] + (f" {i // len(combos) + 1}" if i >= len(combos) else "")
        form = rng.choice(COMPANY_FORMS.get(les[le].country, ("Group",)))
        clients.append({"id": cid, "name": f"{stem} {form}", "is_active": True, "currency": les[le].currency})
        client_le[cid] = le
    client_ids = [c["id"] for c in clients]
    dup_pairs = min(dirt.duplicate_client_names, len(clients) // 2)
    picked_dups = rng.sample(client_ids, dup_pairs * 2)
    client_by_id = {c["id"]: c for c in clients}
    for k in range(dup_pairs):
        a, b = picked_dups[2 * k], picked_dups[2 * k + 1]
        client_by_id[b]["name"] = client_by_id[a]["name"]
        master_dirt["psa.duplicate_client_name"].append(sorted((a, b)))
    master_dirt["psa.duplicate_client_name"].sort()

    # Users (consultants).
    users: list[Row] = []
    user_grade: dict[int, int] = {}
    user_le: dict[int, str] = {}
    inactive_users = set(rng.sample(range(spec.consultants), spec.consultants // 100))
    for i in range(spec.consultants):
        uid = USER_BASE + i + 1
        le = rng.choices(le_codes, weights=le_weights)[0]
        grade = rng.choices(range(len(GRADES)), weights=(25, 30, 25, 14, 6))[0]
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        contractor = rng.random() < 0.08
        rate = _round_to(GRADES[grade][1] * fx[le] // 100, 500)
        cost = rate * GRADES[grade][2] // 100 + (rate // 5 if contractor else 0)
        tz = (
            "Europe/London"
            if les[le].country == "GB"
            else rng.choice(("America/New_York", "America/Chicago"))
        )
        users.append(
            {
                "id": uid,
                "first_name": first,
                "last_name": last,
                "email": f"{first}.{last}.{uid}@example.com".lower(),
                "is_active": i not in inactive_users,
                "is_contractor": contractor,
                "weekly_capacity": 115200 if rng.random() < 0.05 else 144000,
                "default_hourly_rate": money(rate),
                "cost_rate": money(cost),
                "legal_entity": le,
                "practice": rng.choice(PRACTICES),
                "timezone": tz,
                "employee_id": f"E{uid}",  # the Workday Employee_ID (simulators/workday/sample.py)
            }
        )
        user_grade[uid] = grade
        user_le[uid] = le

    # Projects, spread over the four billing types; about 5 % archived (inactive).
    kinds = list(BILLING_TYPES[: spec.projects])
    kinds += rng.choices(BILLING_TYPES, weights=(45, 25, 15, 15), k=max(0, spec.projects - 4))
    rng.shuffle(kinds)
    n_inactive = max(1, spec.projects // 20) if spec.projects > 1 else 0
    inactive_projects = set(rng.sample(range(spec.projects), n_inactive))
    projects: list[Row] = []
    project_base_cents: dict[int, int] = {}
    project_currency: dict[int, str] = {}
    project_le: dict[int, str] = {}
    project_rate: dict[int, int] = {}
    for i in range(spec.projects):
        pid = PROJECT_BASE + i + 1
        cid = client_ids[i % len(client_ids)] if i < len(client_ids) else rng.choice(client_ids)
        le = client_le[cid]
        kind = kinds[i]
        active = i not in inactive_projects
        if active:
            starts = month_start - timedelta(days=rng.randint(30, 540))
            ends = _add_months(month_end, rng.randint(2, 14))
        else:
            ends = month_start - timedelta(days=rng.randint(15, 200))
            starts = ends - timedelta(days=rng.randint(60, 400))
        rate = _round_to(rng.randint(17000, 28000) * fx[le] // 100, 500)
        bill_by = rng.choice(("People", "Tasks")) if kind == "time_and_materials" else "Project"
        budget_hours = rng.randint(20, 400) * 10
        months = max(1, (ends.year - starts.year) * 12 + ends.month - starts.month)
        if kind == "time_and_materials":
            base = budget_hours * rate
        elif kind == "retainer":
            base = _round_to(rng.randint(10_000, 60_000) * fx[le], 50_000) * months
        else:
            base = _round_to(rng.randint(50_000, 1_500_000) * fx[le], 50_000)
        projects.append(
            {
                "id": pid,
                "client_id": cid,
                "name": f"{rng.choice(PROJECT_WORDS)} {i + 1}",
                "code": f"P{i + 1:05d}",
                "is_active": active,
                "is_billable": True,
                "is_fixed_fee": kind in ("fixed_fee", "milestone"),
                "bill_by": bill_by,
                "budget": hours(budget_hours * 4),
                "budget_by": "project",
                "cost_budget": None,
                "fee": None,
                "hourly_rate": money(rate),
                "starts_on": starts.isoformat(),
                "ends_on": ends.isoformat(),
                "notes": None,
                "billing_type": kind,
                "legal_entity": le,
                "currency": les[le].currency,
                "practice": rng.choice(PRACTICES),
            }
        )
        project_base_cents[pid] = base
        project_currency[pid] = les[le].currency
        project_le[pid] = le
        project_rate[pid] = rate
    by_pid = {p["id"]: p for p in projects}

    # Task assignments: every project gets 4 billable tasks (its task rate card) and the non-billable ones.
    task_assignments: list[Row] = []
    project_tasks: dict[int, list[tuple[int, int]]] = {}
    ta_id = TASK_ASSIGNMENT_BASE
    for p in projects:
        pid = p["id"]
        chosen = sorted(rng.sample(billable_task_ids, min(4, len(billable_task_ids))))
        rates = []
        for tid in chosen:
            ta_id += 1
            trate = _round_to(task_rate[tid] * fx[project_le[pid]] // 100 * rng.randint(90, 110) // 100, 500)
            rates.append((tid, trate))
            task_assignments.append(
                {
                    "id": ta_id,
                    "project_id": pid,
                    "task_id": tid,
                    "is_active": True,
                    "billable": True,
                    "hourly_rate": money(trate),
                    "budget": None,
                }
            )
        for tid in other_task_ids:
            ta_id += 1
            task_assignments.append(
                {
                    "id": ta_id,
                    "project_id": pid,
                    "task_id": tid,
                    "is_active": True,
                    "billable": False,
                    "hourly_rate": None,
                    "budget": None,
                }
            )
        project_tasks[pid] = rates

    # User assignments: a primary project (round-robin within the legal entity), 0-2 more, and
    # one archived project each (Harvest keeps assignments on archived projects).
    active_by_le: dict[str, list[int]] = {le: [] for le in le_codes}
    archived_by_le: dict[str, list[int]] = {le: [] for le in le_codes}
    for p in projects:
        (active_by_le if p["is_active"] else archived_by_le)[p["legal_entity"]].append(p["id"])
    all_active = [p["id"] for p in projects if p["is_active"]]
    all_archived = [p["id"] for p in projects if not p["is_active"]]
    cursor = dict.fromkeys(le_codes, 0)
    user_assignments: list[Row] = []
    ua_id = USER_ASSIGNMENT_BASE
    managers: set[int] = set()
    plans: list[_Plan] = []
    overallocated_target = set(
        rng.sample(range(spec.consultants), _pick_count(dirt.overallocated_users, spec.consultants))
    )
    for i, u in enumerate(users):
        uid = u["id"]
        le = user_le[uid]
        pool = active_by_le[le] or all_active
        primary = pool[cursor[le] % len(pool)]
        cursor[le] += 1
        picked = [primary]
        for _ in range(rng.choice((0, 1, 1, 2))):
            extra = rng.choice(pool if rng.random() < 0.8 else all_active)
            if extra not in picked:
                picked.append(extra)
        archived_pool = archived_by_le[le] or all_archived
        archived = [rng.choice(archived_pool)] if archived_pool else []
        options: list[_Option] = []
        archived_options: list[_Option] = []
        for pid in picked + archived:
            ua_id += 1
            project = by_pid[pid]
            pm = pid not in managers and user_grade[uid] >= 3
            if pm:
                managers.add(pid)
            # A person's rate on a project follows the project currency's scale.
            ua_rate = _round_to(
                GRADES[user_grade[uid]][1] * fx[project_le[pid]] // 100 * rng.randint(85, 105) // 100, 500
            )
            user_assignments.append(
                {
                    "id": ua_id,
                    "project_id": pid,
                    "user_id": uid,
                    "is_active": True,
                    "is_project_manager": pm,
                    "hourly_rate": money(ua_rate),
                    "budget": None,
                }
            )
            if project["bill_by"] == "People":
                card = [(tid, ua_rate) for tid, _r in project_tasks[pid]]
            elif project["bill_by"] == "Tasks":
                card = list(project_tasks[pid])
            else:
                card = [(tid, project_rate[pid]) for tid, _r in project_tasks[pid]]
            option = _Option(pid, card, list(other_task_ids))
            (archived_options if pid in archived else options).append(option)
        if u["is_active"]:
            plans.append(
                _Plan(
                    user_id=uid,
                    cost_cents=int(u["cost_rate"].replace(".", "")),
                    utilisation=min(0.95, max(0.4, rng.gauss(0.78, 0.08))),
                    weekly_quarters=u["weekly_capacity"] // 900,
                    options=options,
                    archived=archived_options,
                    overallocated=i in overallocated_target,
                )
            )
    master_dirt["schedule.overallocated_users"] = sorted(p.user_id for p in plans if p.overallocated)

    # CRM: accounts, a closed-won opportunity per project, change orders, open pipeline.
    accounts = [
        {
            "id": n,
            "name": c["name"],
            "legal_entity": client_le[c["id"]],
            "erp_customer_external_id": f"psa-client-{c['id']}",
        }
        for n, c in enumerate(clients, start=1)
    ]
    account_of = {c["id"]: n for n, c in enumerate(clients, start=1)}
    opportunities: list[Row] = []
    change_orders: list[Row] = []
    approved_delta: dict[int, int] = dict.fromkeys(project_base_cents, 0)
    leaked_delta: dict[int, int] = dict.fromkeys(project_base_cents, 0)
    approved_cos: list[tuple[int, int, int]] = []  # (change order id, project id, delta)
    opp_id = 0
    co_id = 0
    for p in projects:
        pid = p["id"]
        opp_id += 1
        starts = date.fromisoformat(p["starts_on"])
        ends = date.fromisoformat(p["ends_on"])
        opportunities.append(
            {
                "id": opp_id,
                "account_id": account_of[p["client_id"]],
                "name": p["name"],
                "stage": "Closed Won",
                "probability": 100,
                "amount": money(project_base_cents[pid]),
                "currency": p["currency"],
                "close_date": (starts - timedelta(days=rng.randint(7, 45))).isoformat(),
                "expected_start": starts.isoformat(),
                "duration_months": max(1, (ends.year - starts.year) * 12 + ends.month - starts.month),
                "legal_entity": p["legal_entity"],
                "practice": p["practice"],
                "billing_type": p["billing_type"],
                "psa_project_id": pid,
            }
        )
        if rng.random() < 0.25:
            for _ in range(rng.choice((1, 1, 2))):
                co_id += 1
                status = rng.choices(("approved", "submitted", "draft", "rejected"), weights=(70, 15, 5, 10))[
                    0
                ]
                delta = _round_to(project_base_cents[pid] * rng.randint(5, 25) // 100, 10_000)
                if rng.random() < 0.05:
                    delta = -delta // 2
                last_day = min(today, ends) - timedelta(days=1)
                span = max(0, (last_day - starts).days)
                change_orders.append(
                    {
                        "id": co_id,
                        "opportunity_id": opp_id,
                        "amount_delta": money(delta),
                        "currency": p["currency"],
                        "status": status,
                        "effective_date": (starts + timedelta(days=rng.randint(0, span))).isoformat(),
                    }
                )
                if status == "approved":
                    approved_delta[pid] += delta
                    approved_cos.append((co_id, pid, delta))
    leak_n = _pick_count(dirt.change_order_missing_in_erp, len(approved_cos))
    for co, pid, delta in sorted(rng.sample(approved_cos, leak_n)):
        leaked_delta[pid] += delta
        master_dirt["crm.change_order_missing_in_erp"].append(co)
    for n in range(spec.opportunities + spec.opportunities // 5):
        opp_id += 1
        c = rng.choice(clients)
        le = client_le[c["id"]]
        lost = n >= spec.opportunities
        stage, prob = ("Closed Lost", 0) if lost else rng.choices(STAGES, weights=(30, 30, 25, 15))[0]
        start = _add_months(month_start, rng.randint(1, 9)) if not lost else month_start
        opportunities.append(
            {
                "id": opp_id,
                "account_id": account_of[c["id"]],
                "name": f"{rng.choice(PROJECT_WORDS)} for {c['name']}",
                "stage": stage,
                "probability": prob,
                "amount": money(_round_to(rng.randint(40_000, 900_000) * fx[le], 50_000)),
                "currency": les[le].currency,
                "close_date": (
                    (start - timedelta(days=rng.randint(10, 40)))
                    if not lost
                    else month_start - timedelta(days=rng.randint(1, 120))
                ).isoformat(),
                "expected_start": start.isoformat(),
                "duration_months": rng.choice((3, 6, 6, 9, 12, 18)),
                "legal_entity": le,
                "practice": rng.choice(PRACTICES),
                "billing_type": rng.choices(BILLING_TYPES, weights=(45, 25, 15, 15))[0],
                "psa_project_id": None,
            }
        )

    # Fees and milestones follow the contract as the PSA knows it (base + approved change orders).
    milestones: list[Row] = []
    ms_id = MILESTONE_BASE
    contract_cents: dict[int, int] = {}
    for p in projects:
        pid = p["id"]
        total = project_base_cents[pid] + approved_delta[pid]
        contract_cents[pid] = total
        if p["billing_type"] == "time_and_materials":
            p["cost_budget"] = money(total * 55 // 100)
            continue
        p["fee"] = money(total)
        if p["billing_type"] != "milestone":
            continue
        starts = date.fromisoformat(p["starts_on"])
        ends = date.fromisoformat(p["ends_on"])
        count = rng.randint(3, 5)
        shares = [rng.randint(10, 30) for _ in range(count)]
        amounts = [total * s // sum(shares) for s in shares]
        amounts[-1] += total - sum(amounts)
        span = (ends - starts).days
        for k, amount in enumerate(amounts, start=1):
            ms_id += 1
            due = starts + timedelta(days=span * k // count)
            if due < month_start:
                status = rng.choices(("signed_off", "completed"), weights=(85, 15))[0]
            elif due <= month_end:
                status = rng.choices(("completed", "planned"), weights=(60, 40))[0]
            else:
                status = "planned"
            done = min(due, today - timedelta(days=1))
            milestones.append(
                {
                    "id": ms_id,
                    "project_id": pid,
                    "name": f"Milestone {k}",
                    "due_date": due.isoformat(),
                    "amount": money(amount),
                    "status": status,
                    "completed_at": f"{done.isoformat()}T15:00:00Z" if status != "planned" else None,
                }
            )

    # ERP: subsidiaries, currencies, tax codes, employees, customers, jobs, periods.
    subsidiaries = [
        {
            "external_id": le.code,
            "name": le.name,
            "country": le.country,
            "currency": le.currency,
            "is_inactive": False,
        }
        for le in spec.legal_entities
    ]
    currency_names = {"USD": "US Dollar", "GBP": "British Pound", "EUR": "Euro", "CAD": "Canadian Dollar"}
    currencies = [
        {"symbol": cur, "name": currency_names.get(cur, cur)}
        for cur in sorted({le.currency for le in spec.legal_entities})
    ]
    tax_codes = [
        {
            "external_id": "TAX-US-EXEMPT",
            "code": "US-EXEMPT",
            "country": "US",
            "rate": "0.00",
            "is_inactive": False,
        },
        {"external_id": "TAX-US-TX", "code": "US-TX", "country": "US", "rate": "6.25", "is_inactive": False},
        {
            "external_id": "TAX-GB-S20",
            "code": "GB-S20",
            "country": "GB",
            "rate": "20.00",
            "is_inactive": False,
        },
        {"external_id": "TAX-GB-Z0", "code": "GB-Z0", "country": "GB", "rate": "0.00", "is_inactive": False},
        {
            "external_id": "TAX-GB-S175",
            "code": "GB-S175",
            "country": "GB",
            "rate": "17.50",
            "is_inactive": True,
        },
    ]
    default_tax = {"US": "TAX-US-EXEMPT", "GB": "TAX-GB-S20"}
    employees = [
        {
            "external_id": f"psa-user-{u['id']}",
            "subsidiary": u["legal_entity"],
            "is_inactive": not u["is_active"],
        }
        for u in users
    ]
    unknown = set(rng.sample(client_ids, min(dirt.erp_customer_unknown, len(client_ids))))
    known_ids = [c for c in client_ids if c not in unknown]
    inactive_customers = set(
        rng.sample(known_ids, min(len(known_ids), _pick_count(dirt.erp_customer_inactive, len(client_ids))))
    )
    master_dirt["erp.customer_unknown"] = sorted(unknown)
    master_dirt["erp.customer_inactive"] = sorted(inactive_customers)
    customers = [
        {
            "external_id": f"psa-client-{c['id']}",
            "company_name": c["name"],
            "subsidiary": client_le[c["id"]],
            "currency": c["currency"],
            "tax_code": default_tax.get(les[client_le[c["id"]]].country, tax_codes[0]["external_id"]),
            "is_inactive": c["id"] in inactive_customers,
        }
        for c in clients
        if c["id"] not in unknown
    ]
    job_candidates = [p["id"] for p in projects if p["is_active"] and p["client_id"] not in unknown]
    inactive_jobs = set(
        rng.sample(
            job_candidates, min(len(job_candidates), _pick_count(dirt.erp_job_inactive, len(projects)))
        )
    )
    master_dirt["erp.job_inactive"] = sorted(inactive_jobs)
    jobs: list[Row] = []
    for p in projects:
        pid = p["id"]
        if p["client_id"] in unknown:
            master_dirt["erp.job_missing"].append(pid)
            continue
        jobs.append(
            {
                "external_id": f"psa-project-{pid}",
                "name": p["name"],
                "customer": f"psa-client-{p['client_id']}",
                "subsidiary": p["legal_entity"],
                "currency": p["currency"],
                "billing_type": p["billing_type"],
                "contract_value": money(contract_cents[pid] - leaked_delta[pid]),
                "is_inactive": (not p["is_active"]) or pid in inactive_jobs,
            }
        )
    closed_before = month_start if not spec.previous_month_open else _add_months(month_start, -1)
    closed_before = _add_months(closed_before, -spec.history_months)  # the history was posted open
    periods: list[Row] = []
    for entity in spec.legal_entities:
        for k in range(-12, 13):
            period_start = _add_months(month_start, k)
            closed = period_start < closed_before
            periods.append(
                {
                    "external_id": f"{entity.code}-{period_start:%Y-%m}",
                    "subsidiary": entity.code,
                    "period_name": f"{period_start:%b %Y}",
                    "start_date": period_start.isoformat(),
                    "end_date": _month_end(period_start).isoformat(),
                    "closed": closed,
                    "all_locked": closed,
                    "ar_locked": closed,
                    "ap_locked": closed,
                }
            )

    return Firm(
        spec=spec,
        today=today,
        month_start=month_start,
        month_end=month_end,
        psa={
            "clients": clients,
            "users": users,
            "tasks": tasks,
            "expense_categories": expense_categories,
            "projects": projects,
            "user_assignments": user_assignments,
            "task_assignments": task_assignments,
            "milestones": milestones,
        },
        erp={
            "subsidiaries": subsidiaries,
            "currencies": currencies,
            "tax_codes": tax_codes,
            "employees": employees,
            "customers": customers,
            "jobs": jobs,
            "accounting_periods": periods,
        },
        crm={"accounts": accounts, "opportunities": opportunities, "change_orders": change_orders},
        master_dirt=master_dirt,
        plans=plans,
        project_currency=project_currency,
        workdays=_workdays(month_start, month_end),
        erp_blocked_projects=frozenset(
            p["id"]
            for p in projects
            if p["is_active"]
            and (
                p["id"] in inactive_jobs or p["client_id"] in unknown or p["client_id"] in inactive_customers
            )
        ),
        closed_month_start=_add_months(closed_before, -1),
        history_months=[_add_months(month_start, -k) for k in range(spec.history_months, 0, -1)],
    )


# --- transactions -----------------------------------------------------------------------------


@dataclass
class _Scan:
    """Everything learnt from one pass over the transactions: dirt ids, workflow ids, mutations."""

    counts: dict[str, int]
    ids: dict[str, list[int]]
    mutations: list[Row]
    rows: dict[str, int]


class _Sink:
    """Collects dirt ids, workflow ids and mutations while transactions are generated.

    The streaming iterators pass ``record=False``: the same random draws happen, nothing is kept.
    """

    def __init__(self, record: bool = True) -> None:
        self.record = record
        self.ids: dict[str, list[int]] = {}
        self.mutations: list[Row] = []

    def add(self, key: str, row_id: int) -> None:
        if self.record:
            self.ids.setdefault(key, []).append(row_id)

    def mutate(self, kind: str, entity: str, row_id: int, changes: dict[str, Any] | None = None) -> None:
        if self.record:
            self.mutations.append({"kind": kind, "entity": entity, "id": row_id, "changes": changes or {}})


class _Calendar:
    """Precomputed date and timestamp strings for one firm (string building dominates the cost)."""

    def __init__(self, firm: Firm) -> None:
        wf = firm.spec.workflow
        self.wf = wf
        self.today = firm.today
        limit = f"{firm.today.isoformat()}T00:00:00Z"
        self.days = [d.isoformat() for d in firm.workdays]
        self.created = [
            [f"{d}T{h:02d}:{m:02d}:00Z" for h in (16, 17, 18, 19) for m in (5, 25, 45)] for d in self.days
        ]
        next_month = _add_months(firm.month_start, 1)
        window = firm.workdays[-2:] + _workdays(next_month, next_month + timedelta(days=6))[:3]
        window_ts = [
            f"{d.isoformat()}T{h:02d}:{m:02d}:00Z" for d in window for h in (9, 11, 14, 16) for m in (10, 40)
        ]
        self.window = [t for t in window_ts if t < limit]
        self.weekly: list[list[str]] = []
        for d in firm.workdays:
            monday = d + timedelta(days=7 - d.weekday())
            stamps = [
                f"{(monday + timedelta(days=k)).isoformat()}T{h:02d}:{m:02d}:00Z"
                for k in (0, 1)
                for h in (9, 10, 15)
                for m in (0, 30)
            ]
            self.weekly.append([t for t in stamps if t < limit])
        self.last_week_from = len(self.days) - 5
        future = firm.future_start
        self.future = [(future + timedelta(days=k)).isoformat() for k in range(30)]
        closed_days = _workdays(firm.closed_month_start, _month_end(firm.closed_month_start))
        self.closed = [d.isoformat() for d in closed_days]
        late = firm.workdays[len(firm.workdays) // 2 :]
        self.late_created = [f"{d.isoformat()}T18:00:00Z" for d in late]
        self.future_created = f"{(firm.today - timedelta(days=1)).isoformat()}T17:00:00Z"

    def status(self, rng: random.Random, day_index: int, created: str) -> tuple[bool, str, bool]:
        """(approved, updated_at, rejected) for a row spent on workday ``day_index``."""
        wf = self.wf
        pending = wf.pending_last_week if day_index >= self.last_week_from else wf.pending
        r = rng.random()
        if r < wf.rejected:
            return False, created, True
        if r < wf.rejected + pending:
            return False, created, False
        stamps = self.window if (rng.random() < wf.month_end_wave or not self.weekly[day_index]) else None
        stamps = stamps or self.weekly[day_index]
        if not stamps:
            return False, created, False
        stamp = stamps[int(rng.random() * len(stamps))]
        return True, max(stamp, created), False


def _dirt_thresholds(rates: DirtRates, kinds: tuple[str, ...]) -> list[tuple[float, str]]:
    out = []
    acc = 0.0
    for kind in kinds:
        if kind in ("duplicate", "hostile_text"):
            continue
        acc += getattr(rates, kind)
        out.append((acc, kind))
    return out


def _mutate(
    rng: random.Random,
    wf: WorkflowRates,
    sink: _Sink,
    entity: str,
    row: Row,
    rejected: bool,
) -> None:
    """Maybe schedule a post-seed mutation of a clean row."""
    r = rng.random()
    if not row["is_closed"]:
        if not rejected and r < wf.late_approve:
            sink.mutate("approve", entity, row["id"])
        elif r > 1 - wf.delete:
            sink.mutate("delete", entity, row["id"])
        return
    if r < wf.edit_after_approval:
        if entity == "time_entry":
            quarters = int(row["hours"].replace(".", "")) // 25
            new = quarters + (1 if quarters <= 4 or rng.random() < 0.5 else -1)
            changes: dict[str, Any] = {
                "hours": hours(new),
                "notes": f"{row['notes'] or ''} (corrected)".strip(),
            }
        else:
            cents = int(row["total_cost"].replace(".", ""))
            changes = {"total_cost": money(cents + _round_to(cents // 10, 100))}
        sink.mutate("edit", entity, row["id"], changes)
    elif r < wf.edit_after_approval + wf.unapprove:
        sink.mutate("unapprove", entity, row["id"])
    elif r > 1 - wf.delete:
        sink.mutate("delete", entity, row["id"])


def _time_entries(firm: Firm, sink: _Sink) -> Iterator[list[Row]]:
    """Yield each active consultant's month of time entries (one list per consultant)."""
    spec = firm.spec
    cal = _Calendar(firm)
    thresholds = _dirt_thresholds(spec.dirt, TIME_ENTRY_DIRT)
    dup_rate, hostile_rate = spec.dirt.duplicate, spec.dirt.hostile_text
    blocked = firm.erp_blocked_projects
    next_id = TIME_ENTRY_BASE
    n_days = len(cal.days)
    for plan in firm.plans:
        rng = random.Random(f"te:{spec.seed}:{plan.user_id}")
        cost = money(plan.cost_cents)
        uid = plan.user_id
        weights = [6] + [2] * (len(plan.options) - 1)
        cum = [sum(weights[: k + 1]) for k in range(len(weights))]
        rows: list[Row] = []
        for di in range(n_days):
            if rng.random() < 0.05:  # time off
                continue
            n = 2 if rng.random() < 0.5 else 3
            free = 30 + int(rng.random() * 5) - 2 * n  # a 7.5-8.5 h day, at least 0.5 h per entry
            cuts = sorted(int(rng.random() * (free + 1)) for _ in range(n - 1))
            parts = [2 + b - a for a, b in zip([0, *cuts], [*cuts, free], strict=True)]
            used: set[tuple[int, int]] = set()
            for quarters in parts:
                r = rng.random()
                kind = None
                for limit, k in thresholds:
                    if r < limit:
                        kind = k
                        break
                billable = kind == "missing_rate" or rng.random() < plan.utilisation
                if kind == "inactive_project" and plan.archived:
                    option = plan.archived[int(rng.random() * len(plan.archived))]
                else:
                    if kind == "inactive_project":
                        kind = None
                    option = plan.options[bisect.bisect(cum, rng.random() * cum[-1])]
                if billable:
                    task_id, rate_s = option.rate_strings[int(rng.random() * len(option.billable_tasks))]
                else:
                    task_id = option.other_tasks[int(rng.random() * len(option.other_tasks))]
                    rate_s = None
                if (option.project_id, task_id) in used:
                    continue  # keeps (user, day, project, task) unique so duplicates are unambiguous
                used.add((option.project_id, task_id))
                spent = cal.days[di]
                created = cal.created[di][int(rng.random() * 12)]
                if kind == "unknown_task":
                    task_id = UNKNOWN_TASK_BASE + 1 + int(rng.random() * 999)
                elif kind == "missing_rate":
                    rate_s = None
                elif kind == "future_date":
                    spent = cal.future[int(rng.random() * len(cal.future))]
                    created = cal.future_created
                elif kind == "closed_period":
                    spent = cal.closed[int(rng.random() * len(cal.closed))]
                    created = cal.late_created[int(rng.random() * len(cal.late_created))]
                approved, updated, rejected = cal.status(rng, di, created)
                if kind == "future_date":
                    approved, updated, rejected = False, created, False
                hostile = kind is None and rng.random() < hostile_rate
                if hostile:
                    notes: str | None = HOSTILE_NOTES[int(rng.random() * len(HOSTILE_NOTES))]
                else:
                    notes = f"{NOTE_VERBS[int(rng.random() * 8)]} {NOTE_OBJECTS[int(rng.random() * 10)]}"
                next_id += 1
                row = {
                    "id": next_id,
                    "spent_date": spent,
                    "user_id": uid,
                    "project_id": option.project_id,
                    "task_id": task_id,
                    "hours": HOURS[quarters],
                    "notes": notes,
                    "billable": billable,
                    "billable_rate": rate_s,
                    "cost_rate": cost,
                    "is_closed": approved,
                    "is_locked": approved,
                    "is_billed": False,
                    "external_reference": None,
                    "created_at": created,
                    "updated_at": updated,
                }
                rows.append(row)
                duplicate = kind is None and not hostile and rng.random() < dup_rate
                if kind is not None:
                    sink.add(f"time_entries.{kind}", next_id)
                elif hostile:
                    sink.add("time_entries.hostile_text", next_id)
                if kind is None:
                    if rejected:
                        sink.add("time_entries.rejected", next_id)
                    elif not approved:
                        sink.add("time_entries.pending", next_id)
                    if option.project_id in blocked:
                        sink.add("time_entries.erp_blocked", next_id)
                if kind is None and not hostile and not duplicate:
                    _mutate(rng, spec.workflow, sink, "time_entry", row, rejected)
                if duplicate:
                    next_id += 1
                    dup = dict(row, id=next_id, created_at=updated, updated_at=updated)
                    rows.append(dup)
                    sink.add("time_entries.duplicate", next_id)
        yield rows


def _expenses(firm: Firm, sink: _Sink) -> Iterator[list[Row]]:
    """Yield each active consultant's month of expenses (about 0.3 per working day)."""
    spec = firm.spec
    cal = _Calendar(firm)
    thresholds = _dirt_thresholds(spec.dirt, EXPENSE_DIRT)
    dup_rate, hostile_rate = spec.dirt.duplicate, spec.dirt.hostile_text
    blocked = firm.erp_blocked_projects
    next_id = EXPENSE_BASE
    categories = [(EXPENSE_CATEGORY_BASE + i, c) for i, c in enumerate(EXPENSE_CATEGORIES, start=1)]
    for plan in firm.plans:
        rng = random.Random(f"ex:{spec.seed}:{plan.user_id}")
        rows: list[Row] = []
        for di in range(len(cal.days)):
            if rng.random() >= 0.3:
                continue
            r = rng.random()
            kind = None
            for limit, k in thresholds:
                if r < limit:
                    kind = k
                    break
            if kind == "inactive_project" and not plan.archived:
                kind = None
            pool = plan.archived if kind == "inactive_project" else plan.options
            option = pool[int(rng.random() * len(pool))]
            cat_id, (_name, _unit, price, low, high, billable) = categories[
                int(rng.random() * len(categories))
            ]
            if price is not None:
                quantity = rng.randint(low, high)
                units: int | None = quantity
                total = quantity * price
            else:
                units = None
                total = rng.randint(low // 100, high // 100) * 100 + int(rng.random() * 100)
            spent = cal.days[di]
            created = cal.created[di][int(rng.random() * 12)]
            if kind == "future_date":
                spent = cal.future[int(rng.random() * len(cal.future))]
                created = cal.future_created
            elif kind == "closed_period":
                spent = cal.closed[int(rng.random() * len(cal.closed))]
                created = cal.late_created[int(rng.random() * len(cal.late_created))]
            approved, updated, rejected = cal.status(rng, di, created)
            if kind == "future_date":
                approved, updated, rejected = False, created, False
            hostile = kind is None and rng.random() < hostile_rate
            notes = (
                HOSTILE_NOTES[int(rng.random() * len(HOSTILE_NOTES))]
                if hostile
                else f"{_name} for client work"
            )
            next_id += 1
            row = {
                "id": next_id,
                "spent_date": spent,
                "user_id": plan.user_id,
                "project_id": option.project_id,
                "expense_category_id": cat_id,
                "total_cost": money(total),
                "units": str(units) if units is not None else None,
                "notes": notes,
                "billable": billable,
                "is_closed": approved,
                "is_locked": approved,
                "is_billed": False,
                "created_at": created,
                "updated_at": updated,
            }
            rows.append(row)
            duplicate = kind is None and not hostile and rng.random() < dup_rate
            if kind is not None:
                sink.add(f"expenses.{kind}", next_id)
            elif hostile:
                sink.add("expenses.hostile_text", next_id)
            if kind is None:
                if rejected:
                    sink.add("expenses.rejected", next_id)
                elif not approved:
                    sink.add("expenses.pending", next_id)
                if option.project_id in blocked:
                    sink.add("expenses.erp_blocked", next_id)
            if kind is None and not hostile and not duplicate:
                _mutate(rng, spec.workflow, sink, "expense", row, rejected)
            if duplicate:
                next_id += 1
                rows.append(dict(row, id=next_id, created_at=updated, updated_at=updated))
                sink.add("expenses.duplicate", next_id)
        yield rows


def _history_days(firm: Firm) -> list[tuple[list[date], str]]:
    """Per settled month: its workdays and its approval stamp (the next month's 2nd workday)."""
    out = []
    for first in firm.history_months:
        following = _add_months(first, 1)
        approved = _workdays(following, following + timedelta(days=9))[1]
        out.append((_workdays(first, _month_end(first)), f"{approved.isoformat()}T10:30:00Z"))
    return out


def _history_time_entries(firm: Firm) -> Iterator[list[Row]]:
    """Each active consultant's settled months of time (``FirmSpec.history_months``): the data
    month's booking pattern, clean and approved, only on days a project had started by."""
    starts = {p["id"]: p["starts_on"] for p in firm.psa["projects"]}
    months = _history_days(firm)
    next_id = TIME_ENTRY_HISTORY_BASE
    for plan in firm.plans:
        rng = random.Random(f"te-history:{firm.spec.seed}:{plan.user_id}")
        cost = money(plan.cost_cents)
        weights = [6] + [2] * (len(plan.options) - 1)
        cum = [sum(weights[: k + 1]) for k in range(len(weights))]
        rows: list[Row] = []
        for days, approved in months:
            for day in days:
                if rng.random() < 0.05:  # time off
                    continue
                spent = day.isoformat()
                n = 2 if rng.random() < 0.5 else 3
                free = 30 + int(rng.random() * 5) - 2 * n
                cuts = sorted(int(rng.random() * (free + 1)) for _ in range(n - 1))
                used: set[tuple[int, int]] = set()
                for a, b in zip([0, *cuts], [*cuts, free], strict=True):
                    option = plan.options[bisect.bisect(cum, rng.random() * cum[-1])]
                    billable = rng.random() < plan.utilisation
                    if billable:
                        task_id, rate_s = option.rate_strings[int(rng.random() * len(option.rate_strings))]
                    else:
                        task_id, rate_s = (
                            option.other_tasks[int(rng.random() * len(option.other_tasks))],
                            None,
                        )
                    if starts[option.project_id] > spent or (option.project_id, task_id) in used:
                        continue
                    used.add((option.project_id, task_id))
                    next_id += 1
                    created = f"{spent}T17:{int(rng.random() * 60):02d}:00Z"
                    rows.append(
                        {
                            "id": next_id,
                            "spent_date": spent,
                            "user_id": plan.user_id,
                            "project_id": option.project_id,
                            "task_id": task_id,
                            "hours": HOURS[2 + b - a],
                            "notes": f"{NOTE_VERBS[int(rng.random() * 8)]} {NOTE_OBJECTS[int(rng.random() * 10)]}",
                            "billable": billable,
                            "billable_rate": rate_s,
                            "cost_rate": cost,
                            "is_closed": True,
                            "is_locked": True,
                            "is_billed": False,
                            "external_reference": None,
                            "created_at": created,
                            "updated_at": approved,
                        }
                    )
        yield rows


def _history_expenses(firm: Firm) -> Iterator[list[Row]]:
    """Each active consultant's settled months of expenses (about 0.3 per working day), clean."""
    starts = {p["id"]: p["starts_on"] for p in firm.psa["projects"]}
    months = _history_days(firm)
    next_id = EXPENSE_HISTORY_BASE
    categories = [(EXPENSE_CATEGORY_BASE + i, c) for i, c in enumerate(EXPENSE_CATEGORIES, start=1)]
    for plan in firm.plans:
        rng = random.Random(f"ex-history:{firm.spec.seed}:{plan.user_id}")
        rows: list[Row] = []
        for days, approved in months:
            for day in days:
                if rng.random() >= 0.3:
                    continue
                option = plan.options[int(rng.random() * len(plan.options))]
                cat_id, (name, _unit, price, low, high, billable) = categories[
                    int(rng.random() * len(categories))
                ]
                units = rng.randint(low, high) if price is not None else None
                total = units * price if units is not None and price is not None else rng.randint(low, high)
                spent = day.isoformat()
                if starts[option.project_id] > spent:
                    continue
                next_id += 1
                rows.append(
                    {
                        "id": next_id,
                        "spent_date": spent,
                        "user_id": plan.user_id,
                        "project_id": option.project_id,
                        "expense_category_id": cat_id,
                        "total_cost": money(total),
                        "units": str(units) if units is not None else None,
                        "notes": f"{name} for client work",
                        "billable": billable,
                        "is_closed": True,
                        "is_locked": True,
                        "is_billed": False,
                        "created_at": f"{spent}T18:00:00Z",
                        "updated_at": approved,
                    }
                )
        yield rows


def _chunked(per_user: Iterator[list[Row]], chunk_size: int) -> Iterator[list[Row]]:
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    buffer: list[Row] = []
    for rows in per_user:
        buffer.extend(rows)
        while len(buffer) >= chunk_size:
            yield buffer[:chunk_size]
            buffer = buffer[chunk_size:]
    if buffer:
        yield buffer


def iter_time_entries(firm: Firm, chunk_size: int = 20_000) -> Iterator[list[Row]]:
    """The month's time entries (after the settled history, if any) as PSA seed rows, in chunks
    of at most ``chunk_size``."""
    return _chunked(
        itertools.chain(_history_time_entries(firm), _time_entries(firm, _Sink(record=False))), chunk_size
    )


def iter_expenses(firm: Firm, chunk_size: int = 20_000) -> Iterator[list[Row]]:
    """The month's expenses (after the settled history, if any) as PSA seed rows, in chunks of at
    most ``chunk_size``."""
    return _chunked(
        itertools.chain(_history_expenses(firm), _expenses(firm, _Sink(record=False))), chunk_size
    )


def iter_schedule(firm: Firm, chunk_size: int = 20_000) -> Iterator[list[Row]]:
    """Weekly scheduled hours per person and project for the next ``schedule_weeks`` weeks.

    Starts on the Monday of the week holding the first day after the data month. Over-allocated
    people are booked 115-130 % of their capacity; others 60-95 %.
    """

    def per_user() -> Iterator[list[Row]]:
        first = firm.month_end + timedelta(days=1)
        monday = first - timedelta(days=first.weekday())
        weeks = [(monday + timedelta(weeks=k)) for k in range(firm.spec.schedule_weeks)]
        week_s = [w.isoformat() for w in weeks]
        ends = {p["id"]: p["ends_on"] for p in firm.psa["projects"]}
        next_id = SCHEDULE_BASE
        for plan in firm.plans:
            rng = random.Random(f"sc:{firm.spec.seed}:{plan.user_id}")
            load = rng.randint(115, 130) if plan.overallocated else rng.randint(60, 95)
            target = plan.weekly_quarters * load // 100
            weights = [6] + [2] * (len(plan.options) - 1)
            shares = [target * w // sum(weights) for w in weights]
            shares[0] += target - sum(shares)
            rows: list[Row] = []
            for week in week_s:
                for option, quarters in zip(plan.options, shares, strict=True):
                    if quarters <= 0 or week > ends[option.project_id]:
                        continue
                    next_id += 1
                    rows.append(
                        {
                            "id": next_id,
                            "user_id": plan.user_id,
                            "project_id": option.project_id,
                            "week_start": week,
                            "hours": hours(quarters),
                        }
                    )
            yield rows

    return _chunked(per_user(), chunk_size)


# --- reports ----------------------------------------------------------------------------------


def _scan(firm: Firm) -> _Scan:
    if firm._scan_cache is None:
        sink = _Sink()
        rows = {
            "time_entries": sum(len(r) for r in _time_entries(firm, sink)),
            "expenses": sum(len(r) for r in _expenses(firm, sink)),
            "history_time_entries": sum(len(r) for r in _history_time_entries(firm)),
            "history_expenses": sum(len(r) for r in _history_expenses(firm)),
        }
        ids: dict[str, list[int]] = {}
        for entity, kinds in (("time_entries", TIME_ENTRY_DIRT), ("expenses", EXPENSE_DIRT)):
            for kind in (*kinds, "pending", "rejected", "erp_blocked"):
                ids[f"{entity}.{kind}"] = sorted(sink.ids.get(f"{entity}.{kind}", []))
        for key, values in firm.master_dirt.items():
            ids[key] = list(values)
        order = {"approve": 0, "edit": 1, "unapprove": 2, "delete": 3}
        ordered = sorted(
            sink.mutations, key=lambda m: (m["entity"] != "time_entry", order[m["kind"]], m["id"])
        )
        firm._scan_cache = _Scan(
            counts={k: len(v) for k, v in ids.items()}, ids=ids, mutations=ordered, rows=rows
        )
    return firm._scan_cache


def dirt_report(firm: Firm) -> dict[str, int]:
    """Exact counts per dirt kind (``time_entries.duplicate``, ``erp.customer_unknown``...).

    Also counts ``*.pending`` and ``*.rejected`` rows (clean, not approved at seed time) and
    ``*.erp_blocked`` rows: clean in the PSA, but on a project whose ERP job is missing or inactive
    or whose customer is unknown to or inactive in the ERP (held by master-data validation).
    """
    return dict(_scan(firm).counts)


def dirt_ids(firm: Firm) -> dict[str, list[Any]]:
    """The ids behind :func:`dirt_report`: PSA ids for rows, duplicate-name client pairs, CRM ids."""
    return {k: list(v) for k, v in _scan(firm).ids.items()}


def quarantine_ids(firm: Firm, entity: str = "time_entries") -> set[int]:
    """Ids of rows of ``entity`` (``time_entries`` or ``expenses``) a pipeline must quarantine."""
    ids = _scan(firm).ids
    return {i for kind in QUARANTINE_KINDS for i in ids.get(f"{entity}.{kind}", [])}


def mutations(firm: Firm) -> list[Row]:
    """Post-seed changes in their deterministic order: approvals, edits, unapprovals, deletes.

    Each targets a distinct clean row, so the order changes no final state; time entries come
    first, then expenses.
    """
    return [dict(m, changes=dict(m["changes"])) for m in _scan(firm).mutations]


def master_counts(firm: Firm) -> dict[str, int]:
    """Row counts of every master-data list, keyed ``system.list``."""
    counts = {}
    for system, lists in (("psa", firm.psa), ("erp", firm.erp), ("crm", firm.crm)):
        for name, rows in lists.items():
            counts[f"{system}.{name}"] = len(rows)
    return counts


def summary(firm: Firm) -> dict[str, Any]:
    """Counts of everything generated plus the dirt report (what the CLI prints)."""
    scan = _scan(firm)
    te = scan.rows["time_entries"] + scan.rows["history_time_entries"]
    ex = scan.rows["expenses"] + scan.rows["history_expenses"]
    sc = sum(len(c) for c in iter_schedule(firm))
    history = {}
    if firm.history_months:  # only then, so that the default summary keeps its keys
        history = {
            "history": {
                "months": [m.isoformat() for m in firm.history_months],
                "psa.time_entries": scan.rows["history_time_entries"],
                "psa.expenses": scan.rows["history_expenses"],
            }
        }
    kinds: dict[str, int] = {}
    for m in _scan(firm).mutations:
        key = f"{m['entity']}.{m['kind']}"
        kinds[key] = kinds.get(key, 0) + 1
    return {
        "seed": firm.spec.seed,
        "month": firm.month_start.isoformat(),
        "today": firm.today.isoformat(),
        "counts": {**master_counts(firm), "psa.time_entries": te, "psa.expenses": ex, "psa.schedule": sc},
        "mutations": dict(sorted(kinds.items())),
        "dirt": dirt_report(firm),
        **history,
    }
