"""Compute and store one period's revenue recognition from the ODS: the recognition per project,
legal entity and period, and the delta journals still to post. Plain Python taking a connection:
the DAG's task adapts it to Airflow, and the posting of the journals to the ERP comes next.

The inputs are the forecast's own (``forecast.inputs.load_inputs`` as of the period's last day,
with the ETC ``forecast.model.prepare`` computes) and the contracts are built the same way
(``frames.contracts``); the forecast's ``actual`` layer computes the same figures vectorised
(``grid.py``), checked equal to this calculation in ``tests/revenue/test_grid.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psa_erp_sync.ods import exceptions
from psa_erp_sync.revenue import frames, journals, source, store
from psa_erp_sync.revenue.recognition import month_end, month_index, month_start

if TYPE_CHECKING:
    import psycopg

    from psa_erp_sync.config import Config
    from psa_erp_sync.forecast.settings import ForecastSettings
    from psa_erp_sync.posting.periods import PeriodBook

log = logging.getLogger(__name__)


@dataclass
class PeriodOutcome:
    """What one computation did (small enough for XCom)."""

    period: str
    contracts: int = 0
    recognitions_written: int = 0
    unchanged: int = 0
    journals: dict[str, int] = field(default_factory=lambda: {"post": 0, "moved": 0, "park": 0})
    revenue_minor_by_currency: dict[str, int] = field(default_factory=dict)
    journal_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "contracts": self.contracts,
            "recognitions_written": self.recognitions_written,
            "unchanged": self.unchanged,
            "journals": dict(self.journals),
            "revenue_minor_by_currency": dict(self.revenue_minor_by_currency),
        }


def _parked_item(
    config: Config, journal: journals.Journal, placement: journals.Placement, key: str
) -> exceptions.Item:
    """The exception-queue item of a parked journal: finance decides where it goes."""
    return exceptions.Item(
        kind="parked",
        domain="revenue",
        source_system=store.SOURCE_SYSTEM,
        record_type=journals.RECORD_TYPE,
        source_id=key,
        reason_code=placement.reason or "PERIOD_CLOSED",
        owner=config.ownership.owner_for("revenue", journal.legal_entity),
        detail={
            "project_ref": journal.project_ref,
            "period": f"{month_start(journal.period):%Y-%m}",
            "recognition_period": placement.recognition_period,
            "currency": journal.currency,
            "debit_minor": journal.debits,
        },
        legal_entity=journal.legal_entity,
    )


def _contracts(
    conn: psycopg.Connection, period: int, settings: ForecastSettings
) -> list[frames.ContractInputs]:
    """For :func:`compute_and_store_period`: every project's contract as known at the end of
    ``period``, with the forecast's inputs and its estimate to complete."""
    from psa_erp_sync.forecast import billing_kpis, model
    from psa_erp_sync.forecast import inputs as forecast_inputs

    inputs = forecast_inputs.load_inputs(
        conn, as_of=month_end(period), settings=settings, prior_snapshot_id=None
    )
    etc = model.prepare(inputs, settings).etc
    assert etc is not None
    billed = billing_kpis.billed_by_month(conn, month_end(period))
    return frames.contracts(
        inputs.projects,
        inputs.actuals,
        inputs.milestones,
        dict(zip(inputs.projects["project_ref"].tolist(), etc.tolist(), strict=True)),
        period,
        estimates=inputs.estimates,
        contract_terms=inputs.contract_terms,
        billed=None
        if billed is None
        else {ref: {month_index(m): v for m, v in months.items()} for ref, months in billed.items()},
    )


@dataclass(frozen=True)
class RoutedBooks:
    """The periods a journal is placed by: those of the ERP its legal entity routes to on the last
    day of the recognition period (``config/erp_routing.yaml``), when given in ``by_erp``; else
    ``default`` (NetSuite's, as ``master_data_sync`` stored them)."""

    default: PeriodBook
    by_erp: Mapping[str, PeriodBook]

    def of(self, legal_entity: str, period: int) -> PeriodBook:
        if not self.by_erp:
            return self.default
        from psa_erp_sync.routing.route import RouteNotFound, router

        try:
            erp = router().route(legal_entity, month_end(period)).erp
        except RouteNotFound:
            return self.default  # posting parks it NO_ERP_ROUTE until a route covers it
        return self.by_erp.get(erp, self.default)


def compute_and_store_period(
    conn: psycopg.Connection,
    *,
    period: int,
    run_id: str,
    settings: ForecastSettings,
    config: Config,
    periods: PeriodBook | None = None,
    periods_by_erp: Mapping[str, PeriodBook] | None = None,
) -> PeriodOutcome:
    """Recognize ``period`` (a month index) for every project, store the recognitions and plan the
    delta journals against what is already planned for the period, in one transaction.

    ``periods`` defaults to the ERP's accounting periods in the ODS (``master.erp_record``);
    ``periods_by_erp`` (ERP name -> its periods, e.g. SAP's read through its adapter) places the
    journals of an entity routed to that ERP by its periods (:class:`RoutedBooks`). A delta for a
    closed period goes per the legal entity's closed-period policy; an entity with no known period
    parks it (``PERIOD_UNKNOWN``)."""
    accounts = config.legal_entities.revenue_accounts.by_role()
    entities = config.legal_entities.legal_entities
    outcome = PeriodOutcome(period=f"{month_start(period):%Y-%m}")
    with conn.transaction():
        store.lock_period(conn, period)
        books = RoutedBooks(periods or source.accounting_periods(conn), periods_by_erp or {})
        contracts = _contracts(conn, period, settings)
        recognized = frames.recognize_all(contracts, period, window_from=period - 1)
        planned = store.planned_for_period(conn, period)
        stored: list[tuple[Any, str]] = []
        parked: list[exceptions.Item] = []
        for contract in contracts:
            rows = recognized.get(contract.project_ref, [])
            if not rows or rows[-1].period != period:
                continue
            cur = rows[-1]
            prev = rows[-2] if len(rows) > 1 else None
            digest = contract.inputs_hash()
            stored.append((cur, digest))
            outcome.contracts += 1
            outcome.revenue_minor_by_currency[cur.currency] = (
                outcome.revenue_minor_by_currency.get(cur.currency, 0) + cur.period_revenue_minor
            )
            target = journals.journal_for(prev, cur, accounts)
            so_far = planned.get(store.identity_of(target))
            delta = journals.delta(target, so_far.lines if so_far else (), accounts)
            if delta is None:
                outcome.unchanged += 1
                continue
            entity = entities.get(cur.legal_entity)
            book = books.of(cur.legal_entity, period)
            placement = journals.place(delta, book, entity.closed_period_policy if entity else "park")
            key = store.insert_journal(
                conn,
                delta,
                placement,
                seq=(so_far.last_seq if so_far else 0) + 1,
                inputs_hash=digest,
                run_id=run_id,
            )
            if key is not None:
                outcome.journals[placement.outcome] += 1
                outcome.journal_keys.append(key)
                if placement.outcome == "park":
                    parked.append(_parked_item(config, delta, placement, key))
        exceptions.quarantine_many(conn, parked, run_id=run_id)
        outcome.recognitions_written = store.insert_recognitions(conn, stored, run_id)
    log.info(
        "revenue %s: %d contracts, %d recognitions written, %d journals planned, %d moved, %d parked",
        outcome.period,
        outcome.contracts,
        outcome.recognitions_written,
        outcome.journals["post"],
        outcome.journals["moved"],
        outcome.journals["park"],
    )
    return outcome
