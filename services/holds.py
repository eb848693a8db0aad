"""Capturing and voiding holds (contract section 9), with the charge's discipline.

A hold is placed by `ChargeService.authorize`. Ending it moves money, so it follows the same three
steps as a charge: record the attempt (one UPDATE turns the AUTHORIZED payment PENDING with
`hold_action` and, for a capture, the amount and final fare: the row lock of that UPDATE is what
serialises captures, voids and refunds of one payment, and exactly one of them finds it
AUTHORIZED), call the gateway once outside any transaction, then record what it said together
with the notification and the stored idempotent response. When the gateway does not answer the
payment stays PENDING and reconciliation finishes the same action from the record (`drive`),
never a second capture: the gateway key of a capture is the same on every call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from config import Config
from database.pool import ConnectionPool, Cursor
from database.prepared import Prepared
from models.payment import Payment
from services.charge import TripNotCompletedError, gateway_charge, parties_of, payment_notification
from services.clients.trips import TripClient
from services.gateways import (
    ABSENT,
    AUTHORIZED,
    FAILED,
    PENDING,
    SUCCESS,
    VOIDED,
    AmountNotPayableError,
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
from services.pricing import Fare, FareOutOfRangeError, NoCancellationFeeError, calculate_fare
from utils.errors import DomainError, PaymentNotFoundError
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import HOLD_OPERATIONS, IDEMPOTENT_REPLAYS

logger = get_logger(__name__)

CAPTURE = "capture"
VOID = "void"
# A void reconciliation started because the hold outlived HOLD_TTL (counted and notified apart).
EXPIRE = "expire"
# What each action leaves when the gateway does it.
DONE = {CAPTURE: "SUCCESS", VOID: "VOIDED", EXPIRE: "VOIDED"}

SELECT_HOLD = Prepared("""
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at, fare,
       gateway_payment_method, hold_action, capture_amount, capture_fare, captured_at
FROM payments
WHERE payment_id = %(payment_id)s
""")
# The attempt: only an AUTHORIZED payment can be taken, so of concurrent captures, voids and refunds
# exactly one finds it so; the others wait for this row's lock and then find it PENDING. The first
# look by reconciliation is held back by RECONCILE_MIN_AGE, as for a new charge.
BEGIN_ACTION = Prepared("""
UPDATE payments
   SET status = 'PENDING', hold_action = %(action)s, capture_amount = %(capture_amount)s,
       capture_fare = %(capture_fare)s, reconcile_attempts = 0,
       -- The trip's parties, as the trip service names them at its end (a hold may predate a driver).
       rider_id = coalesce(rider_id, %(rider_id)s), driver_id = coalesce(driver_id, %(driver_id)s),
       reconcile_after = now() + make_interval(secs => %(min_age)s), updated_at = now()
 WHERE payment_id = %(payment_id)s AND status = 'AUTHORIZED'
RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
          amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at, fare,
          gateway_payment_method, hold_action, capture_amount, capture_fare, captured_at
""")
# The outcome, guarded by the action it settles, so a capture is recorded once whoever settles it.
SETTLE_ACTION = Prepared("""
UPDATE payments
   SET status = %(status)s,
       -- What the gateway says it took, when it says (a capture made there, not here), else what was asked.
       amount = CASE WHEN %(status)s::text = 'SUCCESS' THEN coalesce(%(captured)s, capture_amount, amount)
                     ELSE amount END,
       fare = CASE WHEN %(status)s::text = 'SUCCESS' THEN coalesce(capture_fare, fare) ELSE fare END,
       captured_at = CASE WHEN %(status)s::text = 'SUCCESS' THEN now() ELSE captured_at END,
       error_code = %(error_code)s, hold_action = NULL, capture_amount = NULL, capture_fare = NULL,
       reconcile_after = NULL, reconcile_attempts = 0, updated_at = now()
 WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND hold_action = %(action)s::text
RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
          amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at, fare,
          gateway_payment_method, hold_action, capture_amount, capture_fare, captured_at
""")

MESSAGES = {
    (CAPTURE, "SUCCESS"): "Hold captured; the rest of it was released.",
    (CAPTURE, "PENDING"): "Capture sent; waiting for the gateway's answer (reconciliation settles it).",
    (VOID, "VOIDED"): "Hold released; nothing was charged.",
    (VOID, "PENDING"): "Release sent; waiting for the gateway's answer (reconciliation settles it).",
}


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """A validated capture body: amount None means the final fare from the trip service."""

    amount: Decimal | None = None
    idempotency_key: str | None = dataclasses.field(default=None, repr=False)

    def fingerprint_fields(self) -> dict[str, Any]:
        """The normalised body, without the key, that a replay must match."""
        return {"amount": None if self.amount is None else str(self.amount)}


@dataclass(frozen=True, slots=True)
class VoidRequest:
    """A validated void body (only an optional idempotency key)."""

    idempotency_key: str | None = dataclasses.field(default=None, repr=False)

    def fingerprint_fields(self) -> dict[str, Any]:
        """Nothing but the key: every void of a payment is the same request."""
        return {}


WHY_NOT = {
    "PENDING": ": a capture, void or release of it (or its authorization) is in progress; GET the payment to"
    " see how it ends.",
    "VOIDED": ": its hold was released (voided, expired after HOLD_TTL, or released at the gateway), so the trip"
    " can be charged with POST /v1/payments/charge.",
    "FAILED": ": its authorization failed, so nothing is held.",
    "SUCCESS": ": it was captured (or charged) already; refund it to give money back.",
    "PARTIALLY_REFUNDED": ": it was captured (or charged) already; refund it to give money back.",
    "REFUNDED": ": it was captured (or charged) and refunded already.",
}


def why_not(status: str) -> str:
    """The end of a not-capturable / not-voidable sentence: what the status means for the caller."""
    return WHY_NOT.get(status, ".")


class PaymentNotCapturableError(DomainError):
    """Only an AUTHORIZED payment can be captured."""

    code = "payment_not_capturable"

    def __init__(self, payment_id: int, status: str) -> None:
        """Say so naming the status, and what it means for the caller."""
        super().__init__(
            f"Payment {payment_id} is {status}; only an AUTHORIZED hold can be captured{why_not(status)}",
            payment_id=payment_id,
            payment_status=status,
        )


class PaymentNotVoidableError(DomainError):
    """Only an AUTHORIZED payment can be voided."""

    code = "payment_not_voidable"

    def __init__(self, payment_id: int, status: str) -> None:
        """Say so naming the status, and what it means for the caller."""
        super().__init__(
            f"Payment {payment_id} is {status}; only an AUTHORIZED hold can be voided{why_not(status)}",
            payment_id=payment_id,
            payment_status=status,
        )


class CaptureExceedsAuthorizationError(DomainError):
    """The final fare is more than the hold; nothing changed."""

    code = "capture_exceeds_authorization"

    def __init__(self, payment_id: int, authorized: Decimal, fare: Decimal, explicit: bool = False) -> None:
        """Give both amounts, and the way out."""
        what = f"amount {fare}" if explicit else f"final fare {fare}"
        super().__init__(
            f"The {what} is more than the {authorized} held on payment {payment_id}; nothing was"
            f" captured and the hold stands. Capture an explicit amount of at most {authorized}, or void the hold"
            " and charge the trip.",
            payment_id=payment_id,
            authorized_amount=authorized,
            fare=fare,
        )


class CaptureAmountNotPayableError(AmountNotPayableError):
    """The gateway cannot capture the amount in the payment's currency."""

    code = "capture_amount_not_payable"

    def __init__(self, amount: Decimal, currency: str, gateway: str, explicit: bool) -> None:
        """Say which amount and why; `field` only when the caller sent it."""
        super().__init__(
            f"amount {amount}" if explicit else f"The final fare {amount}",
            "captured",
            currency,
            gateway,
            "capture an explicit amount it can carry. The hold stands.",
            "amount" if explicit else None,
        )


class HoldGatewayMismatchError(DomainError):
    """The hold was placed by a gateway other than the one this service runs with."""

    code = "hold_gateway_unavailable"

    def __init__(self, payment_id: int, gateway: str | None, configured: str) -> None:
        """Say which gateway holds the money."""
        super().__init__(
            f"Payment {payment_id} is held by the {gateway} gateway, but this service runs with {configured};"
            f" capture or void it through a service running with GATEWAY={gateway}.",
            payment_id=payment_id,
        )


class GatewayHoldActionFailedError(DomainError):
    """The gateway refused the capture or void; the payment is as `payment_status` says."""

    def __init__(self, action: str, payment: Payment) -> None:
        """Say what was refused and where the payment stands now."""
        self.code = f"gateway_{action}_failed"
        stands = {
            "AUTHORIZED": "the hold stands; retry, or void it",
            "VOIDED": "the gateway had already released the hold, so nothing was taken and the payment is now VOIDED",
            "SUCCESS": "the gateway had already captured the hold, so the payment is now SUCCESS",
        }.get(payment.status, f"the payment is now {payment.status}")
        super().__init__(
            f"The gateway refused to {action} payment {payment.payment_id}: {stands}.",
            payment_id=payment.payment_id,
            payment_status=payment.status,
        )


def raise_if_refused(answer: Outcome | GatewayHoldActionFailedError) -> Outcome:
    """Raise the gateway's refusal once its record is committed; else the answer."""
    if isinstance(answer, GatewayHoldActionFailedError):
        raise answer
    return answer


def action_outcome(result: GatewayResult) -> GatewayResult:
    """What the gateway's answer to a capture or void makes of the payment.

    SUCCESS (captured), VOIDED (nothing is held any more), AUTHORIZED (refused: the hold stands),
    or PENDING (undecided).
    """
    if result.status == SUCCESS:
        return result
    if result.status in (VOIDED, FAILED):
        # Released, or never held: no money was taken and none is held.
        return GatewayResult(VOIDED, reference=result.reference)
    if result.status == AUTHORIZED:
        return result
    # PENDING, or ABSENT: the gateway cannot say (yet).
    return GatewayResult(PENDING, reference=result.reference)


def action_notification(payment: Payment, action: str) -> dict[str, Any]:
    """The notification of a capture or void's outcome, with an id unique to that transition."""
    event = payment_notification(payment)
    if payment.status in ("PENDING", "AUTHORIZED"):
        # Statuses a payment can have more than once: name the action (payment-7-capture-pending,
        # payment-7-capture-refused) so the receiver does not drop it as a repeat of the hold's own.
        suffix = "pending" if payment.status == "PENDING" else "refused"
        event["notification_id"] = f"payment-{payment.payment_id}-{action}-{suffix}"
    return event


class HoldService:
    """Captures and voids AUTHORIZED payments; also finishes, for reconciliation, actions left PENDING."""

    def __init__(
        self,
        pool: ConnectionPool,
        config: Config,
        trips: TripClient,
        gateway: PaymentGateway,
        outbox: Outbox,
        idempotency: IdempotencyService,
    ) -> None:
        """Keep the pool, settings and collaborators."""
        self.pool = pool
        self.config = config
        self.trips = trips
        self.gateway = gateway
        self.outbox = outbox
        self.idempotency = idempotency

    # --- requests ------------------------------------------------------------------------------

    def capture(self, payment_id: int, request: CaptureRequest, scope: str) -> Outcome:
        """Capture the final fare (or `request.amount`) of a hold; a cancelled trip without a fee voids it."""
        return self._idempotently(CAPTURE, payment_id, request, scope)

    def void(self, payment_id: int, request: VoidRequest, scope: str) -> Outcome:
        """Release a hold."""
        return self._idempotently(VOID, payment_id, request, scope)

    def _idempotently(self, operation: str, payment_id: int, request: Any, scope: str) -> Outcome:
        """Run the operation under its optional idempotency key; replay what the key already answered."""
        claim: Claim | None = None
        if request.idempotency_key is not None:
            claimed = self.idempotency.claim(
                scope, request.idempotency_key, fingerprint(request.fingerprint_fields()), f"/v1/payments/{operation}"
            )
            if isinstance(claimed, StoredResponse):
                IDEMPOTENT_REPLAYS.labels(operation).inc()
                return Outcome(claimed.status, claimed.body, replayed=True)
            claim = claimed
        try:
            if claim is not None and claim.payment_id is not None:
                # An earlier request with this key recorded the action and may have reached the
                # gateway; never send it twice. Answer with what the record says now.
                logger.warning("resuming an abandoned hold action without calling the gateway",
                               extra={"payment_id": payment_id})  # fmt: skip
                outcome = self._answer_recorded(claim, payment_id, operation)
            elif operation == CAPTURE:
                outcome = self._capture(payment_id, request, claim)
            else:
                outcome = self._act(VOID, self._read(payment_id), None, None, claim, operation)
        except BaseException:
            if claim is not None:
                self.idempotency.give_back(claim)
            raise
        self.outbox.wake()
        return outcome

    def _read(self, payment_id: int) -> Payment:
        """The payment, or PaymentNotFoundError."""
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(SELECT_HOLD, {"payment_id": payment_id})
            row = cur.fetchone()
        if row is None:
            raise PaymentNotFoundError(payment_id)
        return Payment.from_row(row)

    def _capture(self, payment_id: int, request: CaptureRequest, claim: Claim | None) -> Outcome:
        """Price the end of the trip, then capture that (or void, for a cancelled trip with no fee)."""
        payment = self._read(payment_id)
        # Checked before the trip service is asked: a payment that cannot be captured needs no fare.
        self._check_holdable(payment, CAPTURE)
        trip = self.trips.get_trip(payment.trip_id)
        if trip.status not in ("COMPLETED", "CANCELLED"):
            raise TripNotCompletedError(trip, "captured")
        # The trip's parties at its end fill in what the hold lacked (a hold may predate a driver).
        parties = parties_of(trip, payment.rider_id, payment.driver_id, "held")
        if trip.status == "CANCELLED" and self.config.CANCELLATION_FEE <= 0:
            if request.amount is not None:
                raise NoCancellationFeeError(trip, holding=True)
            # Nothing to charge for a cancelled trip: the hold is released instead.
            return self._act(VOID, payment, None, None, claim, CAPTURE, parties)
        authorized = payment.authorized_amount or payment.amount
        try:
            fare = calculate_fare(trip, self.config, request.amount, payment.currency)
        except FareOutOfRangeError as exc:
            # Above what any payment holds, so above the hold too: the answer that says what to do.
            raise CaptureExceedsAuthorizationError(payment.payment_id, authorized, exc.details["fare"]) from exc
        if fare.amount > authorized:
            raise CaptureExceedsAuthorizationError(
                payment.payment_id, authorized, fare.amount, explicit=request.amount is not None
            )
        if not self.gateway.can_carry(fare.amount, payment.currency):
            raise CaptureAmountNotPayableError(
                fare.amount, payment.currency, self.gateway.name, explicit=request.amount is not None
            )
        return self._act(CAPTURE, payment, fare.amount, fare, claim, CAPTURE, parties)

    def _check_holdable(self, payment: Payment, operation: str) -> None:
        """Raise unless the payment is an AUTHORIZED hold this service's gateway holds."""
        if payment.status != "AUTHORIZED":
            error = PaymentNotCapturableError if operation == CAPTURE else PaymentNotVoidableError
            raise error(payment.payment_id, payment.status)
        if payment.gateway != self.gateway.name:
            raise HoldGatewayMismatchError(payment.payment_id, payment.gateway, self.gateway.name)

    def _act(
        self,
        action: str,
        payment: Payment,
        amount: Decimal | None,
        fare: Fare | None,
        claim: Claim | None,
        operation: str,
        parties: tuple[int | None, int | None] = (None, None),
    ) -> Outcome:
        """Record the action on the AUTHORIZED payment, call the gateway once, record and answer its outcome."""
        self._check_holdable(payment, operation)
        params = {
            "payment_id": payment.payment_id,
            "rider_id": parties[0],
            "driver_id": parties[1],
            "action": action,
            "capture_amount": amount,
            "capture_fare": None if fare is None else dump_json(fare.breakdown()),
            "min_age": self.config.RECONCILE_MIN_AGE,
        }
        with self.pool.cursor() as cur:
            row = self._begin(cur, params, operation)
            if claim is not None and not self.idempotency.record_payment(cur, claim, payment.payment_id):
                raise IdempotencyKeyInUseError()
        recorded = Payment.from_row(row)
        result = self._call(action, recorded)
        # The outcome, its notification and the answer under the key: one transaction, as for a charge.
        with self.pool.cursor() as cur:
            answer = self._answer(cur, self.settle_in(cur, recorded, action, result), action, claim, operation)
        return raise_if_refused(answer)

    def _begin(self, cur: Cursor, params: dict[str, Any], operation: str) -> dict[str, Any]:
        """Turn the AUTHORIZED payment PENDING with the action; raise the 400 of the state another request left."""
        for _ in range(3):
            cur.execute(BEGIN_ACTION, params)
            row = cur.fetchone()
            if row is not None:
                return row
            # Another capture, void or refund took it first: answer with the state it left.
            cur.execute(SELECT_HOLD, params)
            current = cur.fetchone()
            if current is None:
                raise PaymentNotFoundError(params["payment_id"])
            # Still AUTHORIZED means it was taken and given back (a refused capture) in between: try again.
            self._check_holdable(Payment.from_row(current), operation)
        error = PaymentNotCapturableError if operation == CAPTURE else PaymentNotVoidableError
        raise error(params["payment_id"], "PENDING")

    def _call(self, action: str, payment: Payment) -> GatewayResult:
        """Send the recorded action to the gateway once; no answer is PENDING, never an exception."""
        charge = gateway_charge(payment)
        try:
            if action == CAPTURE:
                result = self.gateway.capture(charge, payment.capture_amount or charge.amount)
            else:
                result = self.gateway.void(charge)
        except GatewayUnavailableError as exc:
            logger.warning(
                f"gateway did not answer the {action}; payment left PENDING",
                extra={"payment_id": payment.payment_id, "error": str(exc)},
            )
            return GatewayResult(PENDING, answered=False)
        except Exception:
            logger.exception(f"{action} call failed; payment left PENDING", extra={"payment_id": payment.payment_id})
            return GatewayResult(PENDING, answered=False)
        return action_outcome(result)

    def settle(self, payment: Payment, action: str, result: GatewayResult, error_code: str | None = None) -> Payment:
        """Record the outcome of a PENDING action and notify it, in one transaction; return the payment after it.

        A PENDING outcome changes nothing but is announced (once). When another process settled the
        action first, theirs stands and is returned.
        """
        with self.pool.cursor() as cur:
            return self.settle_in(cur, payment, action, result, error_code)

    def settle_in(
        self, cur: Cursor, payment: Payment, action: str, result: GatewayResult, error_code: str | None = None
    ) -> Payment:
        """`settle` in the caller's transaction."""
        if result.status == PENDING:
            self.outbox.add(cur, action_notification(payment, action))
            return payment
        status = {SUCCESS: "SUCCESS", VOIDED: "VOIDED", AUTHORIZED: "AUTHORIZED", FAILED: "FAILED"}[result.status]
        cur.execute(
            SETTLE_ACTION,
            {
                "payment_id": payment.payment_id,
                "status": status,
                "error_code": error_code,
                "action": action,
                "captured": result.captured if result.status == SUCCESS else None,
            },
        )
        row = cur.fetchone()
        if row is None:
            cur.execute(SELECT_HOLD, {"payment_id": payment.payment_id})
            return Payment.from_row(cur.fetchone())
        settled = Payment.from_row(row)
        self.outbox.add(cur, action_notification(settled, action))
        logger.info(f"hold {action} settled", extra={"payment_id": settled.payment_id, "status": settled.status})
        return settled

    def _answer_recorded(self, claim: Claim, payment_id: int, operation: str) -> Outcome:
        """Answer a resumed claim from the payment as it stands."""
        with self.pool.cursor() as cur:
            cur.execute(SELECT_HOLD, {"payment_id": payment_id})
            payment = Payment.from_row(cur.fetchone())
            action = payment.hold_action or (VOID if payment.status == "VOIDED" else operation)
            answer = self._answer(cur, payment, action, claim, operation)
        return raise_if_refused(answer)

    def _answer(
        self, cur: Cursor, payment: Payment, action: str, claim: Claim | None, operation: str
    ) -> Outcome | GatewayHoldActionFailedError:
        """200 with the payment the action left (202 while PENDING), stored under the key in the caller's transaction.

        Anything else means the gateway did not do the action (it refused, and the hold stands or is
        gone, or was taken by a capture elsewhere): the key is forgotten and the refusal returned, to be
        raised once the caller's transaction has committed what the gateway said.
        """
        # A captured hold refunded since (a resumed claim reads it later) was still captured.
        done = (DONE[action],) if action != CAPTURE else ("SUCCESS", "PARTIALLY_REFUNDED", "REFUNDED")
        refused = payment.status not in (*done, "PENDING")
        HOLD_OPERATIONS.labels(operation, "refused" if refused else payment.status).inc()
        if refused:
            # Not an outcome to replay: a retry with the key may try again.
            if claim is not None:
                self.idempotency.forget(cur, claim)
            return GatewayHoldActionFailedError(action, payment)
        body = payment.to_json()
        body["message"] = MESSAGES.get((action, payment.status), f"Payment is {payment.status}.")
        body["timestamp"] = datetime.now(UTC)
        body["fare"] = payment.fare if payment.status != "PENDING" else payment.capture_fare or payment.fare
        stored = StoredResponse(202 if payment.status == "PENDING" else 200, dump_json(body))
        if claim is not None and not self.idempotency.complete(cur, claim, stored):
            # Taken over after the lock timeout: the taker answers from the record.
            raise IdempotencyKeyInUseError()
        logger.info(f"hold {operation} answered", extra={"payment_id": payment.payment_id, "status": payment.status})
        return Outcome(stored.status, stored.body)

    # --- reconciliation ------------------------------------------------------------------------

    def drive(self, payment: Payment) -> GatewayResult:
        """What a capture or void left PENDING comes to: ask the gateway, and send the action again if it never arrived.

        SUCCESS, VOIDED, AUTHORIZED (the gateway refused the action: the hold stands), PENDING, or
        ABSENT. Raises GatewayUnavailableError when the gateway does not answer the look-up.
        """
        action = payment.hold_action or VOID
        charge = gateway_charge(payment)
        found = self.gateway.retrieve(charge)
        if found.status == AUTHORIZED:
            # Still held: the action never reached the gateway (or it refused it). Send it again;
            # the gateway key is the same as the first time, so it cannot happen twice.
            logger.warning(f"reconciliation: sending a {action} again", extra={"payment_id": payment.payment_id})
            return self._call(action, payment)
        if found.status == ABSENT:
            # Unknown there: the caller decides (look again, or give up after RECONCILE_NO_RECORD_AFTER).
            return found
        return action_outcome(found)
