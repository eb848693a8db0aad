"""Payment gateways: the interface the charge talks to, and what a gateway answers.

The implementation is chosen at start-up (services.container); the simulator lives in
`simulator.py`, and a real gateway goes beside it, implementing `PaymentGateway`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

GATEWAY_ERROR_CODES = ("INSUFFICIENT_FUNDS", "CARD_DECLINED", "GATEWAY_ERROR")


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """The gateway's answer: SUCCESS, FAILED (with an error code) or PENDING (outcome not known yet)."""

    status: str
    error_code: str | None = None


class PaymentGateway(Protocol):
    """Takes money. `reference` is unique per payment and is what a real gateway would de-duplicate on."""

    def charge(self, reference: str, amount: Decimal, currency: str, method: str) -> GatewayResult:
        """Attempt the charge once."""
        ...
