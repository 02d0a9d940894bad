"""Retry policy shared by the HTTP clients: exponential backoff with full jitter, honouring ``Retry-After``.

The policy is pure (a frozen dataclass and functions); :func:`send_with_retry` applies it to an
idempotent httpx request for the simpler clients. No Airflow imports. A client asks
:meth:`RetryPolicy.should_retry` whether an answer is worth another attempt, and
:meth:`RetryPolicy.delay` how long to sleep first. Whether a request is *safe* to retry (a GET,
or a write the server certainly did not apply) is the client's decision, not the policy's.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Statuses whose Retry-After header is a server instruction we follow.
_RETRY_AFTER_STATUS = frozenset({429, 503})


log = logging.getLogger(__name__)


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


def send_with_retry(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    retry: RetryPolicy,
    sleep: Callable[[float], None],
    system: str,
    error: Callable[[httpx.Response], Exception],
    **kwargs: Any,
) -> httpx.Response:
    """Send an idempotent request, retrying transport errors and retryable statuses per ``retry``.

    Only for calls that are safe to repeat (reads, PUTs idempotent by id). A non-retryable or
    final failing answer raises ``error(response)``; the last transport error is re-raised.
    """
    path = urlsplit(url).path
    attempt = 0
    while True:
        attempt += 1
        try:
            response = http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            if not retry.should_retry(attempt, None):
                raise
            delay = retry.delay(attempt)
            log.warning(
                "%s %s %s failed (%s); retry %d/%d in %.2fs",
                system,
                method,
                path,
                type(exc).__name__,
                attempt,
                retry.max_attempts - 1,
                delay,
            )
            sleep(delay)
            continue
        if response.is_success:
            return response
        if not retry.should_retry(attempt, response.status_code):
            raise error(response)
        delay = retry.delay(
            attempt, status=response.status_code, retry_after=parse_retry_after(response.headers)
        )
        log.warning(
            "%s %s %s answered %d; retry %d/%d in %.2fs",
            system,
            method,
            path,
            response.status_code,
            attempt,
            retry.max_attempts - 1,
            delay,
        )
        sleep(delay)
