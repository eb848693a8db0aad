"""Capturing and voiding holds (contract section 9) on the skeleton of every money operation.

A hold is placed by `ChargeService.authorize`. Ending it moves money: one UPDATE turns the AUTHORIZED
payment PENDING with `hold_action` (and, for a capture, the amount and final fare) and records its
CAPTURE or VOID transaction PENDING; the row lock of that UPDATE serialises captures, voids and
refunds of one payment, and exactly one finds it AUTHORIZED. The gateway that holds the money is
called once outside any transaction; its answer, the transaction's settlement, the notification and
the stored answer are one transaction. Without an answer the payment stays PENDING and reconciliation
finishes the same action from the record (`drive`), never a second capture: the gateway key of a
capture is the same on every call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from config import Config
from database.pool import ConnectionPool, Cursor
from database.prepared import Prepared
from models.payment import Payment
from models.states import (
    HOLD_ACTION_DONE,
    HOLD_OPERABLE,
    TAKEN,
    GatewayStatus,
    HoldAction,
    PaymentStatus,
    hold_action_outcome,
    hold_action_transaction_status,
)
from services.clients.trips import TripClient
from services.gateways import GatewayResult, PaymentGateway
from services.gateways.registry import GatewayRegistry
from services.idempotency_service import Claim, IdempotencyKeyInUseError, IdempotencyService, Outcome, StoredResponse
from services.notification_service import Outbox
from services.payments.charge import ENDED_TRIP_STATUSES, parties_of
from services.payments.errors import (
    CaptureAmountNotPayableError,
    CaptureExceedsAuthorizationError,
    GatewayHoldActionFailedError,
    PaymentNotCapturableError,
    PaymentNotVoidableError,
    TripNotCompletedError,
)
from services.payments.events import hold_action_notification
from services.payments.repository import HOLD_ACTION_KINDS, PAYMENT_COLUMNS, PaymentRepository
from services.payments.requests import CaptureRequest, VoidRequest
from services.payments.skeleton import Keyed, call_gateway, gateway_charge
from services.pricing import Fare, FareOutOfRangeError, NoCancellationFeeError, calculate_fare
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import HOLD_OPERATIONS

logger = get_logger(__name__)

CAPTURE, VOID, EXPIRE = HoldAction.CAPTURE.value, HoldAction.VOID.value, HoldAction.EXPIRE.value

# The action's transaction, recorded with the payment's move to PENDING (TAKE_EXPIRED_HOLDS too).
RECORD_ACTION_TRANSACTION = """
), operation AS (
    INSERT INTO payment_transactions (payment_id, kind, status, amount, currency, gateway)
    SELECT payment_id, CASE WHEN hold_action = 'capture' THEN 'CAPTURE' ELSE 'VOID' END, 'PENDING',
           coalesce(capture_amount, authorized_amount), currency, gateway
      FROM action
)
SELECT * FROM action
"""
# The attempt: only an AUTHORIZED payment can be taken, so of concurrent captures, voids and refunds
# exactly one finds it so; the others wait for this row's lock and then find it PENDING. The first
# look by reconciliation is held back by RECONCILE_MIN_AGE, as for a new charge.
BEGIN_ACTION = Prepared(
    """
WITH action AS (
    UPDATE payments
       SET status = 'PENDING', hold_action = %(action)s, capture_amount = %(capture_amount)s,
           capture_fare = %(capture_fare)s, reconcile_attempts = 0,
           -- The trip's parties, as the trip service names them at its end (a hold may predate a driver).
           rider_id = coalesce(rider_id, %(rider_id)s), driver_id = coalesce(driver_id, %(driver_id)s),
           reconcile_after = now() + make_interval(secs => %(min_age)s), updated_at = now()
     WHERE payment_id = %(payment_id)s AND status = 'AUTHORIZED'
    RETURNING """
    + PAYMENT_COLUMNS
    + RECORD_ACTION_TRANSACTION
)
# The outcome with its transaction's, guarded by the action it settles, so a capture is recorded once
# whoever settles it.
SETTLE_ACTION = Prepared(
    """
WITH outcome AS (
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
    RETURNING """
    + PAYMENT_COLUMNS
    + """
), operation AS (
    UPDATE payment_transactions AS t
       SET status = %(transaction_status)s, error_code = %(transaction_error)s,
           amount = CASE WHEN %(transaction_status)s::text = 'SUCCEEDED' AND t.kind = 'CAPTURE'
                         THEN outcome.amount ELSE t.amount END,
           updated_at = now()
      FROM outcome
     WHERE t.payment_id = outcome.payment_id AND t.status = 'PENDING' AND t.kind = ANY(%(kinds)s)
)
SELECT * FROM outcome
"""
)

MESSAGES = {
    (CAPTURE, "SUCCESS"): "Hold captured; the rest of it was released.",
    (CAPTURE, "PENDING"): "Capture sent; waiting for the gateway's answer (reconciliation settles it).",
    (VOID, "VOIDED"): "Hold released; nothing was charged.",
    (VOID, "PENDING"): "Release sent; waiting for the gateway's answer (reconciliation settles it).",
}


def action_result(found: GatewayResult) -> GatewayResult:
    """The gateway's answer to (or news of) a capture or void, its status turned into the payment's."""
    return GatewayResult(hold_action_outcome(found.status), found.error_code, found.reference, True, found.captured)


def raise_if_refused(answer: Outcome | GatewayHoldActionFailedError) -> Outcome:
    """Raise the gateway's refusal once its record is committed; else the answer."""
    if isinstance(answer, GatewayHoldActionFailedError):
        raise answer
    return answer


class HoldService:
    """Captures and voids AUTHORIZED payments; also finishes, for reconciliation, actions left PENDING."""

    def __init__(
        self,
        pool: ConnectionPool,
        config: Config,
        trips: TripClient,
        gateways: GatewayRegistry,
        outbox: Outbox,
        idempotency: IdempotencyService,
    ) -> None:
        """Keep the pool, settings and collaborators."""
        self.pool = pool
        self.config = config
        self.trips = trips
        self.gateways = gateways
        self.outbox = outbox
        self.idempotency = idempotency
        self.keyed = Keyed(idempotency)
        self.payments = PaymentRepository(pool)

    # --- requests ------------------------------------------------------------------------------

    def capture(self, payment_id: int, request: CaptureRequest, scope: str) -> Outcome:
        """Capture the final fare (or `request.amount`) of a hold; a cancelled trip without a fee voids it."""
        return self._keyed(CAPTURE, payment_id, request, scope)

    def void(self, payment_id: int, request: VoidRequest, scope: str) -> Outcome:
        """Release a hold."""
        return self._keyed(VOID, payment_id, request, scope)

    def _keyed(self, operation: str, payment_id: int, request: CaptureRequest | VoidRequest, scope: str) -> Outcome:
        """Run the operation under its optional idempotency key; replay what the key already answered."""

        def body(claim: Claim | None) -> Outcome:
            """Resume a recorded action from its record, or start one."""
            if claim is not None and claim.payment_id is not None:
                # An earlier request with this key recorded the action and may have reached the
                # gateway; never send it twice. Answer with what the record says now.
                logger.warning("resuming an abandoned hold action without calling the gateway",
                               extra={"payment_id": payment_id})  # fmt: skip
                outcome = self._answer_recorded(claim, payment_id, operation)
            elif isinstance(request, CaptureRequest):
                outcome = self._capture(payment_id, request, claim)
            else:
                outcome = self._act(VOID, self.payments.get(payment_id), None, None, claim, operation)
            self.outbox.wake()
            return outcome

        fields = request.fingerprint_fields()
        return self.keyed.run(
            operation, scope, request.idempotency_key, fields, f"/v1/payments/{operation}", body
        )  # fmt: skip

    def _capture(self, payment_id: int, request: CaptureRequest, claim: Claim | None) -> Outcome:
        """Price the end of the trip, then capture that (or void, for a cancelled trip with no fee)."""
        payment = self.payments.get(payment_id)
        # Checked before the trip service is asked: a payment that cannot be captured needs no fare.
        gateway = self._holding_gateway(payment, CAPTURE)
        trip = self.trips.get_trip(payment.trip_id)
        if trip.status not in ENDED_TRIP_STATUSES:
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
        if not gateway.can_carry(fare.amount, payment.currency):
            raise CaptureAmountNotPayableError(
                fare.amount, payment.currency, gateway.name, explicit=request.amount is not None
            )
        return self._act(CAPTURE, payment, fare.amount, fare, claim, CAPTURE, parties)

    def _holding_gateway(self, payment: Payment, operation: str) -> PaymentGateway:
        """The gateway holding an AUTHORIZED hold; raise the 4xx of any other status, or 503 if it is not configured."""
        if payment.status not in HOLD_OPERABLE:
            error = PaymentNotCapturableError if operation == CAPTURE else PaymentNotVoidableError
            raise error(payment.payment_id, payment.status)
        return self.gateways.get(payment.gateway)

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
        """Record the action and its transaction, call the gateway once, record and answer its outcome."""
        gateway = self._holding_gateway(payment, operation)
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
        result = self._call(action, recorded, gateway)
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
            # Still AUTHORIZED means it was taken and given back (a refused capture) in between: try again.
            self._holding_gateway(PaymentRepository.read(cur, params["payment_id"]), operation)
        error = PaymentNotCapturableError if operation == CAPTURE else PaymentNotVoidableError
        raise error(params["payment_id"], "PENDING")

    def _call(self, action: str, payment: Payment, gateway: PaymentGateway) -> GatewayResult:
        """Send the recorded action to the gateway once; no answer is PENDING, never an exception."""
        charge = gateway_charge(payment)
        if action == CAPTURE:
            amount = payment.capture_amount or charge.amount
            result = call_gateway(action, {"payment_id": payment.payment_id}, lambda: gateway.capture(charge, amount))
        else:
            result = call_gateway(action, {"payment_id": payment.payment_id}, lambda: gateway.void(charge))
        if not result.answered:
            return result
        return GatewayResult(
            hold_action_outcome(result.status), result.error_code, result.reference, True, result.captured
        )

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
        """`settle` in the caller's transaction; `result.status` is the payment's new status (or PENDING)."""
        if result.status == GatewayStatus.PENDING:
            self.outbox.add(cur, hold_action_notification(payment, action))
            return payment
        status = PaymentStatus(result.status)
        transaction_status = hold_action_transaction_status(action, status)
        cur.execute(
            SETTLE_ACTION,
            {
                "payment_id": payment.payment_id,
                "status": status.value,
                "error_code": error_code,
                "action": action,
                "captured": result.captured if status == PaymentStatus.SUCCESS else None,
                "transaction_status": transaction_status.value,
                "transaction_error": (error_code or "GATEWAY_ERROR") if transaction_status == "FAILED" else None,
                "kinds": HOLD_ACTION_KINDS,
            },
        )
        row = cur.fetchone()
        if row is None:
            return PaymentRepository.read(cur, payment.payment_id)
        settled = Payment.from_row(row)
        self.outbox.add(cur, hold_action_notification(settled, action))
        logger.info(f"hold {action} settled", extra={"payment_id": settled.payment_id, "status": settled.status})
        return settled

    def _answer_recorded(self, claim: Claim, payment_id: int, operation: str) -> Outcome:
        """Answer a resumed claim from the payment as it stands."""
        with self.pool.cursor() as cur:
            payment = PaymentRepository.read(cur, payment_id)
            action = payment.hold_action or (VOID if payment.status == PaymentStatus.VOIDED else operation)
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
        done = TAKEN if action == CAPTURE else (HOLD_ACTION_DONE[HoldAction(action)],)
        refused = payment.status not in (*done, PaymentStatus.PENDING)
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
        outcome = self.keyed.store(cur, claim, stored)
        logger.info(f"hold {operation} answered", extra={"payment_id": payment.payment_id, "status": payment.status})
        return outcome

    # --- reconciliation ------------------------------------------------------------------------

    def drive(self, payment: Payment, gateway: PaymentGateway) -> GatewayResult:
        """What a capture or void left PENDING comes to: ask the gateway, and send the action again if it never arrived.

        SUCCESS, VOIDED, AUTHORIZED (the gateway refused the action: the hold stands), PENDING, or
        ABSENT. Raises GatewayUnavailableError when the gateway does not answer the look-up.
        """
        action = payment.hold_action or VOID
        found = gateway.retrieve(gateway_charge(payment))
        if found.status == GatewayStatus.AUTHORIZED:
            # Still held: the action never reached the gateway (or it refused it). Send it again;
            # the gateway key is the same as the first time, so it cannot happen twice.
            logger.warning(f"reconciliation: sending a {action} again", extra={"payment_id": payment.payment_id})
            return self._call(action, payment, gateway)
        if found.status == GatewayStatus.ABSENT:
            # Unknown there: the caller decides (look again, or give up after RECONCILE_NO_RECORD_AFTER).
            return found
        return action_result(found)
