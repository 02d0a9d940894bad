"""Validate staged PSA time entries and expenses into canonical records, or quarantine them.

Every staged version of a run gets exactly one verdict: valid (upserted into ``canonical``) or
quarantined (an ``exceptions.item`` with a reason code and an owner from config). The rules
are pure functions over the parsed payload and the run's reference data, so they are unit
tested without a database; :func:`validate_run` streams a run's staged rows through them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec
import psycopg
from psycopg import postgres, pq
from pydantic import BaseModel, ValidationError

from psa_erp_sync import money
from psa_erp_sync.clients import psa_models
from psa_erp_sync.config import Config
from psa_erp_sync.contracts import kinds, records
from psa_erp_sync.contracts.kinds import REFERENCE_RECORD_TYPES
from psa_erp_sync.ods import arrays, audit, collector, connections, staging, table_stats
from psa_erp_sync.ods import exceptions as exception_queue
from psa_erp_sync.validation import staged_json
from psa_erp_sync.validation.fx import RateBook

log = logging.getLogger(__name__)

Kind = kinds.KindName
ENDPOINTS: dict[Kind, str] = {kind.name: kind.psa_endpoint for kind in kinds.KINDS.values()}
TABLES: dict[Kind, str] = {kind.name: kind.canonical_table for kind in kinds.KINDS.values()}

#: Every reason code a verdict can carry (each has an owner and a documented fix in config/).
REASON_CODES = (
    "ID_OUT_OF_RANGE",
    "TIMESTAMP_INVALID",
    "UPDATED_AT_IN_FUTURE",
    "SCHEMA_INVALID",
    "HOURS_INVALID",
    "RATE_INVALID",
    "USER_UNKNOWN",
    "PROJECT_UNKNOWN",
    "PROJECT_INACTIVE",
    "LEGAL_ENTITY_UNKNOWN",
    "CURRENCY_MISMATCH",
    "FUTURE_DATED",
    "TASK_UNKNOWN",
    "RATE_MISSING",
    "AMOUNT_OUT_OF_RANGE",
    "DUPLICATE_SUSPECTED",
    "REFERENCE_INVALID",
    "FX_RATE_MISSING",
)
#: Ids are stored and compared as ``bigint``: 1 .. 2**63 - 1.
MAX_ID = 2**63 - 1
#: Hours of one time entry: at most a day.
MAX_HOURS = Decimal(24)
_ZERO = Decimal(0)
#: Hours are rounded to this before any amount is computed: ``canonical.hours`` is numeric(9,2)
#: and that rounded value is what the ERP receives and multiplies by the rate.
HOURS_QUANTUM = Decimal("0.01")
#: Source timestamps before this are not plausible PSA timestamps.
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
#: An ``updated_at`` later than the fetch of its record by more than this is a clock error (a
#: PSA clock or an import stamped in the future): quarantined, never trusted. Smaller leads
#: (clock skew) are accepted; the watermark is capped at the extract's start regardless.
FUTURE_TOLERANCE = timedelta(hours=1)


@dataclass(frozen=True)
class ProjectRef:
    id: int
    is_active: bool
    legal_entity: str | None
    currency: str | None


ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True)
class InvalidReference:
    """A reference record that does not match its contract: quarantined ``REFERENCE_INVALID``."""

    record_type: str
    source_id: str  # as staged
    version_hash: str
    fields: tuple[str, ...]


def _id_of(source_id: str) -> int | None:
    """The integer id a staged source id names, if it is one a reference can be looked up by."""
    if source_id.isascii() and source_id.isdigit() and 1 <= int(source_id) <= MAX_ID:
        return int(source_id)
    return None


def _nested_id(payload: Any, name: str) -> int | None:
    ref = payload.get(name) if isinstance(payload, dict) else None
    value = ref.get("id") if isinstance(ref, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID:
        return value
    return None


def _invalid_fields(exc: ValidationError) -> tuple[str, ...]:
    return tuple(sorted({".".join(str(p) for p in err["loc"]) or "(record)" for err in exc.errors()}))


@dataclass(frozen=True)
class PsaReference:
    """The PSA reference data a run validates against: projects, users, task assignments.

    Reference records that do not match their contract are kept aside (``invalid``) instead of
    stopping the run; entries on an invalid project or user, or on a project one of whose task
    assignments is invalid, cannot be judged and are quarantined ``REFERENCE_INVALID``.
    """

    projects: dict[int, ProjectRef]
    users: dict[int, bool]
    task_assignments: frozenset[tuple[int, int]]
    expense_categories: frozenset[int] = frozenset()
    invalid: tuple[InvalidReference, ...] = ()
    invalid_projects: frozenset[int] = frozenset()
    invalid_users: frozenset[int] = frozenset()
    #: projects with at least one invalid task assignment (its task cannot be known)
    projects_with_invalid_assignments: frozenset[int] = frozenset()
    #: record type -> source ids of reference records that passed (their old items are resolved)
    passed: dict[str, frozenset[str]] = field(default_factory=dict)
    #: the ERP's exchange rates (``master.currency_rate``): foreign-currency work needs one
    fx_rates: RateBook = field(default_factory=RateBook)

    @classmethod
    def from_rows(
        cls, rows: dict[str, list[tuple[str, str, Any]]], fx_rates: RateBook | None = None
    ) -> PsaReference:
        """Build from staged reference rows, endpoint -> [(source id, payload hash, payload)], and
        the ERP's exchange rates (none: foreign-currency entries are quarantined ``FX_RATE_MISSING``)."""
        invalid: list[InvalidReference] = []
        passed: dict[str, set[str]] = {t: set() for t in REFERENCE_RECORD_TYPES.values()}

        def reject(endpoint: str, source_id: str, version_hash: str, fields: tuple[str, ...]) -> None:
            invalid.append(
                InvalidReference(REFERENCE_RECORD_TYPES[endpoint], source_id, version_hash, fields)
            )

        def parsed(
            endpoint: str, model: type[ModelT], bad_id: Callable[[str, Any], int | None], bad: set[int]
        ) -> Iterator[ModelT]:
            """The endpoint's records that pass ``model``; each that does not is rejected and its
            id (``bad_id``) noted in ``bad``."""
            for source_id, version_hash, payload in rows.get(endpoint, []):
                try:
                    record = model.model_validate(payload)
                except ValidationError as exc:
                    reject(endpoint, source_id, version_hash, _invalid_fields(exc))
                    if (rid := bad_id(source_id, payload)) is not None:
                        bad.add(rid)
                    continue
                passed[REFERENCE_RECORD_TYPES[endpoint]].add(source_id)
                yield record

        projects: dict[int, ProjectRef] = {}
        bad_projects: set[int] = set()
        for project in parsed("/v2/projects", psa_models.Project, lambda sid, _: _id_of(sid), bad_projects):
            projects[project.id] = ProjectRef(
                project.id, project.is_active, project.legal_entity, project.currency
            )
        users: dict[int, bool] = {}
        bad_users: set[int] = set()
        for user in parsed("/v2/users", psa_models.User, lambda sid, _: _id_of(sid), bad_users):
            users[user.id] = user.is_active
        assignments: set[tuple[int, int]] = set()
        bad_assignment_projects: set[int] = set()
        for assignment in parsed(
            "/v2/task_assignments",
            psa_models.TaskAssignment,
            lambda _, payload: _nested_id(payload, "project"),
            bad_assignment_projects,
        ):
            if assignment.is_active and assignment.project is not None and assignment.task is not None:
                assignments.add((assignment.project.id, assignment.task.id))
        categories: set[int] = set()
        for source_id, version_hash, payload in rows.get("/v2/expense_categories", []):
            category_id = payload.get("id") if isinstance(payload, dict) else None
            if not (
                isinstance(category_id, int)
                and not isinstance(category_id, bool)
                and 1 <= category_id <= MAX_ID
            ):
                reject("/v2/expense_categories", source_id, version_hash, ("id",))
                continue
            passed["expense_category"].add(source_id)
            categories.add(category_id)
        # A record with a valid version in this run is known by it; its invalid versions still
        # get their items, but do not make entries on it unjudgeable.
        return cls(
            projects,
            users,
            frozenset(assignments),
            frozenset(categories),
            invalid=tuple(invalid),
            invalid_projects=frozenset(bad_projects - projects.keys()),
            invalid_users=frozenset(bad_users - users.keys()),
            projects_with_invalid_assignments=frozenset(bad_assignment_projects),
            passed={t: frozenset(ids) for t, ids in passed.items()},
            fx_rates=fx_rates or RateBook(),
        )

    @classmethod
    def from_staging(
        cls, conn: psycopg.Connection, run_keys: dict[str, str], source_system: str = "psa"
    ) -> PsaReference:
        """Build from the versions staged by this run's reference extracts (endpoint -> run key)."""

        def rows(endpoint: str) -> list[tuple[str, str, Any]]:
            return [
                (r[0], r[1], staging.decode_payload(r[2]))  # the payload is text (migration 0040)
                for r in conn.execute(
                    "SELECT source_id, payload_hash, payload FROM staging.raw_record"
                    " WHERE source_system = %s AND endpoint = %s AND last_run_key = %s",
                    (source_system, endpoint, run_keys[endpoint]),
                )
            ]

        return cls.from_rows(
            {endpoint: rows(endpoint) for endpoint in REFERENCE_RECORD_TYPES if endpoint in run_keys},
            RateBook.from_ods(conn),
        )


@dataclass(frozen=True)
class Verdict:
    source_id: str
    version_hash: str
    legal_entity: str | None
    reason_code: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    row: dict[str, Any] | None = None  # the canonical row when valid
    #: the row's ``COPY`` tuple when a common case built it (:class:`_CommonTime`,
    #: :class:`_CommonExpense`; None: :func:`_built_by_id` builds it through the contract); not
    #: part of the verdict's value
    built: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def valid(self) -> bool:
        return self.reason_code is None


@dataclass
class ValidationResult:
    kind: Kind
    run_key: str
    staged_versions: int = 0
    valid: int = 0
    quarantined: int = 0
    unchanged: int = 0
    stale: int = 0  # valid, but canonical already holds a newer version (or a later deletion)
    deleted: int = 0
    resolved_exceptions: int = 0
    reference_invalid: int = 0  # reference records (projects, users, ...) quarantined: not entries
    by_reason: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def check(self) -> None:
        """The run's accounting identity: every staged version has exactly one verdict."""
        if self.staged_versions != self.valid + self.quarantined:
            raise RuntimeError(
                f"{self.kind} {self.run_key}: staged {self.staged_versions} != valid {self.valid} + quarantined {self.quarantined}"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "staged_versions": self.staged_versions,
            "valid": self.valid,
            "quarantined": self.quarantined,
            "unchanged": self.unchanged,
            "stale": self.stale,
            "deleted": self.deleted,
            "resolved_exceptions": self.resolved_exceptions,
            "reference_invalid": self.reference_invalid,
            "by_reason": dict(sorted(self.by_reason.items())),
        }


def fingerprint(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()


_sha256 = hashlib.sha256
_from_hex = bytes.fromhex


def _fingerprint6(a: object, b: object, c: object, d: object, e: object, f: object) -> str:
    """:func:`fingerprint` of six parts, the same text (``!s`` is ``str``) without the calls of
    ``map`` and ``join`` (once per valid entry)."""
    return _sha256(f"{a!s}\x1f{b!s}\x1f{c!s}\x1f{d!s}\x1f{e!s}\x1f{f!s}".encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _today_in(as_of: datetime, timezone: str) -> date:
    """The date at ``as_of`` in ``timezone`` (a run asks for the same few, once per entry)."""
    return as_of.astimezone(ZoneInfo(timezone)).date()


#: Minor units by (amount, currency) and by (hours, rate in minor units, currency): a month's
#: entries repeat a few rates and hours, and each conversion is Decimal work in Python. The
#: result depends on the values only (equal Decimals of any exponent give the same int), so a hit
#: is exact. Bounded: emptied when full. Conversions that fail are not kept.
_MINOR_OF: dict[tuple[Any, ...], int] = {}
_MINOR_OF_MAX = 65536


def _to_minor(amount: Decimal, currency: str) -> int:
    """:func:`money.to_minor_checked`, memoised (:data:`_MINOR_OF`).

    :raises money.AmountOutOfRange: as :func:`money.to_minor_checked`."""
    key = (amount, currency)
    try:
        return _MINOR_OF[key]
    except KeyError:
        pass
    except TypeError:  # a signalling NaN is not hashable: never a valid amount anyway
        return money.to_minor_checked(amount, currency)
    minor = money.to_minor_checked(amount, currency)
    if len(_MINOR_OF) >= _MINOR_OF_MAX:
        _MINOR_OF.clear()
    _MINOR_OF[key] = minor
    return minor


def _time_amount_minor(hours: Decimal, bill_rate_minor: int, currency: str) -> int:
    """The amount of ``hours`` at ``bill_rate_minor``, as the ERP computes it (memoised).

    :raises money.AmountOutOfRange: the amount does not fit a ``bigint``."""
    key = (hours, bill_rate_minor, currency)
    minor = _MINOR_OF.get(key)
    if minor is None:
        minor = money.to_minor_checked(hours * money.from_minor(bill_rate_minor, currency), currency)
        if len(_MINOR_OF) >= _MINOR_OF_MAX:
            _MINOR_OF.clear()
        _MINOR_OF[key] = minor
    return minor


def _depends_on(record_type: str, ref_id: int) -> dict[str, Any]:
    """Detail of an entry that cannot be judged: the invalid reference record it depends on."""
    return {"depends_on": {"record_type": record_type, "source_id": str(ref_id)}}


def _checks_of(
    record: _Record, *, ref: PsaReference, config: Config, as_of: datetime
) -> tuple[str | None, dict[str, Any], ProjectRef | None]:
    """The checks of an entry's user, project, legal entity, currency and date, in this order
    (the first that fails is the reason)."""
    user_id = record.user.id
    if user_id in ref.invalid_users:
        return "REFERENCE_INVALID", _depends_on("user", user_id), None
    if user_id not in ref.users:
        return "USER_UNKNOWN", {"user_id": user_id}, None
    project_id = record.project.id
    project = ref.projects.get(project_id)
    if project is None:
        if project_id in ref.invalid_projects:
            return "REFERENCE_INVALID", _depends_on("project", project_id), None
        return "PROJECT_UNKNOWN", {"project_id": project_id}, None
    if not project.is_active:
        return "PROJECT_INACTIVE", {"project_id": project_id}, project
    entity = config.legal_entities.legal_entities.get(project.legal_entity)  # type: ignore[arg-type]
    if entity is None:
        return (
            "LEGAL_ENTITY_UNKNOWN",
            {"project_id": project_id, "legal_entity": project.legal_entity},
            project,
        )
    if project.currency is None or not _ISO_CURRENCY.match(project.currency):
        # Not a currency at all: foreign-currency work in a real currency is valid (:func:`_fx_of`).
        return (
            "CURRENCY_MISMATCH",
            {"project_currency": project.currency, "legal_entity_currency": entity.currency},
            project,
        )
    if record.spent_date > _today_in(as_of, entity.timezone):
        return "FUTURE_DATED", {"spent_date": record.spent_date.isoformat()}, project
    return None, {}, project


_Parsed = TypeVar("_Parsed", psa_models.TimeEntry, psa_models.Expense)
#: A parsed time entry or expense: by its model, or by the one-pass decoder (same values).
_Record = psa_models.TimeEntry | psa_models.Expense | staged_json.ParsedTimeEntry | staged_json.ParsedExpense
_ISO_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class _Fx:
    """How an entry's transaction amount becomes its functional amount."""

    functional_currency: str
    rate: Decimal
    rate_date: date | None  # None: same currency (rate 1)
    source: str | None

    def row(self, amount_minor: int, currency: str) -> dict[str, Any]:
        """The canonical row's functional columns for ``amount_minor`` of ``currency``.

        :raises money.AmountOutOfRange: the functional amount does not fit a ``bigint``."""
        if self.rate_date is None:  # same currency: the amount itself (no Decimal work per row)
            functional_minor = amount_minor
        else:
            functional_minor = money.convert_minor(
                amount_minor, currency, self.rate, self.functional_currency
            )
        if abs(functional_minor) > money.MAX_MINOR:
            raise money.AmountOutOfRange(
                f"{self.functional_currency} amount beyond {money.MAX_MINOR} minor units"
            )
        return {
            "functional_amount_minor": functional_minor,
            "functional_currency": self.functional_currency,
            "fx_rate": self.rate,
            "fx_rate_date": self.rate_date,
            "fx_rate_source": self.source,
        }


@functools.lru_cache(maxsize=64)
def _same_currency(functional: str) -> _Fx:
    """The conversion of an amount already in its entity's functional currency (one per currency)."""
    return _Fx(functional, Decimal(1), None, None)


def _fx_of(
    project: ProjectRef, spent_date: date, *, ref: PsaReference, config: Config
) -> _Fx | tuple[str, dict[str, Any]]:
    """The conversion of a valid entry's amount into its legal entity's functional currency, or
    ``FX_RATE_MISSING`` when the project's currency is foreign and the ERP has no rate by then."""
    assert project.currency is not None and project.legal_entity is not None
    functional = config.legal_entities.legal_entities[project.legal_entity].currency
    if project.currency == functional:
        return _same_currency(functional)
    rate = ref.fx_rates.rate_on(project.currency, functional, spent_date)
    if rate is None:
        return (
            "FX_RATE_MISSING",
            {
                "transaction_currency": project.currency,
                "functional_currency": functional,
                "spent_date": spent_date.isoformat(),
            },
        )
    return _Fx(functional, rate.rate, rate.effective_date, rate.source)


def _out_of_range_ids(payload: dict[str, Any], nested: tuple[str, ...]) -> list[str]:
    """Integer ids outside 1 .. 2**63 - 1 (the record's and its references'), by field name."""
    ids: dict[str, Any] = {"id": payload.get("id")}
    for name in nested:
        ref = payload.get(name)
        ids[f"{name}.id"] = ref.get("id") if isinstance(ref, dict) else None
    return sorted(
        name
        for name, value in ids.items()
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= MAX_ID
    )


def _screen(
    payload: Any, version_hash: str, *, nested: tuple[str, ...], fetched_at: datetime | None
) -> Verdict | None:
    """Checks that come before the model: ids that no ``bigint`` holds, timestamps that do not
    parse (or are implausible), an ``updated_at`` in the future. None when the payload passes."""
    if not isinstance(payload, dict):
        return Verdict("None", version_hash, None, "SCHEMA_INVALID", {"fields": ["(record)"]})
    source_id = str(payload.get("id"))
    out_of_range = _out_of_range_ids(payload, nested)
    if out_of_range:
        return Verdict(source_id, version_hash, None, "ID_OUT_OF_RANGE", {"fields": out_of_range})
    invalid = [
        name
        for name in ("created_at", "updated_at")
        if (parsed := staging.source_timestamp(payload.get(name))) is None or parsed < EARLIEST_TIMESTAMP
    ]
    if invalid:
        return Verdict(source_id, version_hash, None, "TIMESTAMP_INVALID", {"fields": invalid})
    updated_at = staging.source_timestamp(payload["updated_at"])
    if fetched_at is not None and updated_at is not None and updated_at > fetched_at + FUTURE_TOLERANCE:
        return Verdict(
            source_id,
            version_hash,
            None,
            "UPDATED_AT_IN_FUTURE",
            {"updated_at": updated_at.isoformat(), "fetched_at": fetched_at.astimezone(UTC).isoformat()},
        )
    return None


#: The nested references whose ids are screened, by kind (the order of ``ID_OUT_OF_RANGE`` fields).
_NESTED: dict[Kind, tuple[str, ...]] = {
    "time_entry": ("user", "project", "task"),
    "expense_entry": ("user", "project", "expense_category"),
}


def _utc(value: datetime) -> datetime | None:
    """``value`` in UTC as :func:`staging.source_timestamp` has it (None where that gives None)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return None
    try:
        return value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


#: Years in which an aware datetime may not be expressible in UTC (checked the slow way).
_EDGE_YEARS = frozenset((1, 9999))


def _screen_parsed(
    record: _Record,
    version_hash: str,
    *,
    nested: tuple[str, ...],
    fetched_at: datetime | None,
) -> Verdict | None:
    """:func:`_screen` of a payload that passed its model, from the model's values: the model's
    ids are the payload's integers and its timestamps ``datetime.fromisoformat`` of the payload's
    strings with a zone, so the checks and their details are the same."""
    refs = [getattr(record, name).id for name in nested]
    if not (1 <= record.id <= MAX_ID and min(refs) >= 1 and max(refs) <= MAX_ID):
        ids = {"id": record.id, **{f"{name}.id": ref_id for name, ref_id in zip(nested, refs, strict=True)}}
        out_of_range = sorted(name for name, value in ids.items() if not 1 <= value <= MAX_ID)
        return Verdict(str(record.id), version_hash, None, "ID_OUT_OF_RANGE", {"fields": out_of_range})
    return _screen_times(record, version_hash, fetched_at=fetched_at)


def _screen_times(record: _Record, version_hash: str, *, fetched_at: datetime | None) -> Verdict | None:
    """The screen's timestamp checks of :func:`_screen_parsed` (the one-pass decoder has checked
    the ids: :mod:`~psa_erp_sync.validation.staged_json` declines an id out of range)."""
    created_at, updated_at = record.created_at, record.updated_at
    # Aware datetimes compare as instants; only in the years 1 and 9999 may one not be in UTC.
    if (
        created_at.year in _EDGE_YEARS
        or updated_at.year in _EDGE_YEARS
        or created_at < EARLIEST_TIMESTAMP
        or updated_at < EARLIEST_TIMESTAMP
    ):
        invalid = [
            name
            for name, value in (("created_at", created_at), ("updated_at", updated_at))
            if (parsed := _utc(value)) is None or parsed < EARLIEST_TIMESTAMP
        ]
        if invalid:
            return Verdict(str(record.id), version_hash, None, "TIMESTAMP_INVALID", {"fields": invalid})
    if fetched_at is not None and updated_at > fetched_at + FUTURE_TOLERANCE:
        return Verdict(
            str(record.id),
            version_hash,
            None,
            "UPDATED_AT_IN_FUTURE",
            {
                "updated_at": updated_at.astimezone(UTC).isoformat(),
                "fetched_at": fetched_at.astimezone(UTC).isoformat(),
            },
        )
    return None


def _parse(model: type[_Parsed], payload: dict[str, Any], version_hash: str) -> _Parsed | Verdict:
    """The payload as the PSA's model, or a SCHEMA_INVALID verdict naming the fields (never values)."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
        return Verdict(str(payload.get("id")), version_hash, None, "SCHEMA_INVALID", {"fields": fields})


def round_hours(hours: Decimal) -> Decimal:
    """Hours at the precision canonical stores and the ERP receives: two places, half up (as
    PostgreSQL rounds numeric). Values already that precise are returned unchanged."""
    rounded = hours.quantize(HOURS_QUANTUM, rounding=ROUND_HALF_UP)
    return hours if rounded == hours else rounded


def judge_time_entry(
    payload: dict[str, Any],
    version_hash: str,
    *,
    ref: PsaReference,
    config: Config,
    as_of: datetime,
    source_system: str = "psa",
    fetched_at: datetime | None = None,
) -> Verdict:
    """One staged Harvest time entry -> a verdict (pure; no I/O).

    ``fetched_at`` (when staging received this version) enables the ``UPDATED_AT_IN_FUTURE`` check.
    Amounts are computed from the hours and rate exactly as the ERP receives them: hours rounded
    to two places (:func:`round_hours`), the rate to the currency's minor unit.
    """
    screened = _screen(payload, version_hash, nested=_NESTED["time_entry"], fetched_at=fetched_at)
    if screened is not None:
        return screened
    parsed = _parse(psa_models.TimeEntry, payload, version_hash)
    if isinstance(parsed, Verdict):
        return parsed
    return _time_entry_verdict(
        parsed, version_hash, ref=ref, config=config, as_of=as_of, source_system=source_system
    )


def _time_entry_verdict(
    entry: psa_models.TimeEntry | staged_json.ParsedTimeEntry,
    version_hash: str,
    *,
    ref: PsaReference,
    config: Config,
    as_of: datetime,
    source_system: str,
) -> Verdict:
    """The rules of a time entry that passed the screen and its model."""
    source_id = str(entry.id)
    # The ERP refuses hours <= 0 of what it receives (the hours rounded to two places; hours out of
    # range are not rounded: a huge exponent does not quantize).
    hours = round_hours(entry.hours) if _ZERO < entry.hours <= MAX_HOURS else _ZERO
    if hours <= _ZERO:
        return Verdict(
            source_id,
            version_hash,
            None,
            "HOURS_INVALID",
            {"field": "hours", "allowed": "over 0 (at least 0.005, which rounds to 0.01) to 24"},
        )
    if entry.billable_rate is not None and entry.billable_rate < _ZERO:
        return Verdict(
            source_id, version_hash, None, "RATE_INVALID", {"field": "billable_rate", "allowed": ">= 0"}
        )
    reason, detail, project = _checks_of(entry, ref=ref, config=config, as_of=as_of)
    legal_entity = project.legal_entity if project else None
    assigned = (entry.project.id, entry.task.id) in ref.task_assignments
    if reason is None and not assigned and entry.project.id in ref.projects_with_invalid_assignments:
        reason, detail = (
            "REFERENCE_INVALID",
            {
                "depends_on": {"record_type": "task_assignment", "project_id": str(entry.project.id)},
                "task_id": entry.task.id,
            },
        )
    if reason is None and not assigned:
        reason, detail = "TASK_UNKNOWN", {"project_id": entry.project.id, "task_id": entry.task.id}
    if reason is None and entry.billable and entry.billable_rate is None:
        reason, detail = "RATE_MISSING", {"project_id": entry.project.id, "task_id": entry.task.id}
    if reason is not None:
        return Verdict(source_id, version_hash, legal_entity, reason, detail)
    assert project is not None and project.currency is not None and legal_entity is not None
    fx = _fx_of(project, entry.spent_date, ref=ref, config=config)
    if not isinstance(fx, _Fx):
        return Verdict(source_id, version_hash, legal_entity, fx[0], fx[1])
    rate = entry.billable_rate if entry.billable and entry.billable_rate is not None else _ZERO
    currency = project.currency
    try:
        bill_rate_minor = _to_minor(rate, currency)
        amount_minor = _time_amount_minor(hours, bill_rate_minor, currency)
        functional = fx.row(amount_minor, currency)  # both amounts: the transaction's and the entity's
    except money.AmountOutOfRange:
        out_of_range = {"fields": ["hours", "billable_rate"], "max_minor": money.MAX_MINOR}
        return Verdict(source_id, version_hash, legal_entity, "AMOUNT_OUT_OF_RANGE", out_of_range)
    row = {
        "source_system": source_system,
        "source_id": source_id,
        "version_hash": version_hash,
        "spent_date": entry.spent_date,
        "user_ref": str(entry.user.id),
        "project_ref": str(entry.project.id),
        "task_ref": str(entry.task.id),
        "legal_entity": legal_entity,
        "hours": hours,
        "billable": entry.billable,
        "bill_rate_minor": bill_rate_minor,
        "amount_minor": amount_minor,
        "currency": currency,
        "approved": entry.is_closed,
        "is_deleted": False,
        "fingerprint": _fingerprint6(
            entry.user.id, entry.spent_date, entry.project.id, entry.task.id, entry.hours, entry.notes or ""
        ),
        "source_updated_at": entry.updated_at,
        **functional,
    }
    return Verdict(source_id, version_hash, legal_entity, None, {}, row)


def judge_expense(
    payload: dict[str, Any],
    version_hash: str,
    *,
    ref: PsaReference,
    config: Config,
    as_of: datetime,
    source_system: str = "psa",
    fetched_at: datetime | None = None,
) -> Verdict:
    """One staged Harvest expense -> a verdict (pure; no I/O)."""
    screened = _screen(payload, version_hash, nested=_NESTED["expense_entry"], fetched_at=fetched_at)
    if screened is not None:
        return screened
    parsed = _parse(psa_models.Expense, payload, version_hash)
    if isinstance(parsed, Verdict):
        return parsed
    return _expense_verdict(
        parsed, version_hash, ref=ref, config=config, as_of=as_of, source_system=source_system
    )


def _expense_verdict(
    expense: psa_models.Expense | staged_json.ParsedExpense,
    version_hash: str,
    *,
    ref: PsaReference,
    config: Config,
    as_of: datetime,
    source_system: str,
) -> Verdict:
    """The rules of an expense that passed the screen and its model."""
    source_id = str(expense.id)
    reason, detail, project = _checks_of(expense, ref=ref, config=config, as_of=as_of)
    legal_entity = project.legal_entity if project else None
    if reason is None and expense.total_cost < 0:
        reason, detail = "SCHEMA_INVALID", {"fields": ["total_cost"]}
    if reason is not None:
        return Verdict(source_id, version_hash, legal_entity, reason, detail)
    assert project is not None and project.currency is not None and legal_entity is not None
    fx = _fx_of(project, expense.spent_date, ref=ref, config=config)
    if not isinstance(fx, _Fx):
        return Verdict(source_id, version_hash, legal_entity, fx[0], fx[1])
    try:
        amount_minor = _to_minor(expense.total_cost, project.currency)
        functional = fx.row(amount_minor, project.currency)
    except money.AmountOutOfRange:
        return Verdict(
            source_id,
            version_hash,
            legal_entity,
            "AMOUNT_OUT_OF_RANGE",
            {"fields": ["total_cost"], "max_minor": money.MAX_MINOR},
        )
    row = {
        "source_system": source_system,
        "source_id": source_id,
        "version_hash": version_hash,
        "spent_date": expense.spent_date,
        "user_ref": str(expense.user.id),
        "project_ref": str(expense.project.id),
        "legal_entity": legal_entity,
        "category": str(expense.expense_category.id),
        "billable": expense.billable,
        "amount_minor": amount_minor,
        "currency": project.currency,
        "approved": expense.is_closed,
        "is_deleted": False,
        "fingerprint": _fingerprint6(
            expense.user.id,
            expense.spent_date,
            expense.project.id,
            expense.expense_category.id,
            expense.total_cost,
            expense.notes or "",
        ),
        "source_updated_at": expense.updated_at,
        **functional,
    }
    return Verdict(source_id, version_hash, legal_entity, None, {}, row)


#: The canonical columns of each kind: the fields of its v1 contract (:mod:`~psa_erp_sync.contracts.records`).
_COLUMNS: Mapping[str, tuple[str, ...]] = records.FIELDS
# A twin as a tuple is contract_version, then the columns in order (how the COPY rows are built).
assert all(twin.__struct_fields__ == ("contract_version", *_COLUMNS[k]) for k, twin in records.TWINS.items())


#: Both amounts of an entry beyond the transaction amount (migration 0023): written to canonical
#: beside :data:`_COLUMNS`, not part of the canonical v1 ``record`` (its contract forbids unknown fields).
_FX_COLUMNS = ("functional_amount_minor", "functional_currency", "fx_rate", "fx_rate_date", "fx_rate_source")


def _staged(
    conn: psycopg.Connection, source_system: str, endpoint: str, run_key: str
) -> Iterator[tuple[str, str, str, datetime]]:
    """The run's staged versions in source order (:func:`_reading`), streamed."""
    with _reading(conn, source_system, endpoint, run_key) as versions:
        yield from versions


@contextlib.contextmanager
def _reading(
    conn: psycopg.Connection, source_system: str, endpoint: str, run_key: str
) -> Iterator[Iterator[tuple[str, str, str, datetime]]]:
    """The run's staged versions in source order (id, then update time), streamed:
    (payload as JSON text, payload hash, staged source id, fetched at). ``fetched_at`` is the
    start of the latest read that saw the version: the ordering tiebreak, and the reference for
    ``UPDATED_AT_IN_FUTURE``. The payload comes as text, decoded once, by the model
    (:func:`judge_staged`).

    The order never casts what a hostile payload may hold: numeric ids in numeric order, anything
    else after them; the versions of one source id stay together either way.

    Only the keys are sorted (each version's ``ctid`` in that order); the payloads are read a
    batch at a time by ``ctid`` (:func:`_batch_by_ctid`), so the first batch does not wait for
    every payload's text to be built and sorted, and the rest is read while a batch is judged. The
    reader's transaction is ``REPEATABLE READ``: one snapshot for the sort and every batch, in
    which a ``ctid`` names the same version throughout. ``conn`` must not be in a transaction.

    The sort and the first batch start on entry, in the reader's thread: the caller's own setup
    (:func:`validate_run`'s statistics and reference items, ~0.4-0.9 s when the month was just
    staged) runs meanwhile. Neither depends on the other: the reader's snapshot cannot see the
    caller's uncommitted writes, and statistics only choose plans.
    """
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    with (
        conn.cursor(name="staged_versions") as cur,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation-reader") as fetcher,
    ):
        # Only the fetcher thread uses ``conn`` from here on.
        first = fetcher.submit(_sorted_then_first_batch, conn, cur, source_system, endpoint, run_key)
        yield _in_source_order(conn, cur, fetcher, first)


def _sorted_then_first_batch(
    conn: psycopg.Connection, cur: psycopg.Cursor[Any], source_system: str, endpoint: str, run_key: str
) -> list[tuple[str, str, str, datetime]]:
    """Sort the run's keys (the ``ctid`` of each version, in source order) on the server, then
    read the first batch of payloads."""
    # ``fetched_at`` in UTC: psycopg's own loader then gives ``datetime.UTC`` datetimes (in the
    # session's zone, a ``ZoneInfo``, every comparison with a payload's timestamps called it for
    # its offset, and the ``COPY`` dumped it slower). The same instants; for this transaction only.
    # (A Python loader per row did the same at ~0.3 us a row more, and took the GIL per row.)
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    # The payload is text (migration 0040), never parsed here: numeric ids are told by the
    # staged source id (the id as the source wrote it); versions of one id by update time below.
    cur.execute(
        "SELECT ctid::text FROM staging.raw_record"
        " WHERE source_system = %s AND endpoint = %s AND last_run_key = %s"
        f" ORDER BY CASE WHEN {_NUMERIC_ID} THEN source_id::numeric END NULLS LAST, source_id",
        (source_system, endpoint, run_key),
    )
    return _batch_by_ctid(conn, cur)


def _in_source_order(
    conn: psycopg.Connection,
    cur: psycopg.Cursor[Any],
    fetcher: ThreadPoolExecutor,
    fetching: Future[list[tuple[str, str, str, datetime]]],
) -> Iterator[tuple[str, str, str, datetime]]:
    """The versions of the batches, each record's in update order. Read ahead: the next batch is
    fetched (the server's work and the transfer, outside the GIL) while this one is judged."""
    group: list[tuple[str, str, str, datetime]] = []
    while batch := fetching.result():
        fetching = fetcher.submit(_batch_by_ctid, conn, cur)
        for row in batch:
            if group and row[2] != group[0][2]:
                if len(group) == 1:  # the usual case: one version of the record
                    yield group[0]
                else:
                    yield from _in_update_order(group)
                group = []
            group.append(row)
    yield from _in_update_order(group)


#: SQL: the staged ``source_id`` is a number (at most 100 digits before and after the point), so it
#: sorts as one. An id of at most 100 characters is tested without the bounds: PostgreSQL expands
#: ``{1,100}`` into a hundred states, ~30 us a row, the largest cost of the read's sort (it is the
#: same test: no part of such an id has more than 100 digits).
_NUMERIC_ID = (
    "CASE WHEN length(source_id) <= 100 THEN source_id ~ '^-?[0-9]+(\\.[0-9]+)?$'"
    " ELSE source_id ~ '^-?[0-9]{1,100}(\\.[0-9]{1,100})?$' END"
)


class _UpdatedAt(msgspec.Struct):
    updated_at: Any = None


_updated_at_of = msgspec.json.Decoder(_UpdatedAt).decode


def _in_update_order(group: list[tuple[str, str, str, datetime]]) -> list[tuple[str, str, str, datetime]]:
    """The staged versions of one source id ordered by ``updated_at`` as SQL's ``payload->>'updated_at'``
    sorts (the text as sent; missing or null last). One version (the usual case) is not decoded."""
    if len(group) < 2:
        return group

    def key(row: tuple[str, str, str, datetime]) -> tuple[bool, str]:
        try:
            value = _updated_at_of(row[0]).updated_at
        except msgspec.MsgspecError:  # not an object, or what msgspec refuses: as if it had none
            value = None
        if value is None:
            return True, ""
        return False, value if isinstance(value, str) else msgspec.json.encode(value).decode()

    return sorted(group, key=key)


def _batch_by_ctid(
    conn: psycopg.Connection, keys: psycopg.Cursor[Any]
) -> list[tuple[str, str, str, datetime]]:
    """The next :data:`_READ_BATCH` versions of the sorted ``keys`` (ctids), in their order (one
    TID probe each, in the snapshot the keys were sorted in)."""
    ctids = [r[0] for r in keys.fetchmany(_READ_BATCH)]
    if not ctids:
        return []
    cur = conn.cursor()
    rows: list[tuple[str, str, str, datetime]] = cur.execute(
        "SELECT r.payload, r.payload_hash, r.source_id, r.fetched_at"
        " FROM unnest(%b::text[]::tid[]) WITH ORDINALITY AS k(row_id, n) JOIN staging.raw_record r ON r.ctid = k.row_id"
        " ORDER BY k.n",
        (arrays.tid_array(ctids),),
    ).fetchall()
    if len(rows) != len(ctids):  # cannot happen in one snapshot; never judge a run short
        raise RuntimeError(f"{len(ctids) - len(rows)} staged versions vanished from the reader's snapshot")
    return rows


#: Staged versions per fetch of :func:`_staged`.
_READ_BATCH = 5000


def _json_loads(data: bytes | str) -> Any:
    """msgspec (several times faster than json.loads), falling back to json for what it refuses
    (a number beyond a double, e.g. 1e400 with a fraction): such a payload is then judged, not fatal."""
    try:
        return msgspec.json.decode(data)
    except msgspec.MsgspecError:
        return json.loads(data)


_MODELS: dict[Kind, type[psa_models.TimeEntry] | type[psa_models.Expense]] = {
    "time_entry": psa_models.TimeEntry,
    "expense_entry": psa_models.Expense,
}


def judge_staged(
    kind: Kind,
    text: str | bytes,
    version_hash: str,
    *,
    ref: PsaReference,
    config: Config,
    as_of: datetime,
    source_system: str = "psa",
    fetched_at: datetime | None = None,
) -> Verdict:
    """A staged version from its JSON text -> the verdict :func:`judge_time_entry` or
    :func:`judge_expense` gives its decoded payload.

    The text is decoded in one pass into the values the rules read
    (:func:`psa_erp_sync.validation.staged_json.decode`: msgspec, typed no laxer than the model,
    values parsed by the model's own functions); a payload that decoder cannot vouch for is
    validated by the model straight from JSON. Either is then screened on the parsed values; only
    a payload the model refuses (rare: it is quarantined) is decoded into Python and judged by the
    per-payload path, so its verdict and the fields it names come from the same checks in the same
    order as ever.
    """
    record: _Record | None = staged_json.decode(kind, text)
    if record is not None:  # its ids are in range (the decoder's constraint)
        screened = _screen_times(record, version_hash, fetched_at=fetched_at)
    else:  # not a payload the one-pass decoder vouches for: the model decides
        try:
            record = _MODELS[kind].model_validate_json(text)
        except ValueError:  # a ValidationError, or JSON pydantic does not read: the payload path decides
            judge = judge_time_entry if kind == "time_entry" else judge_expense
            return judge(
                _json_loads(text),
                version_hash,
                ref=ref,
                config=config,
                as_of=as_of,
                source_system=source_system,
                fetched_at=fetched_at,
            )
        screened = _screen_parsed(record, version_hash, nested=_NESTED[kind], fetched_at=fetched_at)
    if screened is not None:
        return screened
    if isinstance(record, (psa_models.TimeEntry, staged_json.ParsedTimeEntry)):
        return _time_entry_verdict(
            record, version_hash, ref=ref, config=config, as_of=as_of, source_system=source_system
        )
    return _expense_verdict(
        record, version_hash, ref=ref, config=config, as_of=as_of, source_system=source_system
    )


def _count(result: ValidationResult, verdict: Verdict) -> None:
    if verdict.valid:
        result.valid += 1
    else:
        assert verdict.reason_code is not None
        result.quarantined += 1
        result.by_reason[verdict.reason_code] += 1


#: Savepoints a run's direct inserts may take (:func:`_insert_new`, one per chunk with new keys).
#: Past 64 subtransactions in one transaction, PostgreSQL's snapshots overflow their cache and
#: every session's visibility checks of this run's rows read ``pg_subtrans``; chunks after the
#: budget go through the temporary table as before.
DIRECT_INSERT_SAVEPOINTS = 48

#: The first chunk of a run is ``chunk // FIRST_CHUNK_SHARE`` records (:meth:`_Run.settle`).
FIRST_CHUNK_SHARE = 5


@dataclass
class _Run:
    """One validation run between its chunks: the verdicts held until written, the counts, and
    the fingerprints seen (for in-run duplicates). Its methods are the steps of :func:`validate_run`.

    Chunks are written by ``writer`` (one thread, on ``conn``) while the next chunk is judged:
    one write at a time, in order, each after the previous one finished (so a chunk's duplicate
    check sees the rows of the chunks before it). A write returns its counts, added to ``result``
    by this thread only.
    """

    conn: psycopg.Connection
    kind: Kind
    config: Config
    dag_run_id: str
    source_system: str
    chunk: int
    result: ValidationResult
    writer: ThreadPoolExecutor
    #: fingerprint digest -> the first source id that had it in this run (ids arrive ascending)
    first_with_fingerprint: dict[bytes, str] = field(default_factory=dict)
    valid_rows: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[Verdict] = field(default_factory=list)
    #: the ``COPY`` tuples of ``valid_rows`` the common case built, by source id (the others are
    #: built by :func:`_built_by_id` at the flush)
    built: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    writing: Future[ValidationResult] | None = None
    #: direct inserts of new keys left to this run (:data:`DIRECT_INSERT_SAVEPOINTS`)
    direct_savepoints: int = field(default_factory=lambda: DIRECT_INSERT_SAVEPOINTS)
    #: the records of the chunk being gathered: the first is smaller (:data:`FIRST_CHUNK_SHARE`),
    #: so the writer starts while the rest of the first full chunk is judged (before, it idled
    #: for the judging of a whole chunk at each kind's start)
    limit: int = 0

    def __post_init__(self) -> None:
        self.limit = max(1, self.chunk // FIRST_CHUNK_SHARE)

    def settle(self, verdict: Verdict) -> None:
        """``verdict`` is the newest version of its record in this run."""
        row = verdict.row
        if verdict.reason_code is None:  # valid
            assert row is not None
            self.valid_rows.append(row)
            built = verdict.built
            if built is not None:
                self.built[row["source_id"]] = built
        else:
            self.quarantine.append(verdict)
        if len(self.valid_rows) + len(self.quarantine) >= self.limit:
            self.flush()

    def first_of_fingerprint(self, verdict: Verdict, read_at: datetime) -> Verdict:
        """A valid verdict as it stands in the run: its read time noted, or ``DUPLICATE_SUSPECTED``
        of the first record of the run with the same fingerprint."""
        row = verdict.row
        assert row is not None
        row["source_read_at"] = read_at
        built = verdict.built
        if built is not None and built[-1] is not read_at:  # not the row's any more
            object.__setattr__(verdict, "built", None)
        source_id = verdict.source_id
        first = self.first_with_fingerprint.setdefault(_from_hex(row["fingerprint"]), source_id)
        if first == source_id:
            return verdict
        return Verdict(
            verdict.source_id,
            verdict.version_hash,
            verdict.legal_entity,
            "DUPLICATE_SUSPECTED",
            {"same_as": first},
        )

    def flush(self) -> None:
        """Hand the newest verdicts of the records seen since the last flush to the writer.

        The chunk's ``COPY`` tuples are built here, while the previous chunk is being written:
        the writer's chain of statements is the run's critical path, this thread's is not."""
        rows, held, built = self.valid_rows, self.quarantine, self.built
        self.valid_rows, self.quarantine, self.built = [], [], {}
        self.limit = self.chunk
        built.update(_built_by_id(self.kind, [r for r in rows if r["source_id"] not in built]))
        self.wait()
        self.writing = self.writer.submit(self.write, rows, held, built)

    def wait(self) -> None:
        """Wait for the write in progress (its error is raised here) and add its counts."""
        if self.writing is None:
            return
        writing, self.writing = self.writing, None
        written = writing.result()
        for name in ("valid", "quarantined", "unchanged", "stale", "resolved_exceptions"):
            setattr(self.result, name, getattr(self.result, name) + getattr(written, name))
        self.result.by_reason.update(written.by_reason)

    def write(
        self, rows: list[dict[str, Any]], held: list[Verdict], built: Mapping[str, tuple[Any, ...]]
    ) -> ValidationResult:
        """Write one chunk's verdicts (in the writer thread; ``built``: :func:`_built_by_id` of
        ``rows``); returns their counts."""
        written = ValidationResult(kind=self.kind, run_key=self.result.run_key)
        duplicates = _duplicates_of_existing(self.conn, self.kind, rows)
        if duplicates:
            for row in [r for r in rows if r["source_id"] in duplicates]:
                held.append(
                    Verdict(
                        row["source_id"],
                        row["version_hash"],
                        row["legal_entity"],
                        "DUPLICATE_SUSPECTED",
                        {"same_as": duplicates[row["source_id"]]},
                    )
                )
            rows = [r for r in rows if r["source_id"] not in duplicates]
        written.valid += len(rows)
        for verdict in held:
            _count(written, verdict)
        direct = self.direct_savepoints > 0
        changed, stale, savepoint = _upsert_canonical(
            self.conn, self.kind, rows, self.dag_run_id, direct=direct, built=built
        )
        self.direct_savepoints -= savepoint
        written.unchanged += len(rows) - changed - len(stale)
        written.stale += len(stale)
        # The chunk's queue statements read no result before the next is sent: one pipeline,
        # one round trip of the writer's chain instead of three (and one per held item).
        with self.conn.pipeline():
            # A record that is valid now closes any open quarantine item it had (a stale verdict
            # resolves nothing). Sent before the chunk's own items are written: those are of
            # other records (a record has one verdict in a run), so the order changes no item,
            # and on a new month the chunk's key range then holds no item: the statement's range
            # probe answers for its 5,000 probes (``exceptions.resolve_for_sql``).
            resolving = exception_queue.resolving_for(
                self.conn,
                source_system=self.source_system,
                record_type=self.kind,
                source_ids=[r["source_id"] for r in rows if r["source_id"] not in stale],
                kind="quarantine",
            )
            self.write_quarantine(held)
        written.resolved_exceptions += resolving.rowcount if resolving is not None else 0
        return written

    def write_quarantine(self, held: list[Verdict]) -> None:
        """Upsert the items of ``held``; each record's newest verdict replaces its older ones."""
        owner_domain = "time_expense"
        exception_queue.quarantine_bulk(
            self.conn,
            [
                exception_queue.Item(
                    kind="quarantine",
                    domain=owner_domain,
                    source_system=self.source_system,
                    record_type=self.kind,
                    source_id=v.source_id,
                    source_version=v.version_hash,
                    reason_code=v.reason_code or "UNKNOWN",
                    detail=v.detail,
                    legal_entity=v.legal_entity,
                    owner=self.config.ownership.owner_for(owner_domain, v.legal_entity),
                )
                for v in held
            ],
            run_id=self.dag_run_id,
        )
        exception_queue.close_other_reasons(
            self.conn,
            kind="quarantine",
            source_system=self.source_system,
            record_type=self.kind,
            verdicts=[(v.source_id, v.reason_code or "UNKNOWN") for v in held],
        )


#: What a valid time entry's user, project and task give its row (:meth:`_CommonTime.refs_of`):
#: legal entity, currency (the entity's functional one), the entity's day at ``as_of``.
_CommonRefs = tuple[str, str, date]
#: What its hours, rate, billable flag and currency give (:meth:`_CommonTime.amounts_of`): the
#: hours as the model reads them, rounded as stored, the rate and the amount in minor units, and
#: the first's text (the fingerprint's).
_CommonAmounts = tuple[Decimal, Decimal, int, int, str]


class _CommonCase:
    """What :class:`_CommonTime` and :class:`_CommonExpense` share: the reference checks of a
    (user, project[, task]) once per run, and the screen's timestamp checks."""

    def __init__(self, ref: PsaReference, config: Config, as_of: datetime, source_system: str) -> None:
        self.ref, self.config, self.as_of, self.source_system = ref, config, as_of, source_system
        #: project id -> :meth:`project_refs` (a month has a few hundred projects, but tens of
        #: thousands of distinct (user, project, task): the project's checks are made once each)
        self.projects: dict[int, _CommonRefs | None] = {}
        self.amounts: dict[tuple[Any, ...], Any] = {}
        #: a day -> its text, as the fingerprint writes it (``str`` of a date calls its
        #: ``isoformat`` by name; a month has a few dozen days)
        self.days: dict[date, str] = {}
        #: the last fetch time seen (by identity: one object per batch) and its future bound as a
        #: naive UTC datetime (None: compare aware, as :func:`_screen_times`)
        self.fetched: datetime | None = None
        self.future_bound: datetime | None = None

    def refs_of(self, user_id: int, project_id: int, task_id: int | None) -> _CommonRefs | None:
        """:func:`_checks_of`'s checks but the date's, the task's assignment (a time entry's:
        ``task_id`` not None), and the same currency as the entity (:func:`_fx_of` without a
        rate), all passed; or None."""
        ref = self.ref
        if user_id in ref.invalid_users or user_id not in ref.users:
            return None
        if task_id is not None and (project_id, task_id) not in ref.task_assignments:
            return None
        return self.project_refs(project_id)

    def project_refs(self, project_id: int) -> _CommonRefs | None:
        """The project's part of :meth:`refs_of`: known, active, its entity known, its currency a
        currency and the entity's own; its entity, currency and the entity's day; or None."""
        project = self.ref.projects.get(project_id)
        if project is None or not project.is_active:
            return None
        entity = self.config.legal_entities.legal_entities.get(project.legal_entity)  # type: ignore[arg-type]
        currency = project.currency
        if entity is None or currency is None or not _ISO_CURRENCY.match(currency):
            return None
        if currency != entity.currency or project.legal_entity is None:
            return None
        return project.legal_entity, currency, _today_in(self.as_of, entity.timezone)

    def _refs(self, user_id: int, project_id: int, task_id: int | None) -> _CommonRefs | None:
        """:meth:`refs_of`, its project's part once per distinct project."""
        ref = self.ref
        if user_id in ref.invalid_users or user_id not in ref.users:
            return None
        if task_id is not None and (project_id, task_id) not in ref.task_assignments:
            return None
        projects = self.projects
        try:
            return projects[project_id]
        except KeyError:
            found = projects[project_id] = self.project_refs(project_id)
            return found

    def _day_text(self, day: date) -> str:
        """``str(day)``, once per distinct day (bounded: emptied when full)."""
        days = self.days
        if len(days) >= staged_json._MEMO_MAX:
            days.clear()
        text = days[day] = str(day)
        return text

    def _times(self, raw: Any, fetched_at: datetime | None) -> datetime | None:
        """The ``updated_at`` of ``raw`` when both timestamps parse and :func:`_screen_times`
        finds nothing (its fast test, without the years it checks slowly); or None. Each distinct
        text is parsed and judged once (:func:`_plausible`); per record only the future test, on
        naive UTC datetimes (aware ones call their zones' ``utcoffset`` at each comparison)."""
        created, updated = _plausible(raw.created_at), _plausible(raw.updated_at)
        if created is None or updated is None:
            return None
        if fetched_at is not None:
            # The reader gives each row its own fetch time object, of one value for a whole read:
            # the bound is kept while the fields and zone object are the same (datetimes of one
            # zone object compare field by field, without calling the zone; ``fold`` aside, which
            # no sum with a timedelta keeps: the bound is the same).
            fetched = self.fetched
            if fetched_at is not fetched and (
                fetched is None or fetched_at.tzinfo is not fetched.tzinfo or fetched_at != fetched
            ):
                self.fetched, self.future_bound = fetched_at, _naive_utc(fetched_at + FUTURE_TOLERANCE)
            bound = self.future_bound
            if updated[1] > bound if bound is not None else updated[0] > fetched_at + FUTURE_TOLERANCE:
                return None
        return updated[0]


def _naive_utc(value: datetime) -> datetime | None:
    """``value`` as a naive UTC datetime, which compares as ``value`` does with another aware one
    of another zone (an instant); None when ``value`` is naive or the shift leaves the years."""
    offset = value.utcoffset()
    if offset is None:
        return None
    try:
        return (value - offset).replace(tzinfo=None)
    except OverflowError:
        return None


# Like ``staged_json._aware``: a month repeats its timestamps; the result depends on the text only.
@functools.lru_cache(maxsize=1 << 16)
def _plausible(text: str) -> tuple[datetime, datetime] | None:
    """The aware datetime of a timestamp text (the model's, ``staged_json._aware``) and its naive
    UTC datetime, when it parses and :func:`_screen_times`' fast test passes it (not in the years 1
    or 9999, not before :data:`EARLIEST_TIMESTAMP`); or None."""
    aware = staged_json._aware(text)
    if aware is None or aware.year in _EDGE_YEARS or aware < EARLIEST_TIMESTAMP:
        return None
    naive = _naive_utc(aware)
    return None if naive is None else (aware, naive)


class _CommonTime(_CommonCase):
    """The verdict of a time entry in the common case, without the per-record calls of
    :func:`judge_staged`: a valid entry in its legal entity's own currency, whose timestamps are
    plausible and not in the future. The checks of its project are made once per distinct project
    of the run (its user's and task's are set lookups) and those of its amounts once per distinct (hours, rate,
    billable, currency), each by the same functions the rules use; both are memoised for this
    run's reference, config and ``as_of`` only (this object lives for one run).

    :meth:`judge` returns None for any entry it cannot vouch for (one the decoder declines, a
    failed check of any kind, a foreign currency, a missing rate...): :func:`judge_staged` then
    judges it as always, so every quarantine verdict is the rules' own and a valid verdict here
    is the one the rules give (``tests/validation/test_common_time.py`` compares both)."""

    @staticmethod
    def amounts_of(
        hours_json: int | float, rate_json: Any, billable: bool, currency: str
    ) -> _CommonAmounts | None:
        """:func:`_time_entry_verdict`'s hours, rate and amounts of these JSON values, when none
        of its checks of them fails (the decoder's ``_number``/``_amount``, :func:`round_hours`,
        :func:`_to_minor`, :func:`_time_amount_minor`); or None."""
        try:
            entry_hours = staged_json._number(hours_json)
            rate = None if rate_json is None else staged_json._amount(rate_json)
        except (ValueError, OverflowError):
            return None
        if not _ZERO < entry_hours <= MAX_HOURS or (rate is not None and rate < _ZERO):
            return None
        hours = round_hours(entry_hours)
        if hours <= _ZERO or (billable and rate is None):
            return None
        try:
            bill_rate_minor = _to_minor(rate if billable and rate is not None else _ZERO, currency)
            amount_minor = _time_amount_minor(hours, bill_rate_minor, currency)
        except money.AmountOutOfRange:
            return None
        if abs(amount_minor) > money.MAX_MINOR:
            return None
        return entry_hours, hours, bill_rate_minor, amount_minor, str(entry_hours)

    def _amounts(self, raw: Any, currency: str) -> _CommonAmounts | None:
        """:meth:`amounts_of`, once per distinct values (by type too: ``1`` and ``1.0`` read as
        different Decimals; ``0.0`` and ``-0.0`` share a key, and both are refused or both give
        the same integers)."""
        hours_json, rate_json = raw.hours, raw.billable_rate
        key = (type(hours_json), hours_json, type(rate_json), rate_json, raw.billable, currency)
        try:
            return self.amounts[key]
        except KeyError:
            found = self.amounts[key] = self.amounts_of(hours_json, rate_json, raw.billable, currency)
            return found

    def judge(self, text: str | bytes, version_hash: str, fetched_at: datetime | None) -> Verdict | None:
        """The valid verdict :func:`judge_staged` gives ``text``, or None (class doc)."""
        try:
            raw = staged_json.LIGHT_TIME_ENTRY.decode(text)
        except msgspec.MsgspecError:
            return None
        if not staged_json.light_patterns_hold(raw):
            return None
        updated_at = self._times(raw, fetched_at)
        if updated_at is None:
            return None
        refs = self._refs(raw.user.id, raw.project.id, raw.task.id)
        if refs is None or raw.spent_date > refs[2]:
            return None
        amounts = self._amounts(raw, refs[1])
        if amounts is None:
            return None
        return self._valid(raw, version_hash, refs, amounts, updated_at, fetched_at)

    def _valid(
        self,
        raw: Any,
        version_hash: str,
        refs: _CommonRefs,
        amounts: _CommonAmounts,
        updated_at: datetime,
        read_at: datetime | None,
    ) -> Verdict:
        """The valid verdict and its row, as :func:`_time_entry_verdict` builds them (same keys,
        same order; the functional columns those of :func:`_same_currency`), and the row's
        ``COPY`` tuple with ``read_at`` as its ``source_read_at``: the row's keys are the copied
        columns in order (:func:`_copied`) and its values already the contract's types, so the
        tuple is what :func:`_built_by_id` gives (``tests/validation/test_common_time.py``)."""
        legal_entity, currency, _ = refs
        _, hours, bill_rate_minor, amount_minor, hours_text = amounts
        source_id, source_system = str(raw.id), self.source_system
        # the refs' texts are also the fingerprint's (``str`` of an int is its ``!s``)
        user_ref, project_ref, task_ref = str(raw.user.id), str(raw.project.id), str(raw.task.id)
        day, billable, approved = raw.spent_date, raw.billable, raw.is_closed
        day_text = self.days.get(day) or self._day_text(day)
        fingerprint = _fingerprint6(user_ref, day_text, project_ref, task_ref, hours_text, raw.notes or "")
        rate = _same_currency(currency).rate
        row = {
            "source_system": source_system,
            "source_id": source_id,
            "version_hash": version_hash,
            "spent_date": day,
            "user_ref": user_ref,
            "project_ref": project_ref,
            "task_ref": task_ref,
            "legal_entity": legal_entity,
            "hours": hours,
            "billable": billable,
            "bill_rate_minor": bill_rate_minor,
            "amount_minor": amount_minor,
            "currency": currency,
            "approved": approved,
            "is_deleted": False,
            "fingerprint": fingerprint,
            "source_updated_at": updated_at,
            "functional_amount_minor": amount_minor,
            "functional_currency": currency,
            "fx_rate": rate,
            "fx_rate_date": None,
            "fx_rate_source": None,
        }
        # the row's values in its keys' order, then the read time: built from the same names, not
        # from ``row.values()`` (a list, then a tuple, per entry)
        built = (
            source_system,
            source_id,
            version_hash,
            day,
            user_ref,
            project_ref,
            task_ref,
            legal_entity,
            hours,
            billable,
            bill_rate_minor,
            amount_minor,
            currency,
            approved,
            False,
            fingerprint,
            updated_at,
            amount_minor,
            currency,
            rate,
            None,
            None,
            read_at,
        )
        return _valid_verdict(source_id, version_hash, legal_entity, row, built)


class _CommonExpense(_CommonCase):
    """:class:`_CommonTime`'s design for an expense: its valid verdict in the common case (the
    same checks as :func:`_expense_verdict`, the reference ones once per distinct (user, project)
    and the amount's once per distinct ``total_cost`` and currency), or None, and then
    :func:`judge_staged` judges it (``tests/validation/test_common_expense.py`` compares both)."""

    @staticmethod
    def amount_of(total_json: Any, currency: str) -> int | None:
        """:func:`_expense_verdict`'s amount in minor units of this JSON value, when none of its
        checks of it fails (the decoder's ``_amount``, ``>= 0``, :func:`_to_minor`, the
        ``bigint`` bound of :meth:`_Fx.row`); or None."""
        try:
            total_cost = staged_json._amount(total_json)
        except (ValueError, OverflowError):
            return None
        if total_cost < 0:
            return None
        try:
            amount_minor = _to_minor(total_cost, currency)
        except money.AmountOutOfRange:
            return None
        return None if abs(amount_minor) > money.MAX_MINOR else amount_minor

    def _amount(self, total_json: Any, currency: str) -> tuple[str, int] | None:
        """The text of the cost as the model reads it (the fingerprint's) and :meth:`amount_of`,
        once per distinct value (by
        type too, as :meth:`_CommonTime._amounts`; ``0.0`` and ``-0.0`` apart: valid both, their
        Decimals have other texts, and the fingerprint reads the text)."""
        key = (type(total_json), total_json, currency, None if total_json else repr(total_json))
        try:
            found: tuple[str, int] | None = self.amounts[key]
        except KeyError:
            minor = self.amount_of(total_json, currency)
            found = self.amounts[key] = (
                None if minor is None else (str(staged_json._amount(total_json)), minor)
            )
        return found

    def judge(self, text: str | bytes, version_hash: str, fetched_at: datetime | None) -> Verdict | None:
        """The valid verdict :func:`judge_staged` gives ``text``, or None (class doc)."""
        try:
            raw = staged_json.LIGHT_EXPENSE.decode(text)
        except msgspec.MsgspecError:
            return None
        if not staged_json.light_expense_holds(raw):
            return None
        updated_at = self._times(raw, fetched_at)
        if updated_at is None:
            return None
        refs = self._refs(raw.user.id, raw.project.id, None)
        if refs is None or raw.spent_date > refs[2]:
            return None
        amount = self._amount(raw.total_cost, refs[1])
        if amount is None:
            return None
        return self._valid(raw, version_hash, refs, amount, updated_at, fetched_at)

    def _valid(
        self,
        raw: Any,
        version_hash: str,
        refs: _CommonRefs,
        amount: tuple[str, int],
        updated_at: datetime,
        read_at: datetime | None,
    ) -> Verdict:
        """The valid verdict, its row as :func:`_expense_verdict` builds it and its ``COPY``
        tuple (as :meth:`_CommonTime._valid`)."""
        legal_entity, currency, _ = refs
        total_cost_text, amount_minor = amount
        source_id, source_system = str(raw.id), self.source_system
        # the refs' texts are also the fingerprint's (``str`` of an int is its ``!s``)
        user_ref, project_ref, category = str(raw.user.id), str(raw.project.id), str(raw.expense_category.id)
        day, billable, approved = raw.spent_date, raw.billable, raw.is_closed
        day_text = self.days.get(day) or self._day_text(day)
        fingerprint = _fingerprint6(
            user_ref, day_text, project_ref, category, total_cost_text, raw.notes or ""
        )
        rate = _same_currency(currency).rate
        row = {
            "source_system": source_system,
            "source_id": source_id,
            "version_hash": version_hash,
            "spent_date": day,
            "user_ref": user_ref,
            "project_ref": project_ref,
            "legal_entity": legal_entity,
            "category": category,
            "billable": billable,
            "amount_minor": amount_minor,
            "currency": currency,
            "approved": approved,
            "is_deleted": False,
            "fingerprint": fingerprint,
            "source_updated_at": updated_at,
            "functional_amount_minor": amount_minor,
            "functional_currency": currency,
            "fx_rate": rate,
            "fx_rate_date": None,
            "fx_rate_source": None,
        }
        built = (
            source_system,
            source_id,
            version_hash,
            day,
            user_ref,
            project_ref,
            legal_entity,
            category,
            billable,
            amount_minor,
            currency,
            approved,
            False,
            fingerprint,
            updated_at,
            amount_minor,
            currency,
            rate,
            None,
            None,
            read_at,
        )
        return _valid_verdict(source_id, version_hash, legal_entity, row, built)


_new_object = object.__new__
_set_attribute = object.__setattr__


def _valid_verdict(
    source_id: str, version_hash: str, legal_entity: str, row: dict[str, Any], built: tuple[Any, ...]
) -> Verdict:
    """``Verdict(source_id, version_hash, legal_entity, None, {}, row, built)``, the same object
    (its fields are its ``__dict__``), without the frozen dataclass's ``__init__``: seven
    ``object.__setattr__`` calls, ~1.5 us of each valid entry's ~15 us."""
    verdict: Verdict = _new_object(Verdict)
    _set_attribute(
        verdict,
        "__dict__",
        {
            "source_id": source_id,
            "version_hash": version_hash,
            "legal_entity": legal_entity,
            "reason_code": None,
            "detail": {},
            "row": row,
            "built": built,
        },
    )
    return verdict


#: Whether :func:`_verdicts` tries :class:`_CommonTime` first (False: every version through
#: :func:`judge_staged`, as before; the tests compare both).
COMMON_CASE = True


def _verdicts(
    staged: Iterator[tuple[str, str, str, datetime]], run: _Run, *, ref: PsaReference, as_of: datetime
) -> Iterator[Verdict]:
    """The verdict of each staged version of the run (``staged``: :func:`_reading`), in source
    order, counted as staged. A time entry goes through :class:`_CommonTime` first."""
    common = (
        (_CommonTime if run.kind == "time_entry" else _CommonExpense)(
            ref, run.config, as_of, run.source_system
        )
        if COMMON_CASE
        else None
    )
    judge = common.judge if common is not None else None
    first_of_fingerprint, result = run.first_of_fingerprint, run.result
    for text, version_hash, staged_id, read_at in staged:
        verdict = judge(text, version_hash, read_at) if judge is not None else None
        if verdict is None:
            verdict = judge_staged(
                run.kind,
                text,
                version_hash,
                ref=ref,
                config=run.config,
                as_of=as_of,
                source_system=run.source_system,
                fetched_at=read_at,
            )
        if verdict.source_id != staged_id:  # an id JSON cannot round-trip (1.0, 1e400): the staged one
            verdict = dataclasses.replace(verdict, source_id=staged_id)
        result.staged_versions += 1
        # ``reason_code is None`` is ``verdict.valid`` without the property's call
        yield first_of_fingerprint(verdict, read_at) if verdict.reason_code is None else verdict


#: The interpreter's thread switch interval while a run is validated (seconds; Python's default
#: is 0.005). The judging thread is busy in Python; the writer and the reader each wait on
#: PostgreSQL, then need the GIL for a few microseconds to send the next statement or take the next
#: batch. At the default they wait up to 5 ms for it after every statement, and the writer's chain
#: of statements is the run's critical path (docs/performance.md, "perf-validation7"). None: leave it.
RUN_SWITCH_INTERVAL: float | None = 0.0005

_switch_lock = threading.Lock()
_switch_runs = 0
_switch_saved: float | None = None


@contextlib.contextmanager
def _switch_interval_for_run() -> Iterator[None]:
    """:data:`RUN_SWITCH_INTERVAL` while the run lasts; the interval as before once the last run
    in the process ends (runs in several threads of one process nest)."""
    global _switch_runs, _switch_saved
    if RUN_SWITCH_INTERVAL is None:
        yield
        return
    with _switch_lock:
        _switch_runs += 1
        if _switch_runs == 1:
            _switch_saved = sys.getswitchinterval()
            sys.setswitchinterval(RUN_SWITCH_INTERVAL)
    try:
        yield
    finally:
        with _switch_lock:
            _switch_runs -= 1
            if _switch_runs == 0 and _switch_saved is not None:
                sys.setswitchinterval(_switch_saved)
                _switch_saved = None


#: The cyclic garbage collector's thresholds while a run is validated (CPython's: 700, 10, 10),
#: with what the process held before the run frozen (:func:`psa_erp_sync.ods.collector.relaxed`).
#: A month's run allocates a few million short-lived containers (the fetched rows, the row dicts,
#: the ``COPY`` tuples, the verdicts), nearly all freed by reference counting; at the default
#: thresholds the collector ran ~1,300 times in a month's run (docs/performance.md,
#: perf-validation13). None: leave the collector as it is.
RUN_GC_THRESHOLDS: tuple[int, int, int] | None = (50_000, 20, 100)


def _collector_for_run() -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext() if RUN_GC_THRESHOLDS is None else collector.relaxed(RUN_GC_THRESHOLDS)


def validate_run(
    conn: psycopg.Connection,
    *,
    kind: Kind,
    run_key: str,
    ref: PsaReference | Callable[[], PsaReference],
    config: Config,
    as_of: datetime,
    dag_run_id: str,
    source_system: str = "psa",
    chunk: int = 5000,
    staged: Iterator[tuple[str, str, str, datetime]] | None = None,
) -> ValidationResult:
    """Judge every staged version of ``run_key``; write canonical rows and quarantine items.

    ``ref`` may be a function that builds the reference (on ``conn``): it is then called once the
    reader's sort has started, so both take the longer of the two instead of their sum.
    ``staged``: the run's versions from :func:`staged_read` entered by the caller (its sort started
    earlier, e.g. while another run was judged); None: read here.

    Idempotent: re-running for the same run key yields the same canonical state and the same
    open exceptions (counters of occurrences grow, nothing is duplicated). Commit order does not
    matter: canonical keeps the newest version by (source updated_at, start of the read), so a
    run that read an older version and commits last changes nothing (counted as ``stale``).

    Streams: versions arrive ordered by source id, so only the previous record's verdict is held
    until the next record shows it was the newest; verdicts are written ``chunk`` records at a
    time, by a writer thread while the next chunk is judged. Memory is two chunks plus the
    fingerprints seen in the run (for in-run duplicates).
    """
    started = time.monotonic()
    result = ValidationResult(kind=kind, run_key=run_key)
    previous: Verdict | None = None
    # A second connection streams the run's versions while a writer thread writes on this one;
    # its sort starts first, beside the reference (when ``ref`` builds it) and the setup below
    # (:func:`_reading`).
    with (
        _switch_interval_for_run(),
        _collector_for_run(),
        contextlib.ExitStack() as opened,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="validation-writer") as writer,
    ):
        if staged is None:
            staged = opened.enter_context(staged_read(conn, kind, run_key, source_system))
        if not isinstance(ref, PsaReference):
            ref = ref()
        _set_up(
            conn, kind, ref, config=config, source_system=source_system, dag_run_id=dag_run_id, result=result
        )
        run = _Run(conn, kind, config, dag_run_id, source_system, chunk, result, writer)
        # On an error the executor's exit waits for a write in progress (its own error, if any, is
        # dropped: the first error is the one raised) before the caller rolls back.
        for verdict in _verdicts(staged, run, ref=ref, as_of=as_of):
            if previous is not None:
                if previous.source_id == verdict.source_id:
                    _count(result, previous)  # superseded: only the newest version becomes current
                else:
                    run.settle(previous)
            previous = verdict
        if previous is not None:
            run.settle(previous)
        run.flush()
        run.wait()
    sweep_from = staging.sweep_of(conn, run_key)
    if sweep_from is not None:
        result.deleted = _mark_deleted(
            conn,
            kind,
            source_system=source_system,
            run_key=run_key,
            sweep_from=sweep_from,
            dag_run_id=dag_run_id,
        )
        _close_quarantine_of_vanished(
            conn, kind, source_system=source_system, run_key=run_key, sweep_from=sweep_from
        )
    result.seconds = time.monotonic() - started
    return result


@contextlib.contextmanager
def staged_read(
    conn: psycopg.Connection, kind: Kind, run_key: str, source_system: str = "psa"
) -> Iterator[Iterator[tuple[str, str, str, datetime]]]:
    """The staged versions of a run of ``kind`` (:func:`_reading`) on a new connection like
    ``conn``: the key sort and the first batch start on entry, for :func:`validate_run`'s
    ``staged``. Only staging is read, in a snapshot of its own, so entering it before another
    run's commit changes nothing that run or this one sees."""
    with (
        connections.connect_like(conn) as reader,
        _reading(reader, source_system, ENDPOINTS[kind], run_key) as staged,
    ):
        yield staged


def _set_up(
    conn: psycopg.Connection,
    kind: Kind,
    ref: PsaReference,
    *,
    config: Config,
    source_system: str,
    dag_run_id: str,
    result: ValidationResult,
) -> None:
    """The run's statements before its first verdict: no JIT, custom plans, fresh statistics, the
    reference items."""
    # The per-row index probes of a chunk are estimated high while the tables have no statistics
    # (a fresh or bulk-loaded month): JIT compiled them for 0.1-1.2 s per statement, for work of
    # milliseconds. For this transaction only.
    conn.execute("SET LOCAL jit = off")
    # Canonical grows from chunk to chunk of this run. A statement prepared on this connection
    # before (psycopg prepares after five executions) keeps PostgreSQL's generic plan, made anew
    # at its first execution after the table changed under it (TRUNCATE, ANALYZE): made on an
    # empty table, the fingerprint lookup scanned the table for every row, minutes at 100k rows.
    # Each execution is planned for the table as it is now (a few ms a run).
    conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    # The month the extract just staged may have no statistics yet (autovacuum lags a bulk load):
    # the sweep's and the reads' plans need them (ods/table_stats.py).
    table_stats.refresh(conn, ("staging.raw_record", "exceptions.item", TABLES[kind]))
    result.reference_invalid = _quarantine_invalid_references(
        conn, ref, config=config, source_system=source_system, dag_run_id=dag_run_id
    )


def _quarantine_invalid_references(
    conn: psycopg.Connection, ref: PsaReference, *, config: Config, source_system: str, dag_run_id: str
) -> int:
    """Write the run's invalid reference records as ``REFERENCE_INVALID`` items (idempotent per
    run: both kinds' validations write the same items) and resolve the items of reference records
    that passed now. Returns how many are invalid."""
    domain = "time_expense"
    exception_queue.quarantine_bulk(
        conn,
        [
            exception_queue.Item(
                kind="quarantine",
                domain=domain,
                source_system=source_system,
                record_type=bad.record_type,
                source_id=bad.source_id,
                source_version=bad.version_hash,
                reason_code="REFERENCE_INVALID",
                detail={"fields": list(bad.fields)},
                owner=config.ownership.owner_for(domain, None),
            )
            for bad in ref.invalid
        ],
        run_id=dag_run_id,
    )
    invalid_ids = {(bad.record_type, bad.source_id) for bad in ref.invalid}
    for record_type, source_ids in ref.passed.items():
        fixed = sorted(sid for sid in source_ids if (record_type, sid) not in invalid_ids)
        if fixed:  # only this rule's items: other checks (e.g. the ERP pre-check) own theirs
            exception_queue.resolve_for(
                conn,
                kind="quarantine",
                source_system=source_system,
                record_type=record_type,
                source_ids=fixed,
                reason_code="REFERENCE_INVALID",
            )
    return len(ref.invalid)


class MassDeletionRefused(RuntimeError):
    """A sweep or the stream would mark an implausible share of records deleted: the source is
    suspect, not the data."""


MAX_DELETED_SHARE = 0.2
MIN_DELETIONS_REFUSED = 50


def implausible_deletions(
    gone: int, total: int, *, max_share: float = MAX_DELETED_SHARE, min_refuse: int = MIN_DELETIONS_REFUSED
) -> bool:
    """``gone`` of ``total`` live records at once: at least ``min_refuse`` and over ``max_share``.
    The one rule for the sweep and the stream (a misrouted or empty answer looks like this)."""
    return gone >= min_refuse and gone > max_share * total


# The tail of a statement whose CTE ``del`` marks canonical rows deleted at the source and returns
# (source_id, image): one audit row per deletion (before/after images), then the count. Shared by
# the sweep here and the stream's re-read (``stream.time_expense.mark_gone``); the statement
# supplies ``actor``, ``table`` and ``run_id``.
DELETION_AUDIT_SQL = f"""audited AS (
            {audit.INSERT_CHANGE}
            SELECT %(actor)s, 'deleted_at_source', %(table)s, source_id, image - 'is_deleted' - 'source_read_at',
                   jsonb_build_object('is_deleted', true, 'source_read_at', image->'source_read_at'), %(run_id)s
            FROM del
        )
        SELECT count(*) FROM del"""


def _mark_deleted(
    conn: psycopg.Connection,
    kind: Kind,
    *,
    source_system: str,
    run_key: str,
    sweep_from: date,
    dag_run_id: str,
    max_share: float = MAX_DELETED_SHARE,
    min_refuse: int = MIN_DELETIONS_REFUSED,
) -> int:
    """Records in the swept date range that the sweep no longer returned were deleted at the source
    (Harvest has no deleted feed). Refuses when the share is implausible, e.g. an empty answer."""
    table = TABLES[kind]
    params = {"system": source_system, "from": sweep_from, "endpoint": ENDPOINTS[kind], "run_key": run_key}
    # EXCEPT (a hashed or sorted set operation) rather than NOT EXISTS: right after staging the
    # statistics of raw_record are stale and the anti-join was planned as a nested loop over the
    # run's rows for every canonical row (quadratic; 14 s at 19k records).
    # The sweep's extract began reading at ``started`` (extract_run.started_at, the transaction
    # start its staged rows carry as fetched_at). A record read after that by anyone (the stream,
    # an overlapping run) may be newer than the sweep's page: its absence proves nothing.
    row = conn.execute("SELECT started_at FROM staging.extract_run WHERE run_key = %s", (run_key,)).fetchone()
    params["started"] = row[0] if row else datetime.max.replace(tzinfo=UTC)
    gone_sql = f"""
        SELECT c.source_id FROM {table} c
        WHERE c.source_system = %(system)s AND NOT c.is_deleted AND c.spent_date >= %(from)s
          AND coalesce(c.source_read_at, '-infinity') < %(started)s
        EXCEPT
        SELECT r.source_id FROM staging.raw_record r
        WHERE r.source_system = %(system)s AND r.endpoint = %(endpoint)s AND r.last_run_key = %(run_key)s
    """
    gone = [r[0] for r in conn.execute(gone_sql, params)]
    if gone:
        read_since = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT source_id FROM staging.raw_record WHERE source_system = %(system)s"
                " AND endpoint = %(endpoint)s AND source_id = ANY(%(ids)s) AND fetched_at >= %(started)s",
                {**params, "ids": gone},
            )
        }
        if read_since:
            log.info(
                "sweep: %d absent records were read after the sweep began: left for the next sweep",
                len(read_since),
            )
            gone = [g for g in gone if g not in read_since]
    if not gone:
        return 0
    in_window = conn.execute(
        f"SELECT count(*) FROM {table} WHERE source_system = %(system)s AND NOT is_deleted AND spent_date >= %(from)s",
        params,
    ).fetchone()
    total = int(in_window[0]) if in_window else 0
    if implausible_deletions(len(gone), total, max_share=max_share, min_refuse=min_refuse):
        raise MassDeletionRefused(
            f"the sweep of {ENDPOINTS[kind]} no longer returns {len(gone)} of {total} records since {sweep_from}; "
            "refusing to treat them as deleted. Check the PSA answer; rerun the sweep when it is healthy."
        )
    # The read-time condition again in the UPDATE: it is re-checked on the row's latest committed
    # version, so a newer read committed since the query above wins.
    marked = conn.execute(
        f"""
        WITH del AS (
            UPDATE {table} c SET is_deleted = true, source_read_at = %(started)s, validated_at = now()
            WHERE c.source_system = %(system)s AND c.source_id = ANY(%(ids)s) AND NOT c.is_deleted
              AND coalesce(c.source_read_at, '-infinity') < %(started)s
            RETURNING c.source_id, to_jsonb(c.*) - 'record' AS image
        ), {DELETION_AUDIT_SQL}
        """,
        {**params, "ids": gone, "table": table, "run_id": dag_run_id, "actor": "validation.sweep"},
    ).fetchone()
    count = int(marked[0]) if marked else 0
    log.info("sweep: %d %s records no longer at the source since %s: marked deleted", count, kind, sweep_from)
    return count


# Open quarantine items of records staged in the sweep window but absent from the run's read.
VANISHED_SQL = """
SELECT e.source_id FROM exceptions.item e
CROSS JOIN LATERAL (
    SELECT r.payload FROM staging.raw_record r
    WHERE r.source_system = e.source_system AND r.endpoint = %(endpoint)s
      AND r.source_id = e.source_id AND r.payload_hash = e.source_version
    OFFSET 0
) r
WHERE e.kind = 'quarantine' AND e.source_system = %(system)s AND e.record_type = %(kind)s
  AND e.status = 'open' AND staging.try_date(staging.try_jsonb(r.payload)->>'spent_date') >= %(from)s
EXCEPT
SELECT r.source_id FROM staging.raw_record r
WHERE r.source_system = %(system)s AND r.endpoint = %(endpoint)s AND r.last_run_key = %(run_key)s
"""


def _close_quarantine_of_vanished(
    conn: psycopg.Connection, kind: Kind, *, source_system: str, run_key: str, sweep_from: date
) -> int:
    """Quarantined records deleted at the source need no fix any more: close their items.

    EXCEPT, not NOT EXISTS, for the same reason as in :func:`_mark_deleted` (stale statistics);
    each open item's staged version is one probe of the staging key (a join was planned, on
    statistics from before the month was staged, as a walk of the endpoint's every version per
    item, parsing each payload's date: minutes at 27k records).
    """
    params = {
        "system": source_system,
        "kind": kind,
        "endpoint": ENDPOINTS[kind],
        "from": sweep_from,
        "run_key": run_key,
    }
    vanished = [r[0] for r in conn.execute(VANISHED_SQL, params)]
    if not vanished:
        return 0
    return exception_queue.resolve_for(
        conn, kind="quarantine", source_system=source_system, record_type=kind, source_ids=vanished
    )


# Lookups in canonical during a run probe its indexes once per row of a chunk: never a scan of the
# table, which grows through the run without statistics while a month is loaded (a join or
# ``= ANY(array)`` was planned as a scan of the whole table per chunk: quadratic in the month).
# Their arrays (a chunk's keys, fingerprints; the reader's ctids) go as binary parameters (``%b``):
# as text, psycopg builds the array literal in Python, quoting each element through a regex (3 us
# a fingerprint, 3 us a ctid, 0.9 us a key: ~0.35 s of client CPU per 54k versions); binary ~0.4 us.
def _first_with_fingerprints(table: str) -> str:
    """SQL: for each fingerprint of the array parameter, the smallest id of a live row of ``table``
    with it (one probe of the fingerprint index each: the aggregate keeps the subquery per row)."""
    return (
        "SELECT k.fingerprint, f.first FROM unnest(%b::text[]) AS k(fingerprint)"
        f" CROSS JOIN LATERAL (SELECT min(c.source_id::bigint)::text AS first FROM {table} c"
        "  WHERE c.fingerprint = k.fingerprint AND NOT c.is_deleted) f WHERE f.first IS NOT NULL"
    )


def _current_of(table: str) -> str:
    """SQL for ``CROSS JOIN LATERAL``: the row of ``table`` with the key of row ``t`` (one probe
    of the primary key: OFFSET 0 keeps the subquery per row)."""
    return f"SELECT * FROM {table} c0 WHERE c0.source_system = t.source_system AND c0.source_id = t.source_id OFFSET 0"


def _duplicates_of_existing(
    conn: psycopg.Connection, kind: Kind, rows: list[dict[str, Any]]
) -> dict[str, str]:
    """Valid rows whose fingerprint already belongs to another (earlier) record in canonical."""
    if not rows:
        return {}
    found = conn.execute(
        _first_with_fingerprints(TABLES[kind]), (arrays.text_array([r["fingerprint"] for r in rows]),)
    ).fetchall()
    first: dict[str, str] = dict(found)
    return {
        r["source_id"]: first[r["fingerprint"]]
        for r in rows
        if r["fingerprint"] in first and int(first[r["fingerprint"]]) < int(r["source_id"])
    }


# Does the incoming version t replace the current row c? The newest wins, whatever the commit
# order: by the source's updated_at, then by the start of the read that saw it (Harvest's
# updated_at has whole seconds). A deleted row comes back only for a read that began after the
# deletion was seen (its source_read_at); an earlier read is older than the deletion.
def _newer(new: str) -> str:
    """SQL: the row ``new`` replaces the current canonical row ``c``."""
    return f"""
    CASE WHEN c.is_deleted
         THEN {new}.source_read_at > coalesce(c.source_read_at, '-infinity')
         ELSE c.version_hash <> {new}.version_hash
              AND ({new}.source_updated_at, {new}.source_read_at)
                  > (c.source_updated_at, coalesce(c.source_read_at, '-infinity'))
    END"""


#: What a version of a record is, beside its keys: the columns validation derives from the payload
#: alone. Not ``is_deleted`` (a record read again is live whatever canonical says), nor the FX
#: columns (they derive from the rate book too: a version staged again keeps its amounts as ever),
#: nor ``source_updated_at``: the PSA moves it for edits canonical does not carry, above all when
#: an invoice marks the entry billed (``billing_status``), and such an edit is no new version of the
#: work (posting it again would send the ERP an adjustment that changes only the memo). The row keeps
#: its version (hash and ``record``, no audit), and its ``source_updated_at`` and ``source_read_at``
#: move to the newer read, so a staged version with other content that is older than what the PSA
#: has since shown is still refused as stale (:func:`_newer`).
_NOT_CONTENT = ("source_system", "source_id", "version_hash", "is_deleted", "source_updated_at")


def _content_columns(kind: Kind) -> tuple[str, ...]:
    return tuple(c for c in _COLUMNS[kind] if c not in _NOT_CONTENT)


def _keep_same_content_find_stale(conn: psycopg.Connection, kind: Kind) -> set[str]:
    """Content versioning, and the stale check, in one probe of canonical's primary key per row.

    A staged version whose canonical content equals the current row's takes the current row's
    version hash, so it is no new version (nothing updated, posted or adjusted). Staging's hash is
    of the payload as staged; a change of how payloads are staged or hashed (raw bytes instead of
    re-encoded floats: ``1.50`` against ``1.5``), or an edit of a field canonical does not carry
    (an invoice's billed mark, notes) makes a new staged version with the same content: the row keeps
    its version and takes the newer update and read times (:data:`_NOT_CONTENT`). Values compare as
    values (``numeric`` 1.50 = 1.5).

    Returns the source ids refused as stale: canonical already holds a newer version or a later
    deletion (:func:`_newer`, evaluated with the version each row keeps).
    """
    t_content = ", ".join(f"t.{c}" for c in _content_columns(kind))
    c_content = ", ".join(f"c.{c}" for c in _content_columns(kind))
    rows = conn.execute(
        f"""
        WITH probe AS MATERIALIZED (
            SELECT t.ctid AS row_id, t.source_id, c.version_hash AS current_version,
                   c.version_hash <> t.version_hash
                       AND ({t_content}) IS NOT DISTINCT FROM ({c_content}) AS same_content,
                   (c.version_hash <> t.version_hash OR c.is_deleted) AND NOT ({_newer("t")}) AS stale,
                   c.is_deleted AND NOT (t.source_read_at > coalesce(c.source_read_at, '-infinity')) AS stale_if_kept
            FROM tmp_{kind} t CROSS JOIN LATERAL ({_current_of(TABLES[kind])}) c
        ), kept AS (
            UPDATE tmp_{kind} t SET version_hash = p.current_version
            FROM probe p WHERE p.same_content AND t.ctid = p.row_id
            RETURNING t.source_system, t.source_id, t.source_updated_at, t.source_read_at
        ), seen AS (
            UPDATE {TABLES[kind]} c SET source_updated_at = k.source_updated_at,
                source_read_at = greatest(c.source_read_at, k.source_read_at)
            FROM kept k WHERE c.source_system = k.source_system AND c.source_id = k.source_id
              AND k.source_updated_at > c.source_updated_at AND NOT c.is_deleted
        )
        SELECT source_id FROM probe WHERE CASE WHEN same_content THEN stale_if_kept ELSE stale END
        """
    ).fetchall()
    return {r[0] for r in rows}


def _copied(kind: Kind) -> str:
    """The columns validation writes into canonical (its ``record`` is built on read since
    migration 0049: ``canonical.record_v1(row)``)."""
    return f"{', '.join(_COLUMNS[kind])}, {', '.join(_FX_COLUMNS)}, source_read_at"


_COPY_TYPES: dict[str, list[str]] = {}
#: The columns of a row validation writes beside its contract's, in :func:`_copied`'s order.
_BESIDE_CONTRACT = (*_FX_COLUMNS, "source_read_at")


def _copy_types(conn: psycopg.Connection, kind: Kind) -> list[str]:
    """The types of :func:`_copied`'s columns for a binary ``COPY``, from the catalog (once per
    process): the values travel in PostgreSQL's binary form, so neither side formats or parses
    dates, timestamps and numerics as text. ``char(n)`` is sent as text (its binary input reads text)."""
    if kind not in _COPY_TYPES:
        found: dict[str, str] = dict(
            conn.execute(
                "SELECT attname, CASE WHEN atttypid = 'bpchar'::regtype THEN 'text' ELSE format_type(atttypid, NULL) END"
                " FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (TABLES[kind],),
            ).fetchall()
        )
        _COPY_TYPES[kind] = [found[c.strip()] for c in _copied(kind).split(",")]
    return _COPY_TYPES[kind]


def _built_by_id(kind: Kind, rows: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """The ``COPY`` tuple of each row (a chunk has one row per source id), by source id: through
    the contract, the chunk in one call (a missing field, one it lacks or a wrong type fails here)."""
    if not rows:
        return {}
    built = records.build_rows(kind, rows, _BESIDE_CONTRACT)
    return {row["source_id"]: values for row, values in zip(rows, built, strict=True)}


def _copy_rows(
    conn: psycopg.Connection,
    kind: Kind,
    table: str,
    rows: list[dict[str, Any]],
    built: Mapping[str, tuple[Any, ...]] | None = None,
) -> None:
    """``COPY`` ``rows`` into ``table`` (canonical, or the chunk's temporary twin of it), binary;
    ``built``: their tuples (:func:`_built_by_id`), built here when not given."""
    types = _copy_types(conn, kind)
    by_id = built if built is not None else _built_by_id(kind, rows)
    with conn.cursor() as cur:
        cur.adapters.register_dumper(Decimal, _NumericOnce)
        with cur.copy(f"COPY {table} ({_copied(kind)}) FROM STDIN (FORMAT binary)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(by_id[row["source_id"]])


class _NumericOnce(psycopg.adapt.Dumper):
    """A ``numeric`` column of a ``COPY`` (binary): psycopg's own dump of each value object, made
    once per object for the ``COPY``. A chunk's rows share their ``Decimal`` objects (the common
    case's hours, memoised per distinct text; the same-currency rate, one object): psycopg formats
    a ``Decimal`` through its ``as_tuple`` (~0.5 us a value, two a row), here a dict probe by
    identity. The object is kept beside its bytes, so its identity cannot be reused while the
    ``COPY`` lasts; a ``Decimal`` never changes, so its bytes are the ones psycopg writes for it."""

    format = pq.Format.BINARY
    oid = postgres.types["numeric"].oid

    def __init__(self, cls: type, context: psycopg.abc.AdaptContext | None = None) -> None:
        super().__init__(cls, context)
        dumper = psycopg.adapters.get_dumper_by_oid(self.oid, pq.Format.BINARY)
        self._dump = dumper(cls, context).dump
        self._seen: dict[int, tuple[object, psycopg.abc.Buffer | None]] = {}

    def dump(self, obj: object) -> psycopg.abc.Buffer | None:
        seen = self._seen.get(id(obj))
        if seen is None:
            seen = self._seen[id(obj)] = (obj, self._dump(obj))
        return seen[1]


def _present_sql(table: str) -> str:
    """SQL of :func:`_present` (parameters ``ids``, a binary text array, and ``system``).

    Every key of the chunk lies between its smallest and its largest (in the column's collation):
    when ``table`` holds no row of the source system in that range (every chunk of a new month),
    none of the keys is there. The range's one probe of the primary key (the first key at or
    above the smallest, at most the largest) is uncorrelated, a one-time filter evaluated before
    any row: it answers for the chunk's 5,000 probes of the key (~2.5 us of PostgreSQL's CPU each),
    which run only when the range holds a row. ``ORDER BY ... LIMIT 1`` on the key's order keeps it
    a probe of the index whatever the table's size and statistics (an ``EXISTS`` over the range
    may be planned as a scan that stops at the first row: the whole table when the range is empty)."""
    return (
        "SELECT k.source_id FROM unnest(%(ids)b::text[]) AS k(source_id)"
        f" WHERE (SELECT r.source_id FROM {table} r WHERE r.source_system = %(system)s"
        "   AND r.source_id >= (SELECT min(i) FROM unnest(%(ids)b::text[]) i) ORDER BY r.source_id LIMIT 1)"
        "  <= (SELECT max(i) FROM unnest(%(ids)b::text[]) i)"
        f" AND EXISTS (SELECT 1 FROM {table} c WHERE c.source_system = %(system)s AND c.source_id = k.source_id)"
    )


def _present(conn: psycopg.Connection, kind: Kind, rows: list[dict[str, Any]]) -> set[str]:
    """The source ids of ``rows`` that have a committed row in canonical (live or deleted): one
    probe of the primary key each, when the chunk's key range holds a row (:func:`_present_sql`)."""
    found = conn.execute(
        _present_sql(TABLES[kind]),
        {"ids": arrays.text_array([r["source_id"] for r in rows]), "system": rows[0]["source_system"]},
    ).fetchall()
    return {r[0] for r in found}


def _insert_new(
    conn: psycopg.Connection,
    kind: Kind,
    rows: list[dict[str, Any]],
    built: Mapping[str, tuple[Any, ...]] | None = None,
) -> bool:
    """``COPY`` rows whose keys canonical did not hold at the probe straight into canonical, in a
    savepoint: False (nothing written) when a key arrived meanwhile (another run or the stream
    committed it, or committed it while this waited for it), and the caller upserts them instead.

    What the upsert would do for them: an insert has no before-image (no audit row), is never
    stale and has no stored version to compare content with; ``validated_at`` is the same
    ``now()``; the statement triggers of canonical (forecast and plan queues) fire for ``COPY``."""
    try:
        with conn.transaction():
            _copy_rows(conn, kind, TABLES[kind], rows, built)
    except psycopg.errors.UniqueViolation:
        log.info("%d new %s rows met a key committed since the probe: upserted instead", len(rows), kind)
        return False
    return True


def _upsert_canonical(
    conn: psycopg.Connection,
    kind: Kind,
    rows: list[dict[str, Any]],
    dag_run_id: str,
    *,
    direct: bool = False,
    built: Mapping[str, tuple[Any, ...]] | None = None,
) -> tuple[int, set[str], bool]:
    """Upsert rows that are newer than canonical (:func:`_newer`); audit before/after of updates.

    ``direct``: rows whose key canonical does not hold are copied straight into it
    (:func:`_insert_new`); the others, and all of them when that meets a concurrent insert, go
    through the temporary table, the content and stale check and the upsert.

    Returns (rows changed, source ids refused as stale: canonical already holds a newer version or
    a later deletion, whether a savepoint of the direct insert stays in the transaction)."""
    if not rows:
        return 0, set(), False
    inserted = 0
    if direct:
        present = _present(conn, kind, rows)
        new = [r for r in rows if r["source_id"] not in present]
        if new and _insert_new(conn, kind, new, built):
            inserted, rows = len(new), [r for r in rows if r["source_id"] in present]
        if not rows:
            return inserted, set(), True
    changed, stale = _upsert_through_temp(conn, kind, rows, dag_run_id, built)
    return inserted + changed, stale, inserted > 0


def _upsert_through_temp(
    conn: psycopg.Connection,
    kind: Kind,
    rows: list[dict[str, Any]],
    dag_run_id: str,
    built: Mapping[str, tuple[Any, ...]] | None = None,
) -> tuple[int, set[str]]:
    """The upsert of :func:`_upsert_canonical` through a temporary table."""
    columns = _COLUMNS[kind]
    table = TABLES[kind]
    conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS tmp_{kind} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    conn.execute(f"TRUNCATE tmp_{kind}")
    copied = _copied(kind)
    _copy_rows(conn, kind, f"tmp_{kind}", rows, built)
    updates = ", ".join(
        f"{c} = EXCLUDED.{c}" for c in (*columns, *_FX_COLUMNS) if c not in ("source_system", "source_id")
    )
    current = _current_of(table)
    stale = _keep_same_content_find_stale(conn, kind)
    # The after-image only of updated rows (an inserted row's xmax is 0 and it has no before-image
    # to audit): building it for every inserted row was ~40 % of the statement.
    changed = conn.execute(
        f"""
        WITH before AS (
            SELECT t.source_id, to_jsonb(c.*) - 'record' AS image FROM tmp_{kind} t
            CROSS JOIN LATERAL ({current}) c WHERE {_newer("t")}
        ), up AS (
            INSERT INTO {table} AS c ({copied}, validated_at)
            SELECT {copied}, now() FROM tmp_{kind}
            ON CONFLICT (source_system, source_id) DO UPDATE SET {updates},
                source_read_at = EXCLUDED.source_read_at, record = NULL, validated_at = now()
            WHERE {_newer("EXCLUDED")}
            RETURNING c.source_id, CASE WHEN c.xmax::text <> '0' THEN to_jsonb(c.*) - 'record' END AS image
        ), audited AS (
            {audit.INSERT_CHANGE}
            SELECT 'validation', 'update', %(table)s, up.source_id, before.image, up.image, %(run_id)s
            FROM up JOIN before USING (source_id)
        )
        SELECT count(*) FROM up
        """,
        {"table": table, "run_id": dag_run_id},
    ).fetchone()
    if stale:
        log.info("%d %s versions older than canonical's were not applied (stale reads)", len(stale), kind)
    return (int(changed[0]) if changed else 0), stale
