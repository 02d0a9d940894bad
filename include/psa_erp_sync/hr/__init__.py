"""HR (Workday) master data: workers and cost rates into the ODS, then to PSA users and ERP employees.

HR is the authority for people, their home legal entity and their cost rates
(``config/systems_of_authority.yaml``, domains ``resource`` and ``cost_rate``). No Airflow imports.
"""

from __future__ import annotations
