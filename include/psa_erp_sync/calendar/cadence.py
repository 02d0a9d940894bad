"""Whether a run of the posting DAG posts: its cadence, from the close calendars.

The DAG is scheduled every 15 minutes; outside a month-end close window (business days -2 .. +3
of any legal entity's calendar) only the run at the top of the hour posts, so the cadence is
hourly normally and every 15 minutes during close (the environment's ``posting.cadence_minutes``).
Manual and asset-triggered runs always post.
"""

from __future__ import annotations

import logging
from datetime import datetime

from psa_erp_sync.calendar import close
from psa_erp_sync.config import Config, PostingCadence, posting_cadence

log = logging.getLogger(__name__)


def posting_due(moment: datetime, *, scheduled: bool, config: Config, cadence: PostingCadence) -> bool:
    """Post on the run as of ``moment``? ``scheduled``: started by the schedule (not manually or
    by an asset)."""
    if not scheduled:
        return True
    for code, entity in config.legal_entities.legal_entities.items():
        calendar = config.close_calendars.calendars[entity.close_calendar]
        interval = close.posting_interval_minutes(moment, calendar, entity.timezone, cadence)
        if (moment.hour * 60 + moment.minute) % interval == 0:
            log.info("posting now: %s runs every %d minutes at %s", code, interval, moment.isoformat())
            return True
    log.info("no posting at %s: outside the close windows only the hourly run posts", moment.isoformat())
    return False


def gate(*, as_of: datetime, scheduled: bool, config: Config) -> bool:
    """The posting DAG's cadence gate: post on the run as of ``as_of``? The cadence is the
    environment's ``posting.cadence_minutes``."""
    return posting_due(as_of, scheduled=scheduled, config=config, cadence=posting_cadence())
