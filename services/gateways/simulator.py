"""The contract's gateway simulator: CASH always succeeds, other methods succeed by a configured rate."""

from __future__ import annotations

import random
from decimal import Decimal

from services.gateways import GATEWAY_ERROR_CODES, GatewayResult


class SimulatedGateway:
    """The contract's simulator: CASH always succeeds; others succeed with GATEWAY_SUCCESS_RATE."""

    def __init__(self, success_rate: float, pending_rate: float = 0.0, rng: random.Random | None = None) -> None:
        """`pending_rate` is the share of non-cash attempts that end without a verdict (a gateway timeout)."""
        self._success_rate = success_rate
        self._pending_rate = pending_rate
        self._rng = rng or random.SystemRandom()

    def charge(self, reference: str, amount: Decimal, currency: str, method: str) -> GatewayResult:
        """Decide the outcome."""
        if method == "CASH":
            return GatewayResult("SUCCESS")
        if self._pending_rate and self._rng.random() < self._pending_rate:
            return GatewayResult("PENDING")
        if self._rng.random() < self._success_rate:
            return GatewayResult("SUCCESS")
        return GatewayResult("FAILED", self._rng.choice(GATEWAY_ERROR_CODES))
