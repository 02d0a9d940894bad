"""Revenue forecast: recognized revenue actuals, backlog burned by resource plans, weighted
pipeline, scenarios, contract balances, snapshots and the accuracy backtest.

Domain logic only: nothing here imports Airflow. ``model`` is pure (pandas/numpy on integer
minor units); ``inputs`` reads the ODS and the PSA/CRM; ``store`` writes immutable snapshots;
``publish`` pushes them to the planning platform; ``chart`` draws them.
"""

from __future__ import annotations
