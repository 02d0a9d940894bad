"""Per-app runtime state of the PSA simulator: config, rate limiter, webhook dispatcher."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import FastAPI, Request

from simulators.common.db import SimDB
from simulators.psa.guard import RateLimiter
from simulators.psa.webhooks import Dispatcher, PsaConfig


@dataclass
class PsaState:
    app: FastAPI
    config: PsaConfig = field(default_factory=PsaConfig)
    limiter: RateLimiter = field(default_factory=RateLimiter)
    dispatcher: Dispatcher = field(init=False)

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(self._db, lambda: self.config)

    def _db(self) -> SimDB | None:
        db: SimDB | None = getattr(self.app.state, "db", None)
        return db

    def apply(self, config: PsaConfig) -> None:
        self.config = config
        self.limiter.configure(config.rate_limit_requests, config.rate_limit_window_s)

    def reset(self) -> None:
        self.apply(PsaConfig())
        self.limiter.clear()


def psa_of(request: Request) -> PsaState:
    state: PsaState = request.app.state.psa
    return state
