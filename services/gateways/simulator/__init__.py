"""The embedded simulator (`gateway.py`): a processor's ledger in the service's database, decided by configured rates.

It runs in every mode but production, where it runs only as the configured default (which production
refuses, section 12): a payment it made can still be captured, voided, refunded and reconciled while
Stripe takes the new ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.gateways import GatewayKind, PaymentGateway

if TYPE_CHECKING:
    from config import Config
    from database.pool import ConnectionPool

NAME = "simulator"


def build(config: Config, pool: ConnectionPool) -> PaymentGateway | None:
    """The simulator with the configured rates; None in production unless GATEWAY names it."""
    if config.APP_ENV == "production" and config.GATEWAY != NAME:
        return None
    # Imported here: config.py reads the registry's table at start-up, before any database code is needed.
    from services.gateways.simulator.gateway import SimulatedGateway

    return SimulatedGateway(
        pool, config.GATEWAY_SUCCESS_RATE, config.GATEWAY_PENDING_RATE, config.GATEWAY_SETTLE_SECONDS
    )


KIND = GatewayKind(
    build,
    configured_by="it runs only outside production (APP_ENV=development)",
    about="embedded, its ledger in the service's database",
)
