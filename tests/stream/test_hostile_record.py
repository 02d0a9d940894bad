"""A hostile record re-read by the stream goes through the stream's own steps (targeted reference,
staging of new versions, validation) and is quarantined; the good record beside it is canonical
(issue 13 item 2). Real PSA simulator for the reference, real staging and validation."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import psycopg
import pytest

from tests.conftest import RunningSimulator
from tests.stream.helpers import extract_sample_reference

pytestmark = pytest.mark.integration


def test_hostile_records_through_the_stream_steps(clean_ods: str, psa_sim: RunningSimulator) -> None:
    from psa_erp_sync.clients.psa import HarvestClient
    from psa_erp_sync.config import load_config
    from psa_erp_sync.stream import time_expense as stream
    from psa_erp_sync.validation import time_expense as validation

    with (
        HarvestClient(base_url=psa_sim.base_url, token="t", account_id="1") as client,
        psycopg.connect(clean_ods, autocommit=True) as conn,
    ):
        keys = extract_sample_reference(psa_sim, conn, client)
        good = next(iter(client.iter_items("/v2/time_entries", {"per_page": 100})))
        hostile = [
            dict(copy.deepcopy(good), id=8_000_001, project="not an object", user=[1]),
            dict(copy.deepcopy(good), id=2**63, hours=-3),
            dict(copy.deepcopy(good), id=8_000_003, hours=10**7),
            dict(copy.deepcopy(good), id=8_000_004, updated_at="2099-01-01T00:00:00Z"),
            dict(copy.deepcopy(good), id=8_000_005, billable_rate="1e400"),
        ]
        records = [good, *hostile]
        ref = stream.reference_for(conn, keys, records)
        assert stream._covers(ref, records)  # a malformed reference does not force a reference refresh
        run_key = "stream-test/v2/time_entries"
        with conn.transaction():
            new, known = stream.stage_new_versions(
                conn, records, run_key=run_key, endpoint="/v2/time_entries"
            )
        with conn.transaction():
            result = validation.validate_run(
                conn,
                kind="time_entry",
                run_key=run_key,
                ref=ref,
                config=load_config(),
                as_of=datetime.now(UTC),
                dag_run_id="stream-test",
            )
            result.check()
        reasons = dict(
            conn.execute(
                "SELECT source_id, reason_code FROM exceptions.item WHERE status = 'open'"
            ).fetchall()
        )
        canonical = {r[0] for r in conn.execute("SELECT source_id FROM canonical.time_entry")}
    assert (new, known) == (6, 0)
    assert (result.valid, result.quarantined) == (1, 5)
    assert canonical == {str(good["id"])}
    assert reasons == {
        "8000001": "SCHEMA_INVALID",
        str(2**63): "ID_OUT_OF_RANGE",
        "8000003": "HOURS_INVALID",
        "8000004": "UPDATED_AT_IN_FUTURE",
        "8000005": "AMOUNT_OUT_OF_RANGE",
    }
