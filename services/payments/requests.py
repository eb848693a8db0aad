"""The validated bodies of the money operations, and what of each a replay with the same key must match."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """A validated POST /v1/payments/charge body."""

    idempotency_key: str = dataclasses.field(repr=False)
    trip_id: int
    method: str
    rider_id: int | None = None
    driver_id: int | None = None
    amount: Decimal | None = None
    payment_method: str | None = None

    def fingerprint_fields(self) -> dict[str, Any]:
        """The normalised body, without the key, that a replay must match."""
        fields: dict[str, Any] = {
            "trip_id": self.trip_id,
            "method": self.method,
            "rider_id": self.rider_id,
            "driver_id": self.driver_id,
            "amount": None if self.amount is None else str(self.amount),
        }
        # Left out when absent, so keys stored before the field existed still match their bodies.
        if self.payment_method is not None:
            fields["payment_method"] = self.payment_method
        return fields


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """A validated capture body: amount None means the final fare from the trip service."""

    amount: Decimal | None = None
    idempotency_key: str | None = dataclasses.field(default=None, repr=False)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The normalised body, without the key, that a replay must match."""
        return {"amount": None if self.amount is None else str(self.amount)}


@dataclass(frozen=True, slots=True)
class VoidRequest:
    """A validated void body (only an optional idempotency key)."""

    idempotency_key: str | None = dataclasses.field(default=None, repr=False)

    def fingerprint_fields(self) -> dict[str, Any]:
        """Nothing but the key: every void of a payment is the same request."""
        return {}


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A validated refund body: amount None means everything that is left."""

    amount: Decimal | None = None
    reason: str | None = None
    idempotency_key: str | None = dataclasses.field(default=None, repr=False)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The normalised body, without the key, that a replay must match."""
        return {"amount": None if self.amount is None else str(self.amount), "reason": self.reason}
