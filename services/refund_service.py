"""Refunds: partial or full, never more than was paid, decided under a row lock in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from database.pool import ConnectionPool
from database.prepared import Prepared
from models.payment import Payment
from services.idempotency_service import (
    Claim,
    IdempotencyKeyInUseError,
    IdempotencyService,
    Outcome,
    StoredResponse,
    fingerprint,
)
from services.notification_service import Outbox
from utils.errors import DomainError, PaymentNotFoundError
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import IDEMPOTENT_REPLAYS, REFUNDED_AMOUNT, REFUNDS

logger = get_logger(__name__)

REFUNDABLE_STATUSES = ("SUCCESS", "PARTIALLY_REFUNDED")

# The lock makes concurrent refunds of one payment queue up, so each sees what the others took.
LOCK_PAYMENT = Prepared("""
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, created_at, updated_at
FROM payments
WHERE payment_id = %(payment_id)s
FOR UPDATE
""")
INSERT_REFUND = Prepared("""
INSERT INTO payment_refunds (payment_id, refund_amount, reason)
VALUES (%(payment_id)s, %(refund_amount)s, %(reason)s)
RETURNING refund_id, created_at
""")
APPLY_REFUND = Prepared("""
UPDATE payments
   SET amount_refunded = amount_refunded + %(refund_amount)s,
       status = CASE WHEN amount_refunded + %(refund_amount)s = amount THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END,
       updated_at = now()
 WHERE payment_id = %(payment_id)s
RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
          amount_refunded, created_at, updated_at
""")


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """A validated refund body: amount None means everything that is left."""

    amount: Decimal | None = None
    reason: str | None = None
    idempotency_key: str | None = field(default=None, repr=False)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The normalised body, without the key, that a replay must match."""
        return {"amount": None if self.amount is None else str(self.amount), "reason": self.reason}


class PaymentNotRefundableError(DomainError):
    """The payment is not in a state that can be refunded."""

    code = "payment_not_refundable"

    def __init__(self, payment_id: int, status: str) -> None:
        """Say so naming the status."""
        super().__init__(
            f"Payment {payment_id} is {status}; only SUCCESS or PARTIALLY_REFUNDED payments can be refunded.",
            payment_id=payment_id,
            payment_status=status,
        )


class RefundExceedsRemainingError(DomainError):
    """The requested amount is more than what is left to refund."""

    code = "refund_exceeds_remaining"

    def __init__(self, payment_id: int, requested: Decimal, remaining: Decimal) -> None:
        """Say so with the remaining amount."""
        super().__init__(
            f"A refund of {requested} exceeds the {remaining} that remains refundable on payment {payment_id}.",
            payment_id=payment_id,
            requested_amount=requested,
            remaining_amount=remaining,
        )


class RefundService:
    """Refunds payments; each refund is one transaction with the payment row locked."""

    def __init__(self, pool: ConnectionPool, idempotency: IdempotencyService, outbox: Outbox) -> None:
        """Keep the pool, the idempotency store and the outbox."""
        self.pool = pool
        self.idempotency = idempotency
        self.outbox = outbox

    def refund(self, payment_id: int, request: RefundRequest, scope: str) -> Outcome:
        """Refund `request.amount` (default: all that is left) of a payment, idempotently when a key is given."""
        claim: Claim | None = None
        if request.idempotency_key is not None:
            claimed = self.idempotency.claim(
                scope, request.idempotency_key, fingerprint(request.fingerprint_fields()), "/v1/payments/refund"
            )
            if isinstance(claimed, StoredResponse):
                IDEMPOTENT_REPLAYS.labels("refund").inc()
                return Outcome(claimed.status, claimed.body, replayed=True)
            claim = claimed
        try:
            outcome, event = self._refund_locked(payment_id, request, claim)
        except BaseException:
            if claim is not None:
                self.idempotency.give_back(claim)
            raise
        REFUNDS.labels(event["method"]).inc()
        REFUNDED_AMOUNT.inc(float(event["amount"]))
        self.outbox.wake()
        logger.info(
            "refund recorded",
            extra={"payment_id": payment_id, "refund_id": event["refund_id"], "status": event["status"]},
        )
        return outcome

    def _refund_locked(
        self, payment_id: int, request: RefundRequest, claim: Claim | None
    ) -> tuple[Outcome, dict[str, Any]]:
        """Decide and write the refund in one transaction, holding the payment row."""
        with self.pool.cursor() as cur:
            cur.execute(LOCK_PAYMENT, {"payment_id": payment_id})
            row = cur.fetchone()
            if row is None:
                raise PaymentNotFoundError(payment_id)
            payment = Payment.from_row(row)
            remaining = payment.remaining
            if payment.status not in REFUNDABLE_STATUSES or remaining <= 0:
                raise PaymentNotRefundableError(payment.payment_id, payment.status)
            refund_amount = remaining if request.amount is None else request.amount
            if refund_amount > remaining:
                raise RefundExceedsRemainingError(payment.payment_id, refund_amount, remaining)

            params = {"payment_id": payment.payment_id, "refund_amount": refund_amount, "reason": request.reason}
            cur.execute(INSERT_REFUND, params)
            refund = cur.fetchone()
            cur.execute(APPLY_REFUND, params)
            updated = Payment.from_row(cur.fetchone())
            body = {
                "refund_id": refund["refund_id"],
                "payment_id": payment.payment_id,
                "refund_amount": refund_amount,
                "amount_refunded": updated.amount_refunded,
                "remaining_amount": updated.remaining,
                "status": updated.status,
                "reason": request.reason,
                "currency": payment.currency,
                "timestamp": refund["created_at"],
            }
            stored = StoredResponse(200, dump_json(body))
            if claim is not None and not self.idempotency.complete(cur, claim, stored):
                # Another request took the key over while we were slow: it decides; undo ours.
                raise IdempotencyKeyInUseError()
            event = {
                "notification_id": f"refund-{refund['refund_id']}",
                "type": "refund",
                "payment_id": payment.payment_id,
                "refund_id": refund["refund_id"],
                "trip_id": payment.trip_id,
                "rider_id": payment.rider_id,
                "driver_id": payment.driver_id,
                "status": updated.status,
                "method": payment.method,
                "amount": refund_amount,
                "currency": payment.currency,
                "timestamp": datetime.now(UTC),
            }
            # Same transaction as the refund: the notification exists exactly when the refund does.
            self.outbox.add(cur, event)
        return Outcome(stored.status, stored.body), event
