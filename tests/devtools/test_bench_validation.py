"""The validation bench's pieces: the exponent of its sizes and the bare pydantic baseline of the
same staged payloads (invalid ones counted, not fatal)."""

from __future__ import annotations

import copy
from typing import Any

import psycopg
import pytest

from devtools.bench_common import validate_runs
from devtools.bench_validation import BackendCpu, beside_baseline, exponent
from psa_erp_sync.ods import staging
from tests.validation.test_fx_rules import EXPENSE  # an expense valid against ``REF``
from tests.validation.test_rules import AS_OF, ENTRY, REF


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


def _staged_month(conn: psycopg.Connection) -> dict[str, str]:
    """Three time entries (one invalid) and two expenses staged; endpoint -> run key."""
    entries = [dict(copy.deepcopy(ENTRY), id=i, notes=f"n{i}") for i in (1, 2)]
    entries.append(dict(copy.deepcopy(ENTRY), id=3, hours="seven"))
    staging.stage_pages(conn, [entries], run_key="t1", source_system="psa", endpoint="/v2/time_entries")
    expenses = [dict(EXPENSE, id=i, total_cost=10 * i) for i in (5, 6)]
    staging.stage_pages(conn, [expenses], run_key="e1", source_system="psa", endpoint="/v2/expenses")
    conn.commit()
    return {"/v2/time_entries": "t1", "/v2/expenses": "e1"}


def _written(conn: psycopg.Connection) -> tuple[Any, ...]:
    return tuple(
        conn.execute(query).fetchall()
        for query in (
            "SELECT source_id, version_hash, amount_minor FROM canonical.time_entry ORDER BY source_id",
            "SELECT source_id, version_hash, amount_minor FROM canonical.expense_entry ORDER BY source_id",
            "SELECT record_type, source_id, reason_code, status FROM exceptions.item ORDER BY 1, 2, 3",
        )
    )


def test_the_bench_reads_the_next_kind_ahead_and_builds_the_reference_once(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``validate_runs``: the expenses' key sort starts before the time entries' run ends, the
    reference function is called once (by the first run) and both kinds write what each kind's
    own ``validate_run`` writes."""
    from psa_erp_sync.config import load_config
    from psa_erp_sync.validation import time_expense as validation

    events: list[str] = []
    staged_read, validate_run = validation.staged_read, validation.validate_run

    def noted_read(conn: psycopg.Connection, kind: str, *args: Any, **kwargs: Any) -> Any:
        events.append(f"read {kind}")
        return staged_read(conn, kind, *args, **kwargs)  # type: ignore[arg-type]

    def noted_run(*args: Any, **kwargs: Any) -> Any:
        result = validate_run(*args, **kwargs)
        events.append(f"ran {kwargs['kind']}")
        return result

    def reference() -> validation.PsaReference:
        events.append("reference")
        return REF

    config = load_config()
    with psycopg.connect(clean_ods) as conn:
        runs = _staged_month(conn)
        for endpoint, kind in (("/v2/time_entries", "time_entry"), ("/v2/expenses", "expense_entry")):
            with conn.transaction():
                validate_run(
                    conn,
                    kind=kind,
                    run_key=runs[endpoint],
                    ref=REF,
                    config=config,
                    as_of=AS_OF,
                    dag_run_id="bench",
                )  # type: ignore[arg-type]
        expected = _written(conn)
        conn.execute("TRUNCATE canonical.time_entry, canonical.expense_entry, exceptions.item, audit.change")
        conn.commit()
        monkeypatch.setattr(validation, "staged_read", noted_read)
        monkeypatch.setattr(validation, "validate_run", noted_run)
        assert validate_runs(conn, reference, runs, config=config, as_of=AS_OF) == (5, 1)
        assert _written(conn) == expected
    # the time entries' own read is entered inside their run; the expenses' before it ends
    assert events == [
        "read expense_entry",
        "read time_entry",
        "reference",
        "ran time_entry",
        "ran expense_entry",
    ]
