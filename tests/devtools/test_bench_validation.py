"""The validation bench's pieces: the exponent of its sizes and the bare pydantic baseline of the
same staged payloads (invalid ones counted, not fatal)."""

from __future__ import annotations

import copy

import psycopg
import pytest

from devtools.bench_validation import BackendCpu, beside_baseline, exponent
from psa_erp_sync.ods import staging
from tests.validation.test_rules import ENTRY


def test_the_exponent_of_linear_and_quadratic_costs() -> None:
    assert exponent([(1000, 2.0), (2000, 4.0), (4000, 8.0)]) == pytest.approx(1.0)
    assert exponent([(1000, 1.0), (2000, 4.0), (4000, 16.0)]) == pytest.approx(2.0)


def test_the_baseline_validates_the_runs_payloads_beside_validations_figure(clean_ods: str) -> None:
    good = [dict(copy.deepcopy(ENTRY), id=i) for i in range(1, 6)]
    bad = [dict(copy.deepcopy(ENTRY), id=9, hours="seven")]
    with psycopg.connect(clean_ods) as conn:
        staging.stage_pages(
            conn, [good + bad], run_key="r1", source_system="psa", endpoint="/v2/time_entries"
        )
        staging.stage_pages(
            conn, [[dict(ENTRY, id=99)]], run_key="other", source_system="psa", endpoint="/v2/time_entries"
        )
        conn.commit()
        figures = beside_baseline(
            conn, {"/v2/time_entries": "r1", "/v2/projects": "r1"}, {"records": 6, "rows_per_s": 100}
        )
    baseline = figures["bare_pydantic_same_payloads"]
    assert (baseline["records"], baseline["invalid"]) == (6, 1)
    assert baseline["rows_per_s"] > 0
    assert figures["vs_bare_pydantic"] == round(100 / baseline["rows_per_s"], 2)


def test_the_backends_cpu_counts_the_runs_connections_and_not_the_idle(pg_dsn: str) -> None:
    """Validation's PostgreSQL CPU beside its own: the work of the run's connection is counted (and
    a connection opened in the block, like the reader, is sampled with it); a block that asks
    PostgreSQL for nothing costs ~nothing."""
    from psa_erp_sync.ods import connections

    burn = "SELECT count(*) FROM generate_series(1, 12000000)"  # ~1 s of CPU
    with psycopg.connect(pg_dsn) as conn:
        with BackendCpu(conn) as idle:
            pass
        with BackendCpu(conn) as busy:
            conn.execute(burn).fetchone()
            with connections.connect_like(conn) as reader:
                reader.execute(burn).fetchone()
    if busy.seconds is None:
        pytest.skip("PostgreSQL is not on this machine: its backends' CPU is not readable")
    assert idle.seconds is not None and idle.seconds < 0.2
    assert busy.seconds > 0.3, busy.seconds
