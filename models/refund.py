"""A refund record of `payment_refunds`: its JSON shape on receipts, and in full on GET .../refunds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Refund:
    """One refund of a payment."""

    refund_id: int
    refund_amount: Decimal
    reason: str | None
    created_at: datetime
    # SUCCEEDED, or PENDING while the gateway has not confirmed it (it counts already).
    status: str = "SUCCEEDED"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Refund:
        """Build from a row of SELECT refund_id, refund_amount, reason, created_at[, status]."""
        return cls(
            row["refund_id"], row["refund_amount"], row["reason"], row["created_at"], row.get("status", "SUCCEEDED")
        )

    def to_json(self) -> dict[str, Any]:
        """The refund as receipts list it."""
        return {
            "refund_id": self.refund_id,
            "refund_amount": self.refund_amount,
            "reason": self.reason,
            "status": self.status,
            "created_at": self.created_at,
        }


@dataclass(frozen=True, slots=True)
class RefundRecord:
    """A refund as GET /v1/payments/<id>/refunds lists it: every state (FAILED too), its gateway and times.

    `refund_status` is named as in the refund's own answer, where `status` is the payment's.
    """

    refund_id: int
    payment_id: int
    refund_amount: Decimal
    currency: str
    refund_status: str
    reason: str | None
    gateway: str | None
    gateway_reference: str | None
    error_code: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RefundRecord:
        """Build from a row with these columns (the payment's currency, the refund's status as refund_status)."""
        return cls(**{field.name: row[field.name] for field in fields(cls)})

    def to_json(self) -> dict[str, Any]:
        """The refund record (Decimal and datetime kept for the JSON layer)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}
