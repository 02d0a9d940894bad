"""Retry policy shared by the HTTP clients: exponential backoff with full jitter, honouring ``Retry-After``.

Pure functions and a frozen dataclass; no I/O and no Airflow imports. A client asks
:meth:`RetryPolicy.should_retry` whether an answer is worth another attempt, and
:meth:`RetryPolicy.delay` how long to sleep first. Whether a request is *safe* to retry (a GET,
or a write the server certainly did not apply) is the client's decision, not the policy's.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Statuses whose Retry-After header is a server instruction we follow.
_RETRY_AFTER_STATUS = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    :param max_attempts: total tries including the first (1 = never retry).
    :param base_delay_s: backoff base; retry ``n`` waits up to ``base * 2**(n-1)`` seconds.
    :param max_delay_s: cap of the jittered backoff.
    :param max_retry_after_s: cap of a server's ``Retry-After`` (a broken header must not stall a run).
    """

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_retry_after_s: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("delays must not be negative")

    def should_retry(self, attempt: int, status: int | None) -> bool:
        """``attempt`` (1-based) just failed with ``status`` (None = transport error): try again?"""
        if attempt >= self.max_attempts:
            return False
        return status is None or status in RETRYABLE_STATUS

    def delay(
        self,
        attempt: int,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to sleep after failed attempt ``attempt`` (1-based).

        A ``Retry-After`` on 429/503 is honoured as given (capped); otherwise full jitter:
        uniform in ``[0, min(max_delay, base * 2**(attempt-1))]``.
        """
        return compute_sleep(self, attempt, status=status, retry_after=retry_after, rand=rand)


def compute_sleep(
    policy: RetryPolicy,
    attempt: int,
    *,
    status: int | None = None,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """See :meth:`RetryPolicy.delay`."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if retry_after is not None and status in _RETRY_AFTER_STATUS:
        return min(max(retry_after, 0.0), policy.max_retry_after_s)
    ceiling = min(policy.max_delay_s, policy.base_delay_s * (2 ** min(attempt - 1, 62)))
    return rand() * ceiling


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())
