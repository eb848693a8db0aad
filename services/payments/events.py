"""The notifications an outcome writes to the outbox, in the transaction that records it.

Each id names the transition it announces, so a notification written twice (a retry, a
reconciliation racing a request) is delivered once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from models.payment import Payment
from models.states import PaymentStatus


def payment_notification(payment: Payment) -> dict[str, Any]:
    """The notification announcing a payment's new status."""
    event: dict[str, Any] = {
        "notification_id": f"payment-{payment.payment_id}-{payment.status.lower()}",
        "type": "payment",
        "payment_id": payment.payment_id,
        "trip_id": payment.trip_id,
        "rider_id": payment.rider_id,
        "driver_id": payment.driver_id,
        "status": payment.status,
        "amount": payment.amount,
        "currency": payment.currency,
        "timestamp": datetime.now(UTC),
    }
    if payment.authorized_amount is not None:
        # A hold: what is (or was) held, next to `amount` (what was taken, once captured).
        event["authorized_amount"] = payment.authorized_amount
    return event


def hold_action_notification(payment: Payment, action: str) -> dict[str, Any]:
    """The notification of a capture or void's outcome, with an id unique to that transition."""
    event = payment_notification(payment)
    if payment.status in (PaymentStatus.PENDING, PaymentStatus.AUTHORIZED):
        # Statuses a payment can have more than once: name the action (payment-7-capture-pending,
        # payment-7-capture-refused) so the receiver does not drop it as a repeat of the hold's own.
        suffix = "pending" if payment.status == PaymentStatus.PENDING else "refused"
        event["notification_id"] = f"payment-{payment.payment_id}-{action}-{suffix}"
    return event


def refund_notification(payment: Payment, refund_id: int, amount: Decimal, refund_status: str) -> dict[str, Any]:
    """The notification of a refund."""
    return {
        "notification_id": f"refund-{refund_id}-{refund_status.lower()}",
        "type": "refund",
        "payment_id": payment.payment_id,
        "refund_id": refund_id,
        "trip_id": payment.trip_id,
        "rider_id": payment.rider_id,
        "driver_id": payment.driver_id,
        "status": payment.status,
        "refund_status": refund_status,
        "method": payment.method,
        "amount": amount,
        "currency": payment.currency,
        "timestamp": datetime.now(UTC),
    }
