"""The payment object: allowed methods and statuses, the typed record, and its public JSON shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from models.states import HoldAction, PaymentStatus

PAYMENT_METHODS = ("CARD", "WALLET", "UPI", "CASH")

# Columns of `payments` that make up the public payment object, in contract order.
PUBLIC_FIELDS = (
    "payment_id",
    "trip_id",
    "rider_id",
    "driver_id",
    "amount",
    "currency",
    "method",
    "status",
    "reference",
    "amount_refunded",
    "gateway",
    "gateway_reference",
    "authorized_amount",
    "created_at",
    "updated_at",
)


@dataclass(frozen=True, slots=True)
class Payment:
    """One row of `payments`, as the services see it; `to_json` is the contract's payment object."""

    payment_id: int
    trip_id: int
    rider_id: int | None
    driver_id: int | None
    amount: Decimal
    currency: str
    method: str
    status: str
    reference: str
    amount_refunded: Decimal
    gateway: str | None
    gateway_reference: str | None
    authorized_amount: Decimal | None
    created_at: datetime
    updated_at: datetime
    # Part of the public object only when the payment FAILED (why it failed).
    error_code: str | None = None
    # Read only where the charge and reconciliation need them; never part of the public object.
    fare: dict[str, Any] | None = None
    gateway_payment_method: str | None = None
    # A capture or void in flight (status PENDING): which, and what a capture takes.
    hold_action: str | None = None
    capture_amount: Decimal | None = None
    capture_fare: dict[str, Any] | None = None
    captured_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Payment:
        """Build from a database row holding at least the public columns (the others if selected)."""
        return cls(
            **{name: row[name] for name in PUBLIC_FIELDS},
            error_code=row.get("error_code"),
            fare=row.get("fare"),
            gateway_payment_method=row.get("gateway_payment_method"),
            hold_action=row.get("hold_action"),
            capture_amount=row.get("capture_amount"),
            capture_fare=row.get("capture_fare"),
            captured_at=row.get("captured_at"),
        )

    @property
    def remaining(self) -> Decimal:
        """What can still be refunded."""
        return self.amount - self.amount_refunded

    def to_json(self) -> dict[str, Any]:
        """The contract's payment object (Decimal and datetime kept for the JSON layer)."""
        body = {name: getattr(self, name) for name in PUBLIC_FIELDS}
        if self.status == PaymentStatus.FAILED:
            body["error_code"] = self.error_code
        capturing = self.status == PaymentStatus.PENDING and self.hold_action == HoldAction.CAPTURE
        if capturing and self.capture_amount is not None:
            # Until the capture settles `amount` is still the hold; say what is being captured.
            body["capture_amount"] = self.capture_amount
        return body
