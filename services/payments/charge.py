"""The charge and the hold: price a trip and take (or hold) its money at most once per key and per trip.

The skeleton of `services.payments.skeleton`, on the hot path of the service: the attempt (payment
PENDING, its PURCHASE or AUTHORIZE transaction PENDING, the key's recovery point) is one statement,
and so is the outcome (status, transaction settled, answer under the key, notification), each sent
with what it needs in one round trip. A hold (`POST /v1/payments/authorize`, contract section 9) is
the same flow for a trip that has not ended: AUTHORIZE instead of PURCHASE; `services.payments.holds`
captures or voids it later.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from database.pool import DatabaseUnavailableError
from models.payment import Payment
from models.states import GatewayStatus, PaymentStatus, TransactionKind, charge_outcome
from services.clients.trips import Trip
from services.gateways import GatewayCharge, GatewayRefusedError, GatewayResult, PaymentGateway
from services.idempotency_service import Claim, IdempotencyKeyInUseError, Outcome, StoredResponse
from services.payments.attempts import (
    INSERT_ATTEMPT,
    INSERT_ATTEMPT_FOR_CLAIM,
    LOCK_TRIP,
    RECORD_GATEWAY_REFERENCE,
    SELECT_LIVE_PAYMENT_FOR_TRIP,
    SETTLE_ATTEMPT,
    SETTLE_ATTEMPT_AND_ANSWER,
    new_reference,
    outcome_params,
)
from services.payments.errors import (
    ChargeAmountNotPayableError,
    HoldAmountNotPayableError,
    HoldNotSupportedError,
    PaymentMethodRequiredError,
    TripAlreadyPaidError,
    TripNotCompletedError,
    TripNotHoldableError,
    TripPartyMismatchError,
)
from services.payments.events import payment_notification
from services.payments.repository import ATTEMPT_KINDS, SELECT_PAYMENT
from services.payments.requests import ChargeRequest
from services.payments.skeleton import Operation, call_gateway
from services.pricing import Fare, calculate_fare, calculate_hold
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import CHARGES, HOLD_OPERATIONS

logger = get_logger(__name__)

CHARGE_PATH = "/v1/payments/charge"
AUTHORIZE_PATH = "/v1/payments/authorize"
# Trips a hold can be placed for: not yet ended; trips a charge (or capture) is for: ended.
HOLDABLE_TRIP_STATUSES = ("REQUESTED", "ACCEPTED", "ONGOING")
ENDED_TRIP_STATUSES = ("COMPLETED", "CANCELLED")

CHARGE_MESSAGES = {
    "SUCCESS": "Payment processed successfully.",
    "FAILED": "Payment failed at the gateway.",
    "PENDING": "Payment is pending confirmation from the gateway.",
}
HOLD_MESSAGES = {
    "AUTHORIZED": "Hold placed on the rider's payment method; capture it when the trip ends.",
    "FAILED": "The hold was refused at the gateway.",
    "PENDING": "The hold is pending confirmation from the gateway.",
}


def parties_of(
    trip: Trip, rider_id: int | None, driver_id: int | None, source: str = "given"
) -> tuple[int | None, int | None]:
    """Rider and driver: the trip service's where it names them, else those given (`source`: the body's or the hold's).

    Raises TripPartyMismatchError when the ones given contradict the trip service.
    """
    parties = []
    for field, given, known in (("rider_id", rider_id, trip.rider_id), ("driver_id", driver_id, trip.driver_id)):
        if given is not None and known is not None and given != known:
            raise TripPartyMismatchError(trip.trip_id, field, given, known, source)
        parties.append(known if known is not None else given)
    return parties[0], parties[1]


class ChargeService(Operation):
    """Charges trips: the trip service prices them, the default gateway takes the money, the database remembers."""

    def charge(self, request: ChargeRequest, scope: str) -> Outcome:
        """Charge a trip at most once per idempotency key and per trip."""
        return self._run(request, scope, hold=False)

    def authorize(self, request: ChargeRequest, scope: str) -> Outcome:
        """Hold a trip's estimated fare at the gateway, at most once per idempotency key and per trip."""
        if request.method == "CASH":
            raise HoldNotSupportedError()
        return self._run(request, scope, hold=True)

    def _run(self, request: ChargeRequest, scope: str, hold: bool) -> Outcome:
        """Claim the key, then charge or authorize (or replay what the key already answered)."""
        gateway = self.gateways.default
        return self.keyed.run(
            "authorize" if hold else "charge",
            scope,
            request.idempotency_key,
            request.fingerprint_fields(),
            AUTHORIZE_PATH if hold else CHARGE_PATH,
            lambda claim: self._charge_claimed(request, claim, hold, gateway),
        )

    def _charge_claimed(
        self, request: ChargeRequest, claim: Claim | None, hold: bool, gateway: PaymentGateway
    ) -> Outcome:
        """Price the trip, record the attempt, call the gateway once and store the outcome."""
        # A charge's key is required (ChargeRequest.idempotency_key), so there is always a claim.
        assert claim is not None
        attempt: Payment | None = None
        if claim.payment_id is not None:
            # An earlier request with this key recorded the attempt and may or may not have reached
            # the gateway; never call it twice. The payment stays PENDING for reconciliation.
            payment_id = claim.payment_id
            logger.warning("resuming an abandoned charge without calling the gateway", extra={"payment_id": payment_id})
            result = GatewayResult(GatewayStatus.PENDING)
        else:
            # Checked after the key: a key that already answered replays that answer, even after GATEWAY
            # changed to one that needs a payment method the original request did not send.
            if request.method != "CASH" and gateway.needs_payment_method and request.payment_method is None:
                raise PaymentMethodRequiredError(request.method, gateway.name)
            trip = self.trips.get_trip(request.trip_id)
            if hold and trip.status not in HOLDABLE_TRIP_STATUSES:
                raise TripNotHoldableError(trip)
            if not hold and trip.status not in ENDED_TRIP_STATUSES:
                raise TripNotCompletedError(trip)
            parties = parties_of(trip, request.rider_id, request.driver_id)
            if hold:
                fare = calculate_hold(trip, self.config, request.amount)
            else:
                fare = calculate_fare(trip, self.config, request.amount)
            self._check_carried(fare, request, hold, gateway)
            attempt = self._record_attempt(claim, request, parties, fare, hold, gateway)
            payment_id = attempt.payment_id
            if request.method == "CASH":
                # Cash changes hands in the car; no gateway is involved.
                result = GatewayResult(GatewayStatus.SUCCESS)
            else:
                charge = GatewayCharge(
                    payment_id,
                    request.trip_id,
                    fare.amount,
                    self.config.CURRENCY,
                    request.method,
                    request.payment_method,
                    capture=not hold,
                )
                result = self.attempt(charge, gateway)
        try:
            return self._finish(claim, payment_id, result, hold, attempt)
        except DatabaseUnavailableError:
            # The gateway's verdict is known but the database went away before it was stored. This
            # process stores it as soon as the database is back and holds the key until then, so
            # the client's retry is answered with that verdict, never with a second gateway call.
            claim.finishing_later = True
            self.idempotency.deferred.add(
                "store a charge outcome",
                lambda: self._finish(claim, payment_id, result, hold),
            )
            raise

    def _check_carried(self, fare: Fare, request: ChargeRequest, hold: bool, gateway: PaymentGateway) -> None:
        """Refuse, before anything is written, an amount the gateway cannot move in CURRENCY.

        Fares are whole units of CURRENCY's ISO 4217 unit and start-up refuses a gateway whose unit is
        coarser, so this only guards against a gateway rule the service does not know of: the request
        is a 400 rather than a payment that fails at the gateway.
        """
        if request.method != "CASH" and not gateway.can_carry(fare.amount, self.config.CURRENCY):
            error = HoldAmountNotPayableError if hold else ChargeAmountNotPayableError
            raise error(fare.amount, self.config.CURRENCY, gateway.name, hold, request.amount is not None)

    def _finish(
        self, claim: Claim, payment_id: int, result: GatewayResult, hold: bool, attempt: Payment | None = None
    ) -> Outcome:
        """Store the outcome, count it, wake the notification dispatcher (`attempt`: the row as recorded, if known)."""
        outcome, payment = self._record_outcome(claim, payment_id, result, hold, attempt)
        if hold:
            HOLD_OPERATIONS.labels("authorize", payment.status).inc()
        else:
            CHARGES.labels(payment.status, payment.method).inc()
        self.outbox.wake()
        logger.info(
            "authorization finished" if hold else "charge finished",
            extra={"payment_id": payment_id, "trip_id": payment.trip_id, "status": payment.status},
        )
        return outcome

    def _record_attempt(
        self,
        claim: Claim,
        request: ChargeRequest,
        parties: tuple[int | None, int | None],
        fare: Fare,
        hold: bool,
        gateway: PaymentGateway,
    ) -> Payment:
        """Insert the PENDING payment, its transaction (a hold: with its held amount) and the key's recovery point."""
        params = {
            **claim.params(),
            "trip_id": request.trip_id,
            "rider_id": parties[0],
            "driver_id": parties[1],
            "amount": fare.amount,
            "currency": self.config.CURRENCY,
            "method": request.method,
            "reference": new_reference(datetime.now(UTC)),
            "fare": dump_json(fare.breakdown()),
            "gateway": None if request.method == "CASH" else gateway.name,
            "payment_method": None if request.method == "CASH" else request.payment_method,
            "authorized_amount": fare.amount if hold else None,
            "kind": (TransactionKind.AUTHORIZE if hold else TransactionKind.PURCHASE).value,
        }
        with self.pool.cursor(single_statement=True) as cur:
            # One round trip: the lock and the attempt in one message, hence one transaction.
            cur.execute_together((LOCK_TRIP, params), (INSERT_ATTEMPT_FOR_CLAIM, params))
            row = cur.fetchone()
        if not row or not row["claimed"]:
            # Our claim was taken over (we exceeded the lock timeout): nothing was written; step back.
            raise IdempotencyKeyInUseError()
        if row["payment_id"] is None:
            # The trip has a live payment: name it (or, if it failed meanwhile, insert after all).
            row = self._record_attempt_for_paid_trip(claim, request, params)
        claim.payment_id = row["payment_id"]
        return Payment.from_row(row)

    def _record_attempt_for_paid_trip(
        self, claim: Claim, request: ChargeRequest, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Raise TripAlreadyPaidError naming the trip's live payment; insert the attempt if that payment is gone."""
        with self.pool.cursor() as cur:
            cur.execute(LOCK_TRIP, params)
            # Inserting needs the lock we hold, so if the live payment that blocked the first insert
            # turns FAILED before we can name it, the second insert cannot be blocked again.
            for _ in range(2):
                cur.execute(INSERT_ATTEMPT, params)
                inserted = cur.fetchone()
                if inserted is not None:
                    break
                cur.execute(SELECT_LIVE_PAYMENT_FOR_TRIP, params)
                existing = cur.fetchone()
                if existing is not None:
                    raise TripAlreadyPaidError(request.trip_id, existing["payment_id"])
            else:
                raise AssertionError("a live payment appeared while this transaction held the trip lock")
            if not self.idempotency.record_payment(cur, claim, inserted["payment_id"]):
                # Our claim was taken over (we exceeded the lock timeout): undo and step back.
                raise IdempotencyKeyInUseError()
        return inserted

    def attempt(self, charge: GatewayCharge, gateway: PaymentGateway) -> GatewayResult:
        """Send a recorded PENDING payment to its gateway: register it, record its reference, then move the money.

        Used by the charge and by reconciliation (for an attempt the gateway never received). The
        answer is decided (SUCCESS, AUTHORIZED, FAILED) or PENDING; never an exception from the
        gateway, since the payment must stay where reconciliation can settle it.
        """
        ids = {"payment_id": charge.payment_id}

        def send() -> GatewayResult:
            """Register (recording the reference first), then authorize; refusals are FAILED results."""
            sent = charge
            try:
                if sent.reference is None:
                    reference = gateway.register(sent)
                    if reference is not None:
                        if not self._record_reference(sent.payment_id, reference):
                            # Settled meanwhile (by reconciliation): money must not move on it any more.
                            logger.warning("payment no longer pending; not sent", extra=ids)
                            return GatewayResult(GatewayStatus.PENDING)
                        sent = dataclasses.replace(sent, reference=reference)
                result = gateway.authorize(sent)
            except GatewayRefusedError as exc:
                logger.warning("gateway refused the payment; no money moved", extra={**ids, "error": str(exc)})
                return GatewayResult(GatewayStatus.FAILED, exc.error_code, sent.reference)
            except DatabaseUnavailableError:
                # The reference could not be recorded, so no money was asked for; reconciliation resumes it.
                logger.warning("database lost before the gateway call; payment left PENDING", extra=ids)
                return GatewayResult(GatewayStatus.PENDING, answered=False)
            return result if result.reference is not None else dataclasses.replace(result, reference=sent.reference)

        return call_gateway("charge", ids, send)

    def _record_reference(self, payment_id: int, reference: str) -> bool:
        """Record the gateway's id of a PENDING attempt; False when it is PENDING no more."""
        params = {"payment_id": payment_id, "gateway_reference": reference, "kinds": ATTEMPT_KINDS}
        with self.pool.cursor() as cur:
            cur.execute(RECORD_GATEWAY_REFERENCE, params)
            return cur.fetchone()["recorded"] == 1

    def _record_outcome(
        self, claim: Claim, payment_id: int, result: GatewayResult, hold: bool, attempt: Payment | None = None
    ) -> tuple[Outcome, Payment]:
        """Store the gateway's verdict and the final response under the key, in one transaction."""
        decided = charge_outcome(result.status, not hold) != PaymentStatus.PENDING
        if attempt is not None and decided:
            recorded = self._record_known_outcome(claim, attempt, result, hold)
            if recorded is not None:
                return recorded
        with self.pool.cursor() as cur:
            row = None
            if decided:
                cur.execute(SETTLE_ATTEMPT, outcome_params(payment_id, result, not hold))
                row = cur.fetchone()
            if row is None:
                # Still PENDING, or no longer PENDING because another request settled it first.
                cur.execute(SELECT_PAYMENT, {"payment_id": payment_id})
                row = cur.fetchone()
            payment = Payment.from_row(row)
            outcome = self.keyed.store(cur, claim, self._answer(payment, hold))
            # Same transaction as the outcome: the notification exists exactly when the outcome does.
            self.outbox.add(cur, payment_notification(payment))
        return outcome, payment

    def _record_known_outcome(
        self, claim: Claim, attempt: Payment, result: GatewayResult, hold: bool
    ) -> tuple[Outcome, Payment] | None:
        """Record a decided verdict on the attempt as recorded, in one round trip; None if the row changed meanwhile."""
        params = outcome_params(attempt.payment_id, result, not hold)
        payment = dataclasses.replace(
            attempt,
            status=params["status"],
            error_code=params["error_code"],
            gateway_reference=result.reference,
            # Set here, not by the database's now(), so the stored answer can be built before the write.
            updated_at=datetime.now(UTC),
        )
        stored = self._answer(payment, hold)
        params.update(
            claim.params(),
            updated_at=payment.updated_at,
            response_status=stored.status,
            body=stored.body,
            **self.outbox.row(payment_notification(payment)),
        )
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(SETTLE_ATTEMPT_AND_ANSWER, params)
            recorded = cur.fetchone()
        if not recorded or not recorded["recorded"]:
            return None
        return Outcome(stored.status, stored.body), payment

    @staticmethod
    def _answer(payment: Payment, hold: bool) -> StoredResponse:
        """The final response of a charge or authorization that recorded `payment`."""
        body = payment.to_json()
        messages = HOLD_MESSAGES if hold else CHARGE_MESSAGES
        body["message"] = messages.get(payment.status, "Payment recorded.")
        body["timestamp"] = datetime.now(UTC)
        body["fare"] = payment.fare
        if payment.status == PaymentStatus.FAILED:
            body["error_code"] = payment.error_code
        status_code = 201 if payment.status in (PaymentStatus.SUCCESS, PaymentStatus.AUTHORIZED) else 202
        return StoredResponse(status_code, dump_json(body))
