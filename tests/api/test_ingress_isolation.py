"""A slow or unreachable ODS must not take the API server down with the ingress (issue 13.10).

A real ``airflow api-server`` process is started with the plugin (so the ingress is mounted exactly
as in a deployment) and its ``ods_ingress`` connection pointing at a local socket that accepts
connections and never answers, so every connection attempt of the ingress hangs. Many concurrent
deliveries must then fail fast with 503 while Airflow's own execution API keeps answering task
heartbeats: the real ``PUT /execution/task-instances/{id}/heartbeat`` route, with a real task
token, is a plain ``def`` route that runs on anyio's shared thread pool of 40 and queries the
metadata DB (an unknown task instance: 404 after the query).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from psa_erp_sync.api import ingress

pytestmark = pytest.mark.integration

SECRET = "whsec-isolation-0123456789"
CONCURRENT_DELIVERIES = 60  # more than anyio's 40 default threads


@pytest.fixture
def blackhole_dsn() -> Iterator[str]:
    """A PostgreSQL DSN whose server accepts TCP connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"host=127.0.0.1 port={listener.getsockname()[1]} user=postgres dbname=ods"
    stop.set()
    thread.join(timeout=5)
    for sock in held:
        sock.close()
    listener.close()


def _delivery() -> tuple[bytes, dict[str, str]]:
    did = str(uuid.uuid4())
    body = json.dumps(
        {
            "delivery_id": did,
            "event": "time_entry.approved",
            "occurred_at": datetime.now(UTC).isoformat(),
            "data": {"id": 101},
        }
    ).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-PSA-Delivery-Id": did,
        "X-PSA-Event": "time_entry.approved",
        "X-PSA-Timestamp": stamp,
        "X-PSA-Signature": ingress.signature_of(SECRET.encode(), stamp, body),
    }
    return body, headers


@pytest.fixture
def api_server(airflow_db: str, blackhole_dsn: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A real ``airflow api-server`` (one worker) with the plugin; its ingress's ODS is the black
    hole. Yields (base URL, "<task instance id>:<its execution API token>")."""
    from airflow.api_fastapi.auth.tokens import JWTGenerator
    from airflow.configuration import conf

    from tests.conftest import airflow_api_server

    jwt_secret = uuid.uuid4().hex * 2
    host, dbport = re.search(r"host=(\S+) port=(\d+)", blackhole_dsn).groups()  # type: ignore[union-attr]
    env = {
        "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
        "AIRFLOW_CONN_ODS_INGRESS": f"postgresql://postgres@{host}:{dbport}/ods",
        "PSA_ERP_SYNC_WEBHOOK_SECRET_PSA": SECRET,
    }
    with airflow_api_server(env, tmp_path / "api-server.log") as base_url:
        audience = conf.get_mandatory_list_value("execution_api", "jwt_audience")[0]
        ti_id = str(uuid.uuid4())
        token = JWTGenerator(secret_key=jwt_secret, audience=audience, valid_for=600).generate({"sub": ti_id})
        yield base_url, f"{ti_id}:{token}"


def test_heartbeats_answer_while_the_ingress_database_is_unreachable(api_server: tuple[str, str]) -> None:
    base_url, ti_token = api_server
    ti_id, token = ti_token.split(":", 1)
    heartbeat_path = f"/execution/task-instances/{ti_id}/heartbeat"
    heartbeat_body = {"hostname": "worker-1", "pid": 4242}
    heartbeat_headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, timeout=10) as client:  # the route is really there
        first = client.put(heartbeat_path, json=heartbeat_body, headers=heartbeat_headers)
        assert first.status_code == 404, first.text  # the query ran: no such task instance

    heartbeat_s: list[float] = []
    answers: list[tuple[int, str, float]] = []

    async def deliver(client: httpx.AsyncClient) -> None:
        body, headers = _delivery()
        started = time.monotonic()
        try:
            response = await client.post("/ingress/psa/events", content=body, headers=headers)
            answers.append((response.status_code, response.json()["reason_code"], time.monotonic() - started))
        except httpx.TimeoutException:
            answers.append((0, "CLIENT_TIMEOUT", time.monotonic() - started))

    async def beat(client: httpx.AsyncClient) -> None:
        await asyncio.sleep(0.5)  # the deliveries are in flight (and hanging) by now
        for _ in range(6):
            started = time.monotonic()
            try:
                response = await client.put(
                    heartbeat_path, json=heartbeat_body, headers=heartbeat_headers, timeout=5.0
                )
                assert response.status_code == 404, response.text
                heartbeat_s.append(time.monotonic() - started)
            except httpx.TimeoutException:
                heartbeat_s.append(float("inf"))
            await asyncio.sleep(0.25)

    async def main() -> None:
        limits = httpx.Limits(max_connections=CONCURRENT_DELIVERIES + 10)
        async with httpx.AsyncClient(base_url=base_url, timeout=15.0, limits=limits) as client:
            await asyncio.gather(beat(client), *(deliver(client) for _ in range(CONCURRENT_DELIVERIES)))

    asyncio.run(main())
    # Each heartbeat is a real metadata-DB query on a loaded machine: well under the task's
    # heartbeat timeout, and never stuck behind the hanging ingress.
    assert max(heartbeat_s) < 2.0, heartbeat_s
    assert len(answers) == CONCURRENT_DELIVERIES
    assert {(status, reason) for status, reason, _ in answers} <= {
        (503, "INBOX_UNAVAILABLE"),
        (503, "BUSY"),
    }, sorted({a[:2] for a in answers})
    # Fail fast: the pool wait (2 s) plus at most one wait for an ingress thread (2 s).
    slowest = max(seconds for *_, seconds in answers)
    assert slowest < ingress.POOL_TIMEOUT_S * 2 + 2.5, slowest


def test_ingress_failures_carry_retry_after(blackhole_dsn: str) -> None:
    from fastapi.testclient import TestClient

    app = ingress.create_app(
        dsn=blackhole_dsn, secrets=lambda source: ingress.Secrets(SECRET.encode()), wait_s=0.5
    )
    with TestClient(app) as client:
        body, headers = _delivery()
        started = time.monotonic()
        response = client.post("/psa/events", content=body, headers=headers)
    app.state.inbox_writer.close()
    assert response.status_code == 503 and response.json()["reason_code"] == "INBOX_UNAVAILABLE"
    assert response.headers["Retry-After"] == str(ingress.RETRY_AFTER_S)
    assert time.monotonic() - started < ingress.POOL_TIMEOUT_S + 1.5


def test_the_ingress_pool_bounds_every_wait(clean_ods: str) -> None:
    pool = ingress.open_pool(clean_ods)
    try:
        with pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone() == (
                f"{ingress.STATEMENT_TIMEOUT_MS // 1000}s",
            )
            assert conn.info.get_parameters()["connect_timeout"] == str(ingress.CONNECT_TIMEOUT_S)
        assert pool.timeout == ingress.POOL_TIMEOUT_S and pool.max_size == ingress.POOL_MAX_SIZE
    finally:
        pool.close()
