"""Revenue recognition (ASC 606 / IFRS 15, loss provisions per ASC 605-35): per contract and
period, what is recognized, the contract asset or liability, and the balanced journal that moves
the ledger there.

Domain logic only: nothing here imports Airflow. ``recognition`` is the calculation (pure Python
integers); ``journals`` turns it into journal lines and deltas against what was already posted;
``source`` reads a period's inputs from the ODS; ``store`` writes snapshots and planned journals;
``service`` computes and stores one period. The forecast's ``actual`` layer uses the same
calculation (``forecast.model``).
"""

from __future__ import annotations
