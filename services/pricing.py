"""Fares: what a trip costs, in exact decimals, and the amounts that can never be charged."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from config import Config
from models.money import MAX_AMOUNT, to_cents
from services.clients.trips import Trip, TripServiceBadResponseError
from utils.errors import DomainError


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
    """The trip's fare rounds to 0.00: a payment of nothing is never created."""

    code = "invalid_fare"

    def __init__(self, trip: Trip, fare: Decimal) -> None:
        """Say so naming the trip and the fare."""
        super().__init__(
            f"Trip {trip.trip_id} prices at {fare}; a payment must be at least 0.01, so nothing was charged.",
            trip_id=trip.trip_id,
            fare=fare,
        )


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

    def __init__(self, trip: Trip, fare: Decimal, hold: bool = False) -> None:
        """Say so naming the fare (or the hold it makes) and the largest amount."""
        what = f"needs a hold of {fare} (its fare x HOLD_MULTIPLIER)" if hold else f"prices at {fare}"
        super().__init__(
            f"Trip {trip.trip_id} {what}, above the largest payment amount {MAX_AMOUNT}; nothing was charged.",
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
    return _payable(trip, fare)


def _payable(trip: Trip, fare: Fare) -> Fare:
    """The fare, if it can be a payment: at least 0.01 and at most what NUMERIC(10,2) holds."""
    if fare.amount <= 0:
        raise InvalidFareError(trip, fare.amount)
    if fare.amount > MAX_AMOUNT:
        raise FareOutOfRangeError(trip, fare.amount, hold=fare.hold_multiplier is not None)
    return fare


def calculate_hold(trip: Trip, config: Config, client_amount: Decimal | None = None) -> Fare:
    """What to hold for a trip that has not ended: the client's amount, else its fare x HOLD_MULTIPLIER.

    The fare comes from the trip's (estimated) distance and surge; the product is rounded half-up
    to the cent once. Raises TripServiceBadResponseError when no amount is given and the trip
    service gave no distance to price.
    """
    parts = {
        "base_fare": config.BASE_FARE,
        "distance_km": trip.distance_km,
        "rate_per_km": config.RATE_PER_KM,
        "surge_multiplier": trip.surge_multiplier,
        "mock_trip": trip.mock,
    }
    if client_amount is not None:
        return _payable(trip, Fare("CLIENT_AMOUNT", to_cents(client_amount), **parts))
    if trip.distance_km is None:
        raise TripServiceBadResponseError(
            f"trip {trip.trip_id} has no distance estimate to price a hold with (or send amount)"
        )
    estimate = trip_fare(config, trip.distance_km, trip.surge_multiplier) * config.HOLD_MULTIPLIER
    return _payable(trip, Fare("TRIP", to_cents(estimate), **parts, hold_multiplier=config.HOLD_MULTIPLIER))


def trip_fare(config: Config, distance_km: Decimal, surge: Decimal) -> Decimal:
    """The unrounded fare formula: (BASE_FARE + distance_km x RATE_PER_KM) x surge."""
    return (config.BASE_FARE + distance_km * config.RATE_PER_KM) * surge
