"""ODS retention: one daily task that applies ``config/retention.yaml``
(:func:`psa_erp_sync.ods.retention.enforce_configured`) as of the run's data interval end."""

from __future__ import annotations


def build() -> None:
    """Declare the retention task (call inside a DAG context)."""
    from psa_erp_sync.lineage.refs import ods
    from psa_erp_sync.ods import retention
    from psa_erp_sync.operators.step import DomainStepOperator

    tables = [ods("staging.raw_record"), ods("inbox.event"), ods("inbox.quarantine")]
    DomainStepOperator(
        task_id="enforce_retention",
        call=retention.enforce_configured,
        step="retention",
        inputs=tables,
        outputs=tables,
    )
