"""API-key authentication for /v1: `Authorization: Bearer <key>` or `X-API-Key: <key>`."""

from __future__ import annotations

import hashlib
import hmac

from flask import Flask, current_app, g, request

from utils.errors import AppError
from utils.logger import get_logger

logger = get_logger(__name__)

PROTECTED_PREFIX = "/v1/"
METRICS_PREFIX = "/metrics"


class UnauthorizedError(AppError):
    """No valid API key."""

    def __init__(self) -> None:
        """401 unauthorized with a WWW-Authenticate challenge."""
        super().__init__(
            "A valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'.",
            status_code=401,
            code="unauthorized",
        )
        self.headers["WWW-Authenticate"] = 'Bearer realm="payment-service"'


def presented_key() -> str | None:
    """The key the caller sent, if any (never logged)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("X-API-Key") or None


def identify(digests: dict[str, str], key: str | None) -> str | None:
    """Return the name of the configured key that `key` matches, comparing in constant time."""
    if key is None:
        return None
    presented = hashlib.sha256(key.encode()).hexdigest()
    match = None
    # Compare against every key, without stopping early, so timing reveals nothing about which matched.
    for name, digest in digests.items():
        if hmac.compare_digest(presented, digest):
            match = name
    return match


def _authenticate() -> None:
    """Reject /v1 requests without a valid key when keys are configured; remember the client's name."""
    g.client_id = None
    settings = current_app.config["SERVICE"]
    protected = request.path.startswith(PROTECTED_PREFIX) or (
        settings.METRICS_REQUIRE_API_KEY and request.path.startswith(METRICS_PREFIX)
    )
    digests = settings.API_KEYS
    if not protected or not digests:
        return
    name = identify(digests, presented_key())
    if name is None:
        raise UnauthorizedError()
    g.client_id = name


def register_auth(app: Flask) -> None:
    """Install the check; warn once when the service runs without keys."""
    if not app.config["SERVICE"].API_KEYS:
        logger.warning("API_KEYS is not set: the /v1 endpoints accept requests from anyone")
    app.before_request(_authenticate)
