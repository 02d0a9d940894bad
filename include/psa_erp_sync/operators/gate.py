"""``DomainGateOperator``: a flow step whose domain function decides whether the rest of the run
goes on.

It is a :class:`~psa_erp_sync.operators.step.DomainStepOperator` (the function receives the same
explicit arguments: ``as_of``, ``scheduled``, ``config``, ...), and when the function returns a
falsy value every task downstream of the gate is skipped, as Airflow's short-circuit does::

    DomainGateOperator(task_id="cadence_gate", call=cadence.gate)  # def gate(*, as_of, scheduled, config) -> bool

The domain function returns a plain bool and never sees Airflow; the skipping is done here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.bases.skipmixin import SkipMixin

from psa_erp_sync.operators.step import DomainStepOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class DomainGateOperator(DomainStepOperator, SkipMixin):
    """Run one domain function; when it returns a falsy value, skip everything downstream."""

    ui_color = "#f7f1e3"

    def execute(self, context: Context) -> Any:
        go_on = super().execute(context)
        if go_on:
            self.log.info("%s: the run goes on", self.task_id)
            return go_on
        downstream = [
            task for task in context["task"].get_flat_relatives(upstream=False) if not task.is_teardown
        ]
        self.log.info("%s: skipping %d downstream tasks", self.task_id, len(downstream))
        self.skip(ti=context["ti"], tasks=downstream)
        return go_on
