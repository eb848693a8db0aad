"""Refunds: partial or full, never more than was paid, sent to the gateway that took the payment.

The skeleton of every money operation: under the payment's row lock the refund is decided and
recorded PENDING with its REFUND transaction, counting against what is left at once (so concurrent
refunds never exceed the payment), with the key's recovery point; the gateway is called once outside
any transaction; its verdict, the transaction's, the notification and the stored answer are one
transaction. A refused refund is FAILED and stops counting (502 `gateway_refund_failed`); one without
an answer stays PENDING and counts until reconciliation settles it (`settle_refund`). Payments no
gateway took (CASH, rows loaded from a CSV) are refunded in the ledger alone, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from database.pool import ConnectionPool, Cursor
from database.prepared import Prepared
from models.payment import Payment
from models.states import REFUNDABLE, TransactionStatus, refund_outcome
from services.gateways import GatewayRefund, GatewayResult
from services.gateways.registry import GatewayRegistry
from services.idempotency_service import Claim, IdempotencyKeyInUseError, IdempotencyService, Outcome, StoredResponse
from services.notification_service import Outbox
from services.payments.errors import (
    GatewayRefundFailedError,
    PaymentNotRefundableError,
    RefundAmountNotPayableError,
    RefundExceedsRemainingError,
)
from services.payments.events import refund_notification
from services.payments.repository import PAYMENT_COLUMNS, PaymentRepository
from services.payments.requests import RefundRequest
from services.payments.skeleton import Keyed, call_gateway, gateway_refund
from services.pricing import check_amount
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import REFUNDED_AMOUNT, REFUNDS

logger = get_logger(__name__)

# The refund and its transaction, recorded together.
INSERT_REFUND = Prepared("""
WITH refund AS (
    INSERT INTO payment_refunds (payment_id, refund_amount, reason, status, gateway)
    VALUES (%(payment_id)s, %(refund_amount)s, %(reason)s, %(status)s, %(gateway)s)
    RETURNING refund_id, created_at
), operation AS (
    INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway, refund_id)
    SELECT %(payment_id)s, 'REFUND', %(status)s, %(refund_amount)s, %(currency)s, %(gateway)s, refund_id FROM refund
)
SELECT refund_id, created_at FROM refund
""")
SELECT_REFUND = Prepared("""
SELECT refund_id, payment_id, refund_amount, reason, status, gateway, gateway_reference, error_code, created_at
FROM payment_refunds
WHERE refund_id = %(refund_id)s
""")
SETTLE_REFUND = Prepared("""
WITH refund AS (
    UPDATE payment_refunds
       SET status = %(status)s, error_code = %(error_code)s,
           gateway_reference = COALESCE(%(gateway_reference)s, gateway_reference), updated_at = now()
     WHERE refund_id = %(refund_id)s AND status = 'PENDING'
    RETURNING refund_id
), operation AS (
    UPDATE payment_transactions
       SET status = %(status)s, error_code = %(error_code)s,
           gateway_reference = COALESCE(%(gateway_reference)s, gateway_reference), updated_at = now()
     WHERE refund_id IN (SELECT refund_id FROM refund) AND status = 'PENDING'
)
SELECT refund_id FROM refund
""")
# A refund changes what counts as refunded (a refused one stops counting: `delta` negative) and the
# status follows what is left.
APPLY_REFUND = Prepared(
    """
UPDATE payments
   SET amount_refunded = amount_refunded + %(delta)s,
       status = CASE WHEN amount_refunded + %(delta)s = 0 THEN 'SUCCESS'
                     WHEN amount_refunded + %(delta)s = amount THEN 'REFUNDED'
                     ELSE 'PARTIALLY_REFUNDED' END,
       updated_at = now()
 WHERE payment_id = %(payment_id)s
RETURNING """
    + PAYMENT_COLUMNS
)


@dataclass(frozen=True, slots=True)
class RefundAttempt:
    """A refund recorded as PENDING, still to be sent to the gateway."""

    refund: GatewayRefund
    payment: Payment
    reason: str | None


def refund_body(payment: Payment, refund: dict[str, Any]) -> dict[str, Any]:
    """The 200 answer of a refund: the refund, and the payment's totals after it."""
    return {
        "refund_id": refund["refund_id"],
        "payment_id": payment.payment_id,
        "refund_amount": refund["refund_amount"],
        "refund_status": refund["status"],
        "amount_refunded": payment.amount_refunded,
        "remaining_amount": payment.remaining,
        "status": payment.status,
        "reason": refund["reason"],
        "currency": payment.currency,
        "timestamp": refund["created_at"],
    }


def settle_refund(
    cur: Cursor, outbox: Outbox, refund: GatewayRefund, status: TransactionStatus, result: GatewayResult
) -> Payment | None:
    """Record a PENDING refund's verdict, its transaction's and the notification in the caller's transaction.

    The payment after it; None when the refund was already settled (by someone else). A FAILED refund
    stops counting towards the payment's amount_refunded (the ledger invariant).
    """
    cur.execute(
        SETTLE_REFUND,
        {
            "refund_id": refund.refund_id,
            "status": status.value,
            "error_code": result.error_code if status == TransactionStatus.FAILED else None,
            "gateway_reference": result.reference,
        },
    )
    if cur.fetchone() is None:
        return None
    if status == TransactionStatus.FAILED:
        cur.execute(APPLY_REFUND, {"payment_id": refund.payment.payment_id, "delta": -refund.amount})
        payment = Payment.from_row(cur.fetchone())
    else:
        payment = PaymentRepository.read(cur, refund.payment.payment_id)
    outbox.add(cur, refund_notification(payment, refund.refund_id, refund.amount, status.value))
    return payment


class RefundService:
    """Refunds payments: decided under the payment's row lock, sent once to the gateway that took them."""

    def __init__(
        self, pool: ConnectionPool, idempotency: IdempotencyService, outbox: Outbox, gateways: GatewayRegistry
    ) -> None:
        """Keep the pool, the idempotency store, the outbox and the gateways."""
        self.pool = pool
        self.idempotency = idempotency
        self.outbox = outbox
        self.gateways = gateways
        self.keyed = Keyed(idempotency)

    def refund(self, payment_id: int, request: RefundRequest, scope: str) -> Outcome:
        """Refund `request.amount` (default: all that is left) of a payment, idempotently when a key is given."""

        def body(claim: Claim | None) -> Outcome:
            """Resume a recorded refund from its record, or make one."""
            if claim is not None and claim.refund_id is not None:
                # An earlier request with this key recorded the refund and may have reached the
                # gateway; never send it twice. Answer with what the record says now.
                logger.warning(
                    "resuming an abandoned refund without calling the gateway", extra={"payment_id": payment_id}
                )
                with self.pool.cursor() as cur:
                    outcome = raise_if_refused(self._answer(cur, claim, claim.refund_id))
            else:
                outcome = self._refund(payment_id, request, claim)
            self.outbox.wake()
            return outcome

        fields = request.fingerprint_fields()
        return self.keyed.run("refund", scope, request.idempotency_key, fields, "/v1/payments/refund", body)

    def _refund(self, payment_id: int, request: RefundRequest, claim: Claim | None) -> Outcome:
        """Record the refund; send it to the gateway when one took the payment; record the verdict."""
        recorded = self._record_attempt(payment_id, request, claim)
        if isinstance(recorded, Outcome):
            return recorded
        refund = recorded.refund
        gateway = self.gateways.get(recorded.payment.gateway)
        ids = {"payment_id": payment_id, "refund_id": refund.refund_id}
        result = call_gateway("refund", ids, lambda: gateway.refund(refund))
        status = refund_outcome(result.status)
        with self.pool.cursor() as cur:
            settled = settle_refund(cur, self.outbox, refund, status, result) if status != "PENDING" else None
            answer = self._answer(cur, claim, refund.refund_id, settled)
        return raise_if_refused(answer)

    def _record_attempt(self, payment_id: int, request: RefundRequest, claim: Claim | None) -> RefundAttempt | Outcome:
        """Decide the refund under the payment's row lock and record it with its transaction.

        Without a gateway involved the refund is complete here (an Outcome); else it is recorded as
        PENDING, counting against what is left, and returned to be sent.
        """
        with self.pool.cursor() as cur:
            payment = PaymentRepository.read(cur, payment_id, lock=True)
            # The payment's own currency: a stored row may be in another than today's CURRENCY.
            check_amount(request.amount, payment.currency)
            remaining = payment.remaining
            if payment.status not in REFUNDABLE or remaining <= 0:
                raise PaymentNotRefundableError(payment.payment_id, payment.status)
            refund_amount = remaining if request.amount is None else request.amount
            if refund_amount > remaining:
                raise RefundExceedsRemainingError(payment.payment_id, refund_amount, remaining, payment.currency)
            if payment.gateway is not None:
                # The gateway that took it, whatever GATEWAY says now (503 if it is not configured).
                gateway = self.gateways.get(payment.gateway)
                if not gateway.can_carry(refund_amount, payment.currency):
                    raise RefundAmountNotPayableError(refund_amount, payment.currency, gateway.name)
            status = TransactionStatus.SUCCEEDED if payment.gateway is None else TransactionStatus.PENDING
            params = {
                "payment_id": payment.payment_id,
                "refund_amount": refund_amount,
                "reason": request.reason,
                "status": status.value,
                "gateway": payment.gateway,
                "currency": payment.currency,
                "delta": refund_amount,
            }
            cur.execute(INSERT_REFUND, params)
            refund = {**cur.fetchone(), "refund_amount": refund_amount, "reason": request.reason, "status": status}
            cur.execute(APPLY_REFUND, params)
            updated = Payment.from_row(cur.fetchone())
            if status == TransactionStatus.PENDING:
                if claim is not None and not self.idempotency.record_refund(cur, claim, refund["refund_id"]):
                    raise IdempotencyKeyInUseError()
                return RefundAttempt(
                    gateway_refund(payment, refund["refund_id"], refund_amount), updated, request.reason
                )
            outcome = self.keyed.store(cur, claim, StoredResponse(200, dump_json(refund_body(updated, refund))))
            # Same transaction as the refund: the notification exists exactly when the refund does.
            self.outbox.add(cur, refund_notification(updated, refund["refund_id"], refund_amount, status.value))
        self._count(updated, refund["refund_id"], refund_amount, status.value)
        return outcome

    def _answer(
        self, cur: Cursor, claim: Claim | None, refund_id: int, payment: Payment | None = None
    ) -> Outcome | GatewayRefundFailedError:
        """The answer for a recorded refund: 200 (stored under the key), or the 502 error when it was refused.

        `payment` is the payment as this transaction just wrote it, if it did (else it is read). The
        error is returned, not raised, so that the caller's transaction commits the refusal first.
        """
        cur.execute(SELECT_REFUND, {"refund_id": refund_id})
        refund = cur.fetchone()
        if payment is None:
            payment = PaymentRepository.read(cur, refund["payment_id"])
        if refund["status"] == TransactionStatus.FAILED:
            if claim is not None:
                # Not an outcome to replay: a retry with the key makes a new attempt.
                self.idempotency.forget(cur, claim)
            return GatewayRefundFailedError(payment.payment_id, refund_id, refund["error_code"])
        outcome = self.keyed.store(cur, claim, StoredResponse(200, dump_json(refund_body(payment, refund))))
        self._count(payment, refund_id, refund["refund_amount"], refund["status"])
        return outcome

    @staticmethod
    def _count(payment: Payment, refund_id: int, amount: Decimal, status: str) -> None:
        """Metrics and a log line for a refund answered with 200."""
        REFUNDS.labels(payment.method).inc()
        REFUNDED_AMOUNT.inc(float(amount))
        logger.info(
            "refund recorded",
            extra={"payment_id": payment.payment_id, "refund_id": refund_id, "refund_status": status},
        )


def raise_if_refused(answer: Outcome | GatewayRefundFailedError) -> Outcome:
    """Raise the refusal once its record is committed."""
    if isinstance(answer, GatewayRefundFailedError):
        raise answer
    return answer
