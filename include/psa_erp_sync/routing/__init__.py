"""Routing during an ERP transition: which ERP and account each record goes to, by posting date.

Domain logic only: nothing here imports Airflow. ``config/erp_routing.yaml`` maps legal entity +
effective date range to an ERP and account (:mod:`.settings`); :mod:`.route` answers where a
record posted on a day goes, where a correction goes across a cutover, and which ERPs a parallel
run posts to; :mod:`.xref` keeps the per-ERP cross-references and refuses to change a migrated
entity's after cutover; :mod:`.parallel` reconciles a parallel run to the cent.
"""

from __future__ import annotations
