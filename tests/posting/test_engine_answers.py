"""The posting engine acts on each class of ERP answer (docs/posting.md, "How ERP answers are classified").

The ERP is a small scripted fake behind an httpx mock transport (it keeps what a batch wrote, so a
read-back can find it); the ledger and the exception queue are the real ODS in PostgreSQL. Each
test checks the ledger states, the dead letters and the requests sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import psycopg
import pytest

from psa_erp_sync.clients.erp import ErpAuthFailed, ErpRejected, NetSuiteClient
from psa_erp_sync.clients.http import RetryPolicy
from psa_erp_sync.config import Config, load_config
from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.engine import EngineSettings, PostingEngine
from tests.posting.test_ledger_open import assert_open_agrees

pytestmark = pytest.mark.integration

_JOB = re.compile(r"/async/v1/job/(\d+)/result$")


class FakeErp:
    """Answers like the ERP, except where ``script`` says otherwise.

    ``script`` maps ``"POST"`` (the batch), ``"POLL"`` (the job result) or ``"DELETE"`` to a status
    answered every time (the batch POST still commits before a poll fails). ``item_error`` makes
    every batch item fail with that code.
    """

    def __init__(
        self, script: dict[str, tuple[int, Any]] | None = None, item_error: str | None = None
    ) -> None:
        self.script = script or {}
        self.item_error = item_error
        self.records: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, list[dict[str, Any]]] = {}
        self.calls: list[str] = []

    def _answer(self, what: str) -> httpx.Response | None:
        if what not in self.script:
            return None
        status, body = self.script[what]
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/batch"):
            self.calls.append("POST")
            scripted = self._answer("POST")
            if scripted is not None:
                return scripted
            items = json.loads(request.content)["items"]
            results = []
            for item in items:
                if self.item_error:
                    results.append(
                        {
                            "externalId": item["externalId"],
                            "status": "failed",
                            "error": {"o:errorCode": self.item_error, "o:errorPath": "tranDate"},
                        }
                    )
                    continue
                self.records[item["externalId"]] = item
                results.append(
                    {"externalId": item["externalId"], "status": "succeeded", "id": str(len(self.records))}
                )
            job = str(len(self.jobs) + 1)
            self.jobs[job] = results
            return httpx.Response(202, json={"jobId": job})
        if match := _JOB.search(path):
            self.calls.append("POLL")
            scripted = self._answer("POLL")
            if scripted is not None:
                return scripted
            job = match.group(1)
            return httpx.Response(200, json={"jobId": job, "status": "SUCCEEDED", "items": self.jobs[job]})
        if path.endswith("/suiteql"):
            self.calls.append("READ")
            query = json.loads(request.content)["q"]
            wanted = set(re.findall(r"'([^']+)'", query))
            rows = [
                {"id": "1", "externalid": ext, "memo": rec.get("memo"), "postingperiod": None}
                for ext, rec in self.records.items()
                if ext in wanted
            ]
            return httpx.Response(200, json={"count": len(rows), "hasMore": False, "items": rows})
        if request.method == "DELETE":
            self.calls.append("DELETE")
            scripted = self._answer("DELETE")
            if scripted is not None:
                return scripted
            ext = path.rsplit("eid:", 1)[-1]
            if self.records.pop(ext, None) is None:
                return httpx.Response(404, json={"o:errorDetails": [{"o:errorCode": "NONEXISTENT_ID"}]})
            return httpx.Response(204)
        return httpx.Response(500)


def _error(code: str) -> dict[str, Any]:
    return {"status": 401, "o:errorDetails": [{"o:errorCode": code, "detail": "refused"}]}


def _posting(n: int, action: ledger.Action = "post") -> ledger.Posting:
    key = ledger.idempotency_key("timebill", "psa", str(n), "v1", action, 0)
    payload = {
        "externalId": f"psa-te-{n}",
        "memo": f"psa:{n} v:v1 key:{key[:16]}",
        "tranDate": "2026-10-05",
        "subsidiary": {"externalId": "LE-US1"},
        "hours": "1.00",
    }
    if action == "reverse":
        payload = {"externalId": f"psa-te-{n}", "reverses": payload}
    return ledger.Posting(
        key,
        "timebill",
        "psa",
        str(n),
        "v1",
        f"psa-te-{n}",
        action,
        "pending",
        payload,
        "LE-US1",
        "LE-US1-2026-10",
        100,
        "USD",
    )


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config()


def _engine(dsn: str, fake: FakeErp, config: Config) -> PostingEngine:
    client = NetSuiteClient(
        base_url="http://erp.test",
        account_id="A",
        token="t",
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.0),
        transport=httpx.MockTransport(fake),
        sleep=lambda _: None,
        job_poll_timeout=1.0,
    )
    return PostingEngine(
        dsn=dsn,
        client=client,
        record_type="timebill",
        config=config,
        settings=EngineSettings(
            batch_size=2, max_concurrency=1, workers_per_slot=1, max_rounds=3, throttle_retries=2
        ),
        dag_run_id="answers",
        sleep=lambda _: None,
    )


def _plan(dsn: str, postings: list[ledger.Posting]) -> None:
    with psycopg.connect(dsn) as conn:
        ledger.insert_planned(conn, postings)


def _states(dsn: str) -> dict[str, int]:
    """The ledger's counts by state; asserts on the way that ledger.posting_open (migration 0048)
    lists exactly the open postings after whatever the test's pass did."""
    with psycopg.connect(dsn) as conn:
        assert_open_agrees(conn)
        return ledger.counts(conn, "timebill")


def _dead_letters(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT source_id, reason_code FROM exceptions.item WHERE kind = 'dead_letter' ORDER BY 1"
        ).fetchall()


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refused_on_the_post_fails_the_pass_and_keeps_everything_pending(
    clean_ods: str, config: Config, status: int
) -> None:
    _plan(clean_ods, [_posting(n) for n in range(6)])
    fake = FakeErp({"POST": (status, _error("INVALID_LOGIN"))})
    with pytest.raises(ErpAuthFailed):
        _engine(clean_ods, fake, config).run()
    assert _states(clean_ods) == {"pending": 6}
    assert _dead_letters(clean_ods) == []
    assert fake.calls == ["POST"]  # the first refusal stops the pass: no month of 401s
    # The credentials fixed, the retry posts everything.
    fake.script.clear()
    outcome = _engine(clean_ods, fake, config).run()
    assert outcome.posted == 6
    assert _states(clean_ods) == {"confirmed": 6}


def test_auth_refused_on_the_poll_after_a_202_reads_back_on_the_retry(clean_ods: str, config: Config) -> None:
    _plan(clean_ods, [_posting(n) for n in range(2)])
    fake = FakeErp({"POLL": (401, _error("INVALID_LOGIN"))})
    with pytest.raises(ErpAuthFailed):
        _engine(clean_ods, fake, config).run()
    assert _states(clean_ods) == {"ambiguous": 2}  # the ERP accepted them: may have landed
    assert _dead_letters(clean_ods) == []
    fake.script.clear()
    outcome = _engine(clean_ods, fake, config).run()
    assert outcome.ambiguous_resolved == 2
    assert _states(clean_ods) == {"resolved": 2}
    assert fake.calls.count("POST") == 1  # resolved by read-back, never re-POSTed


@pytest.mark.parametrize(
    "poll",
    [(404, {"o:errorDetails": [{"o:errorCode": "NONEXISTENT_ID"}]}), (429, {}), (400, None), (503, {})],
    ids=["404", "429", "400-no-details", "503"],
)
def test_any_other_failure_on_the_poll_is_resolved_by_read_back(
    clean_ods: str, config: Config, poll: tuple[int, Any]
) -> None:
    _plan(clean_ods, [_posting(n) for n in range(2)])
    fake = FakeErp({"POLL": poll})
    outcome = _engine(clean_ods, fake, config).run()
    assert outcome.ambiguous_resolved == 2
    assert _states(clean_ods) == {"resolved": 2}
    assert _dead_letters(clean_ods) == []
    assert fake.calls.count("POST") == 1
    assert "READ" in fake.calls


@pytest.mark.parametrize(
    "answer", [(400, None), (400, {"title": "bad"}), (413, _error("EXCEEDED_MAX_RECORDS"))]
)
def test_a_refused_submission_is_no_records_fault(
    clean_ods: str, config: Config, answer: tuple[int, Any]
) -> None:
    _plan(clean_ods, [_posting(n) for n in range(4)])
    fake = FakeErp({"POST": answer})
    with pytest.raises(ErpRejected):  # not IndexError, not dead letters
        _engine(clean_ods, fake, config).run()
    assert _states(clean_ods) == {"pending": 4}
    assert _dead_letters(clean_ods) == []


def test_a_per_record_rejection_is_a_dead_letter(clean_ods: str, config: Config) -> None:
    _plan(clean_ods, [_posting(n) for n in range(2)])
    outcome = _engine(clean_ods, FakeErp(item_error="INVALID_KEY_OR_REF"), config).run()
    assert outcome.rejected == 2
    assert _states(clean_ods) == {"rejected": 2}
    assert _dead_letters(clean_ods) == [("0", "INVALID_KEY_OR_REF"), ("1", "INVALID_KEY_OR_REF")]


@pytest.mark.parametrize("status", [401, 403])
def test_auth_refused_on_a_reversal_keeps_it_pending(clean_ods: str, config: Config, status: int) -> None:
    _plan(clean_ods, [_posting(1, "reverse")])
    fake = FakeErp({"DELETE": (status, _error("INSUFFICIENT_PERMISSION"))})
    with pytest.raises(ErpAuthFailed):
        _engine(clean_ods, fake, config).run()
    assert _states(clean_ods) == {"pending": 1}
    assert _dead_letters(clean_ods) == []


def test_a_reversal_refused_without_details_is_no_dead_letter(clean_ods: str, config: Config) -> None:
    _plan(clean_ods, [_posting(1, "reverse")])
    with pytest.raises(ErpRejected):
        _engine(clean_ods, FakeErp({"DELETE": (400, None)}), config).run()
    assert _states(clean_ods) == {"pending": 1}
    assert _dead_letters(clean_ods) == []


def test_a_pass_with_nothing_unfinished_is_one_count(
    clean_ods: str, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing pending, sent or ambiguous (e.g. credit memos after invoices): the pass reads the
    ledger's counts once and opens no pool of connections."""
    _plan(clean_ods, [_posting(n) for n in range(3)])
    fake = FakeErp()
    assert _engine(clean_ods, fake, config).run().posted == 3
    calls = list(fake.calls)

    def no_pool(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a pass with nothing to do opened a pool")

    monkeypatch.setattr("psa_erp_sync.posting.engine.connections.pool", no_pool)
    outcome = _engine(clean_ods, fake, config).run()
    assert (outcome.total, outcome.posted, outcome.still_pending, outcome.parked) == (0, 0, 0, 0)
    assert fake.calls == calls  # nothing sent
    assert _states(clean_ods) == {"confirmed": 3}


def test_a_round_reads_one_batch_first_then_larger_pages(
    clean_ods: str, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first page of a round is one batch, so its request goes out while the rest is read;
    every posting is still sent once."""
    _plan(clean_ods, [_posting(n) for n in range(7)])
    limits: list[int] = []
    real = ledger.page_in_state

    def page_in_state(*args: Any, **kwargs: Any) -> list[ledger.Posting]:
        if not kwargs["reversals"]:
            limits.append(kwargs["limit"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger, "page_in_state", page_in_state)
    fake = FakeErp()
    outcome = _engine(clean_ods, fake, config).run()
    assert limits[:2] == [2, 8]  # batch_size 2: one batch, then four times as many
    assert outcome.posted == 7
    assert fake.calls.count("POST") == 4
    assert _states(clean_ods) == {"confirmed": 7}


def _in_transaction(monkeypatch: pytest.MonkeyPatch, name: str) -> list[bool]:
    """Whether each call of ``ledger.<name>`` ran inside an explicit transaction (or as its own)."""
    seen: list[bool] = []
    real = getattr(ledger, name)

    def spy(conn: psycopg.Connection, *args: Any, **kwargs: Any) -> Any:
        seen.append(conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE or not conn.autocommit)
        return real(conn, *args, **kwargs)

    monkeypatch.setattr(ledger, name, spy)
    return seen


def test_a_confirmed_batch_writes_the_ledger_in_two_statements_of_their_own(
    clean_ods: str, config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the ERP confirmed: ``mark_sent`` and ``finish_many`` each run as their own
    transaction (autocommit, no BEGIN/COMMIT round trips); a batch with a dead letter writes its
    outcomes and the exception items in one transaction, as before."""
    _plan(clean_ods, [_posting(n) for n in range(4)])
    marked = _in_transaction(monkeypatch, "mark_sent")
    finished = _in_transaction(monkeypatch, "finish_many")
    assert _engine(clean_ods, FakeErp(), config).run().posted == 4
    assert marked == [False, False] and finished == [False, False]  # batch_size 2: two batches
    assert _states(clean_ods) == {"confirmed": 4}

    _plan(clean_ods, [_posting(n) for n in range(10, 12)])
    marked.clear()
    finished.clear()
    outcome = _engine(clean_ods, FakeErp(item_error="INVALID_FLD_VALUE"), config).run()
    assert outcome.rejected == 2
    assert marked == [False] and finished == [True]  # the outcomes with their dead letters
    assert [code for _, code in _dead_letters(clean_ods)] == ["INVALID_FLD_VALUE"] * 2
    assert _states(clean_ods) == {"confirmed": 4, "rejected": 2}
