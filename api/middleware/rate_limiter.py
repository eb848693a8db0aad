"""Per-client rate limits on /v1, from the RATE_LIMIT_* settings, on the `limits` library.

Counters live in memory (per process: each gunicorn worker counts on its own) or in Redis
(`RATE_LIMIT_STORAGE_URI=redis://...`: one budget shared by every worker and instance). If the
store fails, requests are let through (fail open) and the failure is logged and counted: a
payment API that refuses charges because its limiter is down does more harm than one that briefly
does not limit.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import limits
from flask import Flask, Response, current_app, g, request
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from config import Config
from utils.errors import AppError
from utils.logger import get_logger
from utils.metrics import RATE_LIMIT_STORE_ERRORS, RATE_LIMITED

logger = get_logger(__name__)

LIMITED_PREFIX = "/v1/"
# Methods that never count (contract section 7): OPTIONS asks what a route allows and HEAD fetches
# headers only; neither may spend a client's budget for the real requests.
UNCOUNTED_METHODS = frozenset({"OPTIONS", "HEAD"})
# Endpoint name -> which configured limit applies; every other /v1 request uses the default.
# Placing and capturing a hold move money as a charge does, so they share its budget; releasing one
# gives money back, as a refund does.
ENDPOINT_LIMITS = {
    "payments.charge": "charge",
    "payments.authorize": "charge",
    "payments.capture": "charge",
    "payments.refund": "refund",
    "payments.void": "refund",
}
# Redis calls must never hold a request up for long.
REDIS_TIMEOUT_SECONDS = 0.25
# After a store failure, skip it for a while instead of paying the timeout on every request.
STORE_RETRY_SECONDS = 5.0


class RateLimitedError(AppError):
    """Too many requests from this client."""

    def __init__(self, retry_after: int) -> None:
        """429 rate_limited with Retry-After."""
        super().__init__(
            f"Too many requests; retry in {retry_after} seconds.",
            status_code=429,
            code="rate_limited",
            retry_after=retry_after,
        )
        self.headers["Retry-After"] = str(retry_after)


@dataclass(frozen=True)
class Decision:
    """The outcome of counting one request."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


def make_storage(uri: str) -> Storage:
    """Open the counter store named by RATE_LIMIT_STORAGE_URI, with short timeouts for Redis."""
    if uri.startswith("redis"):
        return storage_from_string(
            uri, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
    return storage_from_string(uri)


class RateLimiter:
    """Counts requests per (limit, client) in a moving window."""

    def __init__(self, config: Config, storage: Storage | None = None) -> None:
        """Parse the configured limits and open the store."""
        self.enabled = config.RATE_LIMIT_ENABLED
        self.items = {
            "charge": limits.parse(config.RATE_LIMIT_CHARGE),
            "refund": limits.parse(config.RATE_LIMIT_REFUND),
            "default": limits.parse(config.RATE_LIMIT_DEFAULT),
        }
        self._storage = storage or make_storage(config.RATE_LIMIT_STORAGE_URI)
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._skip_until = 0.0
        self._lock = threading.Lock()
        self.store_failures = 0

    def check(self, limit_name: str, client: str) -> Decision | None:
        """Count one request; None means the store is unavailable and the request is let through."""
        if time.monotonic() < self._skip_until:
            return None
        item = self.items[limit_name]
        try:
            allowed = self._strategy.hit(item, limit_name, client)
            stats = self._strategy.get_window_stats(item, limit_name, client)
        except Exception as exc:
            self._store_failed(exc)
            return None
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return Decision(allowed, item.amount, stats.remaining, reset)

    def _store_failed(self, exc: Exception) -> None:
        """Remember the failure, count it, and stop asking the store for a few seconds."""
        RATE_LIMIT_STORE_ERRORS.inc()
        with self._lock:
            self.store_failures += 1
            self._skip_until = time.monotonic() + STORE_RETRY_SECONDS
        logger.warning(
            "rate-limit store unavailable; not limiting for a few seconds",
            extra={"error_type": type(exc).__name__, "retry_in_seconds": STORE_RETRY_SECONDS},
        )


def client_identity() -> str:
    """The API key's name when there is one, else the client's address."""
    name = getattr(g, "client_id", None)
    return f"key:{name}" if name else f"ip:{request.remote_addr or 'unknown'}"


def _limit_request() -> None:
    """Count the request against its limit (OPTIONS and HEAD never count); raise 429 when over it."""
    limiter: RateLimiter = current_app.extensions["rate_limiter"]
    if not limiter.enabled or request.method in UNCOUNTED_METHODS or not request.path.startswith(LIMITED_PREFIX):
        return
    limit_name = ENDPOINT_LIMITS.get(request.endpoint or "", "default")
    decision = limiter.check(limit_name, client_identity())
    if decision is None:
        return
    g.rate_limit = decision
    if not decision.allowed:
        RATE_LIMITED.labels(limit_name).inc()
        logger.info("rate limited", extra={"client": client_identity(), "endpoint": request.endpoint})
        raise RateLimitedError(decision.reset_seconds)


def _add_headers(response: Response) -> Response:
    """Tell the client its budget (IETF RateLimit header fields) on every limited response."""
    decision: Decision | None = getattr(g, "rate_limit", None)
    if decision is not None:
        response.headers["RateLimit-Limit"] = str(decision.limit)
        response.headers["RateLimit-Remaining"] = str(decision.remaining)
        response.headers["RateLimit-Reset"] = str(decision.reset_seconds)
    return response


def register_rate_limiter(app: Flask, limiter: RateLimiter) -> None:
    """Install the limiter (after authentication, so the key's name is known)."""
    app.extensions["rate_limiter"] = limiter
    app.before_request(_limit_request)
    app.after_request(_add_headers)
