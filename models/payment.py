"""The payment object: allowed methods and statuses, and the public JSON shape of a row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAYMENT_METHODS = ("CARD", "WALLET", "UPI", "CASH")
PAYMENT_STATUSES = ("SUCCESS", "PENDING", "FAILED", "REFUNDED", "PARTIALLY_REFUNDED")

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
    "created_at",
    "updated_at",
)


def payment_to_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """Return the contract's payment object for a database row (Decimal and datetime kept for the JSON layer)."""
    return {name: row[name] for name in PUBLIC_FIELDS}
