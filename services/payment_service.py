"""Payment business operations: reads, fares and the charge.

Reads are one transaction each. A charge cannot be: the gateway call must happen outside any
transaction, so it runs as short transactions around recovery points (claim the key; record the
PENDING attempt; record the outcome and the response), and the gateway is never called twice for
one attempt.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from config import Config
from database.connection import ConnectionPool, DatabaseUnavailableError, Prepared
from models.money import MAX_AMOUNT, to_cents
from models.payment import payment_to_dict
from services.external_services import ExternalServices, GatewayResult, Trip
from services.idempotency_service import (
    Claim,
    IdempotencyKeyInUseError,
    IdempotencyService,
    Outcome,
    StoredResponse,
    fingerprint,
)
from services.notification_service import Outbox
from utils.errors import AppError, PaymentNotFoundError
from utils.helpers import dump_json
from utils.logger import get_logger
from utils.metrics import CHARGES, IDEMPOTENT_REPLAYS

logger = get_logger(__name__)

CHARGE_PATH = "/v1/payments/charge"

SELECT_PAYMENT = Prepared("""
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, created_at, updated_at
FROM payments
WHERE payment_id = %(payment_id)s
""")

# psycopg2 interpolates parameters on the client, so PostgreSQL plans this with literal values:
# "NULL::bigint IS NULL" folds to true and drops out, leaving only the given filters, which the
# (column, created_at DESC, payment_id DESC) indexes then serve without a sort. With a cursor the
# row comparison starts the index scan right after the previous page's last row, so page 50 costs
# what page 1 costs; OFFSET has to read and throw away every row before the page.
LIST_PAYMENTS = """
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, created_at, updated_at
FROM payments
WHERE (%(trip_id)s::bigint IS NULL OR trip_id = %(trip_id)s)
  AND (%(rider_id)s::bigint IS NULL OR rider_id = %(rider_id)s)
  AND (%(driver_id)s::bigint IS NULL OR driver_id = %(driver_id)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(method)s::text IS NULL OR method = %(method)s)
  AND (%(after_id)s::bigint IS NULL
       OR (created_at, payment_id) < (%(after_created_at)s::timestamptz, %(after_id)s::bigint))
ORDER BY created_at DESC, payment_id DESC
LIMIT %(fetch)s OFFSET %(offset)s
"""


@dataclass(frozen=True)
class PageCursor:
    """Where a page ended: the last row's sort key. Opaque to clients (see encode/decode)."""

    created_at: datetime
    payment_id: int

    def encode(self) -> str:
        """URL-safe text for `next_cursor`."""
        raw = f"{self.created_at.isoformat()}|{self.payment_id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> PageCursor | None:
        """The cursor `encode` made, or None if `text` is not one."""
        if not 1 <= len(text) <= 200 or not text.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            moment, _, number = raw.partition("|")
            created_at = datetime.fromisoformat(moment)
            payment_id = int(number) if number.isascii() and number.isdigit() else 0
        except (ValueError, UnicodeDecodeError):
            return None
        if created_at.tzinfo is None or not 0 < payment_id < 2**63:
            return None
        return cls(created_at, payment_id)


@dataclass(frozen=True)
class PaymentFilters:
    """Validated filters and page of GET /v1/payments (an offset, or a cursor from the previous page)."""

    trip_id: int | None = None
    rider_id: int | None = None
    driver_id: int | None = None
    status: str | None = None
    method: str | None = None
    limit: int = 100
    offset: int = 0
    after: PageCursor | None = None


# Serialises the decision "insert a live payment for this trip, or name the one that exists" per
# trip. The unique partial index remains what guarantees one live payment; the lock only makes sure
# a loser can always name the winner (without it, the winner may turn FAILED in between).
LOCK_TRIP = Prepared("SELECT pg_advisory_xact_lock(hashtextextended('payments.trip:' || %(trip_id)s, 0))")
INSERT_ATTEMPT = Prepared("""
INSERT INTO payments (trip_id, rider_id, driver_id, amount, currency, method, status, reference, fare)
VALUES (%(trip_id)s, %(rider_id)s, %(driver_id)s, %(amount)s, %(currency)s, %(method)s, 'PENDING',
        %(reference)s, %(fare)s)
ON CONFLICT (trip_id) WHERE status <> 'FAILED' DO NOTHING
RETURNING payment_id
""")
SELECT_LIVE_PAYMENT_FOR_TRIP = Prepared("""
SELECT payment_id FROM payments WHERE trip_id = %(trip_id)s AND status <> 'FAILED'
""")
SELECT_PAYMENT_FOR_CHARGE = Prepared("""
SELECT payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
       amount_refunded, created_at, updated_at, error_code, fare
FROM payments
WHERE payment_id = %(payment_id)s
""")
# Returns the row SELECT_PAYMENT_FOR_CHARGE would, saving that round trip when the update applies.
RECORD_OUTCOME = Prepared("""
UPDATE payments
   SET status = %(status)s, error_code = %(error_code)s, updated_at = now()
 WHERE payment_id = %(payment_id)s AND status = 'PENDING'
RETURNING payment_id, trip_id, rider_id, driver_id, amount, currency, method, status, reference,
          amount_refunded, created_at, updated_at, error_code, fare
""")
CHARGE_MESSAGES = {
    "SUCCESS": "Payment processed successfully.",
    "FAILED": "Payment failed at the gateway.",
    "PENDING": "Payment is pending confirmation from the gateway.",
}


@dataclass(frozen=True)
class ChargeRequest:
    """A validated POST /v1/payments/charge body."""

    idempotency_key: str = dataclasses.field(repr=False)
    trip_id: int
    method: str
    rider_id: int | None = None
    driver_id: int | None = None
    amount: Decimal | None = None

    def fingerprint_fields(self) -> dict[str, Any]:
        """The normalised body, without the key, that a replay must match."""
        return {
            "trip_id": self.trip_id,
            "method": self.method,
            "rider_id": self.rider_id,
            "driver_id": self.driver_id,
            "amount": None if self.amount is None else str(self.amount),
        }


@dataclass(frozen=True)
class Fare:
    """The amount to charge and how it was arrived at."""

    type: str  # TRIP, CANCELLATION or CLIENT_AMOUNT
    amount: Decimal
    base_fare: Decimal
    distance_km: Decimal | None
    rate_per_km: Decimal
    surge_multiplier: Decimal
    mock_trip: bool = False

    def breakdown(self) -> dict[str, Any]:
        """The contract's `fare` object (`mock_trip` only when the development mock trip was priced)."""
        parts: dict[str, Any] = {
            "type": self.type,
            "base_fare": self.base_fare,
            "distance_km": self.distance_km,
            "rate_per_km": self.rate_per_km,
            "surge_multiplier": self.surge_multiplier,
            "amount": self.amount,
        }
        if self.mock_trip:
            parts["mock_trip"] = True
        return parts


class InvalidFareError(AppError):
    """The trip's fare rounds to 0.00: a payment of nothing is never created."""

    def __init__(self, trip: Trip, fare: Decimal) -> None:
        """400 invalid_fare naming the trip and the fare."""
        super().__init__(
            f"Trip {trip.trip_id} prices at {fare}; a payment must be at least 0.01, so nothing was charged.",
            status_code=400,
            code="invalid_fare",
            trip_id=trip.trip_id,
            fare=fare,
        )


class NoCancellationFeeError(AppError):
    """The trip was cancelled and CANCELLATION_FEE is 0, so there is nothing to charge."""

    def __init__(self, trip: Trip) -> None:
        """400 no_cancellation_fee naming the trip."""
        super().__init__(
            f"Trip {trip.trip_id} was cancelled and no cancellation fee is configured; nothing was charged.",
            status_code=400,
            code="no_cancellation_fee",
            trip_id=trip.trip_id,
        )


class FareOutOfRangeError(AppError):
    """The computed fare is more than a payment can hold."""

    def __init__(self, trip: Trip, fare: Decimal) -> None:
        """400 fare_out_of_range naming the fare and the largest amount."""
        super().__init__(
            f"Trip {trip.trip_id} prices at {fare}, above the largest payment amount {MAX_AMOUNT};"
            " nothing was charged.",
            status_code=400,
            code="fare_out_of_range",
            trip_id=trip.trip_id,
            fare=fare,
            max_amount=MAX_AMOUNT,
        )


def calculate_fare(trip: Trip, config: Config, client_amount: Decimal | None = None) -> Fare:
    """Price a trip in exact decimals, rounding half-up to the cent once, at the end.

    COMPLETED: (BASE_FARE + distance_km x RATE_PER_KM) x surge. CANCELLED: CANCELLATION_FEE.
    A client amount replaces the computed figure. Raises when the result cannot be a payment
    (0.00, or more than NUMERIC(10,2) holds), so such an amount never reaches a gateway.
    """
    parts = {
        "base_fare": config.BASE_FARE,
        "distance_km": trip.distance_km,
        "rate_per_km": config.RATE_PER_KM,
        "surge_multiplier": trip.surge_multiplier,
        "mock_trip": trip.mock,
    }
    if trip.status == "CANCELLED" and to_cents(config.CANCELLATION_FEE) <= 0:
        # Cancelled trips are free here, so a client amount cannot charge one either.
        raise NoCancellationFeeError(trip)
    if client_amount is not None:
        fare = Fare("CLIENT_AMOUNT", to_cents(client_amount), **parts)
    elif trip.status == "CANCELLED":
        fare = Fare("CANCELLATION", to_cents(config.CANCELLATION_FEE), **parts)
    else:
        distance = trip.distance_km or Decimal(0)
        fare = Fare("TRIP", to_cents(trip_fare(config, distance, trip.surge_multiplier)), **parts)
    if fare.amount <= 0:
        raise InvalidFareError(trip, fare.amount)
    if fare.amount > MAX_AMOUNT:
        raise FareOutOfRangeError(trip, fare.amount)
    return fare


def trip_fare(config: Config, distance_km: Decimal, surge: Decimal) -> Decimal:
    """The unrounded fare formula: (BASE_FARE + distance_km x RATE_PER_KM) x surge."""
    return (config.BASE_FARE + distance_km * config.RATE_PER_KM) * surge


class TripNotCompletedError(AppError):
    """The trip is neither completed nor cancelled, so there is nothing to charge yet."""

    def __init__(self, trip: Trip) -> None:
        """400 trip_not_completed with the trip's id and status."""
        super().__init__(
            f"Trip {trip.trip_id} is {trip.status}; only COMPLETED or CANCELLED trips can be charged.",
            status_code=400,
            code="trip_not_completed",
            trip_id=trip.trip_id,
            trip_status=trip.status,
        )


class TripPartyMismatchError(AppError):
    """The body names a rider or driver other than the one the trip service gives for the trip."""

    def __init__(self, trip_id: int, field: str, given: int, expected: int) -> None:
        """400 trip_party_mismatch naming the field and both ids."""
        super().__init__(
            f"{field} {given} does not match trip {trip_id}, whose {field} is {expected}; nothing was charged.",
            status_code=400,
            code="trip_party_mismatch",
            field=field,
            trip_id=trip_id,
        )


def trip_parties(request: ChargeRequest, trip: Trip) -> tuple[int | None, int | None]:
    """The payment's rider and driver: the trip service's where it names them, else the body's.

    Raises TripPartyMismatchError when the body contradicts the trip service.
    """
    parties = []
    for field, given, known in (
        ("rider_id", request.rider_id, trip.rider_id),
        ("driver_id", request.driver_id, trip.driver_id),
    ):
        if given is not None and known is not None and given != known:
            raise TripPartyMismatchError(trip.trip_id, field, given, known)
        parties.append(known if known is not None else given)
    return parties[0], parties[1]


class TripAlreadyPaidError(AppError):
    """The trip already has a payment that is not FAILED."""

    def __init__(self, trip_id: int, payment_id: int) -> None:
        """409 trip_already_paid naming the existing payment."""
        super().__init__(
            f"Trip {trip_id} already has payment {payment_id}.",
            status_code=409,
            code="trip_already_paid",
            trip_id=trip_id,
            payment_id=payment_id,
        )


def payment_notification(payment: dict[str, Any]) -> dict[str, Any]:
    """The notification announcing a charge's outcome; its id is stable across retries."""
    return {
        "notification_id": f"payment-{payment['payment_id']}-{payment['status'].lower()}",
        "type": "payment",
        "payment_id": payment["payment_id"],
        "trip_id": payment["trip_id"],
        "rider_id": payment["rider_id"],
        "driver_id": payment["driver_id"],
        "status": payment["status"],
        "amount": payment["amount"],
        "currency": payment["currency"],
        "timestamp": datetime.now(UTC),
    }


def new_reference(now: datetime) -> str:
    """A unique, unguessable payment reference such as PAY-20251103-9F2C41D07A3B5E16."""
    return f"PAY-{now:%Y%m%d}-{secrets.token_hex(8).upper()}"


class PaymentService:
    """Reads and writes payments through the connection pool."""

    def __init__(
        self,
        pool: ConnectionPool,
        config: Config,
        external: ExternalServices,
        outbox: Outbox,
        idempotency: IdempotencyService | None = None,
    ) -> None:
        """Keep the pool, configuration and collaborators."""
        self.pool = pool
        self.config = config
        self.external = external
        self.outbox = outbox
        self.idempotency = idempotency or IdempotencyService(
            pool, config.IDEMPOTENCY_KEY_TTL, config.IDEMPOTENCY_LOCK_TIMEOUT
        )

    def get_payment(self, payment_id: int | None) -> dict[str, Any]:
        """Return one payment or raise payment_not_found (also for ids that cannot exist)."""
        row = None
        if payment_id is not None:
            with self.pool.cursor(single_statement=True) as cur:
                cur.execute(SELECT_PAYMENT, {"payment_id": payment_id})
                row = cur.fetchone()
        if row is None:
            raise PaymentNotFoundError(payment_id)
        return payment_to_dict(row)

    def list_payments(self, filters: PaymentFilters) -> dict[str, Any]:
        """Return one page of payments, newest first, whether more follow, and the cursor of the next page."""
        after = filters.after
        params = {
            **{f.name: getattr(filters, f.name) for f in dataclasses.fields(filters) if f.name != "after"},
            "after_created_at": after.created_at if after else None,
            "after_id": after.payment_id if after else None,
            "fetch": filters.limit + 1,
        }
        with self.pool.cursor(single_statement=True) as cur:
            cur.execute(LIST_PAYMENTS, params)
            rows = cur.fetchall()
        has_more = len(rows) > filters.limit
        last = rows[filters.limit - 1] if has_more else None
        page = [payment_to_dict(row) for row in rows[: filters.limit]]
        return {
            "payments": page,
            "count": len(page),
            "limit": filters.limit,
            "offset": filters.offset,
            "has_more": has_more,
            "next_cursor": PageCursor(last["created_at"], last["payment_id"]).encode() if last else None,
        }

    # --- charge -----------------------------------------------------------------------------------

    def charge(self, request: ChargeRequest, scope: str) -> Outcome:
        """Charge a trip at most once per idempotency key and per trip."""
        claimed = self.idempotency.claim(
            scope, request.idempotency_key, fingerprint(request.fingerprint_fields()), CHARGE_PATH
        )
        if isinstance(claimed, StoredResponse):
            IDEMPOTENT_REPLAYS.labels("charge").inc()
            return Outcome(claimed.status, claimed.body, replayed=True)
        claim = claimed
        try:
            return self._charge_claimed(request, claim)
        except BaseException:
            # The request answers without a final outcome: give the key back (a retry resumes from the
            # recovery point, if one was recorded), unless the outcome itself waits to be stored.
            if not claim.finishing_later:
                self.idempotency.give_back(claim)
            raise

    def _charge_claimed(self, request: ChargeRequest, claim: Claim) -> Outcome:
        """Price the trip, record the attempt, call the gateway once and store the outcome."""
        if claim.payment_id is not None:
            # An earlier request with this key recorded the attempt and may or may not have reached
            # the gateway; never call it twice. The payment stays PENDING for reconciliation.
            payment_id = claim.payment_id
            logger.warning("resuming an abandoned charge without calling the gateway", extra={"payment_id": payment_id})
            result = GatewayResult("PENDING")
        else:
            trip = self.external.trips.get_trip(request.trip_id)
            if trip.status not in ("COMPLETED", "CANCELLED"):
                raise TripNotCompletedError(trip)
            parties = trip_parties(request, trip)
            fare = calculate_fare(trip, self.config, request.amount)
            payment_id, reference = self._record_attempt(claim, request, parties, fare)
            result = self._call_gateway(payment_id, reference, request.method, fare)
        try:
            return self._finish(claim, payment_id, result)
        except DatabaseUnavailableError:
            # The gateway's verdict is known but the database went away before it was stored. This
            # process stores it as soon as the database is back and holds the key until then, so
            # the client's retry is answered with that verdict, never with a second gateway call.
            claim.finishing_later = True
            self.idempotency.deferred.add(
                "store a charge outcome",
                lambda: self._finish(claim, payment_id, result),
            )
            raise

    def _finish(self, claim: Claim, payment_id: int, result: GatewayResult) -> Outcome:
        """Store the outcome, count it, wake the notification dispatcher."""
        outcome, payment = self._record_outcome(claim, payment_id, result)
        CHARGES.labels(payment["status"], payment["method"]).inc()
        self.outbox.wake()
        logger.info(
            "charge finished",
            extra={"payment_id": payment_id, "trip_id": payment["trip_id"], "status": payment["status"]},
        )
        return outcome

    def _record_attempt(
        self, claim: Claim, request: ChargeRequest, parties: tuple[int | None, int | None], fare: Fare
    ) -> tuple[int, str]:
        """Insert the PENDING payment and the key's recovery point in one transaction; return id and reference."""
        params = {
            "trip_id": request.trip_id,
            "rider_id": parties[0],
            "driver_id": parties[1],
            "amount": fare.amount,
            "currency": self.config.CURRENCY,
            "method": request.method,
            "reference": new_reference(datetime.now(UTC)),
            "fare": dump_json(fare.breakdown()),
        }
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
            payment_id = inserted["payment_id"]
            if not self.idempotency.record_payment(cur, claim, payment_id):
                # Our claim was taken over (we exceeded the lock timeout): undo and step back.
                raise IdempotencyKeyInUseError()
        claim.payment_id = payment_id
        return payment_id, params["reference"]

    def _call_gateway(self, payment_id: int, reference: str, method: str, fare: Fare) -> GatewayResult:
        """Call the gateway once; an exception means the outcome is unknown, i.e. PENDING."""
        try:
            return self.external.gateway.charge(reference, fare.amount, self.config.CURRENCY, method)
        except Exception:
            logger.exception("gateway call failed; payment left PENDING", extra={"payment_id": payment_id})
            return GatewayResult("PENDING")

    def _record_outcome(self, claim: Claim, payment_id: int, result: GatewayResult) -> tuple[Outcome, dict[str, Any]]:
        """Store the gateway's verdict and the final response under the key, in one transaction."""
        with self.pool.cursor() as cur:
            row = None
            if result.status != "PENDING":
                cur.execute(
                    RECORD_OUTCOME,
                    {"payment_id": payment_id, "status": result.status, "error_code": result.error_code},
                )
                row = cur.fetchone()
            if row is None:
                # Still PENDING, or no longer PENDING because another request settled it first.
                cur.execute(SELECT_PAYMENT_FOR_CHARGE, {"payment_id": payment_id})
                row = cur.fetchone()
            body = payment_to_dict(row)
            body["message"] = CHARGE_MESSAGES.get(row["status"], "Payment recorded.")
            body["timestamp"] = datetime.now(UTC)
            body["fare"] = row["fare"]
            if row["status"] == "FAILED":
                body["error_code"] = row["error_code"]
            status_code = 201 if row["status"] == "SUCCESS" else 202
            stored = StoredResponse(status_code, dump_json(body))
            self.idempotency.complete(cur, claim, stored)
            # Same transaction as the outcome: the notification exists exactly when the outcome does.
            self.outbox.add(cur, payment_notification(row))
        return Outcome(stored.status, stored.body), row
