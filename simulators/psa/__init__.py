"""PSA simulator: Harvest API v2 shape plus documented extensions (see ``simulators.psa.app``)."""

from __future__ import annotations
