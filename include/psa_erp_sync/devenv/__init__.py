"""Local development environment: embedded PostgreSQL, simulator processes, the demo runner.

Nothing here is used by DAGs in production; it exists so that two commands set everything up.
"""

from __future__ import annotations
