"""Whether a run of the posting DAG posts (psa_erp_sync.calendar.cadence.posting_due): the DAG runs
every 15 minutes; outside every close window only the top of the hour posts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from psa_erp_sync.calendar.cadence import posting_due
from psa_erp_sync.config import PostingCadence, load_config

CADENCE = PostingCadence(normal=60, close=15)


@pytest.mark.parametrize(
    ("moment", "due"),
    [
        (datetime(2026, 11, 18, 15, 0, tzinfo=UTC), True),  # mid-month, top of the hour
        (datetime(2026, 11, 18, 15, 15, tzinfo=UTC), False),  # mid-month, quarter past
        (datetime(2026, 11, 27, 15, 15, tzinfo=UTC), True),  # US close window (Fri 27 Nov)
        (datetime(2026, 12, 30, 12, 45, tzinfo=UTC), True),  # GB close window (Wed 30 Dec)
    ],
)
def test_scheduled_runs_post_on_the_cadence_of_the_close_windows(moment: datetime, due: bool) -> None:
    assert posting_due(moment, scheduled=True, config=load_config(), cadence=CADENCE) is due


def test_manual_and_asset_triggered_runs_always_post() -> None:
    moment = datetime(2026, 11, 18, 15, 15, tzinfo=UTC)
    assert posting_due(moment, scheduled=False, config=load_config(), cadence=CADENCE) is True
