"""One money operation of a payment (a row of `payment_transactions`), and its public JSON shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Transaction:
    """A PURCHASE, AUTHORIZE, CAPTURE, VOID, REFUND or CHARGEBACK of a payment (contract section 13)."""

    transaction_id: int
    payment_id: int
    kind: str
    status: str
    amount: Decimal
    currency: str
    gateway: str | None
    gateway_reference: str | None
    error_code: str | None
    refund_id: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Transaction:
        """Build from a row holding every column of `payment_transactions`."""
        return cls(**{field.name: row[field.name] for field in fields(cls)})

    def to_json(self) -> dict[str, Any]:
        """The contract's transaction object (Decimal and datetime kept for the JSON layer)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}
