"""A refund record of `payment_refunds`, and its JSON shape on receipts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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
