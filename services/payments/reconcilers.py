"""The reconciler of each kind of PENDING row: a charge or authorization attempt, a hold action, a refund.

Each decides one row of its queue within a pass (`services.payments.reconciliation.Pass`), asking
the row's own gateway, and settles it through the statement its operation uses.
"""

from __future__ import annotations

from typing import Any

from database.pool import ConnectionPool
from models.payment import Payment
from models.states import GatewayStatus, PaymentStatus, TransactionStatus, charge_outcome, refund_outcome
from services.gateways import NO_RECORD, GatewayResult, GatewayUnavailableError
from services.notification_service import Outbox
from services.payments.attempts import SETTLE_ATTEMPT, outcome_params
from services.payments.charge import ChargeService
from services.payments.events import payment_notification
from services.payments.holds import EXPIRE, HoldService, action_result
from services.payments.reconciliation import EXPIRED_HOLDS, PAYMENTS, REFUNDS, Decide, Decision, Pass, Queue
from services.payments.refunds import settle_refund
from services.payments.repository import PaymentRepository
from services.payments.skeleton import gateway_charge, gateway_refund
from utils.logger import get_logger

logger = get_logger(__name__)

ATTEMPT_LABELS = {PaymentStatus.SUCCESS: "succeeded", PaymentStatus.AUTHORIZED: "authorized"}
ACTION_LABELS = {PaymentStatus.SUCCESS: "captured", PaymentStatus.AUTHORIZED: "refused"}


class AttemptReconciler:
    """Settles charge and authorization attempts left PENDING; hands hold actions to the HoldActionReconciler."""

    def __init__(
        self, pool: ConnectionPool, outbox: Outbox, charges: ChargeService, holds: HoldActionReconciler
    ) -> None:
        """Keep the pool, the outbox, the charge service (to resend) and the hold reconciler."""
        self.pool = pool
        self.outbox = outbox
        self.charges = charges
        self.holds = holds

    def __call__(self, current: Pass, row: dict[str, Any]) -> Decision:
        """Decide one PENDING payment."""
        payment = Payment.from_row(row)
        if payment.hold_action is not None:
            return self.holds(current, row)
        gateway = current.gateway(PAYMENTS, row, payment.gateway) if payment.gateway is not None else None
        if isinstance(gateway, Decision):
            return gateway
        # A pending authorization is sent again as one: held, not captured.
        charge = gateway_charge(payment)
        try:
            found = gateway.retrieve(charge) if gateway is not None else GatewayResult(GatewayStatus.ABSENT)
        except GatewayUnavailableError as exc:
            assert gateway is not None
            return current.gateway_down(PAYMENTS, row, gateway, exc)
        if found.status == GatewayStatus.ABSENT:
            if current.is_old(row):
                return self._settle(
                    current,
                    row,
                    GatewayResult(GatewayStatus.FAILED, NO_RECORD, found.reference),
                    "no_record",
                    charge.capture,
                )
            if gateway is None:
                # Made before the service had gateways, or loaded: nothing to send it again with.
                return current.leave(PAYMENTS, row, "unknown")
            if current.dry_run:
                return Decision("payment", payment.payment_id, payment.payment_id, "resent")
            # Recorded here, never received there (or registered and never confirmed): send it again,
            # under the same gateway idempotency key, so it cannot be taken twice.
            logger.warning("reconciliation: resending a payment the gateway never received",
                           extra={"payment_id": payment.payment_id})  # fmt: skip
            found = self.charges.attempt(charge, gateway)
            if not found.answered:
                return current.gateway_down(PAYMENTS, row, gateway, "no answer to the resent payment")
            if found.status == GatewayStatus.PENDING:
                return current.leave(PAYMENTS, row, "resent")
        status = charge_outcome(found.status, charge.capture)
        if status == PaymentStatus.PENDING:
            return current.leave(PAYMENTS, row, "pending")
        return self._settle(current, row, found, ATTEMPT_LABELS.get(status, "failed"), charge.capture)

    def _settle(self, current: Pass, row: dict[str, Any], result: GatewayResult, label: str, capture: bool) -> Decision:
        """Record the attempt's outcome, its transaction's and its notification in one transaction."""
        params = outcome_params(row["payment_id"], result, capture)
        decision = Decision(
            "payment", row["payment_id"], row["payment_id"], label, params["status"], params["error_code"]
        )
        if current.dry_run:
            return decision
        with self.pool.cursor() as cur:
            cur.execute(SETTLE_ATTEMPT, params)
            settled = cur.fetchone()
            if settled is None:
                # Someone else settled it between our look-up and now; theirs stands.
                return Decision("payment", row["payment_id"], row["payment_id"], "skipped")
            self.outbox.add(cur, payment_notification(Payment.from_row(settled)))
        logger.info(
            "reconciliation settled a payment",
            extra={"payment_id": row["payment_id"], "status": decision.status, "error_code": decision.error_code},
        )
        return current.settled(decision)


class HoldActionReconciler:
    """Finishes captures and voids left PENDING, and releases holds older than HOLD_TTL."""

    def __init__(self, holds: HoldService, outbox: Outbox) -> None:
        """Keep the hold service (which drives and settles actions) and the outbox."""
        self.holds = holds
        self.outbox = outbox

    def expired(self, current: Pass, row: dict[str, Any]) -> Decision:
        """Release a hold older than HOLD_TTL (taken and marked as a void in progress, unless a dry run)."""
        if current.dry_run:
            return Decision("payment", row["payment_id"], row["payment_id"], "expired", "VOIDED")
        logger.info("reconciliation: releasing an expired hold", extra={"payment_id": row["payment_id"]})
        return self._finish(current, row, taken_now=True)

    def __call__(self, current: Pass, row: dict[str, Any]) -> Decision:
        """Finish a capture or void left PENDING, from its record."""
        return self._finish(current, row, taken_now=False)

    def _finish(self, current: Pass, row: dict[str, Any], taken_now: bool) -> Decision:
        """Drive the action at the hold's gateway and settle what it says.

        `taken_now`: an expired hold this pass just took; its move to PENDING is announced if it stays so.
        """
        payment = Payment.from_row(row)
        action = payment.hold_action or EXPIRE
        queue = EXPIRED_HOLDS if taken_now else PAYMENTS
        gateway = current.gateway(queue, row, payment.gateway)
        if isinstance(gateway, Decision):
            return self._pending(current, row, payment, action, gateway, taken_now)
        try:
            if current.dry_run:
                found = gateway.retrieve(gateway_charge(payment))
                if found.status == GatewayStatus.AUTHORIZED:
                    return Decision("payment", payment.payment_id, payment.payment_id, "resent")
                result = found if found.status == GatewayStatus.ABSENT else action_result(found)
            else:
                result = self.holds.drive(payment, gateway)
        except GatewayUnavailableError as exc:
            return self._pending(
                current, row, payment, action, current.gateway_down(queue, row, gateway, exc), taken_now
            )
        if not result.answered:
            left = current.gateway_down(queue, row, gateway, "no answer to the resent action")
            return self._pending(current, row, payment, action, left, taken_now)
        error_code = None
        if result.status == GatewayStatus.ABSENT:
            if not current.is_old(row):
                return self._pending(current, row, payment, action, current.leave(queue, row, "unknown"), taken_now)
            result, error_code, label = GatewayResult(PaymentStatus.FAILED), NO_RECORD, "no_record"
        elif result.status == GatewayStatus.PENDING:
            return self._pending(current, row, payment, action, current.leave(queue, row, "pending"), taken_now)
        else:
            label = ACTION_LABELS.get(PaymentStatus(result.status), "voided")
            if action == EXPIRE and result.status == PaymentStatus.VOIDED:
                label = "expired"
        decision = Decision("payment", payment.payment_id, payment.payment_id, label, result.status, error_code)
        if current.dry_run:
            return decision
        settled = self.holds.settle(payment, action, result, error_code)
        if settled.status != result.status:
            return Decision("payment", payment.payment_id, payment.payment_id, "skipped")
        return current.settled(decision)

    def _pending(
        self, current: Pass, row: dict[str, Any], payment: Payment, action: str, left: Decision, taken_now: bool
    ) -> Decision:
        """A hold's action left PENDING for a later pass; an expired hold just taken is announced as such."""
        if taken_now and not current.dry_run:
            # It was AUTHORIZED a moment ago: say that its release is under way.
            self.holds.settle(payment, action, GatewayResult(GatewayStatus.PENDING))
            self.outbox.wake()
        return left


class RefundReconciler:
    """Settles refunds left PENDING at the gateway that took their payment."""

    def __init__(self, pool: ConnectionPool, outbox: Outbox) -> None:
        """Keep the pool and the outbox."""
        self.pool = pool
        self.outbox = outbox

    def __call__(self, current: Pass, row: dict[str, Any]) -> Decision:
        """Decide one PENDING refund."""
        gateway = current.gateway(REFUNDS, row, row["gateway"])
        if isinstance(gateway, Decision):
            return gateway
        with self.pool.cursor() as cur:
            payment = PaymentRepository.read(cur, row["payment_id"])
        refund = gateway_refund(payment, row["refund_id"], row["refund_amount"], row["gateway_reference"])
        try:
            found = gateway.retrieve_refund(refund)
            if found.status == GatewayStatus.ABSENT and not current.is_old(row):
                if current.dry_run:
                    return Decision("refund", row["refund_id"], row["payment_id"], "resent")
                logger.warning("reconciliation: resending a refund the gateway never received",
                               extra={"payment_id": row["payment_id"], "refund_id": row["refund_id"]})  # fmt: skip
                found = gateway.refund(refund)
        except GatewayUnavailableError as exc:
            return current.gateway_down(REFUNDS, row, gateway, exc)
        label = "succeeded" if found.status == GatewayStatus.SUCCESS else "failed"
        if found.status == GatewayStatus.ABSENT:
            found, label = GatewayResult(GatewayStatus.FAILED, NO_RECORD), "no_record"
        status = refund_outcome(found.status)
        if status == TransactionStatus.PENDING:
            return current.leave(REFUNDS, row, "pending")
        decision = Decision("refund", row["refund_id"], row["payment_id"], label, status.value, found.error_code)
        if current.dry_run:
            return decision
        with self.pool.cursor() as cur:
            if settle_refund(cur, self.outbox, refund, status, found) is None:
                return Decision("refund", row["refund_id"], row["payment_id"], "skipped")
        ids = {"payment_id": row["payment_id"], "refund_id": row["refund_id"]}
        logger.info("reconciliation settled a refund", extra={**ids, "refund_status": status.value})
        return current.settled(decision)


def reconcilers(
    pool: ConnectionPool, outbox: Outbox, charges: ChargeService, holds: HoldService
) -> list[tuple[Queue, Decide]]:
    """Each queue with its reconciler, in pass order: expired holds first (a capture may still race them)."""
    actions = HoldActionReconciler(holds, outbox)
    return [
        (EXPIRED_HOLDS, actions.expired),
        (PAYMENTS, AttemptReconciler(pool, outbox, charges, actions)),
        (REFUNDS, RefundReconciler(pool, outbox)),
    ]
