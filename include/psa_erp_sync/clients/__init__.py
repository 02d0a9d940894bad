"""Plain API clients of the external systems (pure Python on httpx, no Airflow imports).

Each client owns authentication, pagination, rate limits and retries for its system; the
Airflow hooks in ``psa_erp_sync.hooks`` only build them from connections.
"""

from __future__ import annotations
