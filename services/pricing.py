"""Fares: what a trip costs, exact and rounded once to the currency's smallest unit; what can never be charged."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from config import Config
from models.money import decimals_of, fits_currency, max_amount, minor_unit, to_minor_unit
from services.clients.trips import Trip, TripServiceBadResponseError
from utils.errors import DomainError, ValidationError


@dataclass(frozen=True, slots=True)
class Fare:
    """The amount to charge and how it was arrived at."""

    type: str  # TRIP, CANCELLATION or CLIENT_AMOUNT
    amount: Decimal
    base_fare: Decimal
    distance_km: Decimal | None
    rate_per_km: Decimal
    surge_multiplier: Decimal
    mock_trip: bool = False
    # Set on a hold's estimate: the fare so far was multiplied by HOLD_MULTIPLIER.
    hold_multiplier: Decimal | None = None

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
        if self.hold_multiplier is not None:
            parts["hold_multiplier"] = self.hold_multiplier
        if self.mock_trip:
            parts["mock_trip"] = True
        return parts


class InvalidFareError(DomainError):
    """The trip's fare rounds to 0 in the currency's smallest unit: a payment of nothing is never created."""

    code = "invalid_fare"

    def __init__(self, trip: Trip, fare: Decimal, currency: str) -> None:
        """Say so naming the trip, the fare and the smallest amount."""
        super().__init__(
            f"Trip {trip.trip_id} prices at {fare} {currency}; a payment must be at least {minor_unit(currency)}"
            f" {currency}, so nothing was charged.",
            trip_id=trip.trip_id,
            fare=fare,
        )


class AmountPrecisionError(ValidationError):
    """An amount with more decimals than its currency has (10.5 JPY): refused, never rounded."""

    def __init__(self, amount: Decimal, currency: str) -> None:
        """Name the field, the currency and its decimals."""
        decimals = decimals_of(currency)
        rule = f"a whole number of {currency}" if decimals == 0 else f"at most {decimals} decimal places in {currency}"
        super().__init__(
            f"Field 'amount' must be {rule} (its smallest unit per ISO 4217), got {amount.normalize():f}.",
            field="amount",
        )


def check_amount(amount: Decimal | None, currency: str) -> None:
    """Refuse a client's amount that is not a whole number of the currency's smallest unit (no amount: fine)."""
    if amount is not None and not fits_currency(amount, currency):
        raise AmountPrecisionError(amount, currency)


class NoCancellationFeeError(DomainError):
    """The trip was cancelled and CANCELLATION_FEE is 0, so there is nothing to charge."""

    code = "no_cancellation_fee"

    def __init__(self, trip: Trip, holding: bool = False) -> None:
        """Say so naming the trip (`holding`: asked of a hold, which stands)."""
        after = (
            "nothing can be captured; the hold stands: void it, or capture without amount, which voids it"
            if holding
            else "nothing was charged"
        )
        super().__init__(
            f"Trip {trip.trip_id} was cancelled and no cancellation fee is configured; {after}.",
            trip_id=trip.trip_id,
        )


class FareOutOfRangeError(DomainError):
    """The computed fare is more than a payment can hold."""

    code = "fare_out_of_range"

    def __init__(self, trip: Trip, fare: Decimal, currency: str, hold: bool = False) -> None:
        """Say so naming the fare (or the hold it makes) and the largest amount."""
        largest = max_amount(currency)
        what = f"needs a hold of {fare} (its fare x HOLD_MULTIPLIER)" if hold else f"prices at {fare}"
        super().__init__(
            f"Trip {trip.trip_id} {what}, above the largest payment amount {largest} {currency}; nothing was charged.",
            trip_id=trip.trip_id,
            fare=fare,
            max_amount=largest,
        )


def calculate_fare(
    trip: Trip, config: Config, client_amount: Decimal | None = None, currency: str | None = None
) -> Fare:
    """Price a trip in exact decimals, rounding half-up to the currency's smallest unit once, at the end.

    COMPLETED: (BASE_FARE + distance_km x RATE_PER_KM) x surge. CANCELLED: CANCELLATION_FEE.
    A client amount replaces the computed figure; it must already be a whole number of the unit
    (AmountPrecisionError otherwise). `currency` defaults to CURRENCY (a capture passes its payment's).
    Raises when the result cannot be a payment (0, or more than NUMERIC(10,2) holds), so such an
    amount never reaches a gateway.
    """
    currency = currency or config.CURRENCY
    parts = {
        "base_fare": config.BASE_FARE,
        "distance_km": trip.distance_km,
        "rate_per_km": config.RATE_PER_KM,
        "surge_multiplier": trip.surge_multiplier,
        "mock_trip": trip.mock,
    }
    if trip.status == "CANCELLED" and config.CANCELLATION_FEE <= 0:
        # Cancelled trips are free here, so a client amount cannot charge one either.
        raise NoCancellationFeeError(trip)
    check_amount(client_amount, currency)
    if client_amount is not None:
        # Exact (check_amount refused any more decimals); only the exponent becomes the unit's.
        fare = Fare("CLIENT_AMOUNT", to_minor_unit(client_amount, currency), **parts)
    elif trip.status == "CANCELLED":
        # Start-up made sure the fee is an amount of CURRENCY; rounding only gives it the unit's exponent.
        fare = Fare("CANCELLATION", to_minor_unit(config.CANCELLATION_FEE, currency), **parts)
    else:
        distance = trip.distance_km or Decimal(0)
        fare = Fare("TRIP", to_minor_unit(trip_fare(config, distance, trip.surge_multiplier), currency), **parts)
    return _payable(trip, fare, currency)


def _payable(trip: Trip, fare: Fare, currency: str) -> Fare:
    """The fare, if it can be a payment: at least the currency's smallest unit, at most what NUMERIC(10,2) holds."""
    if fare.amount <= 0:
        raise InvalidFareError(trip, fare.amount, currency)
    if fare.amount > max_amount(currency):
        raise FareOutOfRangeError(trip, fare.amount, currency, hold=fare.hold_multiplier is not None)
    return fare


def calculate_hold(trip: Trip, config: Config, client_amount: Decimal | None = None) -> Fare:
    """What to hold for a trip that has not ended: the client's amount, else its fare x HOLD_MULTIPLIER.

    The fare comes from the trip's (estimated) distance and surge; the product is rounded half-up
    to CURRENCY's smallest unit once (HOLD_MULTIPLIER >= 1 and the rounding is monotonic, so the hold
    is never below the fare it estimates). Raises TripServiceBadResponseError when no amount is given
    and the trip service gave no distance to price.
    """
    currency = config.CURRENCY
    parts = {
        "base_fare": config.BASE_FARE,
        "distance_km": trip.distance_km,
        "rate_per_km": config.RATE_PER_KM,
        "surge_multiplier": trip.surge_multiplier,
        "mock_trip": trip.mock,
    }
    check_amount(client_amount, currency)
    if client_amount is not None:
        return _payable(trip, Fare("CLIENT_AMOUNT", to_minor_unit(client_amount, currency), **parts), currency)
    if trip.distance_km is None:
        raise TripServiceBadResponseError(
            f"trip {trip.trip_id} has no distance estimate to price a hold with (or send amount)"
        )
    estimate = trip_fare(config, trip.distance_km, trip.surge_multiplier) * config.HOLD_MULTIPLIER
    hold = Fare("TRIP", to_minor_unit(estimate, currency), **parts, hold_multiplier=config.HOLD_MULTIPLIER)
    return _payable(trip, hold, currency)


def trip_fare(config: Config, distance_km: Decimal, surge: Decimal) -> Decimal:
    """The unrounded fare formula: (BASE_FARE + distance_km x RATE_PER_KM) x surge."""
    return (config.BASE_FARE + distance_km * config.RATE_PER_KM) * surge
