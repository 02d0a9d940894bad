"""Where a record goes: the ERP and account of a legal entity on a posting date.

Always by the record's posting date (the entry's date, or the first day of the period a policy
places it in), never by the processing time: a January entry approved in March posts where January
routes. A correction of a record held in one ERP goes where the cutover's policy says
(:meth:`Router.routes_for_correction`); a parallel run posts to both ERPs (:meth:`Router.parallel_targets`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from psa_erp_sync.routing.settings import EffectiveRange, ErpRouting, default_config_dir, load_routing

CorrectionAction = Literal["adjust", "reverse", "post"]


class RouteNotFound(LookupError):
    """No ERP for this legal entity on this date (an unknown entity, or a declared gap)."""


@dataclass(frozen=True)
class Route:
    """One destination: ``erp`` (a name of ``erps`` in the routing file), its ``account`` (None:
    the connection's own), the Airflow ``connection`` and the routing ``version`` that decided it."""

    legal_entity: str
    erp: str
    account: str | None
    version: int
    connection: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "legal_entity": self.legal_entity,
            "erp": self.erp,
            "account": self.account,
            "version": self.version,
            "connection": self.connection,
        }

    def same_target(self, other: Route) -> bool:
        return (self.erp, self.account) == (other.erp, other.account)


@dataclass(frozen=True)
class ParallelWindow:
    """A parallel run of ``legal_entity``: records dated ``first_day``..``last_day`` (inclusive) post
    to ``primary`` (their route) and to ``secondary`` (the shadow, reconciled against it)."""

    legal_entity: str
    first_day: date
    last_day: date
    primary: Route
    secondary: Route


class Router:
    """Routes by the version of the routing map in force (the highest)."""

    def __init__(self, routing: ErpRouting) -> None:
        self.routing = routing
        self.active = routing.active()

    def _range(self, legal_entity: str, posting_date: date) -> tuple[int, EffectiveRange]:
        entity = self.active.legal_entities.get(legal_entity)
        if entity is None:
            raise RouteNotFound(
                f"legal entity {legal_entity!r} has no ERP route in erp_routing.yaml version {self.active.version}"
            )
        for i, r in enumerate(entity.effective):
            if r.covers(posting_date):
                return i, r
        raise RouteNotFound(
            f"{legal_entity} routes to no ERP on {posting_date} (erp_routing.yaml version {self.active.version})"
        )

    def _route(self, legal_entity: str, r: EffectiveRange) -> Route:
        return Route(legal_entity, r.erp, r.account, self.active.version, self.routing.connection_of(r.erp))

    def route(self, legal_entity: str, posting_date: date) -> Route:
        """The ERP and account ``legal_entity`` posts to for a record dated ``posting_date``."""
        return self._route(legal_entity, self._range(legal_entity, posting_date)[1])

    def routes_for_correction(
        self, original: Route, correction_date: date
    ) -> list[tuple[CorrectionAction, Route]]:
        """How a correction of a record held at ``original`` reaches the ERPs when the correction is
        posted on ``correction_date`` (the entry's date, or the first day of the open period the
        closed-period policy places it in).

        Same destination: ``[("adjust", route)]`` (the route as the version in force states it).
        Across a cutover, per the cutover's policy:
        ``adjust_in_old`` -> ``[("adjust", original)]``; ``reverse_and_repost`` ->
        ``[("reverse", original), ("post", new)]``.
        """
        i, r = self._range(original.legal_entity, correction_date)
        new = self._route(original.legal_entity, r)
        if new.same_target(original):
            return [("adjust", new)]
        policy = self._policy_between(original, i)
        if policy == "adjust_in_old":
            return [("adjust", original)]
        return [("reverse", original), ("post", new)]

    def _policy_between(self, original: Route, i: int) -> str:
        """The policy of the cutover nearest before range ``i`` away from the original's target
        (a record may cross several cutovers: the latest one decides)."""
        ranges = self.active.legal_entities[original.legal_entity].effective
        for j in range(i, 0, -1):
            policy = ranges[j].correction_policy
            if policy is not None:
                return policy
        # The correction dates before the original's range (a back-dated correction): the first
        # cutover after it decides.
        for r in ranges[i + 1 :]:
            if r.correction_policy is not None:
                return r.correction_policy
        raise RouteNotFound(
            f"{original.legal_entity}: no cutover policy between {original.erp} and range {i}"
        )

    def parallel_targets(self, legal_entity: str, posting_date: date) -> list[Route]:
        """Every ERP a record dated ``posting_date`` posts to: its route, plus the secondary of a
        parallel run whose window holds the date (primary first)."""
        i, r = self._range(legal_entity, posting_date)
        primary = self._route(legal_entity, r)
        ranges = self.active.legal_entities[legal_entity].effective
        for j in (i, i + 1):
            if j <= 0 or j >= len(ranges):
                continue
            run = ranges[j].parallel_run
            if run is None or not (run.first_day <= posting_date <= run.last_day):
                continue
            other = ranges[j - 1] if run.secondary == ranges[j - 1].erp else ranges[j]
            return [primary, self._route(legal_entity, other)]
        return [primary]

    def parallel_windows(self) -> list[ParallelWindow]:
        """Every parallel run of the version in force, by legal entity and first day."""
        windows = []
        for entity in sorted(self.active.legal_entities):
            ranges = self.active.legal_entities[entity].effective
            for j, r in enumerate(ranges):
                run = r.parallel_run
                if run is None or j == 0:
                    continue
                before, after = ranges[j - 1], r
                primary, secondary = (before, after) if run.primary == before.erp else (after, before)
                windows.append(
                    ParallelWindow(
                        entity,
                        run.first_day,
                        run.last_day,
                        self._route(entity, primary),
                        self._route(entity, secondary),
                    )
                )
        return windows

    def erps_in_force(self) -> list[str]:
        """The ERPs the version in force sends anything to (ranges and parallel runs), in the
        order the routing file lists ``erps``: the ERPs a posting task works."""
        named: set[str] = set()
        for entity in self.active.legal_entities.values():
            for r in entity.effective:
                named.add(r.erp)
                if r.parallel_run is not None:
                    named.update((r.parallel_run.primary, r.parallel_run.secondary))
        return [erp for erp in self.routing.erps if erp in named]

    def accounts_not_worked(self, erp: str, account: str) -> list[str]:
        """The accounts of ``erp`` the version in force routes to that a pass through a connection of
        ``account`` would never send (a route's ``account`` must be its connection's; None is)."""
        named = {
            r.account
            for entity in self.active.legal_entities.values()
            for r in entity.effective
            if r.erp == erp and r.account is not None
        }
        return sorted(named - {account})

    def cutovers(self, legal_entity: str) -> list[tuple[date, Route, Route]]:
        """``(first day, from, to)`` of each cutover of ``legal_entity``, oldest first."""
        if legal_entity not in self.active.legal_entities:
            raise RouteNotFound(
                f"legal entity {legal_entity!r} has no ERP route in erp_routing.yaml version {self.active.version}"
            )
        ranges = self.active.legal_entities[legal_entity].effective
        return [
            (after.first_day, self._route(legal_entity, before), self._route(legal_entity, after))
            for before, after in itertools.pairwise(ranges)
            if after.first_day is not None and (before.erp, before.account) != (after.erp, after.account)
        ]


def router(config_dir: Path | None = None) -> Router:
    """The router of ``config/erp_routing.yaml`` (or ``config_dir``'s; default: the directory
    ``PSA_ERP_SYNC_CONFIG_DIR`` names now, so the cached file is the one of that directory)."""
    return Router(load_routing(config_dir or default_config_dir()))


def route(legal_entity: str, posting_date: date, *, config_dir: Path | None = None) -> Route:
    """Where ``legal_entity`` posts a record dated ``posting_date`` (:meth:`Router.route`)."""
    return router(config_dir).route(legal_entity, posting_date)


def routes_for_correction(
    original: Route, correction_date: date, *, config_dir: Path | None = None
) -> list[tuple[CorrectionAction, Route]]:
    """:meth:`Router.routes_for_correction` with the routing file in force."""
    return router(config_dir).routes_for_correction(original, correction_date)
