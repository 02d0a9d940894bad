"""RetryPolicy and Retry-After parsing (pure units)."""

from __future__ import annotations

import email.utils

import pytest

from psa_erp_sync.clients.http import RetryPolicy, compute_sleep, parse_retry_after


def test_full_jitter_is_bounded_by_the_exponential_ceiling() -> None:
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    assert policy.delay(1, rand=lambda: 1.0) == 0.5
    assert policy.delay(3, rand=lambda: 1.0) == 2.0
    assert policy.delay(10, rand=lambda: 1.0) == 4.0  # capped
    assert policy.delay(200, rand=lambda: 0.5) == 2.0  # no overflow on huge attempts
    assert policy.delay(3, rand=lambda: 0.0) == 0.0


def test_retry_after_wins_on_429_and_503_only() -> None:
    policy = RetryPolicy(max_delay_s=1.0, max_retry_after_s=60.0)
    assert policy.delay(1, status=429, retry_after=7, rand=lambda: 0.0) == 7
    assert policy.delay(1, status=503, retry_after=600, rand=lambda: 0.0) == 60.0  # capped
    assert policy.delay(1, status=500, retry_after=7, rand=lambda: 1.0) == 0.5
    assert compute_sleep(policy, 2, status=429, retry_after=-3) == 0.0


def test_should_retry() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1, 429) and policy.should_retry(1, 503) and policy.should_retry(2, None)
    assert not policy.should_retry(1, 400) and not policy.should_retry(1, 404)
    assert not policy.should_retry(3, 503)


def test_invalid_policies() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(base_delay_s=-1)
    with pytest.raises(ValueError, match="1-based"):
        RetryPolicy().delay(0)


def test_parse_retry_after() -> None:
    assert parse_retry_after({"Retry-After": "12"}) == 12.0
    assert parse_retry_after({"retry-after": " 1.5 "}) == 1.5
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=lambda: 1_000_000) == 30.0
    assert parse_retry_after({"Retry-After": date}, now=lambda: 2_000_000) == 0.0
