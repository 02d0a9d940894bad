"""Webhook signing secrets of the ingress: where they come from (Airflow connection, else
environment), their rotation overlap, a short cache, and the constant-time signature check.
Secrets are never logged."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

SECRET_CACHE_S = 30.0
CONN_IDS = {"psa": "psa_webhook", "erp": "erp_webhook"}
_SIGNATURE = re.compile(r"^sha256=([0-9a-f]{64})$")


class SecretUnavailable(RuntimeError):
    """No secret is configured for a source: the ingress refuses rather than accepts unsigned."""


class SecretMisconfigured(SecretUnavailable):
    """The signing settings of a source are present but invalid (e.g. ``previous_valid_until``
    without a UTC offset): the ingress refuses (503) and logs the configuration error."""


def parse_valid_until(value: object, where: str) -> datetime:
    """``previous_valid_until``: an ISO 8601 time *with* a UTC offset (a naive time is ambiguous
    and cannot be compared with the aware clock). The value itself is not echoed."""
    if not isinstance(value, str):
        raise SecretMisconfigured(
            f"{where}: previous_valid_until must be an ISO 8601 string with a UTC offset"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise SecretMisconfigured(
            f"{where}: previous_valid_until is not an ISO 8601 time (e.g. 2026-12-07T12:00:00+00:00)"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise SecretMisconfigured(f"{where}: previous_valid_until has no UTC offset (e.g. +00:00 or Z)")
    return parsed


@dataclass(frozen=True)
class Secrets:
    current: bytes
    previous: bytes | None = None
    previous_valid_until: datetime | None = None

    def __post_init__(self) -> None:
        until = self.previous_valid_until
        if until is not None and (until.tzinfo is None or until.utcoffset() is None):
            raise SecretMisconfigured("previous_valid_until has no UTC offset")

    def candidates(self, now: datetime) -> list[bytes]:
        keys = [self.current]
        if self.previous and (self.previous_valid_until is None or now <= self.previous_valid_until):
            keys.append(self.previous)
        return keys


def secrets_from_airflow(source: str) -> Secrets:
    """Current (and previous) signing secret of ``source``: Airflow connection, else environment."""
    conn_id = CONN_IDS[source]
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception:  # not defined (or no Airflow here): the documented env fallback applies
        conn = None
    if conn is not None and conn.password:
        extra = dict(conn.extra_dejson)
        until = extra.get("previous_valid_until")
        return Secrets(
            conn.password.encode(),
            str(extra["previous_secret"]).encode() if extra.get("previous_secret") else None,
            parse_valid_until(until, f"connection {conn_id}") if until else None,
        )
    value = os.environ.get(f"PSA_ERP_SYNC_WEBHOOK_SECRET_{source.upper()}")
    if not value:
        raise SecretUnavailable(f"no webhook secret configured for {source} (connection {conn_id})")
    previous = os.environ.get(f"PSA_ERP_SYNC_WEBHOOK_PREVIOUS_SECRET_{source.upper()}")
    return Secrets(value.encode(), previous.encode() if previous else None)


class SecretCache:
    """Secrets looked up at most every ``SECRET_CACHE_S`` seconds (a rotation shows within that)."""

    def __init__(self, lookup: Callable[[str], Secrets]) -> None:
        self._lookup = lookup
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Secrets | SecretMisconfigured]] = {}

    def get(self, source: str) -> Secrets:
        """The secrets, or ``SecretUnavailable`` / ``SecretMisconfigured``. A misconfiguration is
        cached like a result, so a broken setting does not cost a lookup per delivery."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(source)
        if hit is None or now - hit[0] >= SECRET_CACHE_S:
            try:
                result: Secrets | SecretMisconfigured = self._lookup(source)
            except SecretMisconfigured as exc:
                result = exc
            hit = (now, result)
            with self._lock:
                self._cache[source] = hit
        if isinstance(hit[1], SecretMisconfigured):
            raise SecretMisconfigured(str(hit[1]))
        return hit[1]


def signature_of(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secrets: Secrets, timestamp: str, body: bytes, signature: str, now: datetime) -> bool:
    """Constant-time comparison against every valid secret (all are computed, none short-circuits)."""
    match = _SIGNATURE.fullmatch(signature)
    if match is None:
        return False
    given = match.group(1).encode()
    ok = False
    for key in secrets.candidates(now):
        expected = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest().encode()
        ok |= hmac.compare_digest(expected, given)
    return ok
