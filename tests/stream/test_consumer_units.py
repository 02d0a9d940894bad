"""Pure unit tests of the consumer's pieces: the periods cache and the benchmark's breakdown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest


class _Adapter:
    name = "netsuite"

    def __init__(self) -> None:
        self.reads = 0

    def read_periods(self) -> list[dict[str, Any]]:
        self.reads += 1
        return [{"id": self.reads}]

    def post_batch(self) -> str:
        return "posted"


def test_periods_are_read_again_only_after_the_ttl_and_the_rest_is_the_adapters() -> None:
    from psa_erp_sync.stream.consumer import CachedPeriods

    now = [0.0]
    inner = _Adapter()
    cached = CachedPeriods(inner, ttl_s=30.0, clock=lambda: now[0])
    assert cached.read_periods() == [{"id": 1}]
    now[0] = 29.0
    assert cached.read_periods() == [{"id": 1}]
    now[0] = 31.0
    assert cached.read_periods() == [{"id": 2}]
    assert (inner.reads, cached.reads) == (2, 2)
    assert cached.post_batch() == "posted" and cached.name == "netsuite"


def test_renewal_must_be_well_inside_the_takeover_lease() -> None:
    from psa_erp_sync.stream.consumer import ConsumerSettings

    with pytest.raises(ValueError, match="renew_every_s"):
        ConsumerSettings(renew_every_s=30.0, takeover_after=timedelta(seconds=60))


def test_the_benchmark_splits_end_to_end_into_claim_and_posting() -> None:
    from devtools.bench_stream import consumer_breakdown

    t0 = datetime(2026, 12, 6, tzinfo=UTC)
    rows = [
        {"received": t0, "claimed": t0 + timedelta(seconds=0.1), "confirmed": t0 + timedelta(seconds=0.5)},
        {"received": t0, "claimed": t0 + timedelta(seconds=1), "confirmed": None},
    ]
    figures = consumer_breakdown(rows)
    assert (figures["events_measured"], figures["events_not_posted"]) == (1, 1)
    assert figures["stages_s"]["consumer_claim"]["p50"] == 0.1
    assert figures["stages_s"]["posting"]["p50"] == 0.4
    assert figures["end_to_end_s"]["p50"] == 0.5
