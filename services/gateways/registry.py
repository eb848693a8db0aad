"""The gateways a process can use, by name: the one table of gateway kinds, and the registry built from it.

`GATEWAYS` is the only list of gateway names in the code: config.py takes GATEWAY's choices and
documentation from it, and `GatewayRegistry.build` makes every gateway whose settings are present.
Adding a gateway takes its package (a `GatewayKind`), one line here and its settings in config.py;
`register_gateway` adds one from outside the code (the tests' own gateway does).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from services.gateways import GatewayKind, GatewayNotConfiguredError, PaymentGateway, simulator, stripe

if TYPE_CHECKING:
    from config import Config
    from database.pool import ConnectionPool

# A gateway's name is stored on each payment and refund, and the database checks this format only
# (migration 0012), so a new gateway needs no migration.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")

GATEWAYS: dict[str, GatewayKind] = {
    simulator.NAME: simulator.KIND,
    stripe.NAME: stripe.KIND,
}
_BUILT_IN = frozenset(GATEWAYS)


def register_gateway(name: str, kind: GatewayKind) -> None:
    """Add a gateway kind to the table (before the Config that names it is built); a name is registered once."""
    if not NAME_RE.match(name):
        raise ValueError(f"gateway name {name!r} must be 1-32 lower-case letters, digits or _, starting with a letter")
    if name in GATEWAYS:
        raise ValueError(f"a gateway named {name!r} is already registered")
    GATEWAYS[name] = kind


def unregister_gateway(name: str) -> None:
    """Remove a gateway kind that `register_gateway` added (the built-in ones stay)."""
    if name in _BUILT_IN:
        raise ValueError(f"the {name} gateway is built in and cannot be unregistered")
    GATEWAYS.pop(name, None)


class GatewayRegistry:
    """The gateways configured in this process, by name, and the default one that new payments use."""

    def __init__(
        self, gateways: Mapping[str, PaymentGateway], default: str, kinds: Mapping[str, GatewayKind] | None = None
    ) -> None:
        """Hold `gateways` (each under its own `name`); `default` must be one of them."""
        for name, gateway in gateways.items():
            if gateway.name != name:
                # A payment records the gateway's own name; looking it up by another would never find it.
                raise ValueError(f"the gateway registered as {name!r} calls itself {gateway.name!r}")
        self._gateways = dict(gateways)
        self._kinds = GATEWAYS if kinds is None else kinds
        self._default = self.get(default)

    @classmethod
    def build(cls, config: Config, pool: ConnectionPool) -> GatewayRegistry:
        """Every gateway of the table that the settings configure; GATEWAY's is the default."""
        built = {name: kind.build(config, pool) for name, kind in GATEWAYS.items()}
        return cls({name: gateway for name, gateway in built.items() if gateway is not None}, config.GATEWAY)

    @property
    def default(self) -> PaymentGateway:
        """The gateway new payments use (GATEWAY)."""
        return self._default

    def get(self, name: str) -> PaymentGateway:
        """The gateway called `name`; GatewayNotConfiguredError (503) when this process has none by that name."""
        gateway = self._gateways.get(name)
        if gateway is not None:
            return gateway
        kind = self._kinds.get(name)
        if kind is not None:
            raise GatewayNotConfiguredError(name, kind.configured_by)
        raise GatewayNotConfiguredError(
            name, f"this service has no gateway of that name (it has {', '.join(self._kinds)})"
        )

    def install(self, gateway: PaymentGateway, default: bool = False) -> None:
        """Put `gateway` in place of the one of its name (tests swap in scripted ones); `default`: for new payments."""
        self._gateways[gateway.name] = gateway
        if default or self._default.name == gateway.name:
            self._default = gateway

    def names(self) -> tuple[str, ...]:
        """The names of the configured gateways, in the table's order."""
        return tuple(self._gateways)

    def __contains__(self, name: object) -> bool:
        """Whether a gateway of that name is configured here."""
        return name in self._gateways

    def __repr__(self) -> str:
        """The configured names and the default, for logs and debugging."""
        return f"GatewayRegistry({', '.join(self._gateways)}; default {self._default.name})"
