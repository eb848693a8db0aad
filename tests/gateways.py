"""Gateways for tests: the real simulator on the test database, a counting wrapper, and a scripted stub."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

from flask import Flask

from api.services import services
from services.gateways import ABSENT, GatewayCharge, GatewayRefund, GatewayResult
from services.gateways.simulator.gateway import SimulatedGateway


def simulator(
    app: Flask, success_rate: float, pending_rate: float = 0.0, settle_seconds: float = 0.0
) -> SimulatedGateway:
    """The embedded simulator on the app's database, with fixed rates (0.0 / 1.0 make it deterministic)."""
    return SimulatedGateway(services(app).pool, success_rate, pending_rate, settle_seconds)


def use_gateway(app: Flask, gateway: Any) -> Any:
    """Put `gateway` in the app's registry, in place of the one of its name (and as the default for new payments)."""
    services(app).gateways.install(gateway, default=True)
    return gateway


class StubGateway:
    """A gateway that knows nothing; tests override the calls they script."""

    name = "simulator"
    needs_payment_method = False

    def can_carry(self, amount: Decimal, currency: str) -> bool:
        return True

    def register(self, charge: GatewayCharge) -> str | None:
        return None

    def authorize(self, charge: GatewayCharge) -> GatewayResult:
        raise NotImplementedError

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        raise NotImplementedError

    def void(self, charge: GatewayCharge) -> GatewayResult:
        raise NotImplementedError

    def retrieve(self, charge: GatewayCharge) -> GatewayResult:
        return GatewayResult(ABSENT)

    def refund(self, refund: GatewayRefund) -> GatewayResult:
        raise NotImplementedError

    def retrieve_refund(self, refund: GatewayRefund) -> GatewayResult:
        return GatewayResult(ABSENT)


class CountingGateway:
    """Wraps a gateway and counts the calls that can move money (authorize, refund, capture, void)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.needs_payment_method = inner.needs_payment_method
        self.calls = 0
        self.refunds = 0
        self.captures = 0
        self.voids = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def authorize(self, charge: GatewayCharge) -> GatewayResult:
        with self._lock:
            self.calls += 1
        return self.inner.authorize(charge)

    def refund(self, refund: GatewayRefund) -> GatewayResult:
        with self._lock:
            self.refunds += 1
        return self.inner.refund(refund)

    def capture(self, charge: GatewayCharge, amount: Decimal) -> GatewayResult:
        with self._lock:
            self.captures += 1
        return self.inner.capture(charge, amount)

    def void(self, charge: GatewayCharge) -> GatewayResult:
        with self._lock:
            self.voids += 1
        return self.inner.void(charge)
