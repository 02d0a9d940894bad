"""The webhook ingress over real HTTP (uvicorn on loopback) against a real ODS: signatures,
timestamps, replay, size and type limits, quarantine, secret rotation, and the PSA simulator's
own webhooks landing in the inbox."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from psa_erp_sync.api import ingress
from psa_erp_sync.config import load_config
from psa_erp_sync.ods import exceptions
from tests.conftest import RunningSimulator

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0123456789"


def sign_headers(
    body: bytes,
    *,
    delivery_id: str,
    event: str,
    secret: str = SECRET,
    ts: int | None = None,
    source: str = "PSA",
) -> dict[str, str]:
    stamp = str(int(time.time()) if ts is None else ts)
    return {
        "Content-Type": "application/json",
        f"X-{source}-Delivery-Id": delivery_id,
        f"X-{source}-Event": event,
        f"X-{source}-Timestamp": stamp,
        f"X-{source}-Signature": ingress.signature_of(secret.encode(), stamp, body),
    }


def psa_body(
    delivery_id: str, event: str = "time_entry.approved", record_id: int = 101, **extra: Any
) -> bytes:
    envelope = {
        "delivery_id": delivery_id,
        "event": event,
        "occurred_at": datetime.now(UTC).isoformat(),
        "data": {"id": record_id, "updated_at": datetime.now(UTC).isoformat(), "hours": 1.5},
        **extra,
    }
    return json.dumps(envelope).encode()


@pytest.fixture
def secrets_state() -> dict[str, ingress.Secrets]:
    return {"psa": ingress.Secrets(SECRET.encode()), "erp": ingress.Secrets(b"erp-secret")}


@pytest.fixture
def server(clean_ods: str, secrets_state: dict[str, ingress.Secrets]) -> Iterator[RunningSimulator]:
    ingress.signing.SECRET_CACHE_S = 0.0  # rotation tests change secrets between requests
    app = ingress.create_app(dsn=clean_ods, secrets=lambda source: secrets_state[source])
    running = RunningSimulator("ingress", app).start()
    yield running
    running.stop()
    app.state.inbox_writer.close()


def inbox_rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT delivery_id, source_system, event_type, source_id, status FROM inbox.event ORDER BY seq"
        ).fetchall()


def quarantine_rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT delivery_id, reason_code, occurrences FROM inbox.quarantine ORDER BY delivery_id"
        ).fetchall()


def post(
    server: RunningSimulator, body: bytes, headers: dict[str, str], source: str = "psa"
) -> httpx.Response:
    return httpx.post(f"{server.base_url}/{source}/events", content=body, headers=headers, timeout=10)


def test_signed_event_is_committed_then_acknowledged_and_replays_are_deduplicated(
    server: RunningSimulator, clean_ods: str
) -> None:
    did = str(uuid.uuid4())
    body = psa_body(did)
    first = post(server, body, sign_headers(body, delivery_id=did, event="time_entry.approved"))
    assert first.status_code == 202, first.text
    assert first.json() == {"status": "accepted", "delivery_id": did}
    assert inbox_rows(clean_ods) == [(did, "psa", "time_entry.approved", "101", "pending")]
    # The same delivery again (a retry, or a replay with a fresh signature): acknowledged, not stored twice.
    again = post(server, body, sign_headers(body, delivery_id=did, event="time_entry.approved"))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(inbox_rows(clean_ods)) == 1


def test_erp_events_are_accepted_with_their_own_secret(server: RunningSimulator, clean_ods: str) -> None:
    did = str(uuid.uuid4())
    body = json.dumps(
        {
            "delivery_id": did,
            "event": "invoice.paid",
            "occurred_at": "2026-11-09T10:00:00Z",
            "data": {"id": "INV-1001", "externalId": "inv-1001", "amount": "12.50"},
        }
    ).encode()
    ok = post(
        server,
        body,
        sign_headers(body, delivery_id=did, event="invoice.paid", secret="erp-secret", source="ERP"),
        "erp",
    )
    assert ok.status_code == 202, ok.text
    # The PSA's secret does not sign ERP events.
    did2 = str(uuid.uuid4())
    body2 = body.replace(did.encode(), did2.encode())
    bad = post(
        server, body2, sign_headers(body2, delivery_id=did2, event="invoice.paid", source="ERP"), "erp"
    )
    assert bad.status_code == 401
    assert [r[:3] for r in inbox_rows(clean_ods)] == [(did, "erp", "invoice.paid")]


@pytest.mark.parametrize(
    ("mutate", "status", "reason"),
    [
        (lambda h, b: {**h, "X-PSA-Signature": "sha256=" + "0" * 64}, 401, "BAD_SIGNATURE"),
        (lambda h, b: {**h, "X-PSA-Signature": h["X-PSA-Signature"].upper()}, 401, "BAD_SIGNATURE"),
        (lambda h, b: {k: v for k, v in h.items() if k != "X-PSA-Signature"}, 400, "HEADERS"),
        (lambda h, b: {**h, "X-PSA-Timestamp": "12x"}, 400, "HEADERS"),
        (lambda h, b: {**h, "X-PSA-Delivery-Id": "a b"}, 400, "HEADERS"),
        (lambda h, b: {**h, "Content-Type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
def test_rejections_are_clear_4xx_and_store_nothing(
    server: RunningSimulator, clean_ods: str, mutate: Any, status: int, reason: str
) -> None:
    did = str(uuid.uuid4())
    body = psa_body(did)
    response = post(
        server, body, mutate(sign_headers(body, delivery_id=did, event="time_entry.approved"), body)
    )
    assert response.status_code == status, response.text
    assert response.json()["reason_code"] == reason
    assert inbox_rows(clean_ods) == [] and quarantine_rows(clean_ods) == []


def test_a_tampered_body_fails_the_signature(server: RunningSimulator, clean_ods: str) -> None:
    did = str(uuid.uuid4())
    body = psa_body(did, record_id=101)
    headers = sign_headers(body, delivery_id=did, event="time_entry.approved")
    response = post(server, body.replace(b'"id": 101', b'"id": 102'), headers)
    assert response.status_code == 401
    assert inbox_rows(clean_ods) == []


def test_timestamps_outside_five_minutes_are_refused(server: RunningSimulator, clean_ods: str) -> None:
    # 302, not 301: the header is whole seconds (int() drops up to 1 s) and the request takes time,
    # so +301 could land exactly on the 300 s boundary on a loaded machine.
    for offset in (-302, 302, -10_000):
        did = str(uuid.uuid4())
        body = psa_body(did)
        stale = sign_headers(body, delivery_id=did, event="time_entry.approved", ts=int(time.time()) + offset)
        response = post(server, body, stale)
        assert response.status_code == 401 and response.json()["reason_code"] == "STALE_TIMESTAMP"
    did = str(uuid.uuid4())
    body = psa_body(did)
    ok = sign_headers(body, delivery_id=did, event="time_entry.approved", ts=int(time.time()) - 290)
    assert post(server, body, ok).status_code == 202
    assert len(inbox_rows(clean_ods)) == 1


def test_oversized_bodies_are_refused_before_reading_them_whole(
    server: RunningSimulator, clean_ods: str
) -> None:
    did = str(uuid.uuid4())
    body = (
        psa_body(did, event="time_entry.approved")[:-1]
        + b', "pad": "'
        + b"x" * ingress.MAX_BODY_BYTES
        + b'"}'
    )
    response = post(server, body, sign_headers(body, delivery_id=did, event="time_entry.approved"))
    assert response.status_code == 413

    # Chunked (no Content-Length): the read itself stops at the limit.
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    chunked = httpx.post(
        f"{server.base_url}/psa/events",
        content=chunks(),
        headers=sign_headers(body, delivery_id=did, event="time_entry.approved"),
        timeout=10,
    )
    assert chunked.status_code == 413
    assert inbox_rows(clean_ods) == [] and quarantine_rows(clean_ods) == []


@pytest.mark.parametrize(
    ("body_of", "reason"),
    [
        (lambda did: psa_body(did, event="time_entry.exploded"), "SCHEMA"),
        (lambda did: psa_body(did, unexpected="field"), "SCHEMA"),
        (lambda did: psa_body(did).replace(b'"id": 101', b'"id": "101"'), "SCHEMA"),
        (lambda did: b'{"delivery_id": "' + did.encode() + b'", ', "INVALID_JSON"),
        (lambda did: b"[" * 5000 + b"]" * 5000, "INVALID_JSON"),
        (lambda did: b'{"delivery_id": "\xff\xfe"}', "INVALID_UTF8"),
        (lambda did: psa_body(str(uuid.uuid4())), "HEADER_BODY_MISMATCH"),
    ],
)
def test_authentic_but_malformed_events_are_acknowledged_quarantined_and_owned(
    server: RunningSimulator, clean_ods: str, body_of: Any, reason: str
) -> None:
    """2xx so the sender does not retry-storm; the body is kept and an owner sees it in the queue."""
    did = str(uuid.uuid4())
    body = body_of(did)
    headers = sign_headers(body, delivery_id=did, event="time_entry.approved")
    response = post(server, body, headers)
    assert response.status_code == 202, response.text
    assert response.json() == {
        "status": "quarantined",
        "error": "authentic but malformed event",
        "reason_code": reason,
    }
    assert inbox_rows(clean_ods) == []
    # A retry of the same delivery counts as another occurrence of the same quarantined item.
    again = post(server, body, sign_headers(body, delivery_id=did, event="time_entry.approved"))
    assert again.status_code == 200 and again.json()["status"] == "quarantined"
    assert quarantine_rows(clean_ods) == [(did, reason, 2)]
    with psycopg.connect(clean_ods) as conn:
        stored = conn.execute("SELECT body, detail::text, body_sha256 FROM inbox.quarantine").fetchone()
        items = conn.execute(
            "SELECT kind, domain, source_system, record_type, source_id, reason_code, owner, status,"
            " detail->>'delivery_id' FROM exceptions.item"
        ).fetchall()
    assert stored is not None and bytes(stored[0]) == body
    assert "hours" not in stored[1] and "1.5" not in stored[1]  # paths and error types, never values
    owner = load_config().ownership.owner_for(ingress.EXCEPTION_DOMAIN)
    assert owner == "finance-integration"
    assert items == [
        (
            "quarantine",
            "webhook_ingress",
            "psa",
            "webhook_delivery",
            stored[2],
            f"WEBHOOK_{reason}",
            owner,
            "open",
            did,
        )
    ]
    with psycopg.connect(clean_ods) as conn:
        assert ("quarantine", f"WEBHOOK_{reason}", owner, 1) in exceptions.open_summary(conn)


def test_delivery_ids_deduplicate_per_source_not_globally(server: RunningSimulator, clean_ods: str) -> None:
    did = str(uuid.uuid4())
    psa = psa_body(did)
    erp = json.dumps(
        {
            "delivery_id": did,
            "event": "invoice.paid",
            "occurred_at": "2026-11-09T10:00:00Z",
            "data": {"id": "7"},
        }
    ).encode()
    assert (
        post(server, psa, sign_headers(psa, delivery_id=did, event="time_entry.approved")).status_code == 202
    )
    erp_headers = sign_headers(erp, delivery_id=did, event="invoice.paid", secret="erp-secret", source="ERP")
    first = post(server, erp, erp_headers, "erp")
    assert first.status_code == 202 and first.json()["status"] == "accepted", first.text
    assert post(server, erp, erp_headers, "erp").json()["status"] == "duplicate"
    assert sorted(r[:2] for r in inbox_rows(clean_ods)) == [(did, "erp"), (did, "psa")]


def test_quarantine_is_keyed_by_the_signed_body_and_never_overwritten(
    server: RunningSimulator, clean_ods: str
) -> None:
    """The delivery-id header is not signed: a second, different body under the same delivery id
    (a sender bug, or a replayed signed body with a forged header) must not replace the first."""
    did = str(uuid.uuid4())
    first = psa_body(did, unexpected="first")
    second = psa_body(did, unexpected="second")
    for body in (first, second):
        response = post(server, body, sign_headers(body, delivery_id=did, event="time_entry.approved"))
        assert response.status_code == 202 and response.json()["status"] == "quarantined", response.text
    # The first body again under another delivery id: the same quarantined item, seen once more.
    other = str(uuid.uuid4())
    post(server, first, sign_headers(first, delivery_id=other, event="time_entry.approved"))
    with psycopg.connect(clean_ods) as conn:
        rows = conn.execute(
            "SELECT body, delivery_id, last_delivery_id, occurrences FROM inbox.quarantine ORDER BY received_at"
        ).fetchall()
    assert [(bytes(b), d, last, n) for b, d, last, n in rows] == [
        (first, did, other, 2),
        (second, did, did, 1),
    ]


def test_a_malformed_rotation_setting_answers_503_with_a_logged_configuration_error(
    clean_ods: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    """previous_valid_until without a UTC offset (naive vs aware) or not a time at all: every
    delivery used to be a 500. Now the setting is validated when read and the ingress refuses."""
    from fastapi.testclient import TestClient

    ingress.signing.SECRET_CACHE_S = 0.0
    monkeypatch.delenv("AIRFLOW_CONN_PSA_WEBHOOK", raising=False)
    monkeypatch.setenv("PSA_ERP_SYNC_WEBHOOK_SECRET_PSA", SECRET)
    ingress.secrets_from_airflow("psa")  # Airflow replaces the root log handlers on first use
    ingress_log = logging.getLogger(ingress.__name__)
    ingress_log.addHandler(caplog.handler)
    request.addfinalizer(lambda: ingress_log.removeHandler(caplog.handler))
    caplog.set_level(logging.INFO)
    app = ingress.create_app(dsn=clean_ods)
    with TestClient(app, raise_server_exceptions=False) as client:

        def send() -> httpx.Response:
            did = str(uuid.uuid4())
            body = psa_body(did)
            return client.post(
                "/psa/events",
                content=body,
                headers=sign_headers(body, delivery_id=did, event="time_entry.approved"),
            )

        for until in ("2026-12-31T00:00:00", "next tuesday", "2026-13-45T00:00:00+00:00", "1"):
            monkeypatch.setenv(
                "AIRFLOW_CONN_PSA_WEBHOOK",
                json.dumps(
                    {
                        "conn_type": "generic",
                        "password": SECRET,
                        "extra": {"previous_secret": "old-secret-123", "previous_valid_until": until},
                    }
                ),
            )
            caplog.clear()
            response = send()
            assert response.status_code == 503, (until, response.text)
            assert response.json()["reason_code"] == "MISCONFIGURED"
            assert "configuration error" in caplog.text and "previous_valid_until" in caplog.text
            assert SECRET not in caplog.text and "old-secret-123" not in caplog.text
        monkeypatch.setenv(
            "AIRFLOW_CONN_PSA_WEBHOOK",
            json.dumps(
                {
                    "conn_type": "generic",
                    "password": SECRET,
                    "extra": {
                        "previous_secret": "old-secret-123",
                        "previous_valid_until": "2026-12-31T00:00:00+01:00",
                    },
                }
            ),
        )
        assert send().status_code == 202
    app.state.inbox_writer.close()
    # A lookup of our own that hands over a naive time is refused the same way.
    with pytest.raises(ingress.SecretMisconfigured, match="UTC offset"):
        ingress.Secrets(b"k", b"old", datetime(2026, 12, 31))


def test_a_nul_escape_is_accepted_and_kept_as_text(server: RunningSimulator, clean_ods: str) -> None:
    """jsonb cannot hold U+0000; the event is still accepted (staging keeps such text the same way)."""
    did = str(uuid.uuid4())
    body = psa_body(did).replace(b'"hours": 1.5', b'"notes": "a\\u0000b"')
    response = post(server, body, sign_headers(body, delivery_id=did, event="time_entry.approved"))
    assert response.status_code == 202, response.text
    with psycopg.connect(clean_ods) as conn:
        notes = conn.execute("SELECT payload->'data'->>'notes' FROM inbox.event").fetchone()
    assert notes == ("a\\u0000b",)


def test_secret_rotation_accepts_the_previous_secret_only_within_its_overlap(
    server: RunningSimulator, clean_ods: str, secrets_state: dict[str, ingress.Secrets]
) -> None:
    def send(secret: str) -> int:
        did = str(uuid.uuid4())
        body = psa_body(did)
        return post(
            server, body, sign_headers(body, delivery_id=did, event="time_entry.approved", secret=secret)
        ).status_code

    secrets_state["psa"] = ingress.Secrets(
        b"new-secret", SECRET.encode(), datetime.now(UTC) + timedelta(hours=1)
    )
    assert send("new-secret") == 202
    assert send(SECRET) == 202  # the PSA still signs with the old one during the overlap
    assert send("other") == 401
    secrets_state["psa"] = ingress.Secrets(
        b"new-secret", SECRET.encode(), datetime.now(UTC) - timedelta(seconds=1)
    )
    assert send(SECRET) == 401  # overlap over
    assert send("new-secret") == 202
    assert len(inbox_rows(clean_ods)) == 3


def test_no_secret_configured_refuses_with_503_and_secrets_never_reach_the_logs(
    clean_ods: str, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    def missing(source: str) -> ingress.Secrets:
        raise ingress.SecretUnavailable(source)

    caplog.set_level(logging.DEBUG)
    with TestClient(ingress.create_app(dsn=clean_ods, secrets=missing)) as client:
        did = str(uuid.uuid4())
        body = psa_body(did)
        assert (
            client.post(
                "/psa/events",
                content=body,
                headers=sign_headers(body, delivery_id=did, event="time_entry.approved"),
            ).status_code
            == 503
        )
    app = ingress.create_app(dsn=clean_ods, secrets=lambda s: ingress.Secrets(SECRET.encode()))
    with TestClient(app) as client:
        for sig_secret in (SECRET, "wrong"):
            did = str(uuid.uuid4())
            body = psa_body(did)
            client.post(
                "/psa/events",
                content=body,
                headers=sign_headers(body, delivery_id=did, event="time_entry.approved", secret=sig_secret),
            )
    app.state.inbox_writer.close()
    assert SECRET not in caplog.text and "wrong" not in caplog.text.replace("wrong", "", 0)
    assert "bad signature" in caplog.text  # the rejection is logged, with a hash of the delivery id only


def test_secrets_come_from_the_airflow_connection_with_an_env_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    until = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    monkeypatch.setenv(
        "AIRFLOW_CONN_PSA_WEBHOOK",
        json.dumps(
            {
                "conn_type": "generic",
                "password": "from-conn",
                "extra": {"previous_secret": "old", "previous_valid_until": until},
            }
        ),
    )
    got = ingress.secrets_from_airflow("psa")
    assert got.current == b"from-conn" and got.previous == b"old"
    assert got.candidates(datetime.now(UTC)) == [b"from-conn", b"old"]
    monkeypatch.delenv("AIRFLOW_CONN_PSA_WEBHOOK")
    monkeypatch.delenv("AIRFLOW_CONN_ERP_WEBHOOK", raising=False)
    monkeypatch.setenv("PSA_ERP_SYNC_WEBHOOK_SECRET_ERP", "from-env")
    assert ingress.secrets_from_airflow("erp").current == b"from-env"
    monkeypatch.delenv("PSA_ERP_SYNC_WEBHOOK_SECRET_ERP")
    with pytest.raises(ingress.SecretUnavailable):
        ingress.secrets_from_airflow("erp")


def test_openapi_is_published_and_documents_both_endpoints(server: RunningSimulator) -> None:
    doc = httpx.get(f"{server.base_url}/openapi.json", timeout=10).json()
    for path in ("/psa/events", "/erp/events"):
        op = doc["paths"][path]["post"]
        assert set(op["responses"]) >= {"200", "202", "400", "401", "413", "415", "422"}
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        assert "$ref" not in json.dumps(schema)  # self-contained (the body is read raw)
        assert schema["additionalProperties"] is False
    headers = {p["name"] for p in doc["paths"]["/psa/events"]["post"]["parameters"]}
    assert headers == {"X-PSA-Delivery-Id", "X-PSA-Event", "X-PSA-Timestamp", "X-PSA-Signature"}


def test_an_accepted_event_notifies_listeners(server: RunningSimulator, clean_ods: str) -> None:
    with psycopg.connect(clean_ods, autocommit=True) as listener:
        listener.execute("LISTEN psa_erp_sync_inbox")
        did = str(uuid.uuid4())
        body = psa_body(did, event="expense.approved")
        assert (
            post(server, body, sign_headers(body, delivery_id=did, event="expense.approved")).status_code
            == 202
        )
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.payload for n in notes] == ["psa:expense.approved"]


def test_the_psa_simulators_signed_webhooks_land_in_the_inbox(
    server: RunningSimulator, clean_ods: str, psa_sim: RunningSimulator
) -> None:
    """The contract both sides follow: the simulator's headers and signature verify here."""
    from simulators.psa import sample

    psa_sim.admin("POST", "/seed", json=sample.build())
    with psycopg.connect(clean_ods) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM sim_psa.time_entries WHERE NOT is_closed ORDER BY id LIMIT 3"
            )
        ]
    assert ids, "the sample seeds unapproved entries"
    psa_sim.admin(
        "POST",
        "/webhooks",
        json={"url": f"{server.base_url}/psa/events", "secret": SECRET, "events": ["time_entry.approved"]},
    )
    psa_sim.admin("POST", "/time_entries/bulk", json={"action": "approve", "ids": ids})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(inbox_rows(clean_ods)) < len(ids):
        time.sleep(0.1)
    rows = inbox_rows(clean_ods)
    assert sorted(r[3] for r in rows) == sorted(str(i) for i in ids)
    assert {r[2] for r in rows} == {"time_entry.approved"}
    assert quarantine_rows(clean_ods) == []


def test_the_erp_simulators_signed_webhooks_land_in_the_inbox_once(
    server: RunningSimulator, clean_ods: str, erp_sim: RunningSimulator
) -> None:
    """ERP billing events (every delivery sent twice) verify with the ERP secret and are stored once."""
    import copy

    from tests.simulators.test_erp_sim import BASE_SEED

    erp_sim.admin("POST", "/seed", json=copy.deepcopy(BASE_SEED))
    erp_sim.admin("PUT", "/config", json={"webhook_duplicate_rate": 1.0})
    events = ["invoice.created", "invoice.paid", "accountingperiod.closed"]
    erp_sim.admin(
        "POST",
        "/webhooks",
        json={"url": f"{server.base_url}/erp/events", "secret": "erp-secret", "events": events},
    )
    invoice = {
        "tranDate": "2026-11-30",
        "entity": {"externalId": "psa-client-1"},
        "subsidiary": {"externalId": "LE-US1"},
        "currency": {"refName": "USD"},
        "item": {"items": [{"amount": "10.00", "sourceType": "milestone", "sourceId": "psa-ms-1"}]},
    }
    put = httpx.put(
        f"{erp_sim.base_url}/services/rest/record/v1/invoice/eid:inv-ingress",
        json=invoice,
        headers={"Authorization": "Bearer t"},
    )
    assert put.status_code == 204, put.text
    erp_sim.admin("POST", "/invoices/eid:inv-ingress/payments", json={})
    erp_sim.admin("POST", "/periods/LE-US1-2026-11", json={"closed": True})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(inbox_rows(clean_ods)) < 3:
        time.sleep(0.1)
    time.sleep(0.3)  # the duplicates arrive right behind: they must not add rows
    rows = inbox_rows(clean_ods)
    assert [(r[1], r[2]) for r in rows] == [
        ("erp", "invoice.created"),
        ("erp", "invoice.paid"),
        ("erp", "accountingperiod.closed"),
    ]
    deliveries = erp_sim.admin("GET", "/webhooks/deliveries")["deliveries"]
    assert [d["sends"] for d in deliveries] == [2, 2, 2] and {d["status"] for d in deliveries} == {
        "delivered"
    }
    assert quarantine_rows(clean_ods) == []


def test_rotating_the_secret_in_the_psa_loses_nothing_during_the_overlap(
    server: RunningSimulator,
    clean_ods: str,
    psa_sim: RunningSimulator,
    secrets_state: dict[str, ingress.Secrets],
) -> None:
    """docs/streaming.md's procedure: (1) our side accepts new + old, (2) the PSA switches to the
    new secret, (3) the old one expires. Deliveries keep landing through every step."""
    from simulators.psa import sample

    psa_sim.admin("POST", "/seed", json=sample.build())
    with psycopg.connect(clean_ods) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM sim_psa.time_entries WHERE NOT is_closed ORDER BY id LIMIT 3"
            )
        ]
    hook = psa_sim.admin(
        "POST",
        "/webhooks",
        json={"url": f"{server.base_url}/psa/events", "secret": SECRET, "events": ["time_entry.approved"]},
    )

    def approve_and_wait(entry_id: int, expected: int) -> None:
        psa_sim.admin("POST", f"/time_entries/{entry_id}/approve")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(inbox_rows(clean_ods)) < expected:
            time.sleep(0.05)
        assert len(inbox_rows(clean_ods)) == expected

    secrets_state["psa"] = ingress.Secrets(
        b"rotated", SECRET.encode(), datetime.now(UTC) + timedelta(hours=1)
    )
    approve_and_wait(ids[0], 1)  # still signed with the old secret: accepted in the overlap
    psa_sim.admin("PATCH", f"/webhooks/{hook['id']}", json={"secret": "rotated"})
    approve_and_wait(ids[1], 2)
    secrets_state["psa"] = ingress.Secrets(b"rotated")
    approve_and_wait(ids[2], 3)
    deliveries = psa_sim.admin("GET", "/webhooks/deliveries")["deliveries"]
    assert all(d["attempts"] == 1 and d["last_status"] == 202 for d in deliveries), deliveries
