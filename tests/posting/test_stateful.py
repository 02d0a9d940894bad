"""Stateful property test of the whole time-entry path: PSA changes, posts, crashes, replays, periods.

Hypothesis drives a small firm through approvals, edits, unapprovals and deletions in the PSA
simulator (its admin API), runs the real extract (sweep) -> validate -> plan -> post path in-process
against the ERP simulator, crashes posts part-way (an ERP client wrapper that dies after N writes,
or a connection dropped after the ERP committed while read-backs fail), retries and clears them,
replays dead letters and parked records, and closes and reopens ERP periods (LE-UK1 parks,
LE-US1 posts to the first open period). After every post that completes, the ERP must equal the
approved PSA set as of the last extract, less what is quarantined, parked or rejected; parked and
rejected records keep exactly the version the ledger last confirmed (the ERP refuses to change a
record in a closed period) and have an open exception item with a reason; nothing is held twice,
and no ledger row is left pending, sent or ambiguous.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg.rows import dict_row

from tests.conftest import RunningSimulator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AS_OF = datetime(2026, 11, 9, 12, tzinfo=UTC)
ENDPOINTS = ("/v2/projects", "/v2/users", "/v2/task_assignments", "/v2/time_entries")
ODS_SCHEMAS = ("staging", "canonical", "ledger", "inbox", "exceptions", "forecast", "audit")
US, UK = "LE-US1", "LE-UK1"  # config/legal_entities.yaml: post_to_first_open, park
MONTHS = ("2026-09", "2026-10", "2026-11")  # periods the machine may close or open
CLOSED_AT_START = ("2026-08", "2026-09")
US_PROJECT, UK_PROJECT, NO_JOB_PROJECT = 10, 20, 30  # the ERP lacks the job of project 30 until fixed
MISSING_RATE = 12  # billable without a rate: quarantined RATE_MISSING whatever happens to it


def _entry(
    entry_id: int, project: int, day: str, hours: str, approved: bool, *, rate: str | None
) -> dict[str, Any]:
    user = 2 if project == UK_PROJECT else 1
    return {
        "id": entry_id,
        "spent_date": day,
        "user_id": user,
        "project_id": project,
        "task_id": 1,
        "hours": hours,
        "notes": f"stateful entry {entry_id}",
        "billable": True,
        "billable_rate": rate,
        "cost_rate": "50.00",
        "is_closed": approved,
        "is_locked": approved,
        "is_billed": False,
        "external_reference": None,
        "created_at": "2026-10-01T08:00:00Z",
        "updated_at": "2026-10-01T08:00:00Z",
    }


ENTRIES = [
    _entry(1, US_PROJECT, "2026-10-05", "1.00", True, rate="150.00"),
    _entry(2, US_PROJECT, "2026-10-06", "2.50", True, rate="150.00"),
    _entry(3, US_PROJECT, "2026-11-03", "3.00", False, rate="150.00"),
    _entry(4, US_PROJECT, "2026-09-28", "4.25", True, rate="150.00"),  # closed period: moved
    _entry(5, UK_PROJECT, "2026-10-07", "1.50", True, rate="120.00"),
    _entry(6, UK_PROJECT, "2026-10-08", "0.75", False, rate="120.00"),
    _entry(7, UK_PROJECT, "2026-11-02", "6.00", True, rate="120.00"),
    _entry(8, UK_PROJECT, "2026-09-29", "2.00", True, rate="120.00"),  # closed period: parked
    _entry(9, NO_JOB_PROJECT, "2026-10-09", "5.00", True, rate="150.00"),  # rejected by the ERP
    _entry(10, NO_JOB_PROJECT, "2026-10-12", "1.25", False, rate="150.00"),
    _entry(11, US_PROJECT, "2026-10-13", "7.50", False, rate="150.00"),
    _entry(MISSING_RATE, US_PROJECT, "2026-10-14", "2.00", True, rate=None),
]
ENTRY_IDS = [e["id"] for e in ENTRIES]

PSA_SEED: dict[str, list[dict[str, Any]]] = {
    "clients": [
        {"id": 1, "name": "Acme Corp.", "is_active": True, "currency": "USD"},
        {"id": 2, "name": "Beacon Ltd", "is_active": True, "currency": "GBP"},
    ],
    "users": [
        {
            "id": u,
            "first_name": "Test",
            "last_name": f"User{u}",
            "email": f"user{u}@example.com",
            "is_active": True,
            "is_contractor": False,
            "weekly_capacity": 144000,
            "default_hourly_rate": "150.00",
            "cost_rate": "50.00",
            "legal_entity": le,
            "practice": "Technology",
            "timezone": tz,
        }
        for u, le, tz in ((1, US, "America/New_York"), (2, UK, "Europe/London"))
    ],
    "tasks": [
        {
            "id": 1,
            "name": "Consulting",
            "billable_by_default": True,
            "default_hourly_rate": "150.00",
            "is_active": True,
        }
    ],
    "projects": [
        {
            "id": p,
            "client_id": c,
            "name": f"Project {p}",
            "code": f"P{p}",
            "is_active": True,
            "is_billable": True,
            "is_fixed_fee": False,
            "bill_by": "Project",
            "budget": None,
            "budget_by": "project",
            "cost_budget": None,
            "fee": None,
            "hourly_rate": "150.00",
            "starts_on": "2026-01-01",
            "ends_on": "2027-12-31",
            "notes": None,
            "billing_type": "time_and_materials",
            "legal_entity": le,
            "currency": cur,
            "practice": "Technology",
        }
        for p, c, le, cur in (
            (US_PROJECT, 1, US, "USD"),
            (UK_PROJECT, 2, UK, "GBP"),
            (NO_JOB_PROJECT, 1, US, "USD"),
        )
    ],
    "task_assignments": [
        {
            "id": 100 + p,
            "project_id": p,
            "task_id": 1,
            "is_active": True,
            "billable": True,
            "hourly_rate": "150.00",
            "budget": None,
        }
        for p in (US_PROJECT, UK_PROJECT, NO_JOB_PROJECT)
    ],
    "time_entries": ENTRIES,
}


def _job(project: int) -> dict[str, Any]:
    customer, entity, currency = (2, UK, "GBP") if project == UK_PROJECT else (1, US, "USD")
    return {
        "external_id": f"psa-project-{project}",
        "name": f"Project {project}",
        "customer": f"psa-client-{customer}",
        "subsidiary": entity,
        "currency": currency,
        "billing_type": "time_and_materials",
        "contract_value": "100000.00",
        "is_inactive": False,
    }


def _period(entity: str, month: str) -> dict[str, Any]:
    start = date.fromisoformat(f"{month}-01")
    end = (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    closed = month in CLOSED_AT_START
    return {
        "external_id": f"{entity}-{month}",
        "subsidiary": entity,
        "period_name": f"{start:%b %Y}",
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "closed": closed,
        "all_locked": closed,
        "ar_locked": closed,
        "ap_locked": closed,
    }


ERP_SEED: dict[str, list[dict[str, Any]]] = {
    "subsidiaries": [
        {
            "external_id": US,
            "name": "Northwind Consulting LLC",
            "country": "US",
            "currency": "USD",
            "is_inactive": False,
        },
        {
            "external_id": UK,
            "name": "Northwind Consulting Ltd",
            "country": "GB",
            "currency": "GBP",
            "is_inactive": False,
        },
    ],
    "currencies": [{"symbol": "USD", "name": "US Dollar"}, {"symbol": "GBP", "name": "British Pound"}],
    "tax_codes": [
        {
            "external_id": "TAX-US-EXEMPT",
            "code": "US-EXEMPT",
            "country": "US",
            "rate": "0.00",
            "is_inactive": False,
        },
        {
            "external_id": "TAX-GB-STD",
            "code": "GB-STD",
            "country": "GB",
            "rate": "20.00",
            "is_inactive": False,
        },
    ],
    "employees": [
        {"external_id": "psa-user-1", "subsidiary": US, "is_inactive": False},
        {"external_id": "psa-user-2", "subsidiary": UK, "is_inactive": False},
    ],
    "customers": [
        {
            "external_id": "psa-client-1",
            "company_name": "Acme Corp.",
            "subsidiary": US,
            "currency": "USD",
            "tax_code": "TAX-US-EXEMPT",
            "is_inactive": False,
        },
        {
            "external_id": "psa-client-2",
            "company_name": "Beacon Ltd",
            "subsidiary": UK,
            "currency": "GBP",
            "tax_code": "TAX-GB-STD",
            "is_inactive": False,
        },
    ],
    "jobs": [_job(US_PROJECT), _job(UK_PROJECT)],
    "accounting_periods": [
        _period(entity, month)
        for entity in (US, UK)
        for month in ("2026-08", "2026-09", "2026-10", "2026-11", "2026-12")
    ],
}


SEEN: Counter[str] = Counter()  # what the examples exercised, printed at the end (pytest -s)


def _seen(what: str) -> None:
    SEEN[what] += 1


def extract_and_validate(
    conn: psycopg.Connection, *, psa_url: str, config: Any, dag: str, run_id: str, as_of: datetime
) -> None:
    """Sweep-extract ``ENDPOINTS`` from the PSA simulator under run keys of ``dag``/``run_id``, then
    validate the time entries (``conn`` in autocommit: each step commits on its own, as tasks do)."""
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.ods import staging
    from psa_erp_sync.validation import time_expense as validation

    client = HarvestClient(base_url=psa_url, token="t", account_id="1")
    keys = {endpoint: psa_extract.run_key_for(dag, run_id, endpoint) for endpoint in ENDPOINTS}
    for endpoint in ENDPOINTS:
        window = psa_extract.plan_window(
            staging.get_watermark(conn, "psa", endpoint),
            mode="sweep",
            as_of=as_of,
            overlap=timedelta(hours=1),
            sweep_days=45,
        )
        psa_extract.extract_endpoint(
            conn, client, endpoint=endpoint, run_key=keys[endpoint], window=window, per_page=2000
        )
    ref = validation.PsaReference.from_staging(conn, keys)
    with conn.transaction():
        validation.validate_run(
            conn,
            kind="time_entry",
            run_key=keys["/v2/time_entries"],
            ref=ref,
            config=config,
            as_of=as_of,
            dag_run_id=run_id,
        ).check()


class SimulatedCrash(Exception):
    """The posting worker died (not an ERP error: nothing in the engine may catch it)."""


class CrashingErp:
    """Wraps the real ERP client; after ``writes`` successful writes the "process" dies: the next
    write raises (after reaching the ERP when ``after_send``), and so does every later call."""

    def __init__(self, inner: Any, *, writes: int, after_send: bool) -> None:
        self.inner = inner
        self.writes_left = writes
        self.after_send = after_send
        self.crashed = False
        self._lock = threading.Lock()

    def _write(self, send: Any) -> Any:
        with self._lock:
            if self.crashed:
                raise SimulatedCrash("the worker is gone")
            if self.writes_left <= 0:
                self.crashed = True
                if self.after_send:
                    send()
                raise SimulatedCrash("killed after the ERP call" if self.after_send else "killed before it")
            self.writes_left -= 1
        return send()

    def submit_batch(self, record_type: str, items: Sequence[dict[str, Any]], idempotency_key: str) -> Any:
        return self._write(lambda: self.inner.submit_batch(record_type, items, idempotency_key))

    def delete(self, record_type: str, external_id: str) -> bool:
        result: bool = self._write(lambda: self.inner.delete(record_type, external_id))
        return result

    def suiteql(self, query: str, *, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        if self.crashed:
            raise SimulatedCrash("the worker is gone")
        result: Iterator[dict[str, Any]] = self.inner.suiteql(query, page_size=page_size)
        return result


def _truncate_ods(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables WHERE schemaname = ANY(%s)",
            (list(ODS_SCHEMAS),),
        ).fetchall()
        conn.execute("TRUNCATE " + ", ".join(r[0] for r in rows) + " RESTART IDENTITY CASCADE")


class PostingMachine(RuleBasedStateMachine):
    dsn: str
    psa: RunningSimulator
    erp: RunningSimulator

    def __init__(self) -> None:
        super().__init__()
        from psa_erp_sync.config import load_config

        self.config = load_config()
        self.erp.admin("POST", "/reset")
        self.psa.admin("POST", "/reset")
        self.psa.admin("PUT", "/config", json={"rate_limit_requests": 0})
        self.erp.admin("POST", "/seed", json=ERP_SEED)
        self.psa.admin("POST", "/seed", json=PSA_SEED)
        _truncate_ods(self.dsn)
        self.runs = 0
        self.last_run: str | None = None  # the run id a clear would post under again
        self.crashed_run: str | None = None  # a crashed post a retry would finish
        self.try_number: dict[str, int] = {}
        self.extracted: dict[str, tuple[bool, Decimal]] | None = None  # PSA as of the last extract
        self.psa_changed = False  # since the last extract

    # -- the PSA side (admin API) ------------------------------------------------------------
    def _psa(self, method: str, path: str, **kwargs: Any) -> None:
        import httpx

        response = httpx.request(method, f"{self.psa.base_url}/admin{path}", timeout=30, **kwargs)
        assert response.status_code in (200, 201, 204, 404), response.text  # 404: already deleted
        if response.status_code != 404 and (
            response.status_code == 204 or response.json().get("changed", True)
        ):
            self.psa_changed = True  # the next post has work to do: worth crashing

    @rule(entry=st.sampled_from(ENTRY_IDS))
    def approve(self, entry: int) -> None:
        _seen("step approve")
        self._psa("POST", f"/time_entries/{entry}/approve")

    @rule(entry=st.sampled_from(ENTRY_IDS))
    def unapprove(self, entry: int) -> None:
        _seen("step unapprove")
        self._psa("POST", f"/time_entries/{entry}/unapprove")

    @rule(entry=st.sampled_from(ENTRY_IDS), quarters=st.integers(min_value=1, max_value=40))
    def edit(self, entry: int, quarters: int) -> None:
        _seen("step edit")
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(
                "SELECT is_closed FROM sim_psa.time_entries WHERE id = %s", (entry,)
            ).fetchone()
        if row is None or not row[0]:
            return  # only approved entries are edited here (an approved entry's hours change)
        self._psa(
            "PATCH",
            f"/time_entries/{entry}",
            json={"hours": f"{quarters * 25 // 100}.{quarters * 25 % 100:02d}"},
        )

    @rule(entry=st.sampled_from(ENTRY_IDS))
    def delete(self, entry: int) -> None:
        _seen("step delete")
        self._psa("DELETE", f"/time_entries/{entry}")

    # -- the ERP side (admin API) ------------------------------------------------------------
    @rule(entity=st.sampled_from((US, UK)), month=st.sampled_from(MONTHS))
    def close_period(self, entity: str, month: str) -> None:
        _seen("step close_period")
        self.erp.admin("POST", f"/periods/{entity}-{month}", json={"closed": True, "allLocked": True})

    @rule(entity=st.sampled_from((US, UK)), month=st.sampled_from(MONTHS))
    def open_period(self, entity: str, month: str) -> None:
        _seen("step open_period")
        self.erp.admin("POST", f"/periods/{entity}-{month}", json={"closed": False, "allLocked": False})

    @rule()
    def fix_master_data(self) -> None:
        """Finance creates the missing job, so a replay of its dead letters can succeed."""
        _seen("step fix_master_data")
        self.erp.admin("POST", "/seed", json={"jobs": [_job(NO_JOB_PROJECT)]})

    # -- the pipeline --------------------------------------------------------------------------
    def _extract_and_validate(self, run_id: str) -> None:
        as_of = AS_OF + timedelta(minutes=self.runs)
        # Autocommit: every extract and the validation commit on their own, as separate tasks do
        # (validation streams the staged rows through a second connection).
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            extract_and_validate(
                conn,
                psa_url=self.psa.base_url,
                config=self.config,
                dag="stateful",
                run_id=run_id,
                as_of=as_of,
            )
            # What the PSA held when it was read (nothing changes it between the read and now).
            self.psa_changed = False
            self.extracted = {
                str(i): (bool(approved), Decimal(hours))
                for i, approved, hours in conn.execute(
                    "SELECT id, is_closed, hours FROM sim_psa.time_entries"
                )
            }

    def _post(self, run_id: str, client: Any, *, concurrency: int = 2) -> None:
        from psa_erp_sync.posting.engine import EngineSettings
        from psa_erp_sync.posting.service import post_record_type

        self.try_number[run_id] = self.try_number.get(run_id, 0) + 1
        self.last_run = run_id
        result = post_record_type(
            dsn=self.dsn,
            client=client,
            record_type="timebill",
            config=self.config,
            settings=EngineSettings(batch_size=2, max_concurrency=concurrency, progress_every_s=3600),
            run_id=run_id,
            task_try=self.try_number[run_id],
        )
        for what, planned in (
            ("planned into the first open period", result.plan["moved_to_open_period"]),
            ("planned a parked posting", result.plan["parked"]),
            ("planned an adjustment", result.plan["planned"]["adjust"]),
            ("planned a reversal", result.plan["planned"]["reverse"]),
        ):
            if planned:
                _seen(what)

    def _client(self, **kwargs: Any) -> Any:
        from psa_erp_sync.clients.erp import NetSuiteClient
        from psa_erp_sync.clients.http import RetryPolicy

        return NetSuiteClient(
            base_url=self.erp.base_url,
            account_id="A",
            token="t",
            timeout=10,
            retry=RetryPolicy(max_attempts=2, base_delay_s=0.0),
            sleep=lambda _: None,
            **kwargs,
        )

    def _new_run(self, prefix: str) -> str:
        self.runs += 1
        return f"{prefix}-{self.runs}"

    @initialize()
    def first_post(self) -> None:
        """Every example starts from a posted firm, so later changes adjust or reverse something."""
        self.post()

    @rule()
    def post(self) -> None:
        _seen("step post")
        run_id = self._new_run("run")
        self._extract_and_validate(run_id)
        with self._client() as client:
            self._post(run_id, client)
        self.crashed_run = None
        self.check_erp_equals_approved_set()

    @precondition(lambda self: self.psa_changed)
    @rule(how=st.sampled_from(("before_send", "after_send", "ambiguous")), writes=st.integers(0, 2))
    def crash(self, how: str, writes: int) -> None:
        """A post that dies part-way, leaving ledger rows ``sent`` or ``ambiguous``.

        ``before_send`` / ``after_send``: the worker dies after ``writes`` ERP writes, just before the
        next one reaches the ERP or just after the ERP committed it. ``ambiguous``: the ERP commits
        batch ``writes + 1`` but drops the connection (``drop_after_commit``) and the read-back that
        should decide it fails too (SuiteQL answers 503), so the task fails with the batch ambiguous.
        """
        from psa_erp_sync.clients.erp import ErpError

        _seen(f"step crash {how}")
        run_id = self._new_run("run")
        self._extract_and_validate(run_id)
        if how == "ambiguous":
            self.erp.admin(
                "PUT",
                "/faults",
                json=[
                    {
                        "id": "drop",
                        "action": "drop_after_commit",
                        "path_regex": "/batch$",
                        "every_nth": 1,
                        "after": writes,
                        "max_hits": 1,
                    },
                    {
                        "id": "read-down",
                        "action": "status",
                        "status": 503,
                        "path_regex": "/suiteql$",
                        "after": 1,
                    },
                ],
            )
        try:
            with self._client() as inner:
                client = (
                    inner
                    if how == "ambiguous"
                    else CrashingErp(inner, writes=writes, after_send=how == "after_send")
                )
                self._post(run_id, client, concurrency=1)
        except (SimulatedCrash, ErpError):
            _seen(f"crashed {how}")
            self.crashed_run = run_id
            return
        finally:
            if how == "ambiguous":
                fired = {r["id"]: r["hits"] for r in self.erp.admin("GET", "/faults")["rules"]}
                self.erp.admin("DELETE", "/faults")
                assert fired["drop"] == 0 or self.crashed_run == run_id, (
                    f"a dropped batch went unnoticed: {fired}"
                )
        self.crashed_run = None  # fewer writes were needed than the crash waited for
        self.check_erp_equals_approved_set()

    @precondition(lambda self: self.crashed_run is not None)
    @rule()
    def retry(self) -> None:
        """Airflow retries the crashed posting task: same run, next try, no new extract."""
        _seen("step retry")
        assert self.crashed_run is not None
        with psycopg.connect(self.dsn) as conn:
            left = conn.execute(
                "SELECT count(*) FROM ledger.posting WHERE state IN ('sent', 'ambiguous')"
            ).fetchone()
        _seen("retry resumes sent/ambiguous rows" if left and left[0] else "retry with nothing in flight")
        with self._client() as client:
            self._post(self.crashed_run, client)
        self.crashed_run = None
        self.check_erp_equals_approved_set()

    @precondition(lambda self: self.last_run is not None)
    @rule()
    def clear(self) -> None:
        """An operator clears the last posting task: it runs again under the same run id."""
        _seen("step clear")
        assert self.last_run is not None
        if self.crashed_run == self.last_run:
            _seen("clear of a crashed post")
        with self._client() as client:
            self._post(self.last_run, client)
        self.crashed_run = None
        self.check_erp_equals_approved_set()

    @precondition(lambda self: self.extracted is not None)
    @rule()
    def replay(self) -> None:
        """dead_letter_replay: release every rejected or parked record, then post (no extract)."""
        _seen("step replay")
        from psa_erp_sync.posting import replay

        run_id = self._new_run("replay")
        with psycopg.connect(self.dsn) as conn, conn.transaction():
            rows = replay.select(conn, replay.ReplayFilter(record_type="timebill"))
            released = replay.release(conn, rows, run_id=run_id, actor="test.replay")
        _seen("replay released records" if released else "replay released nothing")
        with self._client() as client:
            self._post(run_id, client)
        self.crashed_run = None
        self.check_erp_equals_approved_set()

    # -- the invariants --------------------------------------------------------------------------
    @invariant()
    def erp_never_holds_a_record_twice(self) -> None:
        self._erp_timebills()

    def _erp_timebills(self) -> dict[str, Decimal]:
        """ERP hours by PSA id: the timebill plus its correcting journals (LE-US1's corrections of
        a record in a closed period); fails on a duplicate external id or PSA id."""
        items = self.erp.admin("GET", "/records/timebill", params={"limit": 10000})["items"]
        held: dict[str, Decimal] = {}
        for item in items:
            external_id = str(item.get("externalId"))
            assert external_id.startswith("psa-te-"), item
            source_id = external_id.removeprefix("psa-te-")
            memo_source = str(item.get("memo") or "").split()[0]
            assert memo_source == f"psa:{source_id}", item
            assert source_id not in held, f"the ERP holds PSA entry {source_id} twice"
            held[source_id] = Decimal(str(item["hours"]))
        journals = self.erp.admin("GET", "/records/journalentry", params={"limit": 10000})["items"]
        last_action: dict[str, tuple[int, str]] = {}
        for item in journals:
            corrected = str(item["custbody_psa_corrects"])
            source_id = corrected.removeprefix("psa-te-")
            base, _, seq = str(item["externalId"]).rpartition("-c")
            assert base == corrected and str(item.get("memo") or "").startswith(f"psa:{source_id} "), item
            assert source_id in held, f"a correcting journal of {corrected}, which the ERP does not hold"
            _seen("correcting journal in the ERP")
            held[source_id] += Decimal(str(item["custbody_psa_hours"]))
            last_action[source_id] = max(
                last_action.get(source_id, (-1, "")), (int(seq), item["custbody_psa_action"])
            )
        for source_id, (_, action) in last_action.items():
            if action == "reverse":
                assert held[source_id] == 0, (source_id, held[source_id])
                del held[source_id]
        return held

    def check_erp_equals_approved_set(self) -> None:
        from psa_erp_sync.posting import ledger

        assert self.extracted is not None
        held = self._erp_timebills()
        with psycopg.connect(self.dsn) as conn:
            states: dict[str, int] = dict(
                conn.execute("SELECT state, count(*) FROM ledger.posting GROUP BY 1").fetchall()
            )
            assert not {"pending", "sent", "ambiguous"} & set(states), states
            quarantined = {
                sid
                for (sid,) in conn.execute(
                    "SELECT source_id FROM exceptions.item WHERE kind = 'quarantine' AND status = 'open'"
                    " AND record_type = 'time_entry'"
                )
            }
            latest: dict[str, tuple[str, Decimal | None]] = {}
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    f"""
                    SELECT held.*, {ledger.BASE_PAYLOAD} AS base_payload FROM (
                        SELECT source_id,
                               (array_agg(state ORDER BY seq DESC))[1] AS state,
                               (array_agg(action ORDER BY seq DESC) FILTER (WHERE state IN ('confirmed', 'resolved')))[1] AS done_action,
                               {ledger.HELD_COLUMNS}
                        FROM ledger.posting WHERE record_type = 'timebill' GROUP BY 1
                    ) held
                    """
                )
                for row in cur.fetchall():
                    # What the ledger last confirmed: the record plus its correcting journals.
                    net = ledger.Held.from_row(row)
                    confirmed = net.hours if row["done_action"] in ("post", "adjust") else None
                    latest[row["source_id"]] = (row["state"], confirmed)
            with_item = {
                sid
                for (sid,) in conn.execute(
                    "SELECT source_id FROM exceptions.item WHERE status = 'open' AND kind IN ('parked', 'dead_letter')"
                    " AND record_type = 'time_entry' AND reason_code <> ''"
                )
            }
        stuck = {sid for sid, (state, _) in latest.items() if state in ("parked", "rejected")}
        assert stuck <= with_item, (
            f"parked or rejected without an open exception item: {sorted(stuck - with_item)}"
        )
        want = {
            sid: hours
            for sid, (approved, hours) in self.extracted.items()
            if approved and sid not in quarantined and sid not in stuck
        }
        # The ERP holds exactly the approved set, less the records held up in the exception queue ...
        free = {sid: h for sid, h in held.items() if sid not in quarantined and sid not in stuck}
        assert free == want, (
            f"ERP {free} != approved PSA set {want} (quarantined {quarantined}, stuck {stuck})"
        )
        # ... which keep exactly what the ledger last confirmed (a closed period can't be changed).
        parked = {sid for sid, (state, _) in latest.items() if state == "parked"}
        for name, ids in (("quarantined", quarantined), ("parked", parked), ("rejected", stuck - parked)):
            if ids:
                _seen(f"{name} records at a check")
            if ids & set(held):
                _seen(f"{name} record still holds its last confirmed version in the ERP")
        for sid in (quarantined | stuck) & (set(held) | set(latest)):
            assert held.get(sid) == latest.get(sid, ("", None))[1], (sid, held.get(sid), latest.get(sid))
        self.check_product_readback()

    def check_product_readback(self) -> None:
        """The product's own ERP reconciliation (count, hours, amounts to the cent, hash total) agrees."""
        from psa_erp_sync.reconcile import control_totals as ct
        from psa_erp_sync.reconcile import erp_readback

        with psycopg.connect(self.dsn) as conn:
            want, want_rows = erp_readback.expected(conn, "timebill")
        with self._client() as client:
            have, have_rows = erp_readback.actual(client, "timebill", "psa-te-")
        diff = erp_readback.differences(want_rows, have_rows)
        assert diff["missing_in_erp"] == diff["unexpected_in_erp"] == diff["different_in_erp"] == 0, diff
        ct.assert_equal("expected", want, "erp", have)


@pytest.mark.integration
@pytest.mark.slow
def test_posting_state_machine(clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator) -> None:
    SEEN.clear()
    PostingMachine.dsn = clean_ods
    PostingMachine.psa = psa_sim
    PostingMachine.erp = erp_sim
    run_state_machine_as_test(
        PostingMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=12,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    print("\nstateful posting coverage:", dict(sorted(SEEN.items())))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("how", ["before_send", "after_send", "ambiguous"])
def test_crash_then_retry_and_clear(
    how: str, clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    """The crash -> retry -> clear path every run, whatever the state machine happened to draw."""
    PostingMachine.dsn = clean_ods
    PostingMachine.psa = psa_sim
    PostingMachine.erp = erp_sim
    machine = PostingMachine()
    machine.post()
    for entry, quarters in ((1, 9), (2, 13), (5, 17), (7, 21)):  # four adjustments: two batches
        machine.edit(entry, quarters)
    machine.unapprove(3)  # never posted: nothing to reverse
    machine.crash(how, 1)  # the second batch dies
    assert machine.crashed_run is not None
    with psycopg.connect(clean_ods) as conn:
        in_flight = conn.execute(
            "SELECT count(*) FROM ledger.posting WHERE state IN ('sent', 'ambiguous')"
        ).fetchone()
    assert in_flight is not None and in_flight[0] > 0
    machine.retry()  # checks the invariant
    machine.clear()  # and again: nothing changes


@pytest.mark.integration
@pytest.mark.slow
def test_readback_expects_the_posted_version_of_a_parked_adjustment(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    """Minimal sequence found by the state machine: post; close LE-UK1 2026-10; edit a posted UK
    entry of that month; post. The adjustment is parked (policy park) and the ERP keeps the posted
    version, as it must (a closed period can't change)."""
    PostingMachine.dsn = clean_ods
    PostingMachine.psa = psa_sim
    PostingMachine.erp = erp_sim
    machine = PostingMachine()
    machine.post()
    machine.close_period(UK, "2026-10")
    machine.edit(5, 8)  # 1.50 -> 2.00 hours
    machine.post()  # the stateful invariant holds: entry 5 is parked, the ERP keeps 1.50 hours
    with psycopg.connect(clean_ods) as conn:
        latest = conn.execute(
            "SELECT action, state FROM ledger.posting WHERE source_id = '5' ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    assert latest == ("adjust", "parked")
    assert machine._erp_timebills()["5"] == Decimal("1.50")
    machine.check_product_readback()  # unexpected_in_erp: ['5']


@pytest.mark.integration
@pytest.mark.slow
def test_corrections_of_a_closed_period_stack_as_journals_through_crashes(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    """LE-US1 (post_to_first_open): corrections of entries held in closed October become correcting
    journals; a crash right after the ERP committed one, a second correction, a reversal after an
    adjust, the first open period closing and October reopening all keep the invariant (the ERP's
    record + journals per entry = the approved PSA set, the product's read-back agrees)."""
    PostingMachine.dsn = clean_ods
    PostingMachine.psa = psa_sim
    PostingMachine.erp = erp_sim
    machine = PostingMachine()
    machine.post()
    machine.close_period(US, "2026-10")
    machine.edit(1, 11)  # 1.00 -> 2.75 hours: journal +1.75 in November
    machine.crash("after_send", 0)  # the journal is committed, the worker dies
    with psycopg.connect(clean_ods) as conn:
        in_flight = conn.execute(
            "SELECT external_id FROM ledger.posting WHERE state IN ('sent', 'ambiguous') AND corrects IS NOT NULL"
        ).fetchall()
    assert [e for (e,) in in_flight if e.startswith("psa-te-1-c")], in_flight
    machine.retry()  # read back, not resent; checks the invariant
    machine.edit(1, 2)  # a second correction: 0.50 h, journal -2.25
    machine.unapprove(2)  # a reversal: journal -2.50
    machine.post()
    machine.close_period(US, "2026-11")  # the first open period closes: December next
    machine.unapprove(1)  # reverse after the adjusts: journal -0.50
    machine.post()
    machine.approve(1)
    machine.post()
    machine.open_period(US, "2026-10")  # corrected entries stay corrected by journals
    machine.edit(1, 4)
    machine.post()
    assert machine._erp_timebills()["1"] == Decimal("1.00")
    journals = erp_sim.admin("GET", "/records/journalentry", params={"limit": 1000})["items"]
    mine = [j["externalId"] for j in journals if j["externalId"].startswith("psa-te-1-c")]
    assert len(mine) == len(set(mine)) == 5  # +1.75, -2.25, -0.50, +0.50 (approved again), +0.50
    assert len(journals) == len({j["externalId"] for j in journals})


@pytest.mark.integration
@pytest.mark.slow
def test_dead_letter_is_closed_when_a_later_version_posts(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    PostingMachine.dsn = clean_ods
    PostingMachine.psa = psa_sim
    PostingMachine.erp = erp_sim
    machine = PostingMachine()
    machine.post()  # entry 9 is rejected: the ERP has no job for project 30
    machine.fix_master_data()
    machine.edit(9, 8)  # a new approved version, so the planner posts it without a replay
    machine.post()
    with psycopg.connect(clean_ods) as conn:
        states = conn.execute(
            "SELECT state FROM ledger.posting WHERE source_id = '9' ORDER BY seq"
        ).fetchall()
        items = conn.execute(
            "SELECT kind, status FROM exceptions.item WHERE source_id = '9' AND kind = 'dead_letter'"
        ).fetchall()
    assert states == [("rejected",), ("confirmed",)]
    assert machine._erp_timebills()["9"] == Decimal("2.00")
    assert items == [("dead_letter", "resolved")], items  # found: still "open", with an owner


@pytest.mark.integration
@pytest.mark.slow
def test_quarantine_is_closed_when_the_entry_is_deleted(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator
) -> None:
    PostingMachine.dsn = clean_ods
    PostingMachine.psa = psa_sim
    PostingMachine.erp = erp_sim
    machine = PostingMachine()
    machine.post()  # entry 12 is quarantined RATE_MISSING
    machine.delete(MISSING_RATE)
    machine.post()  # the sweep no longer sees it
    with psycopg.connect(clean_ods) as conn:
        items = conn.execute(
            "SELECT reason_code, status FROM exceptions.item WHERE source_id = %s AND kind = 'quarantine'",
            (str(MISSING_RATE),),
        ).fetchall()
    assert items == [("RATE_MISSING", "resolved")], items  # found: still "open"


@pytest.mark.integration
@pytest.mark.slow
def test_planner_failing_mid_plan_fails_the_pass_and_the_next_pass_completes(
    clean_ods: str, psa_sim: RunningSimulator, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planner commits chunk by chunk while the engine sends what committed. A planner that
    dies part-way fails the pass (after the engine finished what it had), leaves nothing in flight
    and nothing pending that it did not also send, and the next pass posts the rest exactly once."""
    from psa_erp_sync.posting import planner
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type

    PostingMachine.dsn = clean_ods
    PostingMachine.psa = psa_sim
    PostingMachine.erp = erp_sim
    machine = PostingMachine()
    machine._extract_and_validate("plan-dies")
    real_payload = planner.erp_payload
    calls = {"n": 0}

    def dies_on_the_fifth(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("planner died")
        return real_payload(*args, **kwargs)

    monkeypatch.setattr(planner, "erp_payload", dies_on_the_fifth)
    with machine._client() as client, pytest.raises(RuntimeError, match="planner died"):
        post_record_type(
            dsn=clean_ods,
            client=client,
            record_type="timebill",
            config=machine.config,
            settings=EngineSettings(batch_size=2, max_concurrency=2, progress_every_s=3600, plan_chunk=2),
            run_id="plan-dies",
            task_try=1,
        )
    with psycopg.connect(clean_ods) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM ledger.posting GROUP BY 1").fetchall())
    # Two chunks of two committed before the fifth record; the engine sent all four.
    assert sum(states.values()) == 4, states
    assert not {s for s in states if s in ("pending", "sent", "ambiguous")}, states
    monkeypatch.setattr(planner, "erp_payload", real_payload)
    machine.post()  # checks ERP == approved set, nothing twice, nothing left in flight
