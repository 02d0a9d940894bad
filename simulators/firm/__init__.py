"""A deterministic fake consulting firm: master data and one month of transactions for every simulator.

``generator`` builds the firm from a :class:`~simulators.firm.generator.FirmSpec` (seed, sizes,
dates, dirt rates); ``load`` pushes it into running simulators through their ``/admin/seed``
endpoints and replays the post-seed mutations through the PSA admin API.
"""

from __future__ import annotations
