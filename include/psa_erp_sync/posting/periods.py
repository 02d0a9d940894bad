"""ERP accounting periods and the closed-period policy.

Period membership uses the legal entity's local date (a PSA ``spent_date`` is already local).
An entry dated in a closed or locked period is never posted there: per legal entity (config),
it goes to the first open period after it, keeping its original date in the memo and the audit,
or it is parked in the exception queue for finance. Summary periods (a quarter or a year, NetSuite's
``isQuarter`` / ``isYear``) only roll up their months: they are never chosen as a posting period.

Corrections (an adjustment or a reversal of a record the ERP holds) follow the same rule for the
period the ERP holds the record in (:meth:`PeriodBook.decide_correction`): when that period is
closed the record cannot be changed there, so the correction becomes a correcting record (a
journal entry carrying the difference) in the first open period for ``post_to_first_open``
entities, or is parked for finance (``park``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from psa_erp_sync.clients.erp_models import AccountingPeriod

#: The periods the posting path reads from the ERP (SuiteQL), before planning and again whenever
#: the ERP answers ``PERIOD_CLOSED`` during a pass.
PERIOD_QUERY = (
    "SELECT externalid, subsidiary, startdate, enddate, closed, alllocked, arlocked, aplocked, "
    "isquarter, isyear FROM accountingperiod ORDER BY startdate"
)


@dataclass(frozen=True)
class PeriodDecision:
    outcome: Literal["post", "moved", "park", "correct"]
    period: str | None
    original_period: str | None
    reason: str | None = None


class PeriodBook:
    """All periods per subsidiary, sorted, with the policy lookups the planner needs."""

    def __init__(self, periods: Iterable[AccountingPeriod]) -> None:
        self._by_entity: dict[str, list[AccountingPeriod]] = {}
        self._by_id: dict[str, AccountingPeriod] = {}
        for period in periods:
            self._by_id[period.external_id] = period
            if period.is_summary:
                continue
            self._by_entity.setdefault(period.subsidiary, []).append(period)
        for periods_of in self._by_entity.values():
            periods_of.sort(key=lambda p: p.start_date)

    @classmethod
    def from_rows(cls, rows: Iterable[dict[str, Any]]) -> PeriodBook:
        return cls(AccountingPeriod.model_validate({k.lower(): v for k, v in row.items()}) for row in rows)

    def get(self, external_id: str) -> AccountingPeriod | None:
        """The period with this external id (summary periods included)."""
        return self._by_id.get(external_id)

    def containing(self, legal_entity: str, day: date) -> AccountingPeriod | None:
        for period in self._by_entity.get(legal_entity, []):
            if period.start_date <= day <= period.end_date:
                return period
        return None

    def first_open_after(
        self, legal_entity: str, period: AccountingPeriod, record_type: str
    ) -> AccountingPeriod | None:
        for candidate in self._by_entity.get(legal_entity, []):
            if candidate.start_date > period.start_date and not candidate.blocks(record_type):
                return candidate
        return None

    def decide(self, legal_entity: str, day: date, record_type: str, policy: str) -> PeriodDecision:
        period = self.containing(legal_entity, day)
        if period is None:
            return PeriodDecision("park", None, None, "PERIOD_UNKNOWN")
        if not period.blocks(record_type):
            return PeriodDecision("post", period.external_id, period.external_id)
        if policy == "post_to_first_open":
            target = self.first_open_after(legal_entity, period, record_type)
            if target is not None:
                return PeriodDecision("moved", target.external_id, period.external_id)
        return PeriodDecision("park", None, period.external_id, "PERIOD_CLOSED")

    def decide_correction(
        self, held_period: str | None, record_type: str, policy: str, *, corrected: bool = False
    ) -> PeriodDecision | None:
        """For an adjustment or reversal of a record the ERP holds in ``held_period``:

        - None when the record can still be changed there (its period is open and it has no
          correcting records): the correction is an ordinary upsert or DELETE;
        - ``correct`` in ``period`` (``original_period`` = ``held_period``): a correcting record
          (a journal entry with the difference) in the first open period from ``held_period`` on,
          when the policy is ``post_to_first_open``. ``corrected``: the entry already has
          correcting records; every later change is a correcting record too (an upsert of the
          record itself would count the earlier corrections twice), even once its period reopens;
        - ``park`` (``PERIOD_CLOSED``) for the ``park`` policy, or when no open period follows.
        """
        period = self.get(held_period) if held_period is not None else None
        blocked = period is not None and period.blocks(record_type)
        if not blocked and not corrected:
            return None
        if policy == "post_to_first_open" and period is not None:
            target = self.first_open_after(period.subsidiary, period, record_type) if blocked else period
            if target is not None:
                return PeriodDecision("correct", target.external_id, held_period)
        return PeriodDecision("park", None, held_period, "PERIOD_CLOSED")


class PendingPeriodBook(PeriodBook):
    """The periods while they are read in a thread (:meth:`start`): a pass starts planning (its
    queue, its superseded rows, its first candidates) while the ERP answers the period query, one
    request that takes a remote ERP's whole service time. The first lookup waits for the read;
    :meth:`wait` raises what the read raised (a pass calls it before it sends anything)."""

    def __init__(self, read: Callable[[], Iterable[dict[str, Any]]]) -> None:
        # No PeriodBook.__init__: its tables come with the read (__getattr__ until then).
        self._read = read
        self._result: Future[PeriodBook] = Future()

    def start(self) -> PendingPeriodBook:
        threading.Thread(target=self._run, name="read-periods", daemon=True).start()
        return self

    def _run(self) -> None:
        try:
            self._result.set_result(PeriodBook.from_rows(self._read()))
        except BaseException as exc:  # handed to whoever waits: the pass fails as before
            self._result.set_exception(exc)

    def wait(self) -> PendingPeriodBook:
        """Once the periods are read: self (every lookup then answers at once); raises the read's error."""
        book = self._result.result()
        self._by_entity, self._by_id = book._by_entity, book._by_id
        return self

    def __getattr__(self, name: str) -> Any:
        # Only the lookups' tables are missing until the read is in: wait for it, then look again.
        if name in ("_by_entity", "_by_id"):
            return getattr(self.wait(), name)
        raise AttributeError(name)
