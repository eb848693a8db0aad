"""Refunds: partial or full, never more than was paid, sent to the gateway that took the payment.

A refund through a gateway follows the charge's discipline: record the attempt (a PENDING refund
that already counts against what is left, under the payment's row lock, with the key's recovery
point), call the gateway once outside any transaction, then record its verdict. A refused refund is
FAILED and stops counting (502 `gateway_refund_failed`); one without an answer stays PENDING and
counts until reconciliation settles it. Payments no gateway took (CASH, rows loaded from a CSV) are
refunded in the ledger alone, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from database.pool import ConnectionPool, Cursor
from database.prepared import Prepared
from models.money import plain_amount
from models.payment import Payment
from services.gateways import (
    FAILED,
    PENDING,
    SUCCESS,
    AmountNotPayableError,
    GatewayCharge,
    GatewayRefund,
    GatewayResult,
    GatewayUnavailableError,
    PaymentGateway,
)
from services.idempotency_service import (
    Claim,
    IdempotencyKeyInUseError,
    IdempotencyService,
    Outcome,
    StoredResponse,
    fingerprint,
)
from services.notification_service import Outbox
from services.payment_queries import SELECT_PAYMENT
from services.pricing import check_amount
from utils.errors import DomainError, PaymentNotFoundError
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import IDEMPOTENT_REPLAYS, REFUNDED_AMOUNT, REFUNDS

logger = get_logger(__name__)

REFUNDABLE_STATUSES = ("SUCCESS", "PARTIALLY_REFUNDED")

# The lock makes concurrent refunds of one payment queue up, so each sees what the others took.
LOCK_PAYMENT = Prepared("""
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at
FROM payments
WHERE payment_id = %(payment_id)s
FOR UPDATE
""")
INSERT_REFUND = Prepared("""
INSERT INTO payment_refunds (payment_id, refund_amount, reason, status, gateway)
VALUES (%(payment_id)s, %(refund_amount)s, %(reason)s, %(status)s, %(gateway)s)
RETURNING refund_id, created_at
""")
SELECT_REFUND = Prepared("""
SELECT refund_id, payment_id, refund_amount, reason, status, gateway, gateway_reference, error_code, created_at
FROM payment_refunds
WHERE refund_id = %(refund_id)s
""")
SETTLE_REFUND = Prepared("""
UPDATE payment_refunds
   SET status = %(status)s, error_code = %(error_code)s,
       gateway_reference = COALESCE(%(gateway_reference)s, gateway_reference), updated_at = now()
 WHERE refund_id = %(refund_id)s AND status = 'PENDING'
RETURNING refund_id
""")
# A refused refund stops counting: amount_refunded drops back and the status follows what is left.
REVERSE_REFUND = Prepared("""
UPDATE payments
   SET amount_refunded = amount_refunded - %(refund_amount)s,
       status = CASE WHEN amount_refunded - %(refund_amount)s = 0 THEN 'SUCCESS'
                     WHEN amount_refunded - %(refund_amount)s = amount THEN 'REFUNDED'
                     ELSE 'PARTIALLY_REFUNDED' END,
       updated_at = now()
 WHERE payment_id = %(payment_id)s
RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
          amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at
""")
APPLY_REFUND = Prepared("""
UPDATE payments
   SET amount_refunded = amount_refunded + %(refund_amount)s,
       status = CASE WHEN amount_refunded + %(refund_amount)s = amount THEN 'REFUNDED' ELSE 'PARTIALLY_REFUNDED' END,
       updated_at = now()
 WHERE payment_id = %(payment_id)s
RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
          amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at
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


class GatewayRefundFailedError(DomainError):
    """The gateway refused the refund; it was recorded as FAILED and nothing counts as refunded."""

    code = "gateway_refund_failed"

    def __init__(self, payment_id: int, refund_id: int, error_code: str | None) -> None:
        """Say so naming the refund record."""
        super().__init__(
            f"The gateway refused refund {refund_id} of payment {payment_id}; nothing was refunded and the refund"
            " is recorded as FAILED. Retry (the same idempotency key makes a new attempt), or look the payment up"
            " at the gateway.",
            payment_id=payment_id,
            refund_id=refund_id,
            error_code=error_code,
        )


class RefundAmountNotPayableError(AmountNotPayableError):
    """The gateway cannot move the refund's amount in the payment's currency."""

    code = "refund_amount_not_payable"

    def __init__(self, amount: Decimal, currency: str, gateway: str) -> None:
        """Say which amount and why, naming the field."""
        super().__init__(f"amount {amount}", "refunded", currency, gateway, "give an amount it can carry.", "amount")


class RefundGatewayMismatchError(DomainError):
    """The payment was taken by a gateway other than the one this service runs with."""

    code = "refund_gateway_unavailable"

    def __init__(self, payment_id: int, gateway: str, configured: str) -> None:
        """Say which gateway holds the money."""
        super().__init__(
            f"Payment {payment_id} was taken by the {gateway} gateway, but this service runs with {configured};"
            f" refund it through a service running with GATEWAY={gateway}.",
            payment_id=payment_id,
        )


class RefundExceedsRemainingError(DomainError):
    """The requested amount is more than what is left to refund."""

    code = "refund_exceeds_remaining"

    def __init__(self, payment_id: int, requested: Decimal, remaining: Decimal, currency: str) -> None:
        """Say so with the remaining amount, in the payment's currency."""
        asked, left = plain_amount(requested, currency), plain_amount(remaining, currency)
        super().__init__(
            f"A refund of {asked} {currency} exceeds the {left} {currency} that remains refundable on payment"
            f" {payment_id}.",
            payment_id=payment_id,
            requested_amount=requested,
            remaining_amount=remaining,
        )


@dataclass(frozen=True, slots=True)
class RefundAttempt:
    """A refund recorded as PENDING, still to be sent to the gateway."""

    refund: GatewayRefund
    payment: Payment
    reason: str | None


def refund_event(payment: Payment, refund_id: int, amount: Decimal, refund_status: str) -> dict[str, Any]:
    """The notification of a refund; its id is stable across retries."""
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


def gateway_refund(payment: Payment, refund_id: int, amount: Decimal, reference: str | None = None) -> GatewayRefund:
    """The gateway's view of one refund of a payment."""
    charge = GatewayCharge(
        payment.payment_id,
        payment.trip_id,
        payment.amount,
        payment.currency,
        payment.method,
        reference=payment.gateway_reference,
    )
    return GatewayRefund(refund_id, charge, amount, reference)


class RefundService:
    """Refunds payments: decided under the payment's row lock, sent once to the gateway that took them."""

    def __init__(
        self, pool: ConnectionPool, idempotency: IdempotencyService, outbox: Outbox, gateway: PaymentGateway
    ) -> None:
        """Keep the pool, the idempotency store, the outbox and the gateway."""
        self.pool = pool
        self.idempotency = idempotency
        self.outbox = outbox
        self.gateway = gateway

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
            if claim is not None and claim.refund_id is not None:
                # An earlier request with this key recorded the refund and may have reached the
                # gateway; never send it twice. Answer with what the record says now.
                logger.warning(
                    "resuming an abandoned refund without calling the gateway", extra={"payment_id": payment_id}
                )
                outcome = self._answer_recorded(claim, claim.refund_id)
            else:
                outcome = self._refund(payment_id, request, claim)
        except BaseException:
            if claim is not None:
                self.idempotency.give_back(claim)
            raise
        self.outbox.wake()
        return outcome

    def _refund(self, payment_id: int, request: RefundRequest, claim: Claim | None) -> Outcome:
        """Record the refund; send it to the gateway when one took the payment; record the verdict."""
        recorded = self._record_attempt(payment_id, request, claim)
        if isinstance(recorded, Outcome):
            return recorded
        try:
            result = self.gateway.refund(recorded.refund)
        except GatewayUnavailableError as exc:
            logger.warning(
                "gateway did not answer; refund left PENDING",
                extra={"payment_id": payment_id, "refund_id": recorded.refund.refund_id, "error": str(exc)},
            )
            result = GatewayResult(PENDING)
        except Exception:
            logger.exception(
                "refund call failed; refund left PENDING",
                extra={"payment_id": payment_id, "refund_id": recorded.refund.refund_id},
            )
            result = GatewayResult(PENDING)
        return self._record_outcome(recorded.refund, result, claim)

    def _record_attempt(self, payment_id: int, request: RefundRequest, claim: Claim | None) -> RefundAttempt | Outcome:
        """Decide the refund under the payment's row lock and record it.

        Without a gateway involved the refund is complete here (an Outcome); else it is recorded as
        PENDING, counting against what is left, and returned to be sent.
        """
        with self.pool.cursor() as cur:
            cur.execute(LOCK_PAYMENT, {"payment_id": payment_id})
            row = cur.fetchone()
            if row is None:
                raise PaymentNotFoundError(payment_id)
            payment = Payment.from_row(row)
            # The payment's own currency: a stored row may be in another than today's CURRENCY.
            check_amount(request.amount, payment.currency)
            remaining = payment.remaining
            if payment.status not in REFUNDABLE_STATUSES or remaining <= 0:
                raise PaymentNotRefundableError(payment.payment_id, payment.status)
            refund_amount = remaining if request.amount is None else request.amount
            if refund_amount > remaining:
                raise RefundExceedsRemainingError(payment.payment_id, refund_amount, remaining, payment.currency)
            if payment.gateway is not None and payment.gateway != self.gateway.name:
                raise RefundGatewayMismatchError(payment.payment_id, payment.gateway, self.gateway.name)
            if payment.gateway is not None and not self.gateway.can_carry(refund_amount, payment.currency):
                raise RefundAmountNotPayableError(refund_amount, payment.currency, self.gateway.name)

            status = "SUCCEEDED" if payment.gateway is None else "PENDING"
            params = {
                "payment_id": payment.payment_id,
                "refund_amount": refund_amount,
                "reason": request.reason,
                "status": status,
                "gateway": payment.gateway,
            }
            cur.execute(INSERT_REFUND, params)
            refund = {**cur.fetchone(), "refund_amount": refund_amount, "reason": request.reason, "status": status}
            cur.execute(APPLY_REFUND, params)
            updated = Payment.from_row(cur.fetchone())
            if status == "PENDING":
                if claim is not None and not self.idempotency.record_refund(cur, claim, refund["refund_id"]):
                    raise IdempotencyKeyInUseError()
                return RefundAttempt(
                    gateway_refund(payment, refund["refund_id"], refund_amount), updated, request.reason
                )
            stored = StoredResponse(200, dump_json(refund_body(updated, refund)))
            if claim is not None and not self.idempotency.complete(cur, claim, stored):
                # Another request took the key over while we were slow: it decides; undo ours.
                raise IdempotencyKeyInUseError()
            # Same transaction as the refund: the notification exists exactly when the refund does.
            self.outbox.add(cur, refund_event(updated, refund["refund_id"], refund_amount, status))
        self._count(updated, refund["refund_id"], refund_amount, status)
        return Outcome(stored.status, stored.body)

    def _record_outcome(self, refund: GatewayRefund, result: GatewayResult, claim: Claim | None) -> Outcome:
        """Store the gateway's verdict on a PENDING refund and answer with it."""
        status = {SUCCESS: "SUCCEEDED", FAILED: "FAILED"}.get(result.status, "PENDING")
        with self.pool.cursor() as cur:
            settled = settle_refund(cur, self.outbox, refund, status, result) if status != "PENDING" else None
            answer = self._answer(cur, claim, refund.refund_id, settled)
        return self._raise_if_refused(answer)

    def _answer_recorded(self, claim: Claim, refund_id: int) -> Outcome:
        """Answer a resumed claim from its refund record as it stands."""
        with self.pool.cursor() as cur:
            answer = self._answer(cur, claim, refund_id)
        return self._raise_if_refused(answer)

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
            cur.execute(SELECT_PAYMENT, {"payment_id": refund["payment_id"]})
            payment = Payment.from_row(cur.fetchone())
        if refund["status"] == "FAILED":
            if claim is not None:
                # Not an outcome to replay: a retry with the key makes a new attempt.
                self.idempotency.forget(cur, claim)
            return GatewayRefundFailedError(payment.payment_id, refund_id, refund["error_code"])
        stored = StoredResponse(200, dump_json(refund_body(payment, refund)))
        if claim is not None and not self.idempotency.complete(cur, claim, stored):
            raise IdempotencyKeyInUseError()
        self._count(payment, refund_id, refund["refund_amount"], refund["status"])
        return Outcome(stored.status, stored.body)

    @staticmethod
    def _raise_if_refused(answer: Outcome | GatewayRefundFailedError) -> Outcome:
        """Raise the refusal once its record is committed."""
        if isinstance(answer, GatewayRefundFailedError):
            raise answer
        return answer

    def _count(self, payment: Payment, refund_id: int, amount: Decimal, status: str) -> None:
        """Metrics and a log line for a refund answered with 200."""
        REFUNDS.labels(payment.method).inc()
        REFUNDED_AMOUNT.inc(float(amount))
        logger.info(
            "refund recorded",
            extra={"payment_id": payment.payment_id, "refund_id": refund_id, "refund_status": status},
        )


def settle_refund(
    cur: Cursor, outbox: Outbox, refund: GatewayRefund, status: str, result: GatewayResult
) -> Payment | None:
    """Record a PENDING refund's verdict and notify, in the caller's transaction; the payment after it.

    None when the refund was already settled (by someone else).

    A FAILED refund stops counting towards the payment's amount_refunded (the ledger invariant).
    """
    cur.execute(
        SETTLE_REFUND,
        {
            "refund_id": refund.refund_id,
            "status": status,
            "error_code": result.error_code if status == "FAILED" else None,
            "gateway_reference": result.reference,
        },
    )
    if cur.fetchone() is None:
        return None
    if status == "FAILED":
        cur.execute(REVERSE_REFUND, {"payment_id": refund.payment.payment_id, "refund_amount": refund.amount})
    else:
        cur.execute(SELECT_PAYMENT, {"payment_id": refund.payment.payment_id})
    payment = Payment.from_row(cur.fetchone())
    outbox.add(cur, refund_event(payment, refund.refund_id, refund.amount, status))
    return payment
