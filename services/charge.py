"""The charge and the hold: price a trip and take (or hold) its money at most once per key and per trip.

A charge cannot be one transaction: the gateway call must happen outside any transaction, so it
runs as short transactions around recovery points (claim the key; record the PENDING attempt;
record the outcome and the response), and the gateway is never called twice for one attempt.

An authorization (`POST /v1/payments/authorize`, contract section 9) is the same flow for a trip that
has not ended: it holds an estimate at the gateway without capturing it (status AUTHORIZED); the
hold is captured or voided later by `services.holds`.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from config import Config
from database.pool import ConnectionPool, DatabaseUnavailableError
from database.prepared import Prepared
from models.payment import Payment
from services.clients.trips import Trip, TripClient
from services.gateways import (
    AUTHORIZED,
    FAILED,
    PENDING,
    SUCCESS,
    VOIDED,
    AmountNotPayableError,
    GatewayCharge,
    GatewayRefusedError,
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
from services.pricing import Fare, calculate_fare, calculate_hold
from utils.errors import DomainError
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import CHARGES, HOLD_OPERATIONS, IDEMPOTENT_REPLAYS

logger = get_logger(__name__)

CHARGE_PATH = "/v1/payments/charge"
AUTHORIZE_PATH = "/v1/payments/authorize"
# Trips a hold can be placed for: not yet ended.
HOLDABLE_TRIP_STATUSES = ("REQUESTED", "ACCEPTED", "ONGOING")

# Serialises the decision "insert a live payment for this trip, or name the one that exists" per
# trip. The unique partial index remains what guarantees one live payment; the lock only makes sure
# a loser can always name the winner (without it, the winner may turn FAILED in between).
LOCK_TRIP = Prepared("SELECT pg_advisory_xact_lock(hashtextextended('payments.trip:' || %(trip_id)s, 0))")
INSERT_ATTEMPT = Prepared("""
INSERT INTO payments (trip_id, rider_id, driver_id, amount, currency, method, status, reference, fare, gateway,
                      gateway_payment_method, authorized_amount)
VALUES (%(trip_id)s, %(rider_id)s, %(driver_id)s, %(amount)s, %(currency)s, %(method)s, 'PENDING',
        %(reference)s, %(fare)s, %(gateway)s, %(payment_method)s, %(authorized_amount)s)
ON CONFLICT (trip_id) WHERE status NOT IN ('FAILED', 'VOIDED') DO NOTHING
RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
          amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at,
          fare, gateway_payment_method
""")
# The charge's hot path records its attempt in one statement, sent with LOCK_TRIP in one message
# (one round trip, one implicit transaction): the attempt is inserted only while the request still
# holds its key (the key row locked, as RECORD_RECOVERY_POINT's token check would), and the key's
# recovery point names it in the same statement. `claimed` = 0: the claim was taken over and nothing
# was written; a null payment_id: the trip has a live payment (settled by _record_attempt).
INSERT_ATTEMPT_FOR_CLAIM = Prepared("""
WITH claim AS (
    SELECT 1 FROM idempotency_keys
     WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
       FOR UPDATE
), attempt AS (
    INSERT INTO payments (trip_id, rider_id, driver_id, amount, currency, method, status, reference, fare, gateway,
                          gateway_payment_method, authorized_amount)
    SELECT %(trip_id)s, %(rider_id)s, %(driver_id)s, %(amount)s, %(currency)s, %(method)s, 'PENDING',
           %(reference)s, %(fare)s, %(gateway)s, %(payment_method)s, %(authorized_amount)s
      FROM claim
    ON CONFLICT (trip_id) WHERE status NOT IN ('FAILED', 'VOIDED') DO NOTHING
    RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
              amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at,
              fare, gateway_payment_method
), recovery_point AS (
    UPDATE idempotency_keys SET payment_id = attempt.payment_id
      FROM attempt
     WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
)
SELECT (SELECT count(*) FROM claim) AS claimed, attempt.*
  FROM (VALUES (1)) AS one (n) LEFT JOIN attempt ON true
""")
SELECT_LIVE_PAYMENT_FOR_TRIP = Prepared("""
SELECT payment_id FROM payments WHERE trip_id = %(trip_id)s AND status NOT IN ('FAILED', 'VOIDED')
""")
SELECT_PAYMENT_FOR_CHARGE = Prepared("""
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at,
       fare, gateway_payment_method
FROM payments
WHERE payment_id = %(payment_id)s
""")
# Returns the row SELECT_PAYMENT_FOR_CHARGE would, saving that round trip when the update applies.
RECORD_OUTCOME = Prepared("""
UPDATE payments
   SET status = %(status)s, error_code = %(error_code)s,
       gateway_reference = COALESCE(gateway_reference, %(gateway_reference)s), updated_at = now()
 WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND hold_action IS NULL
RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
          amount_refunded, gateway, gateway_reference, authorized_amount, error_code, created_at, updated_at,
          fare, gateway_payment_method
""")
# The hot path's outcome: the payment's new status, the key's stored answer and the notification in
# one statement (one round trip, one transaction). The answer is built beforehand from the attempt's
# row, so the update applies only to that row as it was (still PENDING, the gateway reference the
# answer names, updated_at not before created_at); else nothing is written (`recorded` 0) and
# _record_outcome takes the general path.
RECORD_OUTCOME_AND_ANSWER = Prepared("""
WITH outcome AS (
    UPDATE payments
       SET status = %(status)s, error_code = %(error_code)s,
           gateway_reference = COALESCE(gateway_reference, %(gateway_reference)s), updated_at = %(updated_at)s
     WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND hold_action IS NULL
       AND created_at <= %(updated_at)s
       AND COALESCE(gateway_reference, %(gateway_reference)s) IS NOT DISTINCT FROM %(gateway_reference)s
    RETURNING payment_id
), answer AS (
    UPDATE idempotency_keys
       SET response_status = %(response_status)s, response_body = %(body)s, completed_at = now(),
           lock_token = NULL, locked_at = NULL
     WHERE scope = %(scope)s AND key_hash = %(key_hash)s AND lock_token = %(token)s
       AND EXISTS (SELECT FROM outcome)
), notification AS (
    INSERT INTO notification_outbox (notification_id, event_type, payload)
    SELECT %(notification_id)s, %(event_type)s, %(payload)s
     WHERE EXISTS (SELECT FROM outcome)
    ON CONFLICT (notification_id) DO NOTHING
)
SELECT count(*) AS recorded FROM outcome
""")
# The gateway's id of the payment, recorded before any money can move on it.
RECORD_GATEWAY_REFERENCE = Prepared("""
UPDATE payments SET gateway_reference = %(gateway_reference)s, updated_at = now()
 WHERE payment_id = %(payment_id)s AND status = 'PENDING' AND hold_action IS NULL
""")
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


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """A validated POST /v1/payments/charge body."""

    idempotency_key: str = dataclasses.field(repr=False)
    trip_id: int
    method: str
    rider_id: int | None = None
    driver_id: int | None = None
    amount: Decimal | None = None
    payment_method: str | None = None

    def fingerprint_fields(self) -> dict[str, Any]:
        """The normalised body, without the key, that a replay must match."""
        fields: dict[str, Any] = {
            "trip_id": self.trip_id,
            "method": self.method,
            "rider_id": self.rider_id,
            "driver_id": self.driver_id,
            "amount": None if self.amount is None else str(self.amount),
        }
        # Left out when absent, so keys stored before the field existed still match their bodies.
        if self.payment_method is not None:
            fields["payment_method"] = self.payment_method
        return fields


class HoldNotSupportedError(DomainError):
    """CASH cannot be held: there is no gateway to hold it at."""

    code = "hold_not_supported"

    def __init__(self) -> None:
        """Say so naming the field."""
        super().__init__(
            "method CASH cannot be authorized: cash is paid in the car, so there is nothing to hold; charge the"
            " trip with POST /v1/payments/charge when it ends.",
            field="method",
        )


class ChargeAmountNotPayableError(AmountNotPayableError):
    """The gateway cannot move the charge's amount in the currency (never sent, so never a gateway failure)."""

    code = "charge_amount_not_payable"

    def __init__(self, amount: Decimal, currency: str, gateway: str, hold: bool, explicit: bool) -> None:
        """Say which amount and why; `field` only when the caller sent it."""
        super().__init__(
            f"amount {amount}" if explicit else f"The fare {amount}",
            "held" if hold else "charged",
            currency,
            gateway,
            "give an amount it can carry." if explicit else "charge an amount it can carry.",
            "amount" if explicit else None,
        )


class HoldAmountNotPayableError(ChargeAmountNotPayableError):
    """The gateway cannot hold the amount in the currency."""

    code = "hold_amount_not_payable"


class TripNotHoldableError(DomainError):
    """The trip has ended (or is in a state a hold makes no sense for)."""

    code = "trip_not_holdable"

    def __init__(self, trip: Trip) -> None:
        """Say so with the trip's id and status."""
        super().__init__(
            f"Trip {trip.trip_id} is {trip.status}; a hold can be placed only on a REQUESTED, ACCEPTED or ONGOING"
            " trip (charge an ended trip with POST /v1/payments/charge).",
            trip_id=trip.trip_id,
            trip_status=trip.status,
        )


class PaymentMethodRequiredError(DomainError):
    """The configured gateway needs the rider's payment method token for this method."""

    code = "payment_method_required"

    def __init__(self, method: str, gateway: str) -> None:
        """Say which field is missing and why."""
        super().__init__(
            f"payment_method is required for {method} with the {gateway} gateway: give the gateway's token"
            " of the rider's payment method (for example pm_card_visa in Stripe's test mode).",
            field="payment_method",
        )


class TripNotCompletedError(DomainError):
    """The trip is neither completed nor cancelled, so there is nothing to charge yet."""

    code = "trip_not_completed"

    def __init__(self, trip: Trip, verb: str = "charged") -> None:
        """Say so with the trip's id and status (`verb`: what cannot be done yet, charged or captured)."""
        super().__init__(
            f"Trip {trip.trip_id} is {trip.status}; only COMPLETED or CANCELLED trips can be {verb}.",
            trip_id=trip.trip_id,
            trip_status=trip.status,
        )


class TripPartyMismatchError(DomainError):
    """The body names a rider or driver other than the one the trip service gives for the trip."""

    code = "trip_party_mismatch"

    def __init__(self, trip_id: int, field: str, given: int, expected: int, source: str = "given") -> None:
        """Say so naming the field and both ids (`source`: whose id disagrees, the body's or the hold's)."""
        if source == "held":
            what = f"The hold's {field} {given}"
            after = "nothing was captured and the hold stands"
        else:
            what, after = f"{field} {given}", "nothing was charged"
        super().__init__(
            f"{what} does not match trip {trip_id}, whose {field} is {expected}; {after}.",
            field=field,
            trip_id=trip_id,
        )


def trip_parties(request: ChargeRequest, trip: Trip) -> tuple[int | None, int | None]:
    """The payment's rider and driver: the trip service's where it names them, else the body's.

    Raises TripPartyMismatchError when the body contradicts the trip service.
    """
    return parties_of(trip, request.rider_id, request.driver_id)


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


class TripAlreadyPaidError(DomainError):
    """The trip already has a payment that is not FAILED."""

    code = "trip_already_paid"

    def __init__(self, trip_id: int, payment_id: int) -> None:
        """Say so naming the existing payment."""
        super().__init__(
            f"Trip {trip_id} already has payment {payment_id}.",
            trip_id=trip_id,
            payment_id=payment_id,
        )


def payment_notification(payment: Payment) -> dict[str, Any]:
    """The notification announcing a payment's new status; its id is stable across retries."""
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


def gateway_charge(payment: Payment) -> GatewayCharge:
    """The gateway's view of a recorded payment; a hold's (`authorized_amount` set) is held, not captured."""
    return GatewayCharge(
        payment.payment_id,
        payment.trip_id,
        payment.amount,
        payment.currency,
        payment.method,
        payment.gateway_payment_method,
        payment.gateway_reference,
        capture=payment.authorized_amount is None,
    )


def charge_outcome(result: GatewayResult, capture: bool = True) -> GatewayResult:
    """A gateway's answer to a charge (or, `capture` false, an authorization) as the payment's status.

    SUCCESS (AUTHORIZED for an authorization), FAILED, or PENDING when undecided.
    """
    if result.status in (SUCCESS, FAILED) or (result.status == AUTHORIZED and not capture):
        return result
    if result.status == VOIDED:
        # Cancelled at the gateway before any money moved.
        return GatewayResult(FAILED, result.error_code or "GATEWAY_ERROR", result.reference)
    # PENDING, or an answer this kind of attempt should never get (ABSENT; AUTHORIZED for a charge):
    # look again later.
    return GatewayResult(PENDING, reference=result.reference)


def new_reference(now: datetime) -> str:
    """A unique, unguessable payment reference such as PAY-20251103-9F2C41D07A3B5E16."""
    return f"PAY-{now:%Y%m%d}-{secrets.token_hex(8).upper()}"


class ChargeService:
    """Charges trips: the trip service prices them, the gateway takes the money, the database remembers."""

    def __init__(
        self,
        pool: ConnectionPool,
        config: Config,
        trips: TripClient,
        gateway: PaymentGateway,
        outbox: Outbox,
        idempotency: IdempotencyService,
    ) -> None:
        """Keep the pool, configuration and collaborators."""
        self.pool = pool
        self.config = config
        self.trips = trips
        self.gateway = gateway
        self.outbox = outbox
        self.idempotency = idempotency

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
        if request.method != "CASH" and self.gateway.needs_payment_method and request.payment_method is None:
            raise PaymentMethodRequiredError(request.method, self.gateway.name)
        claimed = self.idempotency.claim(
            scope,
            request.idempotency_key,
            fingerprint(request.fingerprint_fields()),
            AUTHORIZE_PATH if hold else CHARGE_PATH,
        )
        if isinstance(claimed, StoredResponse):
            IDEMPOTENT_REPLAYS.labels("authorize" if hold else "charge").inc()
            return Outcome(claimed.status, claimed.body, replayed=True)
        claim = claimed
        try:
            return self._charge_claimed(request, claim, hold)
        except BaseException:
            # The request answers without a final outcome: give the key back (a retry resumes from the
            # recovery point, if one was recorded), unless the outcome itself waits to be stored.
            if not claim.finishing_later:
                self.idempotency.give_back(claim)
            raise

    def _charge_claimed(self, request: ChargeRequest, claim: Claim, hold: bool) -> Outcome:
        """Price the trip, record the attempt, call the gateway once and store the outcome."""
        if claim.payment_id is not None:
            # An earlier request with this key recorded the attempt and may or may not have reached
            # the gateway; never call it twice. The payment stays PENDING for reconciliation.
            payment_id = claim.payment_id
            logger.warning("resuming an abandoned charge without calling the gateway", extra={"payment_id": payment_id})
            result = GatewayResult(PENDING)
            attempt = None
        else:
            trip = self.trips.get_trip(request.trip_id)
            if hold and trip.status not in HOLDABLE_TRIP_STATUSES:
                raise TripNotHoldableError(trip)
            if not hold and trip.status not in ("COMPLETED", "CANCELLED"):
                raise TripNotCompletedError(trip)
            parties = trip_parties(request, trip)
            if hold:
                fare = calculate_hold(trip, self.config, request.amount)
            else:
                fare = calculate_fare(trip, self.config, request.amount)
            self._check_carried(fare, request, hold)
            attempt = self._record_attempt(claim, request, parties, fare, hold)
            payment_id = attempt.payment_id
            if request.method == "CASH":
                # Cash changes hands in the car; no gateway is involved.
                result = GatewayResult(SUCCESS)
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
                result = self.attempt(charge)
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

    def _check_carried(self, fare: Fare, request: ChargeRequest, hold: bool) -> None:
        """Refuse, before anything is written, an amount the gateway cannot move in CURRENCY.

        Fares are whole units of CURRENCY's ISO 4217 unit and start-up refuses a gateway whose unit is
        coarser, so this only guards against a gateway rule the service does not know of: the request
        is a 400 rather than a payment that fails at the gateway.
        """
        if request.method != "CASH" and not self.gateway.can_carry(fare.amount, self.config.CURRENCY):
            error = HoldAmountNotPayableError if hold else ChargeAmountNotPayableError
            raise error(fare.amount, self.config.CURRENCY, self.gateway.name, hold, request.amount is not None)

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
        self, claim: Claim, request: ChargeRequest, parties: tuple[int | None, int | None], fare: Fare, hold: bool
    ) -> Payment:
        """Insert the PENDING payment (a hold: with its held amount) and the key's recovery point; return the row."""
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
            "gateway": None if request.method == "CASH" else self.gateway.name,
            "payment_method": None if request.method == "CASH" else request.payment_method,
            "authorized_amount": fare.amount if hold else None,
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

    def attempt(self, charge: GatewayCharge) -> GatewayResult:
        """Send a recorded PENDING payment to the gateway: register it, record its reference, then move the money.

        Used by the charge and by reconciliation (for an attempt the gateway never received). The
        answer is SUCCESS, FAILED or, when the outcome is unknown, PENDING; never an exception from
        the gateway, since the payment must stay where reconciliation can settle it.
        """
        try:
            if charge.reference is None:
                reference = self.gateway.register(charge)
                if reference is not None:
                    with self.pool.cursor() as cur:
                        cur.execute(
                            RECORD_GATEWAY_REFERENCE, {"payment_id": charge.payment_id, "gateway_reference": reference}
                        )
                        recorded = cur.rowcount == 1
                    if not recorded:
                        # Settled meanwhile (by reconciliation): money must not move on it any more.
                        logger.warning("payment no longer pending; not sent", extra={"payment_id": charge.payment_id})
                        return GatewayResult(PENDING)
                    charge = dataclasses.replace(charge, reference=reference)
            result = self.gateway.authorize(charge)
        except GatewayRefusedError as exc:
            logger.warning(
                "gateway refused the payment; no money moved",
                extra={"payment_id": charge.payment_id, "error": str(exc)},
            )
            return GatewayResult(FAILED, exc.error_code, charge.reference)
        except GatewayUnavailableError as exc:
            logger.warning(
                "gateway did not answer; payment left PENDING",
                extra={"payment_id": charge.payment_id, "error": str(exc)},
            )
            return GatewayResult(PENDING, reference=charge.reference, answered=False)
        except DatabaseUnavailableError:
            # The reference could not be recorded, so no money was asked for; reconciliation resumes it.
            logger.warning(
                "database lost before the gateway call; payment left PENDING", extra={"payment_id": charge.payment_id}
            )
            return GatewayResult(PENDING, answered=False)
        except Exception:
            logger.exception("gateway call failed; payment left PENDING", extra={"payment_id": charge.payment_id})
            return GatewayResult(PENDING, reference=charge.reference)
        return charge_outcome(result, charge.capture)

    def _record_outcome(
        self, claim: Claim, payment_id: int, result: GatewayResult, hold: bool, attempt: Payment | None = None
    ) -> tuple[Outcome, Payment]:
        """Store the gateway's verdict and the final response under the key, in one transaction."""
        if attempt is not None and result.status != PENDING:
            recorded = self._record_known_outcome(claim, attempt, result, hold)
            if recorded is not None:
                return recorded
        with self.pool.cursor() as cur:
            row = None
            if result.status != PENDING:
                cur.execute(
                    RECORD_OUTCOME,
                    {
                        "payment_id": payment_id,
                        "status": result.status,
                        "error_code": result.error_code,
                        "gateway_reference": result.reference,
                    },
                )
                row = cur.fetchone()
            if row is None:
                # Still PENDING, or no longer PENDING because another request settled it first.
                cur.execute(SELECT_PAYMENT_FOR_CHARGE, {"payment_id": payment_id})
                row = cur.fetchone()
            payment = Payment.from_row(row)
            stored = self._answer(payment, hold)
            self.idempotency.complete(cur, claim, stored)
            # Same transaction as the outcome: the notification exists exactly when the outcome does.
            self.outbox.add(cur, payment_notification(payment))
        return Outcome(stored.status, stored.body), payment

    def _record_known_outcome(
        self, claim: Claim, attempt: Payment, result: GatewayResult, hold: bool
    ) -> tuple[Outcome, Payment] | None:
        """Record a decided verdict on the attempt as recorded, in one round trip; None if the row changed meanwhile."""
        payment = dataclasses.replace(
            attempt,
            status=result.status,
            error_code=result.error_code,
            gateway_reference=result.reference,
            # Set here, not by the database's now(), so the stored answer can be built before the write.
            updated_at=datetime.now(UTC),
        )
        stored = self._answer(payment, hold)
        notification = payment_notification(payment)
        params = {
            **claim.params(),
            "payment_id": payment.payment_id,
            "status": payment.status,
            "error_code": payment.error_code,
            "gateway_reference": payment.gateway_reference,
            "updated_at": payment.updated_at,
            "response_status": stored.status,
            "body": stored.body,
            **self.outbox.row(notification),
        }
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(RECORD_OUTCOME_AND_ANSWER, params)
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
        if payment.status == "FAILED":
            body["error_code"] = payment.error_code
        status_code = 201 if payment.status in ("SUCCESS", "AUTHORIZED") else 202
        return StoredResponse(status_code, dump_json(body))
