"""``posting.batch_size`` of ``config/mappings.yaml`` governs the batch size of every posting path:
the operator (batch DAG and dead-letter replay), the stream and the command line."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest
import yaml

from psa_erp_sync.config import load_config
from psa_erp_sync.posting.budget import account_limit
from psa_erp_sync.posting.engine import EngineSettings
from tests.conftest import ROOT, RunningSimulator, connect_airflow


def _config_dir(tmp_path: Path, batch_size: int) -> Path:
    target = tmp_path / "config"
    shutil.copytree(ROOT / "config", target)
    mappings = yaml.safe_load((target / "mappings.yaml").read_text())
    mappings["posting"]["batch_size"] = batch_size
    (target / "mappings.yaml").write_text(yaml.safe_dump(mappings))
    return target


def test_engine_settings_take_posting_batch_size_unless_given(tmp_path: Path) -> None:
    config = load_config(_config_dir(tmp_path, 7))
    assert EngineSettings.from_config(config).batch_size == 7
    assert EngineSettings.from_config(config).max_concurrency == account_limit()
    assert EngineSettings.from_config(config, batch_size=3, max_concurrency=2).batch_size == 3
    with pytest.raises(ValueError, match="between 1 and 100"):
        EngineSettings(batch_size=101)


def test_posting_tasks_of_the_batch_and_replay_dags_defer_to_the_config() -> None:
    from airflow.dag_processing.dagbag import DagBag

    from psa_erp_sync.operators.posting import IdempotentPostingOperator

    found = []
    for name in ("time_expense_posting.py", "dead_letter_replay.py"):
        bag = DagBag(dag_folder=str(ROOT / "dags" / name), safe_mode=False)
        assert not bag.import_errors, bag.import_errors
        for dag in bag.dags.values():
            found += [t for t in dag.tasks if isinstance(t, IdempotentPostingOperator)]
    assert {t.task_id for t in found} == {"post_timebills", "post_expense_reports", "post_replayed"}
    assert [t.batch_size for t in found] == [None] * len(found)  # None: posting.batch_size


@pytest.mark.integration
def test_a_busy_lock_fails_the_operator_retryably_within_posting_lock_wait_seconds(
    tmp_path: Path, clean_ods: str, erp_sim: RunningSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not AirflowFailException or a skip: a plain exception, so Airflow retries the task."""
    import time

    from airflow.exceptions import AirflowFailException, AirflowSkipException

    from psa_erp_sync.operators.posting import IdempotentPostingOperator
    from psa_erp_sync.posting.service import PostingLockBusy

    config_dir = _config_dir(tmp_path, 100)
    mappings = yaml.safe_load((config_dir / "mappings.yaml").read_text())
    mappings["posting"]["lock_wait_seconds"] = 1
    (config_dir / "mappings.yaml").write_text(yaml.safe_dump(mappings))
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    monkeypatch.setenv("PSA_ERP_SYNC_CONFIG_DIR", str(config_dir))
    load_config.cache_clear()
    op = IdempotentPostingOperator(task_id="post_timebills", record_type="timebill")
    try:
        with psycopg.connect(clean_ods, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(hashtext('psa_erp_sync.posting.netsuite.A1.timebill'))")
            started = time.monotonic()
            with pytest.raises(PostingLockBusy, match="posting lock busy") as busy:
                op.execute({"ti": None, "run_id": "busy"})  # type: ignore[arg-type]
            assert time.monotonic() - started < 5
    finally:
        load_config.cache_clear()
    assert not isinstance(busy.value, (AirflowFailException, AirflowSkipException))


@pytest.mark.integration
def test_the_operator_posts_in_batches_of_posting_batch_size(
    tmp_path: Path,
    clean_ods: str,
    psa_sim: RunningSimulator,
    erp_sim: RunningSimulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from psa_erp_sync.operators.posting import IdempotentPostingOperator
    from tests.posting.test_stateful import PostingMachine

    PostingMachine.dsn, PostingMachine.psa, PostingMachine.erp = clean_ods, psa_sim, erp_sim
    PostingMachine()._extract_and_validate("batch-size")
    connect_airflow(monkeypatch, clean_ods, erp=erp_sim)
    monkeypatch.setenv("PSA_ERP_SYNC_CONFIG_DIR", str(_config_dir(tmp_path, 3)))
    load_config.cache_clear()
    try:
        op = IdempotentPostingOperator(task_id="post_timebills", record_type="timebill")
        result = op.execute({"ti": None, "run_id": "batch-size"})  # type: ignore[arg-type]
    finally:
        load_config.cache_clear()
    with psycopg.connect(clean_ods) as conn:
        sizes = [
            n
            for (n,) in conn.execute(
                "SELECT count(*) FROM ledger.attempt WHERE batch_key IS NOT NULL GROUP BY batch_key"
            )
        ]
    sent = result["outcome"]["posted"] + result["outcome"]["rejected"]
    assert sent > 3, result  # more than one batch's worth
    assert max(sizes) == 3, sizes  # the engine default (100) would send them in one batch
    assert sum(sizes) == sent
