"""``config/erp_routing.yaml``: legal entity + effective date range -> ERP and account, validated.

The file keeps every version of the map; the highest is in force (:meth:`ErpRouting.active`).
Validation refuses what would route a record nowhere or twice: overlapping ranges, a gap no range
declares (``after_gap``), an unknown ERP name, a cutover without its correction policy, a parallel
run that is not a window of the cutover's two ERPs. Legal entities are checked against
``config/legal_entities.yaml`` by :func:`load_routing`.
"""

from __future__ import annotations

import functools
import itertools
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CorrectionPolicy = Literal["reverse_and_repost", "adjust_in_old"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErpSystem(_Strict):
    """One ERP the integration can post to: its Airflow connection."""

    connection: str = Field(min_length=1)


class ParallelRun(_Strict):
    """A window in which the entity posts to both ERPs: ``primary`` is the book of record,
    ``secondary`` the shadow reconciled against it (:mod:`psa_erp_sync.routing.parallel`)."""

    first_day: date
    last_day: date
    primary: str
    secondary: str

    @model_validator(mode="after")
    def _window(self) -> ParallelRun:
        if self.last_day < self.first_day:
            raise ValueError(f"parallel_run: last_day {self.last_day} is before first_day {self.first_day}")
        if self.primary == self.secondary:
            raise ValueError("parallel_run: primary and secondary must be two different ERPs")
        return self


class EffectiveRange(_Strict):
    """Posting dates ``first_day``..``last_day`` (inclusive; None: unbounded) go to ``erp``/``account``.

    A range whose ERP or account differs from the range before it is a cutover: it names how a
    correction of a record held on the other side is made (``correction_policy``), and may name a
    ``parallel_run`` around the cutover."""

    first_day: date | None = None
    last_day: date | None = None
    erp: str = Field(min_length=1)
    account: str | None = None
    after_gap: bool = False
    correction_policy: CorrectionPolicy | None = None
    parallel_run: ParallelRun | None = None

    def covers(self, day: date) -> bool:
        return (self.first_day is None or self.first_day <= day) and (
            self.last_day is None or day <= self.last_day
        )


class EntityRouting(_Strict):
    effective: list[EffectiveRange] = Field(min_length=1)

    @model_validator(mode="after")
    def _contiguous(self) -> EntityRouting:
        ranges = self.effective
        for i, r in enumerate(ranges):
            if r.first_day is not None and r.last_day is not None and r.last_day < r.first_day:
                raise ValueError(f"range {i}: last_day {r.last_day} is before first_day {r.first_day}")
            if i > 0 and r.first_day is None:
                raise ValueError(f"range {i}: only the first range may start unbounded (first_day: null)")
            if i < len(ranges) - 1 and r.last_day is None:
                raise ValueError(f"range {i}: only the last range may be open-ended (last_day: null)")
        for i, (before, after) in enumerate(itertools.pairwise(ranges), start=1):
            _check_cutover(i, before, after)
        return self


def _check_cutover(i: int, before: EffectiveRange, after: EffectiveRange) -> None:
    assert before.last_day is not None and after.first_day is not None  # checked by the caller
    if after.first_day <= before.last_day:
        raise ValueError(
            f"range {i} starts {after.first_day}, on or before range {i - 1} ends ({before.last_day}): overlap"
        )
    gap = (after.first_day - before.last_day).days > 1
    if gap and not after.after_gap:
        raise ValueError(
            f"range {i}: posting dates {before.last_day} < d < {after.first_day} route nowhere;"
            " declare the gap with after_gap: true"
        )
    if not gap and after.after_gap:
        raise ValueError(f"range {i}: after_gap is set but there is no gap")
    moved = (before.erp, before.account) != (after.erp, after.account)
    if moved and after.correction_policy is None:
        raise ValueError(
            f"range {i}: cutover {before.erp} -> {after.erp} on {after.first_day} needs a correction_policy"
            " (reverse_and_repost or adjust_in_old)"
        )
    if not moved and (after.correction_policy or after.parallel_run):
        raise ValueError(
            f"range {i}: no cutover here (same ERP and account); drop correction_policy/parallel_run"
        )
    run = after.parallel_run
    if run is not None:
        pair = {before.erp, after.erp}
        if {run.primary, run.secondary} != pair:
            raise ValueError(f"range {i}: parallel_run must pair this cutover's ERPs {sorted(pair)}")
        side = before if run.primary == before.erp else after
        if not (side.covers(run.first_day) and side.covers(run.last_day)):
            raise ValueError(
                f"range {i}: parallel_run {run.first_day}..{run.last_day} must lie in the dates that route"
                f" to its primary {run.primary}"
            )


class RoutingVersion(_Strict):
    version: int = Field(ge=1)
    legal_entities: dict[str, EntityRouting] = Field(min_length=1)


class ErpRouting(_Strict):
    version: Literal[1]
    erps: dict[str, ErpSystem] = Field(min_length=1)
    versions: list[RoutingVersion] = Field(min_length=1)

    @model_validator(mode="after")
    def _known(self) -> ErpRouting:
        numbers = [v.version for v in self.versions]
        if numbers != sorted(set(numbers)):
            raise ValueError(f"versions must be listed once each, oldest first: {numbers}")
        for v in self.versions:
            for entity, routing in v.legal_entities.items():
                for r in routing.effective:
                    named = [r.erp] + (
                        [r.parallel_run.primary, r.parallel_run.secondary] if r.parallel_run else []
                    )
                    unknown = sorted(set(named) - set(self.erps))
                    if unknown:
                        raise ValueError(
                            f"version {v.version}, {entity}: unknown ERP {unknown}; known: {sorted(self.erps)}"
                        )
        return self

    def active(self) -> RoutingVersion:
        """The version in force: the highest."""
        return max(self.versions, key=lambda v: v.version)

    def connection_of(self, erp: str) -> str:
        return self.erps[erp].connection


def default_config_dir() -> Path:
    from psa_erp_sync.config import default_config_dir as config_dir

    return config_dir()


def _read(path: Path) -> object:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@functools.cache
def load_routing(config_dir: Path | None = None) -> ErpRouting:
    """``erp_routing.yaml`` of ``config_dir`` (default: the repo's ``config/``), validated; every
    legal entity it names must exist in ``legal_entities.yaml``, and the version in force must route
    every one of them."""
    from psa_erp_sync.config import LegalEntities

    base = config_dir or default_config_dir()
    routing = ErpRouting.model_validate(_read(base / "erp_routing.yaml"))
    known = set(LegalEntities.model_validate(_read(base / "legal_entities.yaml")).legal_entities)
    for v in routing.versions:
        unknown = sorted(set(v.legal_entities) - known)
        if unknown:
            raise ValueError(f"erp_routing.yaml version {v.version}: unknown legal entities {unknown}")
    missing = sorted(known - set(routing.active().legal_entities))
    if missing:
        raise ValueError(
            f"{base / 'erp_routing.yaml'} version {routing.active().version} routes no ERP for {missing},"
            " which legal_entities.yaml lists: add an `effective` range for each (a new legal entity"
            " needs its route before anything of it is posted)"
        )
    return routing
