"""A third gateway, in the tests only: its package is this module and `gateway.py`, as the built-in ones are.

Registering it is one call (`register_gateway(NAME, KIND)`, as the registry's table holds one line per
gateway); it has no settings of its own, so nothing in config.py names it. No project file changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.gateways import GatewayKind, PaymentGateway
from tests.gateways_extra.memory.gateway import DECLINED, MemoryGateway

if TYPE_CHECKING:
    from config import Config
    from database.pool import ConnectionPool

NAME = "memory"
__all__ = ["DECLINED", "KIND", "NAME", "MemoryGateway", "build"]


def build(config: Config, pool: ConnectionPool) -> PaymentGateway | None:
    """A gateway with an empty ledger of its own; configured wherever it is registered."""
    return MemoryGateway()


KIND = GatewayKind(build, configured_by="register it with register_gateway", about="in memory, for tests")
