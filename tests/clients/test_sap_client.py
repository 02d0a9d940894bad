"""S4HanaClient against the SAP simulator over loopback."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from pydantic import ValidationError

from psa_erp_sync.clients.http import RetryPolicy
from psa_erp_sync.clients.sap import S4HanaClient, SapAmbiguous, SapRejected, journal_reference, timesheet_tag
from psa_erp_sync.clients.sap_models import (
    JournalEntryInput,
    JournalEntryItemInput,
    TimeSheetEntry,
    TimeSheetInput,
)
from tests.conftest import RunningSimulator
from tests.simulators.test_sap_sim import SEED

pytestmark = pytest.mark.integration

MAY_5, MAY_6, JUNE_2 = date(2025, 5, 5), date(2025, 5, 6), date(2025, 6, 2)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def work(
    hours: str = "7.50", day: date = MAY_5, who: str = "EMP-100", note: str = "design"
) -> TimeSheetInput:
    return TimeSheetInput(
        person_work_agreement_external_id=who,
        company_code="1010",
        day=day,
        hours=Decimal(hours),
        activity_type="T001",
        wbs_element="PRJ-1.1",
        note=note,
    )


def revenue(amount: str = "1500.00", day: date = MAY_5) -> JournalEntryInput:
    return JournalEntryInput(
        company_code="1010",
        document_date=day,
        posting_date=day,
        currency="EUR",
        header_text="PSA T&M revenue",
        items=(
            JournalEntryItemInput(gl_account="0012100000", amount=Decimal(amount), debit_credit="S"),
            JournalEntryItemInput(
                gl_account="0041000000", amount=Decimal(amount), debit_credit="H", wbs_element="PRJ-1"
            ),
        ),
    )


@pytest.fixture
def sap(sap_sim: RunningSimulator) -> RunningSimulator:
    sap_sim.admin("POST", "/seed", json=copy.deepcopy(SEED))
    return sap_sim


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sap: RunningSimulator, sleeps: Sleeps) -> Iterator[S4HanaClient]:
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=0.05)
    with S4HanaClient(
        base_url=sap.base_url, user="COMM_USER", password="secret", retry=policy, sleep=sleeps
    ) as c:
        yield c


def stored(sap: RunningSimulator) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = sap.admin("GET", "/timesheets")["items"]
    return items


def fault(sap: RunningSimulator, **rule: Any) -> None:
    sap.admin("POST", "/faults", json=rule)


# --------------------------------------------------------------------------- CSRF


def test_csrf_is_fetched_once_and_refreshed_when_it_expires_mid_run(
    sap: RunningSimulator, client: S4HanaClient
) -> None:
    first = client.create_timesheet(work(), idempotency_key="te-1")
    assert client.csrf_fetches == 1
    client.create_timesheet(work(day=MAY_6), idempotency_key="te-2")
    assert client.csrf_fetches == 1  # the token is reused while it lives
    sap.admin("POST", "/csrf/expire")
    third = client.create_timesheet(work("1.00"), idempotency_key="te-3")
    assert client.csrf_fetches == 2
    assert third.TimeSheetRecord != first.TimeSheetRecord
    assert len(stored(sap)) == 3
    assert sap.admin("GET", "/stats")["counters"]["csrf_refused"] == 1  # the one write it refused


@pytest.mark.parametrize("login", ["COMM_USER", ""])
def test_the_hook_builds_a_client_from_a_connection(
    sap: RunningSimulator, monkeypatch: pytest.MonkeyPatch, login: str
) -> None:
    from psa_erp_sync.hooks.sap import SapHook

    conn = {"conn_type": "http", "host": sap.base_url, "login": login, "password": "secret-or-token"}
    monkeypatch.setenv("AIRFLOW_CONN_SAP_HOOKTEST", json.dumps(conn))
    with SapHook("sap_hooktest").get_client() as client:
        assert isinstance(client, S4HanaClient)
        assert ("authorization" in client._http.headers) is (not login)  # bearer header or basic auth
        assert (
            client.create_timesheet(work(), idempotency_key=f"hook-{login or 'oauth'}").TimeSheetStatus
            == "20"
        )


def test_bearer_token_authentication(sap: RunningSimulator) -> None:
    with S4HanaClient(base_url=sap.base_url, token="oauth-access-token") as c:
        assert c.create_timesheet(work(), idempotency_key="te-b").TimeSheetStatus == "20"


# --------------------------------------------------------------------------- timesheets


def test_create_tags_the_record_and_answers_typed(client: S4HanaClient, sap: RunningSimulator) -> None:
    created = client.create_timesheet(work("7.5"), idempotency_key="psa-te-42")
    assert created.TimeSheetDate == MAY_5
    assert created.TimeSheetDataFields.RecordedHours == Decimal("7.50")
    assert created.TimeSheetDataFields.TimeSheetNoteText == "[psa:psa-te-42] design"
    assert stored(sap)[0]["TimeSheetDataFields"]["RecordedHours"] == "7.50"


@pytest.mark.parametrize(
    ("action", "status"),
    [("status_after_commit", 500), ("drop_after_commit", 0), ("status", 503)],
)
def test_an_ambiguous_create_is_resolved_by_its_tag(
    client: S4HanaClient, sap: RunningSimulator, action: str, status: int
) -> None:
    other = client.create_timesheet(work("2.00", note="other"), idempotency_key="te-other")
    rule: dict[str, Any] = {
        "id": "amb",
        "action": action,
        "method": "POST",
        "path_regex": "TimeSheetEntryCollection$",
        "max_hits": 1,
    }
    if status:
        rule["status"] = status
    fault(sap, **rule)
    created = client.create_timesheet(work("3.00"), idempotency_key="te-amb")
    assert sap.admin("GET", "/faults")["rules"][0]["hits"] == 1
    records = stored(sap)
    assert len(records) == 2  # no duplicate, whether the first POST committed (5xx/drop after) or not (503)
    assert {r["TimeSheetRecord"] for r in records} == {other.TimeSheetRecord, created.TimeSheetRecord}
    assert created.TimeSheetDataFields.TimeSheetNoteText.startswith(timesheet_tag("te-amb"))


class Recording(httpx.HTTPTransport):
    """A real transport that remembers every URL it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(unquote(str(request.url)))
        return super().handle_request(request)


class Garbling(httpx.HTTPTransport):
    """A real transport that garbles the body of the first 201 it receives (a broken proxy)."""

    def __init__(self) -> None:
        super().__init__()
        self.garbled = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if response.status_code == 201 and not self.garbled:
            self.garbled += 1
            response.read()
            return httpx.Response(
                201, headers={"content-type": "application/json"}, content=b'{"d": {"oops": 1}}'
            )
        return response


def test_an_unreadable_201_is_resolved_by_read_back(sap: RunningSimulator) -> None:
    garbling = Garbling()
    with S4HanaClient(base_url=sap.base_url, user="U", password="p", transport=garbling) as client:
        created = client.create_timesheet(work(), idempotency_key="te-garbled")
        assert garbling.garbled == 1
        assert created.TimeSheetDataFields.TimeSheetNoteText.startswith("[psa:te-garbled]")
        assert len(stored(sap)) == 1


def test_read_back_pages_without_orderby_count_or_date_ranges(sap: RunningSimulator) -> None:
    sap.admin("PUT", "/config", json={"page_size": 3})
    recording = Recording()
    client = S4HanaClient(base_url=sap.base_url, user="U", password="p", transport=recording)
    for n in range(7):
        client.create_timesheet(work(f"{n + 1}.00"), idempotency_key=f"k-{n}")
    client.create_timesheet(work("1.00", day=MAY_6), idempotency_key="k-next-day")
    client.create_timesheet(work("1.00", who="EMP-200"), idempotency_key="k-0")  # same key, other person

    day = client.timesheets("EMP-100", "1010", day=MAY_5)
    assert len(day) == 7 and {e.TimeSheetDate for e in day} == {MAY_5}
    assert len(client.timesheets("EMP-100", "1010")) == 8  # three pages and a bit, every one followed
    found = client.find_timesheets_by_tag("EMP-100", "1010", MAY_5, "k-4")
    assert [e.TimeSheetDataFields.RecordedHours for e in found] == [Decimal("5.00")]
    # A key is not a prefix of another: k-1 does not find k-1x.
    client.create_timesheet(work("9.00"), idempotency_key="k-1x")
    assert len(client.find_timesheets_by_tag("EMP-100", "1010", MAY_5, "k-1")) == 1
    reads = [u for u in recording.urls if "TimeSheetEntryCollection?" in u]
    assert any("$skiptoken=" in u for u in reads)  # it followed __next
    for quirk in ("$orderby", "$inlinecount", "$count", " gt ", " lt ", " ge ", " le "):
        assert not any(quirk in u for u in reads), quirk
    client.close()


def test_approved_record_changes_through_a_successor(client: S4HanaClient, sap: RunningSimulator) -> None:
    created = client.create_timesheet(work("8.00"), idempotency_key="te-7")
    sap.admin("POST", f"/timesheets/{created.TimeSheetRecord}/approve")
    approved = client.timesheets("EMP-100", "1010", day=MAY_5)[0]
    assert approved.TimeSheetStatus == "30"

    dry = client.change_timesheet(approved, work("6.00"), idempotency_key="te-7-v2", test_run=True)
    assert dry.TimeSheetIsExecutedInTestRun and dry.TimeSheetPredecessorRecord == approved.TimeSheetRecord
    assert [r["TimeSheetStatus"] for r in stored(sap)] == ["30"]  # the dry run wrote nothing

    successor = client.change_timesheet(approved, work("6.00"), idempotency_key="te-7-v2")
    assert successor.TimeSheetPredecessorRecord == approved.TimeSheetRecord
    assert successor.TimeSheetRecord != approved.TimeSheetRecord
    assert successor.TimeSheetDataFields.RecordedHours == Decimal("6.00")
    history = {e.TimeSheetRecord: e for e in client.timesheets("EMP-100", "1010", day=MAY_5)}
    assert history[approved.TimeSheetRecord].TimeSheetStatus == "50"
    assert history[approved.TimeSheetRecord].TimeSheetDataFields.RecordedHours == Decimal("8.00")

    with pytest.raises(SapRejected) as stale:  # the approved original is history now
        client.change_timesheet(approved, work("5.00"), idempotency_key="te-7-v3")
    assert stale.value.code == "LR/119"

    cancelled = client.delete_timesheet(successor)
    assert cancelled.TimeSheetStatus == "60"
    assert client.find_timesheets_by_tag("EMP-100", "1010", MAY_5, "te-7-v2")[0].is_live is False


def test_ambiguous_change_is_resolved_by_the_change_tag(client: S4HanaClient, sap: RunningSimulator) -> None:
    created = client.create_timesheet(work("8.00"), idempotency_key="te-8")
    sap.admin("POST", f"/timesheets/{created.TimeSheetRecord}/approve")
    fault(
        sap,
        id="drop",
        action="drop_after_commit",
        method="POST",
        path_regex="TimeSheetEntryCollection$",
        max_hits=1,
    )
    successor = client.change_timesheet(created, work("4.00"), idempotency_key="te-8-v2")
    assert successor.TimeSheetPredecessorRecord == created.TimeSheetRecord
    assert sorted(r["TimeSheetStatus"] for r in stored(sap)) == ["20", "50"]


def test_ambiguous_delete_is_resolved_by_reading_the_record(
    client: S4HanaClient, sap: RunningSimulator
) -> None:
    created = client.create_timesheet(work(), idempotency_key="te-9")
    fault(
        sap,
        id="drop",
        action="drop_after_commit",
        method="POST",
        path_regex="TimeSheetEntryCollection$",
        max_hits=1,
    )
    assert client.delete_timesheet(created).TimeSheetStatus == "60"
    fault(
        sap,
        id="early",
        action="status",
        status=503,
        method="POST",
        path_regex="TimeSheetEntryCollection$",
        max_hits=1,
    )
    other = client.create_timesheet(work("1.00"), idempotency_key="te-10")
    assert client.delete_timesheet(other).TimeSheetStatus == "60"  # did not land: sent again, once
    assert sorted(r["TimeSheetStatus"] for r in stored(sap)) == ["60", "60"]


def test_dry_run_create_writes_nothing(client: S4HanaClient, sap: RunningSimulator) -> None:
    dry = client.create_timesheet(work(), idempotency_key="te-dry", test_run=True)
    assert dry.TimeSheetIsExecutedInTestRun is True
    assert stored(sap) == []
    with pytest.raises(SapRejected) as closed:
        client.create_timesheet(work(day=JUNE_2), idempotency_key="te-dry-june", test_run=True)
    assert closed.value.period_closed


# --------------------------------------------------------------------------- $batch


def test_batch_one_changeset_per_record_rejections_stay_their_own(
    client: S4HanaClient, sap: RunningSimulator
) -> None:
    results = client.create_timesheets(
        [
            ("b-1", work("1.00")),
            ("b-2", work("2.00", day=JUNE_2)),
            ("b-3", work("3.00", who="NOBODY")),
            ("b-4", work("4.00")),
        ]
    )
    assert isinstance(results[0], TimeSheetEntry) and isinstance(results[3], TimeSheetEntry)
    assert isinstance(results[1], SapRejected) and results[1].period_closed
    assert results[1].message == "Posting period 006 2025 is not open"
    assert isinstance(results[2], SapRejected) and results[2].code == "HRPAD00/101"
    assert sorted(r["TimeSheetDataFields"]["RecordedHours"] for r in stored(sap)) == ["1.00", "4.00"]


def test_batch_second_changeset_failing_rolls_back_only_itself(
    client: S4HanaClient, sap: RunningSimulator
) -> None:
    sap.admin("PUT", "/config", json={"fail_batch_changeset": 2})
    results = client.create_timesheets([("c-1", work("1.00")), ("c-2", work("2.00")), ("c-3", work("3.00"))])
    assert [type(r).__name__ for r in results] == ["TimeSheetEntry", "SapRejected", "TimeSheetEntry"]
    assert isinstance(results[1], SapRejected) and results[1].status == 500
    assert sorted(r["TimeSheetDataFields"]["RecordedHours"] for r in stored(sap)) == ["1.00", "3.00"]
    # The rolled-back one is simply absent: posting it again creates it once.
    again = client.create_timesheet(work("2.00"), idempotency_key="c-2")
    assert again.TimeSheetDataFields.RecordedHours == Decimal("2.00") and len(stored(sap)) == 3


def test_ambiguous_batch_is_resolved_record_by_record(client: S4HanaClient, sap: RunningSimulator) -> None:
    fault(sap, id="lost", action="drop_after_commit", method="POST", path_regex=r"\$batch$", max_hits=1)
    results = client.create_timesheets(
        [("d-1", work("1.00")), ("d-2", work("2.00", day=JUNE_2)), ("d-3", work("3.00"))]
    )
    assert isinstance(results[0], TimeSheetEntry) and isinstance(results[2], TimeSheetEntry)
    assert isinstance(results[1], SapRejected) and results[1].period_closed  # still a rejection, not a crash
    assert len(stored(sap)) == 2  # committed by the lost $batch, found by tag, not sent again


# --------------------------------------------------------------------------- journal entries and periods


def test_journal_entry_posts_once_and_reads_back_by_reference(
    client: S4HanaClient, sap: RunningSimulator
) -> None:
    fault(
        sap,
        id="amb",
        action="status_after_commit",
        status=504,
        method="POST",
        path_regex="JournalEntryCollection$",
        max_hits=1,
    )
    posted = client.post_journal_entry(revenue(), idempotency_key="rev-2025-05-PRJ-1")
    assert posted.DocumentReferenceID == journal_reference("rev-2025-05-PRJ-1")
    assert posted.to_Item is not None and [i.AmountInTransactionCurrency for i in posted.to_Item.results] == [
        Decimal("1500.00"),
        Decimal("1500.00"),
    ]
    assert sap.admin("GET", "/stats")["journal_entries"] == 1
    assert [e.AccountingDocument for e in client.find_journal_entries("1010", "rev-2025-05-PRJ-1")] == [
        posted.AccountingDocument
    ]


def test_closed_period_is_a_rejection_with_the_real_message(
    client: S4HanaClient, sap: RunningSimulator
) -> None:
    with pytest.raises(SapRejected) as refused:
        client.post_journal_entry(revenue(day=JUNE_2), idempotency_key="rev-june")
    assert (refused.value.status, refused.value.code) == (400, "F5/201")
    assert refused.value.message == "Posting period 006 2025 is not open"
    assert refused.value.period_closed
    assert sap.admin("GET", "/stats")["journal_entries"] == 0


def test_unbalanced_entry_never_leaves_the_client() -> None:
    with pytest.raises(ValidationError, match=r"differ by 0\.01"):
        JournalEntryInput(
            company_code="1010",
            document_date=MAY_5,
            posting_date=MAY_5,
            currency="EUR",
            items=(
                JournalEntryItemInput(gl_account="1", amount=Decimal("1.00"), debit_credit="S"),
                JournalEntryItemInput(gl_account="2", amount=Decimal("0.99"), debit_credit="H"),
            ),
        )


def test_posting_periods(client: S4HanaClient, sap: RunningSimulator) -> None:
    periods = client.posting_periods("1010", 2025)
    assert [(p.FiscalPeriod, p.PostingPeriodIsOpen) for p in periods] == [("005", True), ("006", False)]
    assert periods[0].FiscalPeriodStartDate == date(2025, 5, 1) and periods[0].FiscalPeriodEndDate == date(
        2025, 5, 31
    )
    assert client.is_period_open("1010", MAY_5) and not client.is_period_open("1010", JUNE_2)
    assert not client.is_period_open("1010", date(2025, 7, 1))  # not defined: not open


# --------------------------------------------------------------------------- retries and models


def test_reads_retry_throttling_with_retry_after(
    client: S4HanaClient, sap: RunningSimulator, sleeps: Sleeps
) -> None:
    fault(sap, id="storm", action="throttle", retry_after=3, method="GET", max_hits=2)
    assert client.timesheets("EMP-100", "1010") == []
    assert sleeps == [3.0, 3.0]


def test_a_5xx_on_a_write_is_ambiguous_not_retried(client: S4HanaClient, sap: RunningSimulator) -> None:
    fault(
        sap,
        id="boom",
        action="status_after_commit",
        status=500,
        method="POST",
        path_regex=r"\$batch$",
        max_hits=5,
    )
    from psa_erp_sync.clients.sap import BatchRequest

    with pytest.raises(SapAmbiguous):
        client.batch(
            [[BatchRequest("POST", "TimeSheetEntryCollection", work().payload(operation="C", note="x"))]]
        )
    assert sap.admin("GET", "/faults")["rules"][0]["hits"] == 1


def test_answers_refuse_numbers_for_decimals() -> None:
    raw = {
        "PersonWorkAgreementExternalID": "E",
        "CompanyCode": "1010",
        "TimeSheetRecord": "000000000001",
        "TimeSheetDate": "/Date(1746403200000)/",
        "TimeSheetStatus": "20",
        "TimeSheetDataFields": {"RecordedHours": 7.5},
    }
    with pytest.raises(ValidationError, match=r"Edm\.Decimal"):
        TimeSheetEntry.model_validate(raw)
    raw["TimeSheetDataFields"] = {"RecordedHours": "7.50"}
    assert TimeSheetEntry.model_validate(raw).TimeSheetDate == MAY_5
    with pytest.raises(ValidationError):
        TimeSheetEntry.model_validate({**raw, "TimeSheetDate": "/Date(1746403200001)/"})
