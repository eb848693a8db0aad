"""Stripe PaymentIntents (`gateway.py`, through the official SDK), configured whenever STRIPE_API_KEY is set.

`units.py` holds Stripe's unit of each currency apart from the SDK, so start-up can check CURRENCY
without loading Stripe; so does this module, which config.py reads through the registry's table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.gateways import GatewayKind, PaymentGateway

if TYPE_CHECKING:
    from config import Config
    from database.pool import ConnectionPool

NAME = "stripe"


def build(config: Config, pool: ConnectionPool) -> PaymentGateway | None:
    """A Stripe client with the configured key, address and timeout; None without STRIPE_API_KEY."""
    if not config.STRIPE_API_KEY:
        return None
    # Imported here: the SDK is loaded only by a process that has a key to use it with.
    from services.gateways.stripe.gateway import StripeGateway

    return StripeGateway(config.STRIPE_API_KEY, config.STRIPE_API_BASE, config.GATEWAY_TIMEOUT)


KIND = GatewayKind(
    build,
    configured_by="set STRIPE_API_KEY (a secret key, sk_...)",
    about="PaymentIntents, needs `STRIPE_API_KEY`",
)
