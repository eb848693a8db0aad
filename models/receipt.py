"""A stored receipt of `payment_receipts`: its number and time never change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Receipt:
    """The stored part of a receipt; `snapshot` is what was fixed when it was first made."""

    receipt_id: int
    receipt_number: str
    payment_id: int
    snapshot: dict[str, Any]
    generated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Receipt:
        """Build from a row of SELECT receipt_id, receipt_number, payment_id, receipt_data, generated_at."""
        return cls(
            row["receipt_id"], row["receipt_number"], row["payment_id"], row["receipt_data"], row["generated_at"]
        )

    def to_json(self, receipt_data: dict[str, Any]) -> dict[str, Any]:
        """The contract's receipt object around this request's `receipt_data`."""
        return {
            "receipt_id": self.receipt_id,
            "receipt_number": self.receipt_number,
            "payment_id": self.payment_id,
            "generated_at": self.generated_at,
            "receipt_data": receipt_data,
        }
