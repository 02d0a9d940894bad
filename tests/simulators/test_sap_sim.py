"""The SAP S/4HANA simulator over loopback, spoken to in raw HTTP (no client of ours in between)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, RunningSimulator, free_port

pytestmark = pytest.mark.integration

TS = "/sap/opu/odata/sap/API_MANAGE_WORKFORCE_TIMESHEET"
JE = "/sap/opu/odata/sap/ZPSA_JOURNALENTRY_SRV"
JUNE_2 = "/Date(1748822400000)/"  # 2025-06-02 (June 2025 is closed)
MAY_5 = "/Date(1746403200000)/"  # 2025-05-05
MAY_6 = "/Date(1746489600000)/"  # 2025-05-06
MAY_7 = "/Date(1746576000000)/"  # 2025-05-07

SEED: dict[str, Any] = {
    "company_codes": [{"company_code": "1010", "name": "Inlandsgesellschaft", "currency": "EUR"}],
    "work_agreements": [
        {"external_id": "EMP-100", "company_code": "1010", "person_work_agreement": "50000100"},
        {"external_id": "EMP-200", "company_code": "1010", "person_work_agreement": "50000200"},
    ],
    "posting_periods": [
        {"company_code": "1010", "fiscal_year": 2025, "period": 5, "open": True},
        {"company_code": "1010", "fiscal_year": 2025, "period": 6, "open": False},
    ],
}


def entry(
    hours: str = "7.50", *, day: str = MAY_5, who: str = "EMP-100", note: str = "", **extra: Any
) -> dict[str, Any]:
    return {
        "PersonWorkAgreementExternalID": who,
        "CompanyCode": "1010",
        "TimeSheetDate": day,
        "TimeSheetIsReleasedOnSave": True,
        "TimeSheetOperation": "C",
        "TimeSheetDataFields": {
            "ActivityType": "T001",
            "WBSElement": "PRJ-1.1",
            "ControllingArea": "A000",
            "RecordedHours": hours,
            "HoursUnitOfMeasure": "H",
            "TimeSheetNoteText": note,
        },
        **extra,
    }


def journal(
    amount: str = "100.00", *, day: str = MAY_5, credit: str | None = None, ref: str = "R1"
) -> dict[str, Any]:
    return {
        "CompanyCode": "1010",
        "AccountingDocumentType": "SA",
        "DocumentDate": day,
        "PostingDate": day,
        "TransactionCurrency": "EUR",
        "DocumentReferenceID": ref,
        "DocumentHeaderText": "PSA revenue",
        "to_Item": {
            "results": [
                {"GLAccount": "0012100000", "AmountInTransactionCurrency": amount, "DebitCreditCode": "S"},
                {
                    "GLAccount": "0041000000",
                    "AmountInTransactionCurrency": credit or amount,
                    "DebitCreditCode": "H",
                },
            ]
        },
    }


class Session:
    """An httpx client with basic auth that fetched a CSRF token (cookies kept by httpx)."""

    def __init__(self, sim: RunningSimulator) -> None:
        self.sim = sim
        self.http = httpx.Client(base_url=sim.base_url, auth=("COMM_USER", "secret"), timeout=10)
        self.token = ""

    def fetch(self, path: str = TS + "/") -> httpx.Response:
        response = self.http.get(path, headers={"X-CSRF-Token": "Fetch"})
        self.token = response.headers.get("x-csrf-token", "")
        return response

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        return self.http.post(path, json=body, headers={"X-CSRF-Token": self.token, **headers})

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(path, params=params)


@pytest.fixture
def sap(sap_sim: RunningSimulator) -> RunningSimulator:
    sap_sim.admin("POST", "/seed", json=SEED)
    return sap_sim


@pytest.fixture
def s(sap: RunningSimulator) -> Iterator[Session]:
    session = Session(sap)
    session.fetch()
    yield session
    session.http.close()


def records(sap: RunningSimulator) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = sap.admin("GET", "/timesheets")["items"]
    return items


# --------------------------------------------------------------------------- auth and CSRF


def test_auth_is_required(sap: RunningSimulator) -> None:
    response = httpx.get(sap.base_url + TS + "/TimeSheetEntryCollection")
    assert response.status_code == 401
    assert "Basic" in response.headers["www-authenticate"]
    bearer = httpx.get(sap.base_url + TS + "/", headers={"Authorization": "Bearer abc"})
    assert bearer.status_code == 200


def test_csrf_fetch_required_and_expiry(sap: RunningSimulator) -> None:
    s = Session(sap)
    refused = s.post(TS + "/TimeSheetEntryCollection", entry())
    assert refused.status_code == 403
    assert refused.headers["x-csrf-token"] == "Required"
    assert refused.text == "CSRF token validation failed"

    fetched = s.fetch()
    assert fetched.status_code == 200 and s.token
    assert "SAP_SESSIONID_S4H_100" in fetched.headers.get("set-cookie", "")
    assert s.post(TS + "/TimeSheetEntryCollection", entry()).status_code == 201
    # The same session fetches the same token while it lives.
    assert s.fetch().headers["x-csrf-token"] == s.token

    # A token without its session cookie is refused.
    stranger = httpx.post(
        sap.base_url + TS + "/TimeSheetEntryCollection",
        json=entry(),
        auth=("U", "p"),
        headers={"X-CSRF-Token": s.token},
    )
    assert stranger.status_code == 403

    assert sap.admin("POST", "/csrf/expire")["expired"] >= 1
    expired = s.post(TS + "/TimeSheetEntryCollection", entry())
    assert expired.status_code == 403 and expired.headers["x-csrf-token"] == "Required"
    old = s.token
    s.fetch()
    assert s.token != old
    assert s.post(TS + "/TimeSheetEntryCollection", entry()).status_code == 201

    sap.admin("PUT", "/config", json={"csrf_ttl_s": 0})  # every token is born expired
    s.http.cookies.clear()
    s.fetch()
    assert s.post(TS + "/TimeSheetEntryCollection", entry()).status_code == 403
    assert len(records(sap)) == 2
    assert sap.admin("GET", "/stats")["counters"]["csrf_refused"] == 4


# --------------------------------------------------------------------------- timesheets


def test_create_answers_the_published_shape(s: Session) -> None:
    response = s.post(TS + "/TimeSheetEntryCollection", entry("7.5", note="[psa:k1] design"))
    assert response.status_code == 201, response.text
    d = response.json()["d"]
    assert re.fullmatch(r"\d{12}", d["TimeSheetRecord"])
    assert d["PersonWorkAgreement"] == "50000100"
    assert d["TimeSheetDate"] == MAY_5
    assert d["TimeSheetStatus"] == "20"  # released on save
    assert d["TimeSheetPredecessorRecord"] == ""
    assert d["TimeSheetDataFields"]["RecordedHours"] == "7.50"
    assert d["TimeSheetDataFields"]["TimeSheetNoteText"] == "[psa:k1] design"
    location = response.headers["location"]
    assert location.startswith(f"{s.sim.base_url}{TS}/TimeSheetEntryCollection(")
    read = s.http.get(location)
    assert read.status_code == 200 and read.json()["d"]["TimeSheetRecord"] == d["TimeSheetRecord"]
    assert read.json()["d"]["__metadata"]["type"] == "API_MANAGE_WORKFORCE_TIMESHEET.TimeSheetEntry"


@pytest.mark.parametrize(
    ("change", "code_or_text"),
    [
        ({"TimeSheetDataFields": {"RecordedHours": 7.5, "WBSElement": "P"}}, "Edm.Decimal"),
        ({"TimeSheetDate": "2025-05-05"}, "/Date(ms)/"),
        ({"TimeSheetOperation": "X"}, "TimeSheetOperation"),
        ({"ExternalDocumentID": "abc"}, "ExternalDocumentID"),  # no external document number on timesheets
        ({"PersonWorkAgreementExternalID": "NOBODY"}, "HRPAD00/101"),
        ({"TimeSheetDataFields": {"RecordedHours": "8.00", "HoursUnitOfMeasure": "H"}}, "LR/222"),
    ],
)
def test_create_is_validated(s: Session, change: dict[str, Any], code_or_text: str) -> None:
    body = {**entry(), **change}
    response = s.post(TS + "/TimeSheetEntryCollection", body)
    assert response.status_code == 400, response.text
    assert code_or_text in json.dumps(response.json()["error"])
    assert records(s.sim) == []


def test_approved_record_never_changes_in_place(s: Session) -> None:
    created = s.post(TS + "/TimeSheetEntryCollection", entry("8.00")).json()["d"]
    original = created["TimeSheetRecord"]
    # Before approval a change is in place: same record, new hours.
    change = {**entry("6.00"), "TimeSheetOperation": "U", "TimeSheetRecord": original}
    in_place = s.post(TS + "/TimeSheetEntryCollection", change).json()["d"]
    assert (
        in_place["TimeSheetRecord"] == original and in_place["TimeSheetDataFields"]["RecordedHours"] == "6.00"
    )

    assert s.sim.admin("POST", f"/timesheets/{original}/approve")["TimeSheetStatus"] == "30"
    change = {**entry("5.00"), "TimeSheetOperation": "U", "TimeSheetRecord": original}
    successor = s.post(TS + "/TimeSheetEntryCollection", change)
    assert successor.status_code == 201, successor.text
    new = successor.json()["d"]
    assert new["TimeSheetRecord"] != original
    assert new["TimeSheetPredecessorRecord"] == original
    assert (new["TimeSheetStatus"], new["TimeSheetDataFields"]["RecordedHours"]) == ("20", "5.00")
    by_record = {r["TimeSheetRecord"]: r for r in records(s.sim)}
    assert by_record[original]["TimeSheetStatus"] == "50"
    assert by_record[original]["TimeSheetDataFields"]["RecordedHours"] == "6.00"  # the approved data stays

    again = s.post(TS + "/TimeSheetEntryCollection", change)  # the superseded record is final
    assert again.status_code == 400 and again.json()["error"]["code"] == "LR/119"

    delete = {**entry(), "TimeSheetOperation": "D", "TimeSheetRecord": new["TimeSheetRecord"]}
    deleted = s.post(TS + "/TimeSheetEntryCollection", delete)
    assert deleted.status_code == 201 and deleted.json()["d"]["TimeSheetStatus"] == "60"
    chain = sorted(
        (r["TimeSheetRecord"], r["TimeSheetStatus"], r["TimeSheetPredecessorRecord"]) for r in records(s.sim)
    )
    assert chain == [(original, "50", ""), (new["TimeSheetRecord"], "60", original)]


def test_changes_and_deletes_only_through_post(s: Session) -> None:
    record = s.post(TS + "/TimeSheetEntryCollection", entry()).json()["d"]["TimeSheetRecord"]
    path = f"{TS}/TimeSheetEntryCollection(PersonWorkAgreementExternalID='EMP-100',CompanyCode='1010',TimeSheetRecord='{record}')"
    for method in ("DELETE", "PATCH", "PUT"):
        response = s.http.request(method, path, json={}, headers={"X-CSRF-Token": s.token})
        assert response.status_code == 405, method
    assert [r["TimeSheetStatus"] for r in records(s.sim)] == ["20"]


def test_dry_run_writes_nothing(s: Session) -> None:
    response = s.post(TS + "/TimeSheetEntryCollection", entry(TimeSheetIsExecutedInTestRun=True))
    assert response.status_code == 201, response.text
    assert response.json()["d"]["TimeSheetIsExecutedInTestRun"] is True
    assert records(s.sim) == []
    # A dry run still runs every check, the period's too.
    closed = s.post(TS + "/TimeSheetEntryCollection", entry(day=JUNE_2, TimeSheetIsExecutedInTestRun=True))
    assert closed.status_code == 400 and closed.json()["error"]["code"] == "F5/201"
    # A dry-run change of an approved record leaves both the record and the chain untouched.
    record = s.post(TS + "/TimeSheetEntryCollection", entry()).json()["d"]["TimeSheetRecord"]
    s.sim.admin("POST", f"/timesheets/{record}/approve")
    change = {
        **entry("1.00"),
        "TimeSheetOperation": "U",
        "TimeSheetRecord": record,
        "TimeSheetIsExecutedInTestRun": True,
    }
    assert (
        s.post(TS + "/TimeSheetEntryCollection", change).json()["d"]["TimeSheetPredecessorRecord"] == record
    )
    assert [(r["TimeSheetRecord"], r["TimeSheetStatus"]) for r in records(s.sim)] == [(record, "30")]


# --------------------------------------------------------------------------- periods and journal entries


def test_closed_period_answers_the_real_error_body(s: Session) -> None:
    for path, body in (
        (JE + "/JournalEntryCollection", journal(day=JUNE_2)),
        (TS + "/TimeSheetEntryCollection", entry(day=JUNE_2)),
    ):
        response = s.post(path, body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "F5/201"
        assert error["message"] == {"lang": "en", "value": "Posting period 006 2025 is not open"}
        assert error["innererror"]["errordetails"][0]["code"] == "F5/201"
        assert error["innererror"]["errordetails"][0]["severity"] == "error"
    s.sim.admin(
        "POST", "/periods", json=[{"company_code": "1010", "fiscal_year": 2025, "period": 6, "open": True}]
    )
    assert s.post(JE + "/JournalEntryCollection", journal(day=JUNE_2)).status_code == 201
    # A period never defined is not open either.
    assert (
        s.post(JE + "/JournalEntryCollection", journal(day="/Date(1893456000000)/")).json()["error"][
            "message"
        ]["value"]
        == "Posting period 001 2030 is not open"
    )


def test_posting_periods_are_readable(s: Session) -> None:
    rows = s.get(
        JE + "/PostingPeriodCollection", **{"$filter": "CompanyCode eq '1010' and FiscalYear eq '2025'"}
    )
    periods = {p["FiscalPeriod"]: p["PostingPeriodIsOpen"] for p in rows.json()["d"]["results"]}
    assert periods == {"005": True, "006": False}


def test_journal_entries_are_balanced_per_document(s: Session) -> None:
    unbalanced = s.post(JE + "/JournalEntryCollection", journal("100.00", credit="99.99"))
    assert unbalanced.status_code == 400 and unbalanced.json()["error"]["code"] == "F5/702"
    floats = journal()
    floats["to_Item"]["results"][0]["AmountInTransactionCurrency"] = 100.0
    assert s.post(JE + "/JournalEntryCollection", floats).status_code == 400

    posted = s.post(JE + "/JournalEntryCollection", journal("1234.50", ref="PSA-EX-9"))
    assert posted.status_code == 201, posted.text
    d = posted.json()["d"]
    assert (
        re.fullmatch(r"\d{10}", d["AccountingDocument"])
        and d["FiscalYear"] == "2025"
        and d["FiscalPeriod"] == "005"
    )
    read = s.get(
        JE + "/JournalEntryCollection",
        **{"$filter": "DocumentReferenceID eq 'PSA-EX-9'", "$expand": "to_Item"},
    ).json()["d"]["results"]
    assert [doc["AccountingDocument"] for doc in read] == [d["AccountingDocument"]]
    items = read[0]["to_Item"]["results"]
    assert [(i["DebitCreditCode"], i["AmountInTransactionCurrency"]) for i in items] == [
        ("S", "1234.50"),
        ("H", "1234.50"),
    ]
    assert s.sim.admin("GET", "/stats")["journal_entries"] == 1


# --------------------------------------------------------------------------- $batch


def _request(method: str, url: str, body: Any = None) -> str:
    lines = [
        "Content-Type: application/http",
        "Content-Transfer-Encoding: binary",
        "",
        f"{method} {url} HTTP/1.1",
    ]
    if body is None:
        return "\r\n".join([*lines, "", ""])
    payload = json.dumps(body)
    return "\r\n".join(
        [*lines, "Content-Type: application/json", f"Content-Length: {len(payload)}", "", payload]
    )


def batch_body(*parts: str | list[str]) -> str:
    out = []
    for n, part in enumerate(parts):
        if isinstance(part, list):
            inner = "".join(f"--cs{n}\r\n{p}\r\n" for p in part) + f"--cs{n}--"
            out.append(f"--batch\r\nContent-Type: multipart/mixed; boundary=cs{n}\r\n\r\n{inner}\r\n")
        else:
            out.append(f"--batch\r\n{part}\r\n")
    return "".join(out) + "--batch--\r\n"


def statuses(response: httpx.Response) -> list[int]:
    return [int(code) for code in re.findall(r"HTTP/1\.1 (\d{3})", response.text)]


def send_batch(s: Session, body: str) -> httpx.Response:
    return s.http.post(
        TS + "/$batch",
        content=body.encode(),
        headers={"Content-Type": "multipart/mixed; boundary=batch", "X-CSRF-Token": s.token},
    )


def test_batch_failing_changeset_rolls_back_only_itself(s: Session) -> None:
    body = batch_body(
        [
            _request("POST", "TimeSheetEntryCollection", entry("1.00", note="a")),
            _request("POST", "TimeSheetEntryCollection", entry("2.00", note="b")),
        ],
        [
            _request("POST", "TimeSheetEntryCollection", entry("3.00", note="c")),
            _request("POST", "TimeSheetEntryCollection", entry("4.00", day=JUNE_2, note="d")),
        ],
        _request("GET", "TimeSheetEntryCollection?$filter=PersonWorkAgreementExternalID%20eq%20'EMP-100'"),
    )
    response = send_batch(s, body)
    assert response.status_code == 202
    assert response.headers["content-type"].startswith("multipart/mixed; boundary=batchresponse_")
    # changeset 1: two 201s; changeset 2: one error for the whole changeset; the GET: 200.
    assert statuses(response) == [201, 201, 400, 200]
    assert "Posting period 006 2025 is not open" in response.text
    notes = sorted(r["TimeSheetDataFields"]["TimeSheetNoteText"] for r in records(s.sim))
    assert notes == ["a", "b"]  # "c" was rolled back with its failing sibling


def test_injected_second_changeset_failure(s: Session) -> None:
    s.sim.admin("PUT", "/config", json={"fail_batch_changeset": 2})
    body = batch_body(
        [_request("POST", "TimeSheetEntryCollection", entry(note="first"))],
        [_request("POST", "TimeSheetEntryCollection", entry(note="second"))],
        [_request("POST", "TimeSheetEntryCollection", entry(note="third"))],
    )
    response = send_batch(s, body)
    assert response.status_code == 202 and statuses(response) == [201, 500, 201]
    assert sorted(r["TimeSheetDataFields"]["TimeSheetNoteText"] for r in records(s.sim)) == ["first", "third"]
    assert s.sim.admin("GET", "/stats")["counters"]["changesets_failed"] == 1


def test_batch_needs_csrf_and_changes_belong_in_changesets(s: Session) -> None:
    body = batch_body(_request("POST", "TimeSheetEntryCollection", entry()))
    refused = s.http.post(
        TS + "/$batch", content=body.encode(), headers={"Content-Type": "multipart/mixed; boundary=batch"}
    )
    assert refused.status_code == 403
    assert statuses(send_batch(s, body)) == [400]
    assert records(s.sim) == []


# --------------------------------------------------------------------------- quirks and faults


def test_quirks_orderby_ignored_no_count_date_ranges_leak(s: Session) -> None:
    for n, day in enumerate((MAY_5, MAY_6, MAY_7) * 3):
        assert s.post(TS + "/TimeSheetEntryCollection", entry(f"{n + 1}.00", day=day)).status_code == 201
    listing = TS + "/TimeSheetEntryCollection"
    asc = s.get(listing, **{"$orderby": "TimeSheetRecord asc", "$inlinecount": "allpages"}).json()["d"]
    desc = s.get(listing, **{"$orderby": "TimeSheetRecord desc"}).json()["d"]
    order = [r["TimeSheetRecord"] for r in asc["results"]]
    assert order == [r["TimeSheetRecord"] for r in desc["results"]]  # $orderby changes nothing
    assert order != sorted(order)  # and the order is not the key's
    assert "__count" not in asc
    # gt on a date lets the boundary day in (3 + 3 instead of the 3 of May 7).
    after = s.get(listing, **{"$filter": "TimeSheetDate gt datetime'2025-05-06T00:00:00'"}).json()["d"][
        "results"
    ]
    assert len(after) == 6
    exact = s.get(listing, **{"$filter": "TimeSheetDate eq datetime'2025-05-06T00:00:00'"}).json()["d"][
        "results"
    ]
    assert {r["TimeSheetDate"] for r in exact} == {MAY_6} and len(exact) == 3
    unsupported = s.get(listing, **{"$filter": "TimeSheetStatus eq '20' or TimeSheetStatus eq '30'"})
    assert unsupported.status_code == 400


def test_server_paging_follows_next_with_skiptoken(s: Session) -> None:
    s.sim.admin("PUT", "/config", json={"page_size": 4})
    for n in range(9):
        s.post(TS + "/TimeSheetEntryCollection", entry(f"{n + 1}.00", note=f"n{n}"))
    seen: list[str] = []
    page = s.get(
        TS + "/TimeSheetEntryCollection", **{"$select": "TimeSheetRecord,TimeSheetDataFields"}
    ).json()["d"]
    pages = 1
    while "__next" in page:
        assert "$skiptoken=" in page["__next"]
        seen += [r["TimeSheetRecord"] for r in page["results"]]
        page = s.http.get(page["__next"]).json()["d"]
        pages += 1
    seen += [r["TimeSheetRecord"] for r in page["results"]]
    assert pages == 3 and len(seen) == len(set(seen)) == 9
    assert set(page["results"][0]) == {"__metadata", "TimeSheetRecord", "TimeSheetDataFields"}  # $select
    top = s.get(TS + "/TimeSheetEntryCollection", **{"$top": "6"}).json()["d"]
    assert len(top["results"]) == 4 and "$top=2" in top["__next"]
    assert len(s.http.get(top["__next"]).json()["d"]["results"]) == 2


def test_5xx_after_commit_leaves_the_record(s: Session) -> None:
    s.sim.admin(
        "POST",
        "/faults",
        json={
            "id": "boom",
            "action": "status_after_commit",
            "status": 500,
            "method": "POST",
            "path_regex": "TimeSheetEntryCollection$",
            "max_hits": 1,
        },
    )
    response = s.post(TS + "/TimeSheetEntryCollection", entry(note="[psa:amb-1]"))
    assert response.status_code == 500
    assert [r["TimeSheetDataFields"]["TimeSheetNoteText"] for r in records(s.sim)] == ["[psa:amb-1]"]
    s.sim.admin(
        "POST", "/faults", json={"id": "storm", "action": "throttle", "retry_after": 2, "max_hits": 1}
    )
    throttled = s.get(TS + "/TimeSheetEntryCollection")
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "2"


def test_run_starts_it_like_the_other_simulators(pg_dsn: str) -> None:
    """``python -m simulators.run sap`` (what devtools/stack.py starts) serves the app."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.run", "sap", "--port", str(port), "--dsn", pg_dsn], cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/admin/health", timeout=1).json()
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert health == {"status": "ok", "simulator": "sap"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
