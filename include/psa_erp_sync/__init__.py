"""psa_erp_sync: keep a professional-services firm's PSA, ERP, CRM and planning platform in sync.

Layers (arrows point down): ``flows`` / ``operators`` / ``sensors`` / ``triggers`` (Airflow adapters)
-> domain logic (``extract``, ``posting``, ...) -> ``ods`` repositories, ``clients`` and ``contracts``.
"""

from __future__ import annotations

__version__ = "0.1.0"
