"""HTTP endpoints served by the Airflow API server through our plugin (see ``plugins/``)."""

from __future__ import annotations
